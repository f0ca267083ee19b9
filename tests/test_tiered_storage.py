"""Tiered storage with real clients (docs/tiered-storage.md): closed segments of a remote-enabled topic are
offloaded as erasure-coded fragments to `file://` stores, deleted locally, and read back through Fetch and
ListOffsets as one log; losing m stores changes nothing, losing m+1 is KAFKA_STORAGE_ERROR."""

from __future__ import annotations

import shutil
import time

import pytest
import trio
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from inprocess_broker import start_broker
from kafka_reads import read_values
from redis_server import start_redis
from lodestream.protocol.errors import ErrorCode
from test_produce_fetch import fetch_one, list_offsets_request

DEADLINE_S = 60
RECORDS = 3000
EARLIEST_LOCAL, LATEST_TIERED = -4, -5
FIRST_TIMESTAMP = int(time.time() * 1000) - 3_600_000  # an hour ago: well within retention.ms


def value_of(offset: int) -> bytes:
    return (b"%08d" % offset) * 125  # 1000 bytes, each record its own


def create_topic(bootstrap: str, topic: str, configs: dict[str, str]) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1, config=configs)])[topic].result(15)


def delete_records(bootstrap: str, topic: str, before: int) -> int:
    """DeleteRecords through confluent-kafka's admin client; the low watermark it answers."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    result = admin.delete_records([TopicPartition(topic, 0, before)])
    return next(iter(result.values())).result(15).low_watermark


def produce(bootstrap: str, topic: str, count: int) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "batch.num.messages": 20})
    for offset in range(count):
        producer.produce(topic, value_of(offset), timestamp=FIRST_TIMESTAMP + offset)
        producer.poll(0)
    assert producer.flush(30) == 0


def consume_all(bootstrap: str, topic: str, count: int, midway=lambda: None) -> list[tuple[int, bytes]]:
    """(offset, value) of the first `count` records from offset 0; `midway()` is called a third of the way,
    with the consumer fetching a few batches at a time (so most of the reading is still to come)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{time.monotonic_ns()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "fetch.max.bytes": 100_000, "max.partition.fetch.bytes": 100_000,
                         "message.max.bytes": 100_000,
                         "queued.max.messages.kbytes": 200})
    read: list[tuple[int, bytes]] = []
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        deadline = time.monotonic() + DEADLINE_S
        while len(read) < count and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                read.append((message.offset(), message.value()))
                if len(read) == count // 3:
                    midway()
    finally:
        consumer.close()
    return read


def object_files(stores) -> list:
    return [path for store in stores for path in store.rglob("*") if path.is_file()]


@pytest.fixture
async def tiered(tmp_path):
    stores = [tmp_path / f"store{i}" for i in range(6)]
    async with trio.open_nursery() as nursery:
        running = await start_broker(
            nursery, tmp_path / "data", **{
                "remote.log.storage.system.enable": "true",
                "remote.fragment.stores": ",".join(f"file://{store}" for store in stores),
                "remote.erasure.code": "rs:4+2", "remote.stripe.bytes": "65536",
                "remote.log.manager.task.interval.ms": "100", "remote.cache.bytes": "0",
                "log.retention.check.interval.ms": "100"})
        yield running, f"127.0.0.1:{running.port}", stores
        nursery.cancel_scope.cancel()
    running.broker.close()


async def wait_until(predicate, what: str):
    with trio.fail_after(DEADLINE_S):
        while not predicate():
            await trio.sleep(0.05)


async def list_offset(client, topic: str, timestamp: int) -> tuple[int, int]:
    response = await client.request(list_offsets_request(topic, {0: timestamp}))
    answer = response.topics[0].partitions[0]
    return int(answer.error_code), int(answer.offset)


