"""The log cleaner in a running broker: which partitions it cleans and when, the internal topics'
compaction (committed offsets and deleted groups survive it and a restart, with fewer records replayed),
reads during a pass, retries, the I/O budget and the metrics."""

from __future__ import annotations

import logging
import os
import time
from types import SimpleNamespace

import pytest
import trio
import trio.testing
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from lodestream.broker import partition as partition_module
from lodestream.broker.internal_topics import OFFSETS_TOPIC
from lodestream.broker.log_cleaner import IoThrottle
from lodestream.broker.partition import read_planned
from inprocess_broker import start_broker
from test_group_handlers import commit, create_topic, fetch_offsets, offsets_of, req
from test_retention import set_topic_configs

import record_batches as rb

CLEANER = {"log.cleaner.backoff.ms": "100000",  # passes run when a test calls clean_due()
           "offsets.topic.num.partitions": "1", "offsets.topic.segment.bytes": "4000",
           "group.initial.rebalance.delay.ms": "0"}


@pytest.fixture
async def broker(tmp_path):
    async with trio.open_nursery() as nursery:
        running = await start_broker(nursery, tmp_path / "data", **CLEANER)
        yield running
        nursery.cancel_scope.cancel()
    running.broker.close()


def produce_keyed(bootstrap: str, topic: str, rounds: int, keys: int, configs: dict[str, str]) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1, config=configs)])[topic].result(15)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    for round_ in range(rounds):
        for key in range(keys):
            producer.produce(topic, b"%d-%d" % (key, round_), b"key-%d" % key)
        producer.flush(15)
    assert producer.flush(15) == 0


def records_of(batches: list[bytes]) -> list[rb.DecodedRecord]:
    return [record for batch in batches for record in rb.decode_batch(batch).records]


async def read_all(partition) -> list[rb.DecodedRecord]:
    plan = await partition.plan_read(0, 1 << 40, partition.high_watermark)
    return records_of((await read_planned([plan]))[0])


async def test_a_compacted_topic_keeps_the_last_value_of_each_key_and_reads_go_on(broker):
    bootstrap = f"127.0.0.1:{broker.port}"
    await trio.to_thread.run_sync(produce_keyed, bootstrap, "keyed", 40, 10,
                                  {"cleanup.policy": "compact", "segment.bytes": "1000"})
    topic = broker.broker.image.topic("keyed")
    partition = broker.broker.replicas.get(topic.topic_id, 0)
    before = await read_all(partition)
    segments_before = partition.segment_count
    assert len(before) == 400 and segments_before > 5
    cleaner = broker.broker.log_cleaner
    # Reads running beside the pass see, at every moment, ascending offsets and every key's last value.
    last = {record.key: record.value for record in before}
    views = []

    async def reader():
        while True:
            records = await read_all(partition)
            offsets = [record.offset for record in records]
            assert offsets == sorted(set(offsets))
            views.append(len(records))
            assert {record.key: record.value for record in records} == last
            await trio.sleep(0)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        assert await cleaner.clean_due() == 1
        nursery.cancel_scope.cancel()
    after = await read_all(partition)
    active = partition.segments()[-1].base_offset  # the active segment is never cleaned
    cleaned = [record for record in after if record.offset < active]
    assert len({record.key for record in cleaned}) == len(cleaned) == 10  # one record per key where cleaned
    assert {record.key: record.value for record in after} == last
    assert len(after) < len(before) / 5 and views  # the rest is the active segment's few batches
    assert partition.segment_count <= 3 < segments_before  # cleaned segments merged up to segment.bytes
    status = cleaner.status[partition]
    assert status.passes == 1 and status.dirty_ratio == 0.0
    assert broker.broker.metrics.cleaner_reclaimed_bytes["keyed"] > 0
    metrics = broker.broker.metrics.registry
    assert metrics.get_sample_value("lodestream_log_cleaner_dirty_ratio", {"topic": "keyed", "partition": "0"}) == 0.0
    assert metrics.get_sample_value("lodestream_log_cleaner_passes_total", {"topic": "keyed"}) == 1
    assert await cleaner.clean_due() == 0  # nothing dirty: not due again


