"""confluent-kafka (librdkafka) against a real broker subprocess.

Creates one single-partition topic per compression codec through the admin API
(CreateTopics), produces ~10,000 messages split over the codecs (keys, null keys,
empty/binary keys, headers with duplicate keys and null values, empty values,
null values, three 1 MiB values per codec, explicit and client-assigned
CreateTime timestamps), records each delivery report's offset and timestamp,
then reads everything back with assign + seek and compares byte for byte.
"""

from __future__ import annotations

import functools

import confluent_kafka
import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from compat_util import (
    REPLICATION_FACTOR,
    ALL_CODECS,
    TOTAL_MESSAGES,
    CLIENT_MAX_FETCH,
    CLIENT_MAX_REQUEST,
    WORKLOAD_TOPIC_CONFIG,
    Deadline,
    Record,
    ck_admin,
    ck_create_topics,
    ck_wait_for_leaders,
    compare_records,
    generate_workload,
    unique_topic,
)

# The confluent-kafka wheels bundle librdkafka built with every codec
# (builtin.features: gzip, snappy, lz4, zstd), so all five are exercised.
CODECS = list(ALL_CODECS)
PER_CODEC = TOTAL_MESSAGES // len(CODECS)
TS_CREATE = confluent_kafka.TIMESTAMP_CREATE_TIME
TS_LOG_APPEND = confluent_kafka.TIMESTAMP_LOG_APPEND_TIME


def _ts_type(t: int) -> str | None:
    return {TS_CREATE: "create", TS_LOG_APPEND: "log_append"}.get(t)


def _produce_all(bootstrap: str, topic: str, codec: str, msgs) -> list[Record]:
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "compression.type": codec,
            "message.max.bytes": CLIENT_MAX_REQUEST,
            "acks": "all",
            "linger.ms": 5,
            # keep delivery order == send order even when a request is retried
            "max.in.flight.requests.per.connection": 1,
        }
    )
    reports: list = [None] * len(msgs)

    def on_delivery(i, err, m):
        reports[i] = (err, m.offset(), m.timestamp(), m.partition())

    deadline = Deadline(60, f"confluent-kafka produce {codec}")
    for i, m in enumerate(msgs):
        kwargs = dict(topic=topic, partition=0, key=m.key, value=m.value, on_delivery=functools.partial(on_delivery, i))
        if m.headers:
            kwargs["headers"] = list(m.headers)
        if m.timestamp is not None:
            kwargs["timestamp"] = m.timestamp
        while True:
            try:
                producer.produce(**kwargs)
                break
            except BufferError:
                deadline.check()
                producer.poll(0.1)
        producer.poll(0)
    remaining = producer.flush(deadline.remaining())
    assert remaining == 0, f"{remaining} messages still undelivered after flush ({codec})"

    out = []
    errors = []
    for i, (m, rep) in enumerate(zip(msgs, reports)):
        assert rep is not None, f"no delivery report for message {i}"
        err, offset, (ts_type, ts), partition = rep
        if err is not None:
            errors.append(f"msg {i}: {err}")
            continue
        assert partition == 0
        if m.timestamp is not None:
            assert ts == m.timestamp, f"delivery report timestamp {ts} != explicit {m.timestamp}"
        out.append(Record(offset, ts, m.key, m.value, m.headers, _ts_type(ts_type)))
    assert not errors, f"{len(errors)} delivery errors ({codec}), first: {errors[:5]}"
    return out


def _consumer(bootstrap: str, **extra) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": unique_topic("ck-group"),  # required by the client; no offsets are committed
            "enable.auto.commit": False,
            "auto.offset.reset": "error",
            "fetch.max.bytes": CLIENT_MAX_FETCH,
            "max.partition.fetch.bytes": CLIENT_MAX_REQUEST,
            "receive.message.max.bytes": CLIENT_MAX_FETCH + 1024 * 1024,
            **extra,
        }
    )


def _to_record(msg) -> Record:
    ts_type, ts = msg.timestamp()
    headers = tuple((k, v) for k, v in (msg.headers() or []))
    return Record(msg.offset(), ts, msg.key(), msg.value(), headers, _ts_type(ts_type))


def _consume_until(consumer: Consumer, want: dict[str, int], deadline: Deadline) -> dict[str, list[Record]]:
    """Consume until every topic in ``want`` has produced ``want[topic]`` records."""
    got: dict[str, list[Record]] = {t: [] for t in want}
    while any(len(got[t]) < n for t, n in want.items()):
        deadline.check(f"(have { {t: len(v) for t, v in got.items()} }, want {want})")
        for msg in consumer.consume(num_messages=1000, timeout=min(1.0, max(0.1, deadline.remaining()))):
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise AssertionError(f"consume error on {msg.topic()}[{msg.partition()}]: {msg.error()}")
            got[msg.topic()].append(_to_record(msg))
    return got


