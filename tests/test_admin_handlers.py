"""Admin APIs over the wire against an in-process broker: DeleteTopics, DeleteRecords,
DescribeConfigs, AlterConfigs, IncrementalAlterConfigs, CreatePartitions,
DescribeCluster, DescribeLogDirs — oldest and newest advertised versions — plus
a confluent-kafka AdminClient round trip."""

from __future__ import annotations

import datetime
import logging
import time
import uuid

import pytest
import trio

from lodestream.broker.config import BROKER_CONFIGS, TOPIC_CONFIGS
from lodestream.protocol.errors import ErrorCode
from lodestream.protocol.messages import request_builder
from record_batches import value_batch

TIMEOUT = datetime.timedelta(seconds=30)

# config sources
TOPIC_SOURCE, BROKER_SOURCE, DEFAULT_BROKER_SOURCE, STATIC_SOURCE, DEFAULT_SOURCE = 1, 2, 3, 4, 5
# resource types
TOPIC, BROKER, BROKER_LOGGER = 2, 4, 8
# IncrementalAlterConfigs operations
SET, DELETE, APPEND, SUBTRACT = 0, 1, 2, 3


# -- request helpers --------------------------------------------------------------------------

def req(api_key: int, version: int):
    return request_builder(api_key, version)


async def create_topic(client, name: str, partitions: int = 1, configs: dict[str, str] | None = None):
    b = req(19, 7)
    response = await client.request(b.CreateTopicsRequest(
        topics=(b.CreatableTopic(
            name=name, num_partitions=partitions, replication_factor=1, assignments=(),
            configs=tuple(b.CreatableTopicConfig(name=k, value=v) for k, v in (configs or {}).items())),),
        timeout=TIMEOUT, validate_only=False))
    (result,) = response.topics
    assert result.error_code == ErrorCode.none, result
    return result.topic_id


async def produce(client, topic: str, partition: int, values: list[bytes], acks: int = -1,
                  timestamp_ms: int | None = None):
    b = req(0, 9)
    response = await client.request(b.ProduceRequest(
        transactional_id=None, acks=acks, timeout=TIMEOUT,
        topic_data=(b.TopicProduceData(name=topic, partition_data=(
            b.PartitionProduceData(index=partition, records=value_batch(values, timestamp_ms)),)),)))
    return response.responses[0].partition_responses[0]


async def fetch(client, topic: str, partition: int, offset: int):
    b = req(1, 12)
    response = await client.request(b.FetchRequest(
        max_wait=datetime.timedelta(0), min_bytes=0, max_bytes=1 << 20, isolation_level=0,
        topics=(b.FetchTopic(topic=topic, partitions=(
            b.FetchPartition(partition=partition, fetch_offset=offset, partition_max_bytes=1 << 20),)),),
        forgotten_topics_data=()))
    return response.responses[0].partitions[0]


async def describe_configs(client, version: int, resource_type: int, name: str, keys=None,
                           synonyms: bool = True, documentation: bool = False):
    b = req(32, version)
    response = await client.request(b.DescribeConfigsRequest(
        resources=(b.DescribeConfigsResource(resource_type=resource_type, resource_name=name,
                                             configuration_keys=keys),),
        include_synonyms=synonyms, include_documentation=documentation))
    (result,) = response.results
    return result


def by_name(result) -> dict:
    return {c.name: c for c in result.configs}


async def incremental_alter(client, version: int, resource_type: int, name: str, ops, validate_only=False):
    b = req(44, version)
    response = await client.request(b.IncrementalAlterConfigsRequest(
        resources=(b.AlterConfigsResource(resource_type=resource_type, resource_name=name, configs=tuple(
            b.AlterableConfig(name=k, config_operation=op, value=v) for k, op, v in ops)),),
        validate_only=validate_only))
    (result,) = response.responses
    return result


async def alter_configs(client, version: int, resource_type: int, name: str, configs: dict, validate_only=False):
    b = req(33, version)
    response = await client.request(b.AlterConfigsRequest(
        resources=(b.AlterConfigsResource(resource_type=resource_type, resource_name=name, configs=tuple(
            b.AlterableConfig(name=k, value=v) for k, v in configs.items())),),
        validate_only=validate_only))
    (result,) = response.responses
    return result


def partition_count(running_broker, topic: str) -> int:
    return len(running_broker.broker.image.topic(topic).partitions)


# -- DeleteTopics -------------------------------------------------------------------------------

