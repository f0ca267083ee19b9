"""Every API a client listener advertises, asked by three clients of a SASL listener with ACLs on
(docs/security.md): one that has not authenticated (the connection is closed, nothing is answered), one that
has but has no ACLs (Kafka's deny errors, and nothing leaks: Metadata, ListGroups and ListTransactions list
nothing, DescribeGroups tells nothing of the group), and one allowed everything on the resources it names
(no authorization error). Requests are generated from kio's schemas (tests/test_authorization.py), so a new
API is covered without a new test."""

from __future__ import annotations

import datetime

import trio

from inprocess_broker import start_broker
from lodestream.broker.authorizer import AUTHORIZER_CLASS_NAMES, DENIED, ResourceType
from lodestream.broker.handlers import REGISTRY
from lodestream.protocol.errors import ErrorCode
from lodestream.protocol.messages import request_builder
from test_authorization import NAME, _error_codes, _first_describe_transactions_error, _newest, _request
from wire_client import WireClient

USERS = ('org.apache.kafka.common.security.plain.PlainLoginModule required user_admin="admin-secret" '
         'user_alice="alice-secret" user_bob="bob-secret";')
PRE_AUTHENTICATION = {17, 18, 36}  # SaslHandshake, ApiVersions, SaslAuthenticate
DENY_CODES = set(DENIED.values())
# APIs that answer a principal without ACLs by leaving things out rather than with an error (as Kafka's do).
FILTERING = {16, 66}  # ListGroups, ListTransactions
DEADLINE_S = 20


async def login(port: int, user: str) -> WireClient:
    client = await WireClient.connect(port)
    handshake = await client.request(request_builder(17, 1).SaslHandshakeRequest(mechanism="PLAIN"))
    assert handshake.error_code == ErrorCode.none
    answer = await client.request(request_builder(36, 2).SaslAuthenticateRequest(
        auth_bytes=b"\0" + user.encode() + b"\0" + user.encode() + b"-secret"))
    assert answer.error_code == ErrorCode.none
    return client


async def closed_without_answer(port: int, request) -> bool:
    client = await WireClient.connect(port)
    try:
        await client.send(request)
        with trio.fail_after(DEADLINE_S):
            await client.read_frame()
        return False
    except (EOFError, trio.BrokenResourceError):
        return True
    finally:
        await client.aclose()


class Asker:
    """A logged-in connection that logs in again when the broker closed it (a refused inter-broker API may)."""

    def __init__(self, port: int, user: str) -> None:
        self.port, self.user, self.client = port, user, None

    async def codes(self, request) -> set[ErrorCode] | None:
        if self.client is None:
            self.client = await login(self.port, self.user)
        try:
            with trio.fail_after(DEADLINE_S):
                if request.__api_key__ == 65:  # kio cannot decode the -1 start time Kafka sends with an error
                    return {await _first_describe_transactions_error(self.client, request)}
                return _error_codes(await self.client.request(request))
        except (EOFError, trio.BrokenResourceError):
            await self.client.aclose()
            self.client = None
            return None


async def test_every_api_unauthenticated_without_acls_and_authorized(tmp_path):
    async with trio.open_nursery() as nursery:
        running = await start_broker(nursery, tmp_path / "data", **{
            "listeners": "SASL_PLAINTEXT://127.0.0.1:0", "sasl.enabled.mechanisms": "PLAIN",
            "sasl.jaas.config": USERS, "authorizer.class.name": AUTHORIZER_CLASS_NAMES[0],
            "super.users": "User:admin", "offsets.topic.num.partitions": "1",
            "transaction.state.log.num.partitions": "1"})
        port = running.port
        admin = await login(port, "admin")
        b = request_builder(19, 7)
        created = await admin.request(b.CreateTopicsRequest(
            topics=(b.CreatableTopic(name=NAME, num_partitions=1, replication_factor=1, assignments=(), configs=()),),
            timeout=datetime.timedelta(seconds=30), validate_only=False))
        topic_id = created.topics[0].topic_id
        b = request_builder(30, 3)
        granted = await admin.request(b.CreateAclsRequest(creations=tuple(
            b.AclCreation(resource_type=resource_type, resource_name=name, resource_pattern_type=3,
                          principal="User:alice", host="*", operation=2, permission_type=3)
            for resource_type, name in ((ResourceType.TOPIC, NAME), (ResourceType.GROUP, NAME),
                                        (ResourceType.TRANSACTIONAL_ID, NAME), (ResourceType.CLUSTER, "kafka-cluster")))))
        assert {result.error_code for result in granted.results} == {ErrorCode.none}

        bob, alice = Asker(port, "bob"), Asker(port, "alice")
        wrong: list[str] = []
        apis = sorted(key for key, handler in REGISTRY.items() if handler.served_on(False))
        for api_key in apis:
            request = _request(api_key, _newest(api_key), topic_id)
            if api_key not in PRE_AUTHENTICATION and not await closed_without_answer(port, request):
                wrong.append(f"{api_key}: answered before authentication")
            if api_key in (17, 36):  # the SASL exchange itself: tests/test_sasl.py
                continue
            codes = await bob.codes(request)
            if api_key != 18 and codes is not None and not codes & DENY_CODES and api_key not in FILTERING:
                wrong.append(f"{api_key}: no ACLs, answered {sorted(c.name for c in codes)}")
            codes = await alice.codes(request)
            if codes is None or codes & DENY_CODES:
                wrong.append(f"{api_key}: authorized, answered {codes and sorted(c.name for c in codes)}")
        assert not wrong, "\n".join(wrong)

        # Nothing leaks to a principal without ACLs.
        bob_client = await login(port, "bob")
        b = request_builder(3, 12)
        metadata = await bob_client.request(b.MetadataRequest(topics=None, allow_auto_topic_creation=False,
                                                              include_topic_authorized_operations=True))
        assert metadata.topics == ()
        assert (await bob_client.request(request_builder(16, 5).ListGroupsRequest(
            states_filter=(), types_filter=()))).groups == ()
        described = (await bob_client.request(request_builder(15, 5).DescribeGroupsRequest(
            groups=(NAME,), include_authorized_operations=True))).groups[0]
        assert described.error_code == ErrorCode.group_authorization_failed and described.members == ()
        assert described.protocol_type == "" and described.group_state == ""
        for client in (admin, bob_client, bob.client, alice.client):
            if client is not None:
                await client.aclose()
        print(f"security matrix: {len(apis)} APIs x (unauthenticated, no ACLs, authorized)")
        nursery.cancel_scope.cancel()
    running.broker.close()