@pytest.mark.parametrize("codec", CODECS)
def test_roundtrip(broker, codec):
    topic = unique_topic(f"ck-{codec}")
    # CreateTopics via the admin API (then wait until Metadata shows a leader).
    ck_create_topics(broker.bootstrap, [topic], partitions=1, config=WORKLOAD_TOPIC_CONFIG)

    msgs = generate_workload(1000 + CODECS.index(codec), PER_CODEC)
    delivered = _produce_all(broker.bootstrap, topic, codec, msgs)

    consumer = _consumer(broker.bootstrap)
    try:
        # assign at an explicit offset (0): librdkafka seeks there before the first fetch
        consumer.assign([TopicPartition(topic, 0, 0)])
        got = _consume_until(consumer, {topic: len(delivered)}, Deadline(60, f"confluent-kafka consume {codec}"))
        compare_records(f"confluent-kafka codec={codec} topic={topic}", delivered, got[topic])

        # Explicit seek into the middle of the partition and re-read a window.
        mid = len(delivered) // 2
        consumer.seek(TopicPartition(topic, 0, mid))
        window = [r for r in delivered if mid <= r.offset < mid + 50]
        got = _consume_until(consumer, {topic: len(window)}, Deadline(30, "confluent-kafka consume after seek"))
        compare_records(f"confluent-kafka after seek to {mid}", window, got[topic][: len(window)])

        # Watermarks (ListOffsets earliest/latest) agree with what was delivered.
        lo, hi = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        assert (lo, hi) == (0, len(delivered)), f"watermarks for {codec}: {(lo, hi)}"
    finally:
        consumer.close()


def test_admin_create_topic_and_metadata(broker):
    """CreateTopics with several partitions shows up in Metadata with leaders."""
    from confluent_kafka.admin import NewTopic

    name = unique_topic("ck-meta")
    admin = ck_admin(broker.bootstrap)
    futs = admin.create_topics([NewTopic(name, num_partitions=3, replication_factor=REPLICATION_FACTOR)], operation_timeout=30)
    futs[name].result(timeout=30)
    ck_wait_for_leaders(admin, [name], 3)
    md = admin.list_topics(topic=name, timeout=10)
    assert sorted(md.topics[name].partitions) == [0, 1, 2]

    # Creating it again is TOPIC_ALREADY_EXISTS.
    futs = admin.create_topics([NewTopic(name, num_partitions=3, replication_factor=REPLICATION_FACTOR)], operation_timeout=30)
    with pytest.raises(confluent_kafka.KafkaException) as ei:
        futs[name].result(timeout=30)
    assert ei.value.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS

    # Produce to every partition, read back each one with assign.
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    for p in range(3):
        producer.produce(name, value=b"p%d" % p, key=b"k", partition=p)
    assert producer.flush(30) == 0
    consumer = _consumer(broker.bootstrap)
    try:
        consumer.assign([TopicPartition(name, p, 0) for p in range(3)])
        seen = {}
        deadline = Deadline(30, "consume 3 partitions")
        while len(seen) < 3:
            deadline.check(str(seen))
            m = consumer.poll(min(1.0, deadline.remaining()))
            if m is None:
                continue
            assert m.error() is None, m.error()
            seen[m.partition()] = (m.offset(), m.value())
        assert seen == {p: (0, b"p%d" % p) for p in range(3)}
    finally:
        consumer.close()


def test_data_survives_restart_and_kill(broker):
    """Acknowledged (acks=all) data is still there after a graceful restart and after
    SIGKILL + restart on the same data dir (the port may change: re-read .bootstrap).
    Runs last in this module because it restarts the module's broker."""
    if broker.kind != "lodestream":
        pytest.skip(f"{broker.kind} runs with in-memory storage here; nothing survives a restart")
    topic = unique_topic("ck-restart")
    ck_create_topics(broker.bootstrap, [topic], partitions=1, config=WORKLOAD_TOPIC_CONFIG)
    msgs = generate_workload(1999, 300)
    delivered = _produce_all(broker.bootstrap, topic, "lz4", msgs)

    for how in ("restart", "kill"):
        getattr(broker, how)()
        consumer = _consumer(broker.bootstrap)
        try:
            consumer.assign([TopicPartition(topic, 0, 0)])
            got = _consume_until(consumer, {topic: len(delivered)}, Deadline(60, f"consume after {how}"))
            compare_records(f"confluent-kafka after broker {how}", delivered, got[topic])
        finally:
            consumer.close()

    # and the restarted broker still accepts writes, continuing the offsets
    more = _produce_all(broker.bootstrap, topic, "none", generate_workload(2999, 10))
    assert [r.offset for r in more] == list(range(len(delivered), len(delivered) + 10))