@pytest.mark.parametrize("version", [1, 5, 6])
async def test_delete_topics_by_name(running_broker, version):
    client = await running_broker.client()
    topic_id = await create_topic(client, "doomed", partitions=2)
    await produce(client, "doomed", 0, [b"x"])
    b = req(20, version)
    if version >= 6:
        request = b.DeleteTopicsRequest(topics=(b.DeleteTopicState(name="doomed", topic_id=None),
                                                b.DeleteTopicState(name="missing", topic_id=None)), timeout=TIMEOUT)
    else:
        request = b.DeleteTopicsRequest(topic_names=("doomed", "missing"), timeout=TIMEOUT)
    response = await client.request(request)
    results = {r.name: r for r in response.responses}
    assert results["doomed"].error_code == ErrorCode.none
    assert results["missing"].error_code == ErrorCode.unknown_topic_or_partition
    if version >= 6:
        assert results["doomed"].topic_id == topic_id
    assert running_broker.broker.image.topic("doomed") is None
    assert not [key for key in running_broker.broker.replicas.partitions if key[0] == topic_id]
    # The name can be reused at once.
    await create_topic(client, "doomed")


async def test_delete_topics_by_id(running_broker):
    client = await running_broker.client()
    topic_id = await create_topic(client, "by-id")
    await create_topic(client, "other")
    unknown = uuid.uuid4()
    b = req(20, 6)
    response = await client.request(b.DeleteTopicsRequest(topics=(
        b.DeleteTopicState(name=None, topic_id=topic_id),
        b.DeleteTopicState(name=None, topic_id=unknown),
        b.DeleteTopicState(name="other", topic_id=topic_id),
        b.DeleteTopicState(name=None, topic_id=None),
    ), timeout=TIMEOUT))
    deleted, missing, both, neither = response.responses
    assert (deleted.name, deleted.topic_id, deleted.error_code) == ("by-id", topic_id, ErrorCode.none)
    assert (missing.name, missing.topic_id, missing.error_code) == (None, unknown, ErrorCode.unknown_topic_id)
    assert both.error_code == ErrorCode.invalid_request
    assert neither.error_code == ErrorCode.invalid_request
    assert running_broker.broker.image.topic("by-id") is None
    assert running_broker.broker.image.topic("other") is not None


async def test_delete_topics_duplicate_names(running_broker):
    client = await running_broker.client()
    await create_topic(client, "twice")
    b = req(20, 6)
    response = await client.request(b.DeleteTopicsRequest(topics=(
        b.DeleteTopicState(name="twice", topic_id=None), b.DeleteTopicState(name="twice", topic_id=None)),
        timeout=TIMEOUT))
    (result,) = response.responses
    assert (result.name, result.error_code) == ("twice", ErrorCode.invalid_request)
    assert running_broker.broker.image.topic("twice") is not None


# -- DeleteRecords --------------------------------------------------------------------------------

@pytest.mark.parametrize("version", [0, 2])
async def test_delete_records(running_broker, version):
    client = await running_broker.client()
    await create_topic(client, "trim", partitions=2)
    for i in range(3):  # batches at offsets 0-1, 2-3, 4-5
        assert (await produce(client, "trim", 0, [b"a%d" % i, b"b%d" % i])).error_code == ErrorCode.none
    b = req(21, version)

    async def delete(*entries, topic="trim"):
        response = await client.request(b.DeleteRecordsRequest(topics=(b.DeleteRecordsTopic(name=topic, partitions=tuple(
            b.DeleteRecordsPartition(partition_index=p, offset=o) for p, o in entries)),), timeout=TIMEOUT))
        return [(r.partition_index, r.error_code, r.low_watermark) for r in response.topics[0].partitions]

    assert await delete((0, 3)) == [(0, ErrorCode.none, 3)]
    # Below the new start: out of range; from the start: the batch holding offset 3.
    assert (await fetch(client, "trim", 0, 1)).error_code == ErrorCode.offset_out_of_range
    at_start = await fetch(client, "trim", 0, 3)
    assert at_start.error_code == ErrorCode.none and at_start.log_start_offset == 3 and at_start.records
    # Asking for less than the current start changes nothing and answers the current start.
    assert await delete((0, 1)) == [(0, ErrorCode.none, 3)]
    assert await delete((0, 7)) == [(0, ErrorCode.offset_out_of_range, -1)]
    assert await delete((0, -2)) == [(0, ErrorCode.offset_out_of_range, -1)]
    assert await delete((0, -1), (1, -1), (5, 0)) == [
        (0, ErrorCode.none, 6), (1, ErrorCode.none, 0), (5, ErrorCode.unknown_topic_or_partition, -1)]
    assert running_broker.broker.replicas.get(running_broker.broker.image.topic("trim").topic_id, 0).size_bytes == 0
    assert await delete((0, 0), topic="nope") == [(0, ErrorCode.unknown_topic_or_partition, -1)]
    # Appends continue after the trimmed end.
    assert (await produce(client, "trim", 0, [b"c"])).base_offset == 6