async def test_due_follows_the_dirty_ratio_and_max_compaction_lag_and_internal_topics_go_first(broker):
    bootstrap = f"127.0.0.1:{broker.port}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    await trio.to_thread.run_sync(produce_keyed, bootstrap, "lagging", 30, 5,
                                  {"cleanup.policy": "compact", "segment.bytes": "1500",
                                   "min.cleanable.dirty.ratio": "1.0"})
    await trio.to_thread.run_sync(produce_keyed, bootstrap, "deleting", 30, 5,
                                  {"cleanup.policy": "delete", "segment.bytes": "1500"})
    client = await broker.client()
    await create_topic(client, "orders", partitions=1)
    for offset in range(100):  # ~100 records of ~100 bytes in 4,000-byte segments
        await commit(client, 9, "app", {("orders", 0): (offset, "")})
    await client.aclose()
    cleaner = broker.broker.log_cleaner
    # Never cleaned, everything is dirty: a ratio of 1.0 meets even min.cleanable.dirty.ratio=1.0. The
    # internal topic comes first; the delete-only topic is never compacted.
    assert [p.topic_name for p, _ in cleaner._due(now_ms())] == [OFFSETS_TOPIC, "lagging"]
    assert await cleaner.clean_due() == 2
    # Dirty again, but with a clean part the ratio is below 1.0: not due, until the oldest dirty record is
    # older than max.compaction.lag.ms.
    await trio.to_thread.run_sync(produce_more, bootstrap, "lagging")
    assert [p.topic_name for p, _ in cleaner._due(now_ms())] == []
    await trio.to_thread.run_sync(set_topic_configs, admin, "lagging", {"max.compaction.lag.ms": "1"})
    assert [p.topic_name for p, _ in cleaner._due(now_ms())] == ["lagging"]
    # min.compaction.lag.ms holds everything back, until it is lowered (no new data: only the settings changed).
    await trio.to_thread.run_sync(set_topic_configs, admin, "lagging", {"min.compaction.lag.ms": "3600000"})
    assert [p.topic_name for p, _ in cleaner._due(now_ms())] == []
    await trio.to_thread.run_sync(set_topic_configs, admin, "lagging", {"min.compaction.lag.ms": "0"})
    assert [p.topic_name for p, _ in cleaner._due(now_ms())] == ["lagging"]


def now_ms() -> int:
    return int(time.time() * 1000)


def produce_more(bootstrap: str, topic: str) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    for round_ in range(10):
        for key in range(5):
            producer.produce(topic, b"more-%d" % round_, b"key-%d" % key)
        producer.flush(15)


async def test_committed_offsets_and_deleted_groups_survive_compaction_and_restart(tmp_path):
    async with trio.open_nursery() as nursery:
        running = await start_broker(nursery, tmp_path / "data", **CLEANER)
        client = await running.client()
        await create_topic(client, "orders", partitions=2)
        for offset in range(150):
            await commit(client, 9, "kept", {("orders", 0): (offset, "m%d" % offset), ("orders", 1): (2 * offset, "")})
        await commit(client, 9, "dropped", {("orders", 0): (5, "")})
        response = await client.request(req(42, 2).DeleteGroupsRequest(groups_names=("dropped",)))
        assert response.results[0].error_code == 0
        # A roll puts the tombstones in a closed segment: more commits of the kept group.
        for offset in range(150, 200):
            await commit(client, 9, "kept", {("orders", 0): (offset, "m%d" % offset), ("orders", 1): (2 * offset, "")})
        await client.aclose()
        offsets_partition = running.broker.replicas.get(running.broker.image.topic(OFFSETS_TOPIC).topic_id, 0)
        size_before = offsets_partition.size_bytes
        assert await running.broker.log_cleaner.clean_due() == 1
        assert offsets_partition.size_bytes < size_before / 4
        nursery.cancel_scope.cancel()
    running.broker.close()

    async with trio.open_nursery() as nursery:
        running = await start_broker(nursery, tmp_path / "data", **CLEANER)
        client = await running.client()
        response = await fetch_offsets(client, 7, "kept", {"orders": [0, 1]})
        assert offsets_of(response.topics) == {("orders", 0): (199, "m199", 0), ("orders", 1): (398, "", 0)}
        assert "dropped" not in running.broker.groups.groups and not running.broker.groups.committed("dropped")
        await client.aclose()
        nursery.cancel_scope.cancel()
    running.broker.close()


