"""aiokafka against a real broker subprocess.

Per compression codec (aiokafka does all of gzip / snappy / lz4 / zstd through
cramjam): CreateTopics through AIOKafkaAdminClient, produce a share of the
~10,000-message workload, record offset + timestamp from each send future,
then assign + seek(0) and compare byte for byte, offsets and timestamps
included.

pytest runs in trio mode (pytest-trio), and aiokafka needs asyncio, so every
test here is a plain sync function that drives its own ``asyncio.run``.
"""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka import codec as aio_codec
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

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
    now_ms,
    unique_topic,
)

_HAS = {
    "none": lambda: True,
    "gzip": aio_codec.has_gzip,
    "snappy": aio_codec.has_snappy,
    "lz4": aio_codec.has_lz4,
    "zstd": aio_codec.has_zstd,
}
SUPPORTED = [c for c in ALL_CODECS if _HAS[c]()]
PER_CODEC = TOTAL_MESSAGES // len(SUPPORTED)


def _ts_type(t: int) -> str | None:
    return {0: "create", 1: "log_append"}.get(t)


def _topic_errors(resp) -> list:
    """(name, error_code) pairs of a CreateTopics response, whatever its version."""
    obj = resp.to_object()
    for key in ("topics", "topic_errors", "topic_error_codes"):
        if key in obj:
            return [(t.get("name") or t.get("topic"), t["error_code"]) for t in obj[key]]
    raise AssertionError(f"unexpected CreateTopics response shape: {obj}")


async def _create_topic(bootstrap: str, topic: str, partitions: int = 1, config=None):
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30000)
    await admin.start()
    try:
        resp = await admin.create_topics(
            [NewTopic(topic, num_partitions=partitions, replication_factor=REPLICATION_FACTOR, topic_configs=dict(config or {}))],
            timeout_ms=30000,
        )
        errs = _topic_errors(resp)
        assert errs == [(topic, 0)], f"CreateTopics {topic}: {errs}"
        deadline = Deadline(30, f"metadata for {topic}")
        while True:
            desc = await admin.describe_topics([topic])
            if (desc and desc[0]["error_code"] == 0 and len(desc[0]["partitions"]) == partitions
                    and all(p["leader"] >= 0 for p in desc[0]["partitions"])):
                return desc
            deadline.check(str(desc))
            await asyncio.sleep(0.1)  # polling interval
    finally:
        await admin.close()


async def _roundtrip(bootstrap: str, codec: str) -> None:
    topic = unique_topic(f"aio-{codec}")
    await _create_topic(bootstrap, topic, 1, WORKLOAD_TOPIC_CONFIG)

    # aiokafka refuses a record with neither key nor value (assert in send()).
    msgs = generate_workload(3000 + ALL_CODECS.index(codec), PER_CODEC, null_key_and_value=False)

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        compression_type=None if codec == "none" else codec,
        acks="all",
        linger_ms=5,
        max_request_size=CLIENT_MAX_REQUEST,
        request_timeout_ms=30000,
    )
    await producer.start()
    try:
        # aiokafka bug: when the broker answers log_append_time=-1 (CreateTime),
        # BatchBuilder.done() overwrites its loop variable with the *first*
        # message's timestamp, so every later RecordMetadata in the batch carries
        # that same timestamp.  So every message gets an explicit timestamp here
        # (the workload's, or "now"), and that is what the consumer must return.
        futures, sent_ts = [], []
        for m in msgs:
            ts = m.timestamp if m.timestamp is not None else now_ms()
            sent_ts.append(ts)
            futures.append(
                await producer.send(
                    topic, value=m.value, key=m.key, partition=0, timestamp_ms=ts, headers=list(m.headers)
                )
            )
        deadline = Deadline(60, f"aiokafka produce {codec}")
        await asyncio.wait_for(producer.flush(), deadline.remaining())
        results = await asyncio.wait_for(asyncio.gather(*futures), max(0.1, deadline.remaining()))
    finally:
        await producer.stop()

    delivered = []
    for m, ts, md in zip(msgs, sent_ts, results):
        assert md.partition == 0
        assert md.timestamp_type == 0, f"broker reported LogAppendTime for a CreateTime topic: {md}"
        delivered.append(Record(md.offset, ts, m.key, m.value, m.headers, "create"))

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="none",  # surface OFFSET_OUT_OF_RANGE instead of silently resetting
        max_partition_fetch_bytes=CLIENT_MAX_REQUEST,
        fetch_max_bytes=CLIENT_MAX_FETCH,
        request_timeout_ms=30000,
    )
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek(tp, 0)
        got = await _consume(consumer, tp, len(delivered), Deadline(60, f"aiokafka consume {codec}"))
        compare_records(f"aiokafka codec={codec} topic={topic}", delivered, got)

        mid = len(delivered) // 2
        consumer.seek(tp, mid)
        window = [r for r in delivered if mid <= r.offset < mid + 50]
        got = await _consume(consumer, tp, len(window), Deadline(30, "aiokafka consume after seek"))
        compare_records(f"aiokafka after seek to {mid}", window, got[: len(window)])

        assert await consumer.beginning_offsets([tp]) == {tp: 0}
        assert await consumer.end_offsets([tp]) == {tp: len(delivered)}
    finally:
        await consumer.stop()


async def _consume(consumer: AIOKafkaConsumer, tp: TopicPartition, n: int, deadline: Deadline) -> list[Record]:
    out: list[Record] = []
    while len(out) < n:
        deadline.check(f"(have {len(out)} of {n})")
        batches = await consumer.getmany(tp, timeout_ms=int(min(1000, max(100, deadline.remaining() * 1000))),
                                         max_records=2000)
        for r in batches.get(tp, []):
            headers = tuple((k, v) for k, v in (r.headers or ()))
            out.append(Record(r.offset, r.timestamp, r.key, r.value, headers, _ts_type(r.timestamp_type)))
    return out


@pytest.mark.parametrize("codec", ALL_CODECS)
def test_roundtrip(broker, codec):
    # aiokafka has every codec via cramjam; this guards against an environment without it.
    assert codec in SUPPORTED, f"aiokafka cannot {codec}: cramjam not importable"
    asyncio.run(_roundtrip(broker.bootstrap, codec))


def test_create_topic_multi_partition(broker):
    async def main():
        topic = unique_topic("aio-multi")
        desc = await _create_topic(broker.bootstrap, topic, 4)
        assert sorted(p["partition"] for p in desc[0]["partitions"]) == [0, 1, 2, 3]

        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
        await producer.start()
        try:
            mds = [await producer.send_and_wait(topic, b"v%d" % p, partition=p) for p in range(4)]
        finally:
            await producer.stop()
        assert [(md.partition, md.offset) for md in mds] == [(p, 0) for p in range(4)]

    asyncio.run(main())