async def test_delete_records_refused_on_compacted_topic(running_broker):
    client = await running_broker.client()
    await create_topic(client, "compacted", configs={"cleanup.policy": "compact"})
    await produce(client, "compacted", 0, [b"x"])
    b = req(21, 2)
    response = await client.request(b.DeleteRecordsRequest(topics=(b.DeleteRecordsTopic(name="compacted", partitions=(
        b.DeleteRecordsPartition(partition_index=0, offset=1),)),), timeout=TIMEOUT))
    assert response.topics[0].partitions[0].error_code == ErrorCode.policy_violation


# -- DescribeConfigs ----------------------------------------------------------------------------------

@pytest.mark.parametrize("version", [1, 4])
async def test_describe_topic_configs_sources_and_synonyms(running_broker, version):
    client = await running_broker.client()
    await create_topic(client, "cfg")
    result = await describe_configs(client, version, TOPIC, "cfg")
    assert result.error_code == ErrorCode.none and result.resource_name == "cfg"
    configs = by_name(result)
    assert set(configs) == {key for key, d in TOPIC_CONFIGS.items() if not d.internal}
    retention = configs["retention.ms"]
    assert (retention.value, retention.config_source) == ("604800000", DEFAULT_SOURCE)
    assert [(s.name, s.value, s.source) for s in retention.synonyms] == [("log.retention.hours", "168", DEFAULT_SOURCE)]
    if version >= 3:
        assert retention.config_type == 5  # LONG
        assert configs["cleanup.policy"].config_type == 7  # LIST

    assert (await incremental_alter(client, 1, TOPIC, "cfg", [("retention.ms", SET, "1000")])).error_code == ErrorCode.none
    retention = by_name(await describe_configs(client, version, TOPIC, "cfg", keys=("retention.ms",)))["retention.ms"]
    assert (retention.value, retention.config_source, retention.read_only) == ("1000", TOPIC_SOURCE, False)
    assert [(s.name, s.value, s.source) for s in retention.synonyms] == [
        ("retention.ms", "1000", TOPIC_SOURCE), ("log.retention.hours", "168", DEFAULT_SOURCE)]

    assert (await incremental_alter(client, 0, TOPIC, "cfg", [("retention.ms", DELETE, None)])).error_code == ErrorCode.none
    retention = by_name(await describe_configs(client, version, TOPIC, "cfg", keys=("retention.ms",)))["retention.ms"]
    assert (retention.value, retention.config_source) == ("604800000", DEFAULT_SOURCE)
    assert [s.name for s in retention.synonyms] == ["log.retention.hours"]

    # Without synonyms; key filter drops unknown keys silently.
    result = await describe_configs(client, version, TOPIC, "cfg", keys=("retention.ms", "no.such.key"), synonyms=False)
    assert [c.name for c in result.configs] == ["retention.ms"] and result.configs[0].synonyms == ()