async def test_a_failed_pass_is_logged_and_retried_at_the_next_check(broker, monkeypatch, caplog):
    bootstrap = f"127.0.0.1:{broker.port}"
    await trio.to_thread.run_sync(produce_keyed, bootstrap, "flaky", 20, 5,
                                  {"cleanup.policy": "compact", "segment.bytes": "1500"})
    real_clean = partition_module.Partition.clean
    failures = []

    async def fails_once(self, *args, **kwargs):
        if not failures:
            failures.append(self.topic_name)
            raise OSError("injected read error")
        return await real_clean(self, *args, **kwargs)

    monkeypatch.setattr(partition_module.Partition, "clean", fails_once)
    cleaner = broker.broker.log_cleaner
    with caplog.at_level(logging.ERROR, logger="lodestream.broker.log_cleaner"):
        assert await cleaner.clean_due() == 0
    assert "compaction of flaky-0 failed" in caplog.text and "injected read error" in caplog.text
    assert await cleaner.clean_due() == 1


async def test_the_io_budget_spaces_the_chunks():
    clock = trio.testing.MockClock(autojump_threshold=0)

    async def run():
        throttle = IoThrottle(1_000_000)  # 1 MB/s
        started = trio.current_time()
        await throttle(500_000)
        await throttle(1_500_000)  # 2 MB done: 2 s from the start
        return trio.current_time() - started

    assert await trio.to_thread.run_sync(lambda: trio.run(run, clock=clock)) == pytest.approx(2.0)


@pytest.mark.parametrize("interruption", ["delete-records", "delete-topic"])
async def test_a_pass_stops_when_the_log_start_moves_or_the_topic_goes(broker, interruption):
    bootstrap = f"127.0.0.1:{broker.port}"
    await trio.to_thread.run_sync(produce_keyed, bootstrap, "moving", 20, 5,
                                  {"cleanup.policy": "compact", "segment.bytes": "1000"})
    topic = broker.broker.image.topic("moving")
    partition = broker.broker.replicas.get(topic.topic_id, 0)
    cleaner = broker.broker.log_cleaner
    store = broker.broker.store

    async def interrupt(_done):
        if interruption == "delete-records":
            await partition.delete_records_before(5)
        else:
            store.drop_partition(topic.topic_id, 0)

    settings = cleaner._due(now_ms())[0][1]
    assert await partition.clean(now_ms(), settings, cleaner.limiter, interrupt, cleaner.process) is None
    if interruption == "delete-records":  # nothing was cleaned: the next pass starts from the new start
        assert len(await read_all(partition)) == 100 - 5
        assert await cleaner.clean_due() == 1
    else:  # nothing of the deleted partition is written back
        assert store.partition(topic.topic_id, 0).scan(0, 1 << 62)[0] == []


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux's")
def test_the_cleaner_process_runs_only_on_idle_cpu():
    """Records are judged in a child process scheduled SCHED_IDLE, so it never competes with the broker and
    its clients for a core (a nice value still raised produce p99 by half during a pass)."""
    from lodestream.broker.compaction import CleanerProcess

    process = CleanerProcess()
    try:
        process.begin(SimpleNamespace(horizon=0, keep_empty=frozenset(), aborted=[]))  # answered from its loop
        assert os.sched_getscheduler(process._process.pid) == os.SCHED_IDLE
    finally:
        process.close()
