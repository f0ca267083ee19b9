"""Prometheus metrics: after producing and consuming over the wire, /metrics parses
with prometheus-client's parser and the byte, message, request, latency, log and
lag series have the expected values."""

from __future__ import annotations

import datetime

import pytest
import trio
import trio.testing
from prometheus_client.parser import text_string_to_metric_families

from lodestream.admin.metrics import render_metrics
from lodestream.broker.metrics import BrokerMetrics, api_name
from lodestream.protocol.errors import ErrorCode
from lodestream.protocol.messages import request_builder
from record_batches import value_batch

PRODUCE, FETCH, METADATA, OFFSET_COMMIT, CREATE_TOPICS, API_VERSIONS = 0, 1, 3, 8, 19, 18
TIMEOUT = datetime.timedelta(seconds=10)


# -- helpers ------------------------------------------------------------------------------------

def samples(broker) -> dict[tuple[str, frozenset], float]:
    """Render /metrics and parse it back: {(sample name, labels): value}."""
    body, content_type = render_metrics(broker)
    assert content_type.startswith("text/plain; version=")
    parsed = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            parsed[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return parsed


def value(parsed, name: str, **labels) -> float | None:
    return parsed.get((name, frozenset(labels.items())))


async def settled(broker):
    """Responses are counted right after they are written: let the writer tasks finish."""
    await trio.testing.wait_all_tasks_blocked()
    return samples(broker)


async def create_topic(client, name: str, partitions: int) -> None:
    b = request_builder(CREATE_TOPICS, 7)
    response = await client.request(b.CreateTopicsRequest(
        topics=(b.CreatableTopic(name=name, num_partitions=partitions, replication_factor=1, assignments=(),
                                 configs=()),),
        timeout=TIMEOUT, validate_only=False))
    assert response.topics[0].error_code == ErrorCode.none


async def produce(client, topic: str, partition: int, batch: bytes, acks: int = -1):
    b = request_builder(PRODUCE, 9)
    response = await client.request(b.ProduceRequest(
        transactional_id=None, acks=acks, timeout=TIMEOUT,
        topic_data=(b.TopicProduceData(name=topic, partition_data=(
            b.PartitionProduceData(index=partition, records=batch),)),)))
    return response.responses[0].partition_responses[0]


async def fetch(client, topic: str, offsets: dict[int, int]):
    b = request_builder(FETCH, 12)
    response = await client.request(b.FetchRequest(
        replica_id=-1, max_wait=datetime.timedelta(0), min_bytes=0, max_bytes=50 << 20, isolation_level=0,
        session_id=0, session_epoch=-1,
        topics=(b.FetchTopic(topic=topic, partitions=tuple(
            b.FetchPartition(partition=p, fetch_offset=o, partition_max_bytes=10 << 20) for p, o in offsets.items())),),
        forgotten_topics_data=(), rack_id=""))
    assert response.error_code == ErrorCode.none
    return {p.partition_index: p for p in response.responses[0].partitions}


# -- the end-to-end check ------------------------------------------------------------------------

async def test_produce_and_consume_show_up_in_metrics(running_broker):
    broker = running_broker.broker
    client = await running_broker.client()
    await create_topic(client, "metered", partitions=2)

    # Known batches: 3 x 5 records to partition 0, 2 x 4 records to partition 1, values of distinct sizes.
    sent = {0: [value_batch([b"a" * (10 * i + j) for j in range(5)]) for i in range(1, 4)],
            1: [value_batch([b"b" * (100 + i + j) for j in range(4)]) for i in range(2)]}
    for partition, batches in sent.items():
        for batch in batches:
            assert (await produce(client, "metered", partition, batch)).error_code == ErrorCode.none
    assert (await produce(client, "no-such-topic", 0, sent[0][0])).error_code == ErrorCode.unknown_topic_or_partition
    bytes_in = sum(len(batch) for batches in sent.values() for batch in batches)
    messages = 3 * 5 + 2 * 4

    fetched = await fetch(client, "metered", {0: 0, 1: 0})
    bytes_out = sum(len(fetched[p].records) for p in (0, 1))
    assert bytes_out == bytes_in  # stored batches differ only in patched header fields

    m = await settled(broker)
    # bytes and messages in/out per topic
    assert value(m, "lodestream_topic_bytes_in_total", topic="metered") == bytes_in
    assert value(m, "lodestream_topic_messages_in_total", topic="metered") == messages
    assert value(m, "lodestream_topic_bytes_out_total", topic="metered") == bytes_out
    assert value(m, "lodestream_topic_bytes_in_total", topic="no-such-topic") is None
    # requests by API and version, errors by code
    assert value(m, "lodestream_requests_total", request="Produce", version="9") == 6
    assert value(m, "lodestream_requests_total", request="Fetch", version="12") == 1
    assert value(m, "lodestream_requests_total", request="CreateTopics", version="7") == 1
    assert value(m, "lodestream_request_errors_total", request="Produce", error="NONE") == 5
    assert value(m, "lodestream_request_errors_total", request="Produce", error="UNKNOWN_TOPIC_OR_PARTITION") == 1
    assert value(m, "lodestream_request_errors_total", request="Fetch", error="NONE") == 3  # top level + 2 partitions
    # latency histograms: one observation per request in each of queue/local/throttle/total
    for part in ("queue", "local", "throttle", "total"):
        name = f"lodestream_request_{part}_time_seconds"
        assert value(m, f"{name}_count", request="Produce") == 6, name
        assert value(m, f"{name}_bucket", request="Produce", le="+Inf") == 6, name
    assert value(m, "lodestream_request_throttle_time_seconds_sum", request="Produce") == 0
    total = value(m, "lodestream_request_total_time_seconds_sum", request="Produce")
    local = value(m, "lodestream_request_local_time_seconds_sum", request="Produce")
    queue = value(m, "lodestream_request_queue_time_seconds_sum", request="Produce")
    assert 0 < local <= total and 0 <= queue <= total
    # log state per partition, partition counts
    assert value(m, "lodestream_log_end_offset", topic="metered", partition="0") == 15
    assert value(m, "lodestream_log_end_offset", topic="metered", partition="1") == 8
    assert value(m, "lodestream_log_start_offset", topic="metered", partition="0") == 0
    assert value(m, "lodestream_log_size_bytes", topic="metered", partition="0") == sum(map(len, sent[0]))
    assert value(m, "lodestream_log_size_bytes", topic="metered", partition="1") == sum(map(len, sent[1]))
    assert value(m, "lodestream_partitions") == 2
    assert value(m, "lodestream_under_replicated_partitions") == 0
    assert value(m, "lodestream_offline_partitions") == 0
    # group commit: one LevelDB write per group, synced by default
    assert value(m, "lodestream_log_write_seconds_count", synced="true") >= 1
    assert value(m, "lodestream_log_write_seconds_count", synced="false") == 0
    # connections and the request pool
    assert value(m, "lodestream_connections") == 1
    assert value(m, "lodestream_connections_created_total") == 1
    assert value(m, "lodestream_request_pool_used_bytes") == 0
    assert value(m, "lodestream_requests_in_flight") == 0

    await client.aclose()
    m = await settled(broker)
    assert value(m, "lodestream_connections") == 0
    assert value(m, "lodestream_connections_closed_total") == 1


async def test_consumer_lag_per_group_and_partition(running_broker):
    broker = running_broker.broker
    client = await running_broker.client()
    await create_topic(client, "lagging", partitions=2)
    await produce(client, "lagging", 0, value_batch([b"x"] * 10))
    await produce(client, "lagging", 1, value_batch([b"y"] * 4))
    b = request_builder(OFFSET_COMMIT, 8)
    response = await client.request(b.OffsetCommitRequest(
        group_id="lag-group", generation_id_or_member_epoch=-1, member_id="", group_instance_id=None,
        topics=(b.OffsetCommitRequestTopic(name="lagging", partitions=(
            b.OffsetCommitRequestPartition(partition_index=0, committed_offset=7, committed_leader_epoch=-1,
                                           committed_metadata=None),
            b.OffsetCommitRequestPartition(partition_index=1, committed_offset=4, committed_leader_epoch=-1,
                                           committed_metadata=None))),)))
    assert all(p.error_code == ErrorCode.none for t in response.topics for p in t.partitions)
    m = await settled(broker)
    assert value(m, "lodestream_consumer_group_committed_offset", group="lag-group", topic="lagging", partition="0") == 7
    assert value(m, "lodestream_consumer_group_lag", group="lag-group", topic="lagging", partition="0") == 3
    assert value(m, "lodestream_consumer_group_lag", group="lag-group", topic="lagging", partition="1") == 0
    assert sum(v for (name, labels), v in m.items() if name == "lodestream_consumer_groups") >= 1
    await client.aclose()


async def test_acks_zero_and_api_versions_are_counted(running_broker):
    broker = running_broker.broker
    client = await running_broker.client()
    await create_topic(client, "quiet", partitions=1)
    b = request_builder(PRODUCE, 9)
    await client.send_raw(_encode(b.ProduceRequest(
        transactional_id=None, acks=0, timeout=TIMEOUT,
        topic_data=(b.TopicProduceData(name="quiet", partition_data=(
            b.PartitionProduceData(index=0, records=value_batch([b"z"] * 3)),)),))))
    await client.request(request_builder(API_VERSIONS, 3).ApiVersionsRequest(
        client_software_name="metrics-test", client_software_version="1"))
    with trio.fail_after(5):
        while value(await settled(broker), "lodestream_topic_messages_in_total", topic="quiet") != 3:
            await trio.sleep(0.01)
    m = await settled(broker)
    assert value(m, "lodestream_requests_total", request="Produce", version="9") == 1  # no response, still counted
    assert value(m, "lodestream_requests_total", request="ApiVersions", version="3") == 1
    assert value(m, "lodestream_request_errors_total", request="ApiVersions", error="NONE") == 1
    await client.aclose()


def _encode(body) -> bytes:
    from lodestream.protocol.codec import encode_request

    return encode_request(999, body)


async def test_two_brokers_in_one_process_have_separate_registries(tmp_path):
    from inprocess_broker import start_broker

    async with trio.open_nursery() as nursery:
        first = await start_broker(nursery, tmp_path / "one")
        second = await start_broker(nursery, tmp_path / "two")
        client = await first.client()
        await create_topic(client, "only-on-first", partitions=1)
        await produce(client, "only-on-first", 0, value_batch([b"v"]))
        await client.aclose()
        one, two = await settled(first.broker), await settled(second.broker)
        assert value(one, "lodestream_topic_messages_in_total", topic="only-on-first") == 1
        assert value(two, "lodestream_topic_messages_in_total", topic="only-on-first") is None
        assert value(two, "lodestream_requests_total", request="Produce", version="9") is None
        nursery.cancel_scope.cancel()
    first.broker.close()
    second.broker.close()


async def test_deleted_topic_series_disappear(running_broker):
    broker = running_broker.broker
    client = await running_broker.client()
    await create_topic(client, "short-lived", partitions=1)
    await produce(client, "short-lived", 0, value_batch([b"v"] * 2))
    await fetch(client, "short-lived", {0: 0})
    m = await settled(broker)
    assert value(m, "lodestream_topic_bytes_in_total", topic="short-lived") > 0
    await broker.delete_topic(broker.image.topic("short-lived"))
    m = await settled(broker)
    assert not [key for key in m if ("topic", "short-lived") in key[1]]
    await client.aclose()


# -- units ----------------------------------------------------------------------------------------

def test_api_names_are_kafkas():
    assert [api_name(k) for k in (0, 1, 2, 3, 18, 19, 32, 44)] == [
        "Produce", "Fetch", "ListOffsets", "Metadata", "ApiVersions", "CreateTopics", "DescribeConfigs",
        "IncrementalAlterConfigs"]


def test_registry_without_broker_has_only_event_series():
    metrics = BrokerMetrics()
    metrics.appended("t", 100, 4)
    metrics.log_written(0.002, True)
    parsed = {}
    from prometheus_client import generate_latest

    for family in text_string_to_metric_families(generate_latest(metrics.registry).decode()):
        for sample in family.samples:
            parsed[(sample.name, frozenset(sample.labels.items()))] = sample.value
    assert value(parsed, "lodestream_topic_bytes_in_total", topic="t") == 100
    assert value(parsed, "lodestream_topic_messages_in_total", topic="t") == 4
    assert value(parsed, "lodestream_log_write_seconds_count", synced="true") == 1


async def test_process_metrics_come_from_prometheus_clients_collectors(running_broker):
    """CPU, memory, open files and start time of the process, on every broker's registry (two brokers in one
    process each have their own registry: both show them)."""
    parsed = samples(running_broker.broker)
    assert value(parsed, "process_resident_memory_bytes") > 10 * 2**20
    assert value(parsed, "process_cpu_seconds_total") > 0
    assert value(parsed, "process_open_fds") >= 3
    assert value(parsed, "process_start_time_seconds") > 1.6e9
    assert any(name == "python_info" for name, _ in parsed)
    other = BrokerMetrics()
    from prometheus_client import generate_latest
    assert b"process_resident_memory_bytes" in generate_latest(other.registry)


# -- over HTTP, with a real client ----------------------------------------------------------------------

def test_rest_metrics_after_confluent_kafka_produce_and_consume(tmp_path):
    """`lodestream serve` with the REST API; confluent-kafka produces and consumes, commits for a
    group; GET /metrics parses and the byte, message, request and lag series match."""
    import json
    import time

    import httpx
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    from broker_process import BrokerProcess

    process = BrokerProcess(tmp_path, {"admin.listeners": "http://127.0.0.1:0"})
    process.start()
    try:
        listeners = json.loads(process.ready_path.read_text())["listeners"]
        url = listeners["ADMIN"].split(",")[0]
        url = url if "://" in url else f"http://{url}"
        admin = AdminClient({"bootstrap.servers": process.bootstrap})
        admin.create_topics([NewTopic("rest-metered", 2, 1)])["rest-metered"].result(30)

        count = 200
        producer = Producer({"bootstrap.servers": process.bootstrap, "linger.ms": 5, "acks": "all"})
        for i in range(count):
            producer.produce("rest-metered", b"x" * (50 + i % 7), partition=i % 2)
        assert producer.flush(30) == 0

        consumer = Consumer({"bootstrap.servers": process.bootstrap, "group.id": "rest-metrics-group",
                             "enable.auto.commit": False})
        consumer.assign([TopicPartition("rest-metered", p, 0) for p in (0, 1)])
        received, deadline = 0, time.monotonic() + 30
        while received < count and time.monotonic() < deadline:
            received += sum(1 for m in consumer.consume(500, 1.0) if m.error() is None)
        assert received == count
        consumer.commit(offsets=[TopicPartition("rest-metered", 0, 60), TopicPartition("rest-metered", 1, 100)],
                        asynchronous=False)
        consumer.close()

        def scrape() -> dict:
            response = httpx.get(f"{url}/metrics", timeout=10)
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/plain")
            parsed = {}
            for family in text_string_to_metric_families(response.text):
                for sample in family.samples:
                    parsed[(sample.name, frozenset(sample.labels.items()))] = sample.value
            return parsed

        deadline = time.monotonic() + 10  # responses are counted just after they are written
        while True:
            m = scrape()
            if value(m, "lodestream_consumer_group_lag", group="rest-metrics-group", topic="rest-metered",
                     partition="0") is not None or time.monotonic() > deadline:
                break
            time.sleep(0.05)

        log_bytes = sum(value(m, "lodestream_log_size_bytes", topic="rest-metered", partition=p) for p in ("0", "1"))
        assert value(m, "lodestream_topic_messages_in_total", topic="rest-metered") == count
        assert value(m, "lodestream_topic_bytes_in_total", topic="rest-metered") == log_bytes
        assert value(m, "lodestream_topic_bytes_out_total", topic="rest-metered") == log_bytes  # read once
        assert value(m, "lodestream_log_end_offset", topic="rest-metered", partition="0") == count // 2
        assert value(m, "lodestream_log_end_offset", topic="rest-metered", partition="1") == count // 2
        requests = {dict(labels)["request"]: v for (name, labels), v in m.items() if name == "lodestream_requests_total"}
        versions = {dict(labels)["request"] + dict(labels)["version"] for (name, labels), v in m.items()
                    if name == "lodestream_requests_total"}
        assert requests["Produce"] >= 1 and requests["Fetch"] >= 1 and requests["ApiVersions"] >= 1
        assert any(v.startswith("Produce") and int(v[len("Produce"):]) >= 3 for v in versions)
        assert value(m, "lodestream_consumer_group_committed_offset", group="rest-metrics-group",
                     topic="rest-metered", partition="0") == 60
        assert value(m, "lodestream_consumer_group_lag", group="rest-metrics-group", topic="rest-metered",
                     partition="0") == count // 2 - 60
        assert value(m, "lodestream_consumer_group_lag", group="rest-metrics-group", topic="rest-metered",
                     partition="1") == 0
        assert value(m, "lodestream_request_errors_total", request="Produce", error="NONE") >= 1
        assert value(m, "lodestream_request_total_time_seconds_count", request="Produce") == requests["Produce"]
        assert value(m, "lodestream_log_write_seconds_count", synced="true") >= 1
    finally:
        process.stop()