async def test_describe_configs_reports_accepted_kafka_configs_with_kafka_defaults(running_broker, caplog):
    client = await running_broker.client()
    await create_topic(client, "kafka-names")
    broker_configs = by_name(await describe_configs(client, 4, BROKER, str(running_broker.broker.node_id)))
    for key, value in (("num.io.threads", "8"), ("num.network.threads", "3"), ("socket.send.buffer.bytes", "102400"),
                       ("log.retention.check.interval.ms", "300000"), ("log.cleaner.min.cleanable.ratio", "0.5")):
        assert (broker_configs[key].value, broker_configs[key].config_source) == (value, DEFAULT_SOURCE), key
    assert "internal.metadata.log.segment.bytes" not in broker_configs  # Kafka's internal configs: only when set
    topic_configs = by_name(await describe_configs(client, 4, TOPIC, "kafka-names"))
    ratio = topic_configs["min.cleanable.dirty.ratio"]
    assert (ratio.value, ratio.config_source) == ("0.5", DEFAULT_SOURCE)
    assert [(s.name, s.value) for s in ratio.synonyms] == [("log.cleaner.min.cleanable.ratio", "0.5")]
    for key, value in (("segment.index.bytes", "10485760"), ("preallocate", "false"), ("index.interval.bytes", "4096"),
                       ("file.delete.delay.ms", "60000"), ("segment.jitter.ms", "0")):
        assert topic_configs[key].value == value, key
    # Settable like any topic config (the broker log says it has no effect here), validated by Kafka's type.
    with caplog.at_level(logging.WARNING, logger="lodestream.broker.broker"):
        ok = await incremental_alter(client, 1, TOPIC, "kafka-names", [("segment.jitter.ms", SET, "10")])
    assert ok.error_code == ErrorCode.none
    assert "topic kafka-names: accepted with no effect here: segment.jitter.ms" in caplog.text
    bad = await incremental_alter(client, 1, TOPIC, "kafka-names", [("preallocate", SET, "maybe")])
    assert bad.error_code == ErrorCode.invalid_config and "preallocate" in bad.error_message


async def test_describe_configs_documentation_and_empty_key_list(running_broker):
    client = await running_broker.client()
    result = await describe_configs(client, 4, BROKER, str(running_broker.broker.node_id), keys=(), documentation=True)
    configs = by_name(result)
    assert "num.partitions" in configs and configs["num.partitions"].documentation
    result = await describe_configs(client, 4, BROKER, str(running_broker.broker.node_id), keys=("num.partitions",))
    assert result.configs[0].documentation is None


@pytest.mark.parametrize("version", [1, 4])
async def test_max_message_bytes_change_is_described_and_enforced(running_broker, version):
    client = await running_broker.client()
    await create_topic(client, "small")
    assert (await produce(client, "small", 0, [b"x" * 200])).error_code == ErrorCode.none
    result = await incremental_alter(client, 1, TOPIC, "small", [("max.message.bytes", SET, "100")])
    assert result.error_code == ErrorCode.none
    entry = by_name(await describe_configs(client, version, TOPIC, "small", keys=("max.message.bytes",)))["max.message.bytes"]
    assert (entry.value, entry.config_source) == ("100", TOPIC_SOURCE)
    assert (await produce(client, "small", 0, [b"x" * 200])).error_code != ErrorCode.none
    assert (await produce(client, "small", 0, [b"x"])).error_code == ErrorCode.none


async def test_min_insync_replicas_above_one_refuses_acks_all(running_broker):
    """As Kafka: acks=all needs min.insync.replicas replicas in sync, and a partition here has one."""
    client = await running_broker.client()
    await create_topic(client, "min-isr", configs={"min.insync.replicas": "2"})
    refused = await produce(client, "min-isr", 0, [b"x"])
    assert refused.error_code == ErrorCode.not_enough_replicas and "min.isr requirement of 2" in refused.error_message
    assert (await produce(client, "min-isr", 0, [b"x"], acks=1)).error_code == ErrorCode.none
    assert (await incremental_alter(client, 1, TOPIC, "min-isr", [("min.insync.replicas", SET, "1")])).error_code == 0
    assert (await produce(client, "min-isr", 0, [b"x"])).error_code == ErrorCode.none


async def test_message_timestamp_before_max_ms_is_enforced(running_broker):
    client = await running_broker.client()
    await create_topic(client, "old-records", configs={"message.timestamp.before.max.ms": "60000"})
    old = await produce(client, "old-records", 0, [b"x"], timestamp_ms=int(time.time() * 1000) - 3_600_000)
    assert old.error_code == ErrorCode.invalid_timestamp and "in the past" in old.error_message
    assert (await produce(client, "old-records", 0, [b"x"])).error_code == ErrorCode.none


