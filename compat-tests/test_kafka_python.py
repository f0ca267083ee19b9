"""kafka-python against a real broker subprocess.

Per compression codec: CreateTopics through KafkaAdminClient, produce a share of
the ~10,000-message workload (keys, null keys, headers with duplicate keys,
empty / null / 1 MiB values, explicit + client-assigned timestamps), record the
offset and timestamp from every future, then assign + seek(0) and compare byte
for byte, offsets and timestamps included.

Codec coverage: kafka-python 3.x does *not* use cramjam; it needs the separate
``python-snappy``, ``lz4`` and ``zstandard`` packages for snappy / lz4 / zstd,
which the project's test extras install. Should one be missing, that codec is
reported as an explicit skip with the reason.

kafka-python's producer only accepts ``bytes`` header values, so this workload
has no null header values, and it refuses records with both key and value
null (ValueError "Need at least one: key or value"), so those become empty
values here (the other clients cover both).
"""

from __future__ import annotations

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka import codec as kp_codec
from kafka.errors import TopicAlreadyExistsError

from compat_util import (
    REPLICATION_FACTOR,
    ALL_CODECS,
    CLIENT_MAX_FETCH,
    CLIENT_MAX_REQUEST,
    TOTAL_MESSAGES,
    WORKLOAD_TOPIC_CONFIG,
    Deadline,
    Record,
    compare_records,
    generate_workload,
    unique_topic,
)

_HAS = {
    "none": lambda: True,
    "gzip": kp_codec.has_gzip,
    "snappy": kp_codec.has_snappy,
    "lz4": kp_codec.has_lz4,
    "zstd": kp_codec.has_zstd,
}
_LIB = {"snappy": "python-snappy", "lz4": "lz4", "zstd": "zstandard"}
SUPPORTED = [c for c in ALL_CODECS if _HAS[c]()]
PER_CODEC = TOTAL_MESSAGES // len(SUPPORTED)


def _admin(bootstrap: str) -> KafkaAdminClient:
    return KafkaAdminClient(bootstrap_servers=bootstrap, client_id="compat-kafka-python", request_timeout_ms=30000)


def _ts_type(t: int) -> str | None:
    return {0: "create", 1: "log_append"}.get(t)


@pytest.mark.parametrize("codec", ALL_CODECS)
def test_roundtrip(broker, codec):
    if codec not in SUPPORTED:
        pytest.skip(f"kafka-python cannot {codec}: the {_LIB[codec]!r} package is not installed "
                    "(kafka-python does not use cramjam)")
    topic = unique_topic(f"kp-{codec}")

    admin = _admin(broker.bootstrap)
    try:
        admin.create_topics(
            {topic: {"num_partitions": 1, "replication_factor": REPLICATION_FACTOR, "configs": WORKLOAD_TOPIC_CONFIG}},
            timeout_ms=30000,
            wait_for_metadata=True,
        )
        described = admin.describe_topics([topic])
        assert described[0]["error_code"] == 0, described
        assert [p["partition_index"] for p in described[0]["partitions"]] == [0]
    finally:
        admin.close()

    msgs = generate_workload(2000 + ALL_CODECS.index(codec), PER_CODEC, null_header_values=False,
                             null_key_and_value=False)

    producer = KafkaProducer(
        bootstrap_servers=broker.bootstrap,
        compression_type=None if codec == "none" else codec,
        acks="all",
        linger_ms=5,
        max_request_size=CLIENT_MAX_REQUEST,
        max_in_flight_requests_per_connection=1,
        request_timeout_ms=30000,
        # kafka-python 3.x defaults to the idempotent producer (KIP-679), which needs
        # InitProducerId; that default is exercised by test_default_idempotent_producer,
        # so that a missing InitProducerId does not mask the data-path checks here.
        enable_idempotence=False,
    )
    try:
        futures = [
            producer.send(
                topic, partition=0, key=m.key, value=m.value, headers=list(m.headers), timestamp_ms=m.timestamp
            )
            for m in msgs
        ]
        deadline = Deadline(60, f"kafka-python produce {codec}")
        producer.flush(timeout=deadline.remaining())
        delivered = []
        for m, f in zip(msgs, futures):
            md = f.get(timeout=max(0.1, deadline.remaining()))
            assert md.partition == 0
            if m.timestamp is not None:
                assert md.timestamp == m.timestamp, (md, m.timestamp)
            delivered.append(Record(md.offset, md.timestamp, m.key, m.value, m.headers, "create"))
    finally:
        producer.close(timeout=10)

    consumer = KafkaConsumer(
        bootstrap_servers=broker.bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="none",  # surface OFFSET_OUT_OF_RANGE instead of silently resetting
        max_partition_fetch_bytes=CLIENT_MAX_REQUEST,
        fetch_max_bytes=CLIENT_MAX_FETCH,
        request_timeout_ms=30000,
    )
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek(tp, 0)
        got = _consume(consumer, tp, len(delivered), Deadline(60, f"kafka-python consume {codec}"))
        compare_records(f"kafka-python codec={codec} topic={topic}", delivered, got)

        mid = len(delivered) // 2
        consumer.seek(tp, mid)
        window = [r for r in delivered if mid <= r.offset < mid + 50]
        got = _consume(consumer, tp, len(window), Deadline(30, "kafka-python consume after seek"))
        compare_records(f"kafka-python after seek to {mid}", window, got[: len(window)])

        assert consumer.beginning_offsets([tp], timeout_ms=10000) == {tp: 0}
        assert consumer.end_offsets([tp], timeout_ms=10000) == {tp: len(delivered)}
    finally:
        consumer.close()


