"""Retention with real clients: segments past retention.ms / retention.bytes are deleted, the log start
offset moves, the space comes back, and consumers resetting to earliest start from the new start."""

from __future__ import annotations

import time

import pytest
import trio
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic

from inprocess_broker import start_broker

DEADLINE_S = 30
VALUE = b"x" * 1000


def directory_bytes(path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def create_and_fill(bootstrap: str, topic: str, configs: dict[str, str], count: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1, config=configs)])[topic].result(15)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "batch.num.messages": 1})
    for _ in range(count):
        producer.produce(topic, VALUE)
        producer.poll(0)
    assert producer.flush(15) == 0


def set_topic_configs(admin: AdminClient, topic: str, configs: dict[str, str]) -> None:
    resource = ConfigResource("topic", topic, incremental_configs=[
        ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET) for key, value in configs.items()])
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(15)


def watermarks(bootstrap: str, topic: str) -> tuple[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "watermarks"})
    try:
        return consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    finally:
        consumer.close()


def consume_from_earliest(bootstrap: str, topic: str, expected: int) -> list:
    """A new group with auto.offset.reset=earliest: the offsets of what it reads."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{topic}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    offsets = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + DEADLINE_S  # a worker thread: the wall clock, not trio's
        while len(offsets) < expected and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                offsets.append(message.offset())

    finally:
        consumer.close()
    return offsets


async def wait_for_start_offset(bootstrap: str, topic: str, at_least: int) -> tuple[int, int]:
    with trio.fail_after(DEADLINE_S):
        while True:
            low, high = await trio.to_thread.run_sync(watermarks, bootstrap, topic)
            if low >= at_least:
                return low, high
            await trio.sleep(0.2)


@pytest.fixture
async def retention_broker(tmp_path):
    """A broker checking retention every 200 ms, and its bootstrap address."""
    async with trio.open_nursery() as nursery:
        running = await start_broker(nursery, tmp_path / "data", **{"log.retention.check.interval.ms": "200"})
        yield running, f"127.0.0.1:{running.port}"
        nursery.cancel_scope.cancel()
    running.broker.close()


async def test_time_retention_deletes_old_segments_and_gives_the_space_back(retention_broker, tmp_path):
    running, bootstrap = retention_broker
    # Retention off while filling (-1), then 2 s: the size before it runs is measured, not raced.
    await trio.to_thread.run_sync(create_and_fill, bootstrap, "aged",
                                  {"retention.ms": "-1", "segment.bytes": "20000"}, 300)
    partition = running.broker.replicas.get(running.broker.image.topic("aged").topic_id, 0)
    assert partition.segment_count > 10  # ~19 batches of ~1 KB per 20,000-byte segment
    log_dir = tmp_path / "data" / "log"
    before = directory_bytes(log_dir)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    await trio.to_thread.run_sync(set_topic_configs, admin, "aged", {"retention.ms": "2000"})
    low, high = await wait_for_start_offset(bootstrap, "aged", 300)  # everything was older than 2 s
    assert (low, high) == (300, 300)
    after = directory_bytes(log_dir)
    assert after < before - 200_000, (before, after)  # ~300 KB of batches gone from the disk
    metrics = running.broker.metrics.retention_deleted_bytes["aged"]
    assert metrics >= 300 * len(VALUE)
    # A new consumer resetting to earliest starts at the new log start and reads what comes next
    # (retention back to a week first, or the new records would go 2 s later too).
    await trio.to_thread.run_sync(set_topic_configs, admin, "aged", {"retention.ms": "604800000"})
    producer = Producer({"bootstrap.servers": bootstrap})
    for _ in range(5):
        producer.produce("aged", VALUE)
    assert await trio.to_thread.run_sync(producer.flush, 15) == 0
    offsets = await trio.to_thread.run_sync(consume_from_earliest, bootstrap, "aged", 5)
    assert offsets == [300, 301, 302, 303, 304]
    print(f"time retention: data directory {before} -> {after} bytes")


async def test_size_retention_keeps_the_newest_retention_bytes(retention_broker):
    running, bootstrap = retention_broker
    await trio.to_thread.run_sync(create_and_fill, bootstrap, "sized",
                                  {"retention.bytes": "30000", "segment.bytes": "10000"}, 200)
    low, high = await wait_for_start_offset(bootstrap, "sized", 1)
    partition = running.broker.replicas.get(running.broker.image.topic("sized").topic_id, 0)
    with trio.fail_after(DEADLINE_S):  # every check deletes what is over; wait for the last one
        while partition.size_bytes - partition.segments()[0].size >= 30_000:
            await trio.sleep(0.2)
    assert 30_000 <= partition.size_bytes < 30_000 + 10_000 + 1_100  # at least retention.bytes are kept
    low, high = await trio.to_thread.run_sync(watermarks, bootstrap, "sized")
    assert high == 200 and 0 < low < 200
    offsets = await trio.to_thread.run_sync(consume_from_earliest, bootstrap, "sized", high - low)
    assert offsets == list(range(low, high))