@pytest.mark.parametrize("version", [1, 4])
async def test_describe_broker_configs(running_broker, version):
    client = await running_broker.client()
    node = str(running_broker.broker.node_id)
    configs = by_name(await describe_configs(client, version, BROKER, node))
    assert "broker.id" not in configs and "log.dir" not in configs
    assert set(configs) == {key for key, d in BROKER_CONFIGS.items() if not d.internal} - {"broker.id", "log.dir"}
    assert configs["listeners"].config_source == STATIC_SOURCE and configs["listeners"].read_only
    assert (configs["num.partitions"].value, configs["num.partitions"].config_source) == ("1", DEFAULT_SOURCE)
    assert configs["num.partitions"].read_only  # Kafka's update modes: read-only
    assert not configs["message.max.bytes"].read_only  # cluster-wide
    assert configs["log.retention.ms"].value is None
    # log.retention.hours: only its own entries, the more specific ms/minutes synonyms are dropped.
    assert [s.name for s in configs["log.retention.hours"].synonyms] == ["log.retention.hours"]

    # Cluster-wide default: empty until set, then listed alone; the per-broker view shows the chain.
    assert (await describe_configs(client, version, BROKER, "")).configs == ()
    assert (await incremental_alter(client, 1, BROKER, "", [("message.max.bytes", SET, "300000")])).error_code == ErrorCode.none
    (default_entry,) = (await describe_configs(client, version, BROKER, "")).configs
    assert (default_entry.name, default_entry.value, default_entry.config_source) == ("message.max.bytes", "300000", DEFAULT_BROKER_SOURCE)
    assert [(s.name, s.value, s.source) for s in default_entry.synonyms] == [("message.max.bytes", "300000", DEFAULT_BROKER_SOURCE)]
    entry = by_name(await describe_configs(client, version, BROKER, node, keys=("message.max.bytes",)))["message.max.bytes"]
    assert (entry.value, entry.config_source) == ("300000", DEFAULT_BROKER_SOURCE)
    assert [(s.name, s.value, s.source) for s in entry.synonyms] == [
        ("message.max.bytes", "300000", DEFAULT_BROKER_SOURCE), ("message.max.bytes", "1048588", DEFAULT_SOURCE)]
    # Per-broker override wins.
    assert (await incremental_alter(client, 0, BROKER, node, [("message.max.bytes", SET, "400000")])).error_code == ErrorCode.none
    entry = by_name(await describe_configs(client, version, BROKER, node, keys=("message.max.bytes",)))["message.max.bytes"]
    assert (entry.value, entry.config_source) == ("400000", BROKER_SOURCE)
    assert running_broker.broker.broker_config_value("message.max.bytes") == 400000


@pytest.mark.parametrize("version", [1, 4])
async def test_describe_configs_errors(running_broker, version):
    client = await running_broker.client()
    node = running_broker.broker.node_id
    missing = await describe_configs(client, version, TOPIC, "missing")
    assert (missing.error_code, missing.error_message, missing.configs) == (ErrorCode.unknown_topic_or_partition, None, ())
    bad_name = await describe_configs(client, version, TOPIC, "bad/name")
    assert bad_name.error_code == ErrorCode.invalid_topic_exception
    other = await describe_configs(client, version, BROKER, str(node + 6))
    assert other.error_code == ErrorCode.invalid_request
    assert other.error_message == f"Unexpected broker id, expected {node} or empty string, but received {node + 6}"
    assert (await describe_configs(client, version, BROKER, "abc")).error_code == ErrorCode.invalid_request
    loggers = await describe_configs(client, version, BROKER_LOGGER, str(node))
    assert (loggers.error_code, loggers.configs) == (ErrorCode.none, ())
    assert (await describe_configs(client, version, 99, "x")).error_code == ErrorCode.invalid_request


# -- AlterConfigs (legacy) --------------------------------------------------------------------------------

@pytest.mark.parametrize("version", [0, 2])
async def test_alter_configs_replaces_whole_set(running_broker, version):
    client = await running_broker.client()
    await create_topic(client, "legacy", configs={"retention.ms": "5000"})
    image = lambda: running_broker.broker.image.topic("legacy").configs  # noqa: E731

    result = await alter_configs(client, version, TOPIC, "legacy", {"max.message.bytes": "2000"}, validate_only=True)
    assert result.error_code == ErrorCode.none and dict(image()) == {"retention.ms": "5000"}
    result = await alter_configs(client, version, TOPIC, "legacy", {"max.message.bytes": "2000", "cleanup.policy": "compact"})
    assert (result.error_code, result.resource_name, result.resource_type) == (ErrorCode.none, "legacy", TOPIC)
    assert dict(image()) == {"max.message.bytes": "2000", "cleanup.policy": "compact"}
    configs = by_name(await describe_configs(client, 4, TOPIC, "legacy"))
    assert configs["retention.ms"].config_source == DEFAULT_SOURCE
    assert (configs["max.message.bytes"].value, configs["max.message.bytes"].config_source) == ("2000", TOPIC_SOURCE)

    bad = await alter_configs(client, version, TOPIC, "legacy", {"retention.ms": "soon"})
    assert bad.error_code == ErrorCode.invalid_config and "retention.ms" in bad.error_message
    unknown_key = await alter_configs(client, version, TOPIC, "legacy", {"no.such.config": "1"})
    assert unknown_key.error_code == ErrorCode.invalid_config
    assert (await alter_configs(client, version, TOPIC, "missing", {})).error_code == ErrorCode.unknown_topic_or_partition
    null = await alter_configs(client, version, TOPIC, "legacy", {"retention.ms": None})
    assert null.error_code == ErrorCode.invalid_request
    assert dict(image()) == {"max.message.bytes": "2000", "cleanup.policy": "compact"}


