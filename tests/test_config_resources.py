"""ListConfigResources (key 74) and DescribeUserScramCredentials (key 50), the two APIs kafka-configs needs
besides DescribeConfigs: what each lists and refuses (the tools themselves: compat-tests/test_kafka_tools.py)."""

from __future__ import annotations

from lodestream.protocol.errors import ErrorCode
from lodestream.protocol.messages import request_builder
from test_group_handlers import create_topic

GROUP, CLIENT_METRICS, BROKER_LOGGER, BROKER, TOPIC = 32, 16, 8, 4, 2


async def list_resources(client, version: int, types=()):
    b = request_builder(74, version)
    return await client.request(b.ListConfigResourcesRequest(resource_types=tuple(types)))


async def test_list_config_resources_by_type(running_broker):
    client = await running_broker.client()
    await create_topic(client, "listed", 1)
    b = request_builder(44, 1)  # IncrementalAlterConfigs: a group config of its own for "configured"
    response = await client.request(b.IncrementalAlterConfigsRequest(resources=(b.AlterConfigsResource(
        resource_type=GROUP, resource_name="configured", configs=(b.AlterableConfig(
            name="consumer.byte.rate", config_operation=0, value="5000"),)),), validate_only=False))
    assert response.responses[0].error_code == ErrorCode.none

    every = await list_resources(client, 1)
    assert every.error_code == ErrorCode.none
    assert {(int(r.resource_type), r.resource_name) for r in every.config_resources} == {
        (GROUP, "configured"), (BROKER_LOGGER, "1"), (BROKER, "1"), (TOPIC, "listed")}
    groups = await list_resources(client, 1, [GROUP])
    assert [r.resource_name for r in groups.config_resources] == ["configured"]
    assert (await list_resources(client, 0)).config_resources == ()  # v0: client-metrics resources, none here
    unknown = await list_resources(client, 1, [TOPIC, 99])
    assert (unknown.error_code, unknown.config_resources) == (ErrorCode.unsupported_version, ())


async def test_describe_user_scram_credentials_without_any_stored(running_broker):
    client = await running_broker.client()
    b = request_builder(50, 0)
    response = await client.request(b.DescribeUserScramCredentialsRequest(users=tuple(
        b.UserName(name=name) for name in ("alice", "bob", "alice"))))
    assert response.error_code == ErrorCode.none
    assert [(r.user, r.error_code) for r in response.results] == [
        ("alice", ErrorCode.duplicate_resource), ("bob", ErrorCode.resource_not_found)]
    everyone = await client.request(b.DescribeUserScramCredentialsRequest(users=None))
    assert (everyone.error_code, everyone.results) == (ErrorCode.none, ())