async def test_offloaded_segments_read_back_as_one_log_until_more_than_m_stores_are_lost(tiered):
    running, bootstrap, stores = tiered
    await trio.to_thread.run_sync(create_topic, bootstrap, "tiered", {
        "remote.storage.enable": "true", "segment.bytes": "200000", "local.retention.ms": "0"})
    await trio.to_thread.run_sync(produce, bootstrap, "tiered", RECORDS)
    partition = running.broker.replicas.get(running.broker.image.topic("tiered").topic_id, 0)
    local_before = partition.size_bytes
    segments = len(partition.segments())
    assert segments >= 10

    # Every closed segment offloaded, then gone locally: only the active one stays.
    await wait_until(lambda: partition.segment_count == 1 and partition.remote_end_offset == partition.local_log_start_offset,
                     "offloaded and deleted locally")
    offloaded = sum(segment.size for segment in partition.remote_segments)
    assert partition.size_bytes < local_before / 5
    stored = sum(path.stat().st_size for path in object_files(stores))
    assert 1.45 * offloaded < stored < 1.7 * offloaded  # rs:4+2: 1.5x, plus piece headers and padding
    assert len(object_files(stores)) == 6 * len(partition.remote_segments)

    expected = [(offset, value_of(offset)) for offset in range(RECORDS)]
    assert await trio.to_thread.run_sync(consume_all, bootstrap, "tiered", RECORDS) == expected
    client = await running.client()
    try:
        assert await list_offset(client, "tiered", -2) == (0, 0)  # earliest: the remote log's start
        assert await list_offset(client, "tiered", EARLIEST_LOCAL) == (0, partition.local_log_start_offset)
        assert await list_offset(client, "tiered", LATEST_TIERED) == (0, partition.remote_end_offset - 1)
        assert await list_offset(client, "tiered", FIRST_TIMESTAMP + 1234) == (0, 1234)  # by timestamp
        assert await list_offset(client, "tiered", -3) == (0, RECORDS - 1)  # max timestamp: the last record

        # DeleteRecords into the offloaded range: whole offloaded segments below the offset go.
        second = partition.remote_segments[1]
        low = await trio.to_thread.run_sync(delete_records, bootstrap, "tiered", second.base_offset + 5)
        assert low == second.base_offset == partition.log_start_offset
        assert await list_offset(client, "tiered", -2) == (0, second.base_offset)
        assert len(object_files(stores)) == 6 * len(partition.remote_segments)
        expected = expected[second.base_offset:]

        # Two stores lost (m = 2): the same bytes, rebuilt from parity.
        for store in stores[:2]:
            shutil.rmtree(store)
        assert await trio.to_thread.run_sync(consume_all, bootstrap, "tiered", len(expected)) == expected

        # A third: a clear error for the offloaded offsets, never wrong bytes; the local ones still read.
        shutil.rmtree(stores[2])
        assert (await fetch_one(client, "tiered", second.base_offset)).error_code == ErrorCode.kafka_storage_error
        assert running.broker.remote_log.counters["read_errors"] >= 1
        local = await fetch_one(client, "tiered", partition.local_log_start_offset)
        assert local.error_code == ErrorCode.none and local.records
    finally:
        await client.aclose()


async def test_a_remote_topic_needs_tiered_storage_on_and_enough_stores(tmp_path):
    async with trio.open_nursery() as nursery:
        running = await start_broker(nursery, tmp_path / "data")
        with pytest.raises(Exception, match="remote.storage.enable: tiered storage is disabled"):
            await trio.to_thread.run_sync(create_topic, f"127.0.0.1:{running.port}", "t",
                                          {"remote.storage.enable": "true"})
        nursery.cancel_scope.cancel()
    running.broker.close()