@pytest.mark.parametrize("version", [0, 2])
async def test_alter_configs_broker_and_request_errors(running_broker, version):
    client = await running_broker.client()
    node = running_broker.broker.node_id
    result = await alter_configs(client, version, BROKER, "", {"message.max.bytes": "200000"})
    assert result.error_code == ErrorCode.none
    assert running_broker.broker.broker_config_value("message.max.bytes") == 200000
    read_only = await alter_configs(client, version, BROKER, str(node), {"listeners": "PLAINTEXT://:1"})
    assert read_only.error_code == ErrorCode.invalid_request
    other = await alter_configs(client, version, BROKER, str(node + 1), {"num.partitions": "2"})
    assert other.error_code == ErrorCode.invalid_request
    assert (await alter_configs(client, version, BROKER_LOGGER, str(node), {})).error_code == ErrorCode.invalid_request
    # The same resource twice: both refused.
    b = req(33, version)
    resource = b.AlterConfigsResource(resource_type=BROKER, resource_name="", configs=())
    response = await client.request(b.AlterConfigsRequest(resources=(resource, resource), validate_only=False))
    assert [r.error_code for r in response.responses] == [ErrorCode.invalid_request] * 2
    assert running_broker.broker.broker_config_value("message.max.bytes") == 200000
    # Replacing the (now empty) set removes the cluster default again.
    assert (await alter_configs(client, version, BROKER, "", {})).error_code == ErrorCode.none
    assert running_broker.broker.broker_config_value("message.max.bytes") == 1048588
    # Kafka's update modes: num.partitions is read-only, listener settings are per broker only.
    static = await alter_configs(client, version, BROKER, "", {"num.partitions": "2"})
    assert static.error_code == ErrorCode.invalid_request and "num.partitions" in static.error_message
    per_broker = await alter_configs(client, version, BROKER, "", {"ssl.cipher.suites": "x"})
    assert per_broker.error_code == ErrorCode.invalid_request and "broker id must be specified" in per_broker.error_message


# -- IncrementalAlterConfigs -----------------------------------------------------------------------------

@pytest.mark.parametrize("version", [0, 1])
async def test_incremental_alter_configs_list_operations(running_broker, version):
    client = await running_broker.client()
    await create_topic(client, "inc")
    configs = lambda: dict(running_broker.broker.image.topic("inc").configs)  # noqa: E731

    assert (await incremental_alter(client, version, TOPIC, "inc", [("cleanup.policy", APPEND, "compact")])).error_code == ErrorCode.none
    assert configs() == {"cleanup.policy": "delete,compact"}
    assert (await incremental_alter(client, version, TOPIC, "inc", [("cleanup.policy", SUBTRACT, "delete")])).error_code == ErrorCode.none
    assert configs() == {"cleanup.policy": "compact"}
    not_list = await incremental_alter(client, version, TOPIC, "inc", [("retention.ms", APPEND, "5")])
    assert not_list.error_code == ErrorCode.invalid_config
    assert not_list.error_message == "Can't APPEND to key retention.ms because its type is not LIST."
    # All of a resource's operations or none.
    partial = await incremental_alter(client, version, TOPIC, "inc", [("retention.ms", SET, "5"), ("segment.ms", SET, "x")])
    assert partial.error_code == ErrorCode.invalid_config and configs() == {"cleanup.policy": "compact"}
    checked = await incremental_alter(client, version, TOPIC, "inc", [("retention.ms", SET, "5")], validate_only=True)
    assert checked.error_code == ErrorCode.none and configs() == {"cleanup.policy": "compact"}
    null = await incremental_alter(client, version, TOPIC, "inc", [("retention.ms", SET, None)])
    assert null.error_code == ErrorCode.invalid_request
    dup = await incremental_alter(client, version, TOPIC, "inc", [("retention.ms", SET, "1"), ("retention.ms", DELETE, None)])
    assert dup.error_code == ErrorCode.invalid_request
    assert (await incremental_alter(client, version, TOPIC, "inc", [("retention.ms", 9, "1")])).error_code == ErrorCode.invalid_request
    assert (await incremental_alter(client, version, TOPIC, "inc", [("no.such", SET, "1")])).error_code == ErrorCode.invalid_config
    missing = await incremental_alter(client, version, TOPIC, "missing", [("retention.ms", SET, "1")])
    assert missing.error_code == ErrorCode.unknown_topic_or_partition
    node = str(running_broker.broker.node_id)
    assert (await incremental_alter(client, version, BROKER_LOGGER, node, [("kafka", SET, "DEBUG")])).error_code == ErrorCode.invalid_config
    # Broker LIST config: the default ("delete") is the starting point.
    assert (await incremental_alter(client, version, BROKER, "", [("log.cleanup.policy", APPEND, "compact")])).error_code == ErrorCode.none
    assert running_broker.broker.image.broker_configs[""]["log.cleanup.policy"] == "delete,compact"