def _consume(consumer: KafkaConsumer, tp: TopicPartition, n: int, deadline: Deadline) -> list[Record]:
    out: list[Record] = []
    while len(out) < n:
        deadline.check(f"(have {len(out)} of {n})")
        batches = consumer.poll(timeout_ms=int(min(1000, max(100, deadline.remaining() * 1000))), max_records=2000)
        for r in batches.get(tp, []):
            headers = tuple((k, v) for k, v in (r.headers or []))
            out.append(Record(r.offset, r.timestamp, r.key, r.value, headers, _ts_type(r.timestamp_type)))
    return out


def test_create_topic_already_exists(broker):
    topic = unique_topic("kp-dup")
    admin = _admin(broker.bootstrap)
    try:
        admin.create_topics({topic: {"num_partitions": 2, "replication_factor": REPLICATION_FACTOR}}, wait_for_metadata=True)
        with pytest.raises(TopicAlreadyExistsError):
            admin.create_topics({topic: {"num_partitions": 2, "replication_factor": REPLICATION_FACTOR}})
        assert topic in admin.list_topics()
    finally:
        admin.close()


def test_default_idempotent_producer(broker):
    """kafka-python >= 2.1 / 3.x enables idempotence by default (KIP-679): a producer with
    default settings first sends InitProducerId (API 22), then produces with a producer
    id, epoch and sequence numbers.  The broker must accept that and keep offsets dense."""
    topic = unique_topic("kp-idem")
    admin = _admin(broker.bootstrap)
    try:
        admin.create_topics({topic: {"num_partitions": 1, "replication_factor": REPLICATION_FACTOR}}, wait_for_metadata=True)
    finally:
        admin.close()
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, request_timeout_ms=30000)  # all defaults
    try:
        futures = [producer.send(topic, key=b"k%d" % i, value=b"v%d" % i, partition=0) for i in range(200)]
        producer.flush(timeout=30)
        offsets = [f.get(timeout=30).offset for f in futures]
    finally:
        producer.close(timeout=10)
    assert offsets == list(range(200))

    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, enable_auto_commit=False,
                             auto_offset_reset="none")
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek(tp, 0)
        got = _consume(consumer, tp, 200, Deadline(30, "kafka-python consume idempotent"))
        assert [(r.offset, r.key, r.value) for r in got] == [(i, b"k%d" % i, b"v%d" % i) for i in range(200)]
    finally:
        consumer.close()