async def test_the_redis_tier_serves_repeated_consumes_and_a_killed_redis_loses_nothing(tmp_path):
    """A real redis-server as the shared stripe tier (the in-process cache off): a second consume of the
    offloaded records is served from Redis (hit rate 100%); SIGKILL redis-server in the middle of a third
    and the consumer still reads every record, byte-identical, from the fragment stores."""
    redis, url = start_redis(tmp_path)
    stores = [tmp_path / f"store{i}" for i in range(3)]
    try:
        async with trio.open_nursery() as nursery:
            running = await start_broker(nursery, tmp_path / "data", **{
                "remote.log.storage.system.enable": "true", "remote.erasure.code": "rs:2+1",
                "remote.fragment.stores": ",".join(f"file://{store}" for store in stores),
                "remote.stripe.bytes": "65536", "remote.cache.bytes": "0", "remote.cache.redis.url": url,
                "remote.log.manager.task.interval.ms": "100"})
            bootstrap = f"127.0.0.1:{running.port}"
            await trio.to_thread.run_sync(create_topic, bootstrap, "cached", {
                "remote.storage.enable": "true", "segment.bytes": "100000", "local.retention.ms": "0"})
            count = 1000
            await trio.to_thread.run_sync(produce, bootstrap, "cached", count)
            partition = running.broker.replicas.get(running.broker.image.topic("cached").topic_id, 0)
            await wait_until(lambda: partition.remote_end_offset == partition.local_log_start_offset > count - 200,
                             "offloaded and deleted locally")
            offloaded = partition.local_log_start_offset
            expected = [(offset, value_of(offset)) for offset in range(offloaded)]
            reader = running.broker.remote_log.reader

            assert await trio.to_thread.run_sync(consume_all, bootstrap, "cached", offloaded) == expected
            from_stores, from_redis = reader.store_reads, reader.redis_hits
            assert from_stores > 0
            assert await trio.to_thread.run_sync(consume_all, bootstrap, "cached", offloaded) == expected
            hits, misses = reader.redis_hits - from_redis, reader.store_reads - from_stores
            print(f"\nsecond consume: {hits} stripes from Redis, {misses} from the stores "
                  f"(hit rate {hits / (hits + misses):.0%})")
            assert hits > 0 and misses == 0

            def kill_redis():
                redis.kill()
                redis.wait()

            assert await trio.to_thread.run_sync(consume_all, bootstrap, "cached", offloaded, kill_redis) == expected
            assert reader.store_reads > from_stores and running.broker.remote_log.redis.errors > 0
            nursery.cancel_scope.cancel()
        running.broker.close()
    finally:
        redis.kill()
        redis.wait()


async def test_read_committed_consumers_skip_aborted_transactions_in_offloaded_segments(tiered):
    """The manifests carry each offloaded segment's aborted transactions (Kafka's remote transaction index):
    once the local copies are gone, a read_committed consumer still gets only committed records."""
    running, bootstrap, stores = tiered
    await trio.to_thread.run_sync(create_topic, bootstrap, "txns", {
        "remote.storage.enable": "true", "segment.bytes": "20000", "local.retention.ms": "0"})

    def transact() -> list[bytes]:
        producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": "tiered-txns", "linger.ms": 0})
        producer.init_transactions(30)
        committed = []
        for round_ in range(30):
            producer.begin_transaction()
            values = [b"r%02d-%02d" % (round_, i) + b"x" * 400 for i in range(10)]
            for value in values:
                producer.produce("txns", value)
            if round_ % 3 == 1:
                assert producer.flush(30) == 0  # written, then aborted (unsent records would just be dropped)
                producer.abort_transaction(30)
            else:
                producer.commit_transaction(30)
                committed += values
        return committed

    committed = await trio.to_thread.run_sync(transact)
    partition = running.broker.replicas.get(running.broker.image.topic("txns").topic_id, 0)
    await wait_until(lambda: partition.remote_end_offset == partition.local_log_start_offset > 150,
                     "offloaded and deleted locally")
    assert any(segment.aborted for segment in partition.remote_segments)

    def read(isolation: str, count: int) -> list[bytes]:
        return read_values({"bootstrap.servers": bootstrap, "group.id": f"txn-{isolation}",
                            "isolation.level": isolation}, "txns", count)

    assert await trio.to_thread.run_sync(read, "read_committed", len(committed)) == committed
    assert len(await trio.to_thread.run_sync(read, "read_uncommitted", 300)) == 300  # the aborted ones too


async def test_deleting_a_tiered_topic_deletes_its_fragments(tiered):
    """The image drops a deleted topic's manifests; its fragment objects are then orphans, which the next
    sweep deletes (broker/remote_log.py)."""
    running, bootstrap, stores = tiered
    await trio.to_thread.run_sync(create_topic, bootstrap, "doomed", {
        "remote.storage.enable": "true", "segment.bytes": "50000", "local.retention.ms": "0"})
    await trio.to_thread.run_sync(produce, bootstrap, "doomed", 300)
    partition = running.broker.replicas.get(running.broker.image.topic("doomed").topic_id, 0)
    await wait_until(lambda: len(partition.remote_segments) >= 3, "offloaded")
    assert object_files(stores)

    def delete_topic() -> None:
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.delete_topics(["doomed"])["doomed"].result(15)

    await trio.to_thread.run_sync(delete_topic)
    await wait_until(lambda: not object_files(stores), "the deleted topic's fragments removed")