# -- CreatePartitions ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("version", [0, 3])
async def test_create_partitions(running_broker, version):
    client = await running_broker.client()
    await create_topic(client, "grow")
    node = running_broker.broker.node_id
    b = req(37, version)

    async def create(*topics, validate_only=False):
        response = await client.request(b.CreatePartitionsRequest(topics=tuple(
            b.CreatePartitionsTopic(name=name, count=count, assignments=None if assignments is None else tuple(
                b.CreatePartitionsAssignment(broker_ids=ids) for ids in assignments))
            for name, count, assignments in topics), timeout=TIMEOUT, validate_only=validate_only))
        return [(r.name, r.error_code) for r in response.results]

    assert await create(("grow", 4, None), validate_only=True) == [("grow", ErrorCode.none)]
    assert partition_count(running_broker, "grow") == 1
    assert await create(("grow", 3, None)) == [("grow", ErrorCode.none)]
    assert partition_count(running_broker, "grow") == 3
    assert (await produce(client, "grow", 2, [b"new"])).error_code == ErrorCode.none
    assert await create(("grow", 5, [[node], [node]])) == [("grow", ErrorCode.none)]
    assert partition_count(running_broker, "grow") == 5
    assert await create(("grow", 5, None), ("grow2", 2, None)) == [
        ("grow", ErrorCode.invalid_partitions), ("grow2", ErrorCode.unknown_topic_or_partition)]
    assert await create(("grow", 2, None)) == [("grow", ErrorCode.invalid_partitions)]
    assert await create(("grow", 7, [[node]])) == [("grow", ErrorCode.invalid_replica_assignment)]
    assert await create(("grow", 6, [[node + 1]])) == [("grow", ErrorCode.invalid_replica_assignment)]
    assert await create(("grow", 6, None), ("grow", 7, None)) == [("grow", ErrorCode.invalid_request)]
    assert partition_count(running_broker, "grow") == 5


# -- DescribeCluster ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("version", [0, 1, 2])
async def test_describe_cluster(running_broker, version):
    client = await running_broker.client()
    broker = running_broker.broker
    b = req(60, version)
    fields = {"include_cluster_authorized_operations": False, "endpoint_type": 1, "include_fenced_brokers": True}
    response = await client.request(b.DescribeClusterRequest(**fields))
    assert response.error_code == ErrorCode.none
    assert response.cluster_id == broker.cluster_id and response.cluster_id
    assert response.controller_id == broker.node_id
    (node,) = response.brokers
    assert (node.broker_id, node.host, node.port) == (broker.node_id, "127.0.0.1", running_broker.port)
    assert response.cluster_authorized_operations == -2147483648
    response = await client.request(b.DescribeClusterRequest(**{**fields, "include_cluster_authorized_operations": True}))
    ops = response.cluster_authorized_operations
    assert ops > 0 and ops & (1 << 8) and ops & (1 << 11)  # DESCRIBE, ALTER_CONFIGS
    if version >= 1:
        assert response.endpoint_type == 1
        wrong = await client.request(b.DescribeClusterRequest(**{**fields, "endpoint_type": 2}))
        assert wrong.error_code == ErrorCode.mismatched_endpoint_type and wrong.brokers == ()


# -- DescribeLogDirs ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("version", [1, 4])
async def test_describe_log_dirs(running_broker, version):
    client = await running_broker.client()
    await create_topic(client, "sized", partitions=2)
    await create_topic(client, "empty")
    await produce(client, "sized", 1, [b"x" * 100, b"y" * 100])
    b = req(35, version)
    response = await client.request(b.DescribeLogDirsRequest(topics=None))
    (log_dir,) = response.results
    assert log_dir.error_code == ErrorCode.none
    assert log_dir.log_dir == str(running_broker.broker.data_dir.resolve() / "log")
    sizes = {(t.name, p.partition_index): p.partition_size for t in log_dir.topics for p in t.partitions}
    assert sizes[("sized", 0)] == 0 and sizes[("sized", 1)] > 200 and sizes[("empty", 0)] == 0
    assert all(not p.is_future_key and p.offset_lag == 0 for t in log_dir.topics for p in t.partitions)
    if version >= 4:
        assert log_dir.total_bytes > 0 and 0 <= log_dir.usable_bytes <= log_dir.total_bytes

    response = await client.request(b.DescribeLogDirsRequest(topics=(
        b.DescribableLogDirTopic(topic="sized", partitions=(1, 7)), b.DescribableLogDirTopic(topic="nope", partitions=(0,)))))
    (log_dir,) = response.results
    assert [(t.name, [p.partition_index for p in t.partitions]) for t in log_dir.topics] == [("sized", [1])]


# -- a real client --------------------------------------------------------------------------------------------

def _confluent_admin_round_trip(bootstrap: str, node_id: int) -> dict:
    from confluent_kafka import Producer, TopicPartition
    from confluent_kafka.admin import (
        AdminClient,
        AlterConfigOpType,
        ConfigEntry,
        ConfigResource,
        NewPartitions,
        NewTopic,
        ResourceType,
    )

    wait = 30
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topic = "ck-admin"
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(wait)
    seen: dict = {}

    cluster = admin.describe_cluster(request_timeout=wait).result(wait)
    seen["cluster"] = (cluster.cluster_id, [(n.id, n.host, n.port) for n in cluster.nodes], cluster.controller.id)

    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("retention.ms", "1000", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.APPEND)])
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(wait)
    (future,) = admin.describe_configs([ConfigResource(ResourceType.TOPIC, topic)]).values()
    entries = future.result(wait)
    seen["retention.ms"] = (entries["retention.ms"].value, entries["retention.ms"].source)
    seen["cleanup.policy"] = entries["cleanup.policy"].value
    (future,) = admin.describe_configs([ConfigResource(ResourceType.BROKER, str(node_id))]).values()
    seen["broker.listeners"] = future.result(wait)["listeners"].source

    admin.create_partitions([NewPartitions(topic, 3)])[topic].result(wait)
    metadata = admin.list_topics(topic, timeout=wait)
    seen["partitions"] = len(metadata.topics[topic].partitions)

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for i in range(5):
        producer.produce(topic, key=b"k%d" % i, value=b"v%d" % i, partition=0)  # compacted: keys needed
    assert producer.flush(wait) == 0
    (future,) = admin.delete_records([TopicPartition(topic, 0, 3)], request_timeout=wait).values()
    seen["low_watermark"] = future.result(wait).low_watermark

    admin.delete_topics([topic])[topic].result(wait)
    seen["after_delete"] = topic in admin.list_topics(timeout=wait).topics
    return seen


async def test_confluent_kafka_admin_client(running_broker):
    from confluent_kafka.admin import ConfigSource

    broker = running_broker.broker
    # Every librdkafka call inside is bounded by its own timeout (future.result(wait)).
    seen = await trio.to_thread.run_sync(_confluent_admin_round_trip, f"127.0.0.1:{running_broker.port}", broker.node_id)
    assert seen["cluster"] == (broker.cluster_id, [(broker.node_id, "127.0.0.1", running_broker.port)], broker.node_id)
    assert seen["retention.ms"] == ("1000", ConfigSource.DYNAMIC_TOPIC_CONFIG.value)
    assert seen["cleanup.policy"] == "delete,compact"
    assert seen["broker.listeners"] == ConfigSource.STATIC_BROKER_CONFIG.value
    assert seen["partitions"] == 3
    assert seen["low_watermark"] == 3
    assert seen["after_delete"] is False
