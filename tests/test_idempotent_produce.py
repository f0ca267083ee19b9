"""Idempotent and transactional produce, markers, READ_COMMITTED fetch, InitProducerId, DescribeProducers.

An in-process broker on a loopback socket (port 0), driven with tests/wire_client.py;
the transaction coordinator is absent (broker.transactions is None), so markers
are written through ReplicaManager.write_markers directly, as the coordinator does.
"""

from __future__ import annotations

import dataclasses
import time
import datetime

import pytest
import trio
import trio.testing

from lodestream.protocol.errors import ErrorCode, KafkaError
from lodestream.protocol.messages import request_builder
from lodestream.protocol.record_batch import CONTROL_BIT, TRANSACTIONAL_BIT, build_batch, iter_records, parse_header
from lodestream.storage.leveldb_log import StorageError

import record_batches as rb
import inprocess_broker
from test_produce_fetch import client, create_topic, fetch_request, list_offsets_request, produce_request  # noqa: F401 (fixture)

DEADLINE_S = 20
PRODUCE, FETCH, LIST_OFFSETS, INIT_PRODUCER_ID, DESCRIBE_PRODUCERS = 0, 1, 2, 22, 61
NONE = ErrorCode.none
LATEST = -1


@pytest.fixture
async def running_broker(running_broker):
    """conftest's broker without its transaction coordinator: no transactional batch needs verifying."""
    running_broker.broker.transactions = None
    return running_broker


def broker_at(data_dir, **overrides):
    """The partition layer alone: no transaction coordinator behind Produce."""
    return inprocess_broker.broker_at(data_dir, with_transactions=False, **overrides)


def batch(pid: int, epoch: int, seq: int, count: int = 1, transactional: bool = False, prefix: bytes = b"v",
          age_ms: int = 0) -> bytes:
    # Current timestamps: producer state expires producer.id.expiration.ms after a batch's max timestamp.
    timestamp = int(time.time() * 1000) - age_ms
    records = [rb.Record(key=None, value=prefix + b"%d" % (seq + i), timestamp=timestamp) for i in range(count)]
    return rb.build_batch(records, producer_id=pid, producer_epoch=epoch, base_sequence=seq,
                          extra_attributes=TRANSACTIONAL_BIT if transactional else 0)


async def produce(client, topic: str, records: bytes, partition: int = 0, transactional_id: str | None = None):
    request = produce_request(topic, {partition: records}, version=11)
    if transactional_id is not None:
        request = dataclasses.replace(request, transactional_id=transactional_id)
    response = await client.request(request)
    (result,) = response.responses[0].partition_responses
    return result


async def init_producer_id(client, transactional_id: str | None = None, version: int = 4,
                           producer_id: int = -1, producer_epoch: int = -1):
    build = request_builder(INIT_PRODUCER_ID, version)
    return await client.request(build.InitProducerIdRequest(
        transactional_id=transactional_id, transaction_timeout=datetime.timedelta(seconds=60),
        producer_id=producer_id, producer_epoch=producer_epoch))


async def fetch(client, topic: str, offset: int = 0, read_committed: bool = False, partition: int = 0):
    request = fetch_request(topic, {partition: offset})
    request = dataclasses.replace(request, isolation_level=1 if read_committed else 0)
    response = await client.request(request)
    return response.responses[0].partitions[0]


def values(records: bytes, data_only: bool = True) -> list[bytes]:
    out = []
    for stored in rb.decode_batches(records):
        if data_only and stored.attributes & CONTROL_BIT:
            continue
        out += [r.value for r in stored.records]
    return out


async def latest(client, topic: str, read_committed: bool = False) -> int:
    request = list_offsets_request(topic, {0: LATEST})
    request = dataclasses.replace(request, isolation_level=1 if read_committed else 0)
    response = await client.request(request)
    return response.topics[0].partitions[0].offset


def partition_of(running, topic: str, index: int = 0):
    broker = running.broker
    return broker.replicas.get(broker.image.topic(topic).topic_id, index)


async def test_init_producer_id_hands_out_fresh_ids_that_survive_a_restart(tmp_path):
    with trio.fail_after(DEADLINE_S):
        async with broker_at(tmp_path / "data") as (_, client):
            first = await init_producer_id(client, version=0)
            second = await init_producer_id(client, version=5)
            # KIP-360: a non-transactional producer sending its id and epoch still gets a new id, epoch 0.
            third = await init_producer_id(client, producer_id=second.producer_id, producer_epoch=0)
            half = await init_producer_id(client, producer_id=second.producer_id)  # an id without an epoch
            assert (half.error_code, half.producer_id) == (ErrorCode.invalid_request, -1)
        ids = [r.producer_id for r in (first, second, third)]
        assert [r.error_code for r in (first, second, third)] == [NONE] * 3
        assert [r.producer_epoch for r in (first, second, third)] == [0, 0, 0]
        assert len(set(ids)) == 3 and min(ids) >= 0
        async with broker_at(tmp_path / "data") as (_, client):
            after = await init_producer_id(client)
        assert after.producer_id > max(ids)


async def test_retries_are_answered_with_the_original_offsets_and_not_written_again(running_broker, client):
    with trio.fail_after(DEADLINE_S):
        await create_topic(client, "idem")
        pid = (await init_producer_id(client)).producer_id
        assert (await produce(client, "idem", rb.simple_batch(2))).base_offset == 0  # plain producer, offsets 0-1
        first = await produce(client, "idem", batch(pid, 0, 0, count=3))
        second = await produce(client, "idem", batch(pid, 0, 3, count=2))
        assert (first.error_code, first.base_offset, second.base_offset) == (NONE, 2, 5)
        retry = await produce(client, "idem", batch(pid, 0, 0, count=3))
        assert (retry.error_code, retry.base_offset) == (NONE, 2)
        retry = await produce(client, "idem", batch(pid, 0, 3, count=2))
        assert (retry.error_code, retry.base_offset) == (NONE, 5)
        assert await latest(client, "idem") == 7
        gap = await produce(client, "idem", batch(pid, 0, 9))
        assert gap.error_code == ErrorCode.out_of_order_sequence_number
        bumped = await produce(client, "idem", batch(pid, 1, 0))
        assert (bumped.error_code, bumped.base_offset) == (NONE, 7)
        fenced = await produce(client, "idem", batch(pid, 0, 5))
        assert fenced.error_code == ErrorCode.invalid_producer_epoch
        assert await latest(client, "idem") == 8
        assert values((await fetch(client, "idem")).records)[2:] == [b"v0", b"v1", b"v2", b"v3", b"v4", b"v0"]


async def test_a_retried_batch_is_answered_only_once_its_original_is_committed(running_broker, client):
    """A retry that finds its batch in the log waits for the high watermark like the original: a leader that
    wrote a batch its followers never got (and is about to lose it to a new leader) must not answer a retry
    "written". Here a follower that has not fetched holds the high watermark (Partition state set directly)."""
    with trio.fail_after(DEADLINE_S):
        topic_id = await create_topic(client, "dup")
        pid = (await init_producer_id(client)).producer_id
        replicas = running_broker.broker.replicas
        partition = replicas.get(topic_id, 0)
        node = partition.node_id
        partition.apply_state((node, 99), node, partition.leader_epoch, (node, 99), partition.partition_epoch, 2)
        request = dataclasses.replace(produce_request("dup", {0: batch(pid, 0, 0, count=3)}, version=11),
                                      timeout=datetime.timedelta(milliseconds=300))
        first = (await client.request(request)).responses[0].partition_responses[0]
        retry = (await client.request(request)).responses[0].partition_responses[0]
        assert (first.error_code, retry.error_code) == (ErrorCode.request_timed_out,) * 2
        replicas.follower_fetched(partition, 99, 3)  # the follower has it now: committed
        retry = (await client.request(request)).responses[0].partition_responses[0]
        assert (retry.error_code, retry.base_offset) == (NONE, 0)


async def test_a_write_queued_before_leadership_moved_is_refused_not_written(running_broker, client):
    """Leadership can move between a produce's leader check and its group commit (a verification or the
    previous write in between). Written anyway, the batch would sit at offsets the new leader fills
    differently, stamped with that leader's epoch, so no divergence check would ever cut it."""
    from lodestream.broker.replica_manager import AppendRequest

    with trio.fail_after(DEADLINE_S):
        topic_id = await create_topic(client, "moved")
        replicas = running_broker.broker.replicas
        partition = replicas.get(topic_id, 0)
        raw = rb.simple_batch(1)
        request = AppendRequest(partition, [(0, int(time.time() * 1000), len(raw), memoryview(raw))], None)
        replicas.enqueue(request)
        end = partition.local_end_offset
        partition.apply_state((partition.node_id, 99), 99, partition.leader_epoch + 1, (partition.node_id, 99),
                              partition.partition_epoch + 1, 1)  # before the committer runs
        await request.done.wait()
        assert isinstance(request.error, KafkaError) and request.error.code == ErrorCode.not_leader_or_follower
        assert partition.local_end_offset == end


async def test_pipelined_batches_of_one_producer_are_checked_in_arrival_order(running_broker, client):
    from lodestream.protocol.codec import decode_response, encode_request, response_type

    with trio.fail_after(DEADLINE_S):
        await create_topic(client, "pipelined")
        pid = (await init_producer_id(client)).producer_id
        sent = [batch(pid, 0, seq) for seq in range(5)] + [batch(pid, 0, 2)]  # five in flight, then a retry
        for raw in sent:
            client._correlation += 1
            await client.send_raw(encode_request(client._correlation, produce_request("pipelined", {0: raw}, version=11)))
        offsets = []
        for _ in sent:
            _, response = decode_response(await client.read_frame(), response_type(PRODUCE, 11))
            (result,) = response.responses[0].partition_responses
            assert result.error_code == NONE
            offsets.append(result.base_offset)
        assert offsets == [0, 1, 2, 3, 4, 2]


async def test_batches_with_a_producer_id_are_validated(running_broker, client):
    with trio.fail_after(DEADLINE_S):
        await create_topic(client, "rules")
        two = batch(5, 0, 0) + batch(5, 0, 1)
        assert (await produce(client, "rules", two)).error_code == ErrorCode.invalid_record
        no_sequence = batch(5, 0, -1)
        assert (await produce(client, "rules", no_sequence)).error_code == ErrorCode.invalid_record
        marker = build_batch([(b"\x00\x00\x00\x01", b"\x00\x00\x00\x00\x00\x00")], 0,
                             attributes=CONTROL_BIT | TRANSACTIONAL_BIT, producer_id=5, producer_epoch=0)
        assert (await produce(client, "rules", marker)).error_code == ErrorCode.invalid_record
        transactional = batch(5, 0, 0, transactional=True)
        assert (await produce(client, "rules", transactional)).error_code == (
            ErrorCode.transactional_id_authorization_failed)
        assert await latest(client, "rules") == 0


async def test_producer_state_and_transactions_are_rebuilt_after_a_restart(tmp_path):
    with trio.fail_after(DEADLINE_S):
        async with broker_at(tmp_path / "data") as (running, client):
            await create_topic(client, "durable")
            pid = (await init_producer_id(client)).producer_id
            txn_pid = (await init_producer_id(client)).producer_id
            assert (await produce(client, "durable", batch(pid, 0, 0, count=2))).base_offset == 0
            aborted = await produce(client, "durable", batch(txn_pid, 0, 0, transactional=True), transactional_id="t")
            assert aborted.base_offset == 2
            partition = partition_of(running, "durable")
            assert await running.broker.replicas.write_markers([partition], txn_pid, 0, False, 3) == {}
            open_txn = await produce(client, "durable", batch(txn_pid, 0, 1, transactional=True), transactional_id="t")
            assert open_txn.base_offset == 4
            before = (partition.last_stable_offset, partition.aborted_transactions(0, 100))
        async with broker_at(tmp_path / "data") as (running, client):
            partition = partition_of(running, "durable")
            assert (partition.last_stable_offset, partition.aborted_transactions(0, 100)) == before == (4, [(txn_pid, 2)])
            retry = await produce(client, "durable", batch(pid, 0, 0, count=2))
            assert (retry.error_code, retry.base_offset) == (NONE, 0)
            assert (await produce(client, "durable", batch(pid, 0, 3))).error_code == ErrorCode.out_of_order_sequence_number
            assert (await produce(client, "durable", batch(pid, 0, 2))).base_offset == 5
            entry = {p.producer_id: p for p in partition.active_producers()}[txn_pid]
            assert (entry.coordinator_epoch, entry.txn_first_offset) == (3, 4)


async def test_read_committed_fetch_stops_at_the_lso_and_lists_aborted_transactions(running_broker, client):
    with trio.fail_after(DEADLINE_S):
        await create_topic(client, "txn")
        replicas = running_broker.broker.replicas
        partition = partition_of(running_broker, "txn")
        a = (await init_producer_id(client)).producer_id
        b = (await init_producer_id(client)).producer_id
        await produce(client, "txn", rb.value_batch([b"plain0"]))  # offset 0
        await produce(client, "txn", batch(a, 0, 0, count=2, transactional=True, prefix=b"a"), transactional_id="ta")  # 1-2
        await produce(client, "txn", batch(b, 0, 0, transactional=True, prefix=b"b"), transactional_id="tb")  # 3
        assert (partition.last_stable_offset, partition.high_watermark) == (1, 4)
        assert (await latest(client, "txn"), await latest(client, "txn", read_committed=True)) == (4, 1)
        committed = await fetch(client, "txn", read_committed=True)
        assert (values(committed.records), committed.last_stable_offset, committed.high_watermark) == ([b"plain0"], 1, 4)
        assert tuple(committed.aborted_transactions) == ()
        assert (await fetch(client, "txn", offset=2, read_committed=True)).error_code == NONE  # between LSO and HW

        # A long-polling READ_COMMITTED fetch is woken by the marker that moves the LSO.
        async def long_poll():
            request = fetch_request("txn", {0: 1}, min_bytes=1, max_wait_ms=10_000)
            request = dataclasses.replace(request, isolation_level=1)
            return await another.request(request)

        results = []

        async def run():
            results.append(await long_poll())

        another = await running_broker.client()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(run)
                await trio.testing.wait_all_tasks_blocked()
                assert not results
                assert await replicas.write_markers([partition], a, 0, False, 0) == {}  # abort a: marker at 4
        finally:
            await another.aclose()
        woken = results[0].responses[0].partitions[0]
        assert (woken.last_stable_offset, [(t.producer_id, t.first_offset) for t in woken.aborted_transactions]) == (
            3, [(a, 1)])
        assert values(woken.records) == [b"a0", b"a1"]  # the client drops them by the aborted list

        assert await replicas.write_markers([partition], b, 0, True, 0) == {}  # commit b: marker at 5
        assert partition.last_stable_offset == partition.high_watermark == 6
        committed = await fetch(client, "txn", read_committed=True)
        assert [(t.producer_id, t.first_offset) for t in committed.aborted_transactions] == [(a, 1)]
        assert values(committed.records) == [b"plain0", b"a0", b"a1", b"b0"]
        assert tuple((await fetch(client, "txn", offset=5, read_committed=True)).aborted_transactions) == ()
        uncommitted = await fetch(client, "txn")
        assert uncommitted.aborted_transactions is None
        markers = [stored for stored in rb.decode_batches(uncommitted.records) if stored.attributes & CONTROL_BIT]
        assert [(m.base_offset, m.producer_id, m.records[0].key) for m in markers] == [
            (4, a, b"\x00\x00\x00\x00"), (5, b, b"\x00\x00\x00\x01")]
        # Markers with an older epoch are refused; nothing is written.
        assert await replicas.write_markers([partition], b, -1, True, 0) == {partition: ErrorCode.invalid_producer_epoch}
        assert partition.high_watermark == 6


async def test_a_failed_write_rolls_the_producer_state_back(running_broker, client, monkeypatch):
    with trio.fail_after(DEADLINE_S):
        await create_topic(client, "failing")
        pid = (await init_producer_id(client)).producer_id
        assert (await produce(client, "failing", batch(pid, 0, 0))).error_code == NONE
        store = running_broker.broker.store
        real_stage = store.stage

        class Broken:
            def commit(self):
                raise StorageError("disk full")

        monkeypatch.setattr(store, "stage", lambda pendings, sync=None: Broken())
        failed = await produce(client, "failing", batch(pid, 0, 1, transactional=True), transactional_id="t")
        assert failed.error_code == ErrorCode.kafka_storage_error
        partition = partition_of(running_broker, "failing")
        assert partition._log.producers.open_txns == {}  # the partition layer's internals
        with pytest.raises(StorageError):
            await running_broker.broker.replicas.write_markers([partition], pid, 0, False, 0)
        monkeypatch.setattr(store, "stage", real_stage)
        retried = await produce(client, "failing", batch(pid, 0, 1))  # the same sequence is still next
        assert (retried.error_code, retried.base_offset) == (NONE, 1)
        assert not partition.has_aborted_transactions


async def test_broker_written_transactional_batches_open_a_transaction_without_sequence_checks(running_broker, client):
    with trio.fail_after(DEADLINE_S):
        await create_topic(client, "internal")
        replicas = running_broker.broker.replicas
        partition = partition_of(running_broker, "internal")
        offsets_commit = build_batch([(b"k", b"v")], 0, attributes=TRANSACTIONAL_BIT, producer_id=9,
                                     producer_epoch=2, base_sequence=0)
        assert await replicas.append_batch(partition, offsets_commit) == 0
        assert await replicas.append_batch(partition, offsets_commit) == 1  # no duplicate detection
        assert partition.last_stable_offset == 0
        await replicas.write_markers([partition], 9, 2, True, 0)
        assert partition.last_stable_offset == 3
        stored = await partition.read_batch_at(2)
        assert parse_header(stored).is_control and iter_records(stored)[0][2:] == (b"\x00\x00\x00\x01", b"\x00\x00\x00\x00\x00\x00")


async def test_the_lso_moves_only_once_the_marker_is_written(running_broker, client, monkeypatch):
    """The committer ends a transaction in the producer state before the marker's write is durable;
    read_committed fetches must not see the transaction as decided until it is (Kafka holds the LSO
    at the transaction's first offset until the high watermark passes the marker)."""
    import threading

    with trio.fail_after(DEADLINE_S):
        await create_topic(client, "held")
        replicas = running_broker.broker.replicas
        partition = partition_of(running_broker, "held")
        data = build_batch([(b"k", b"v"), (b"k", b"w")], 0, attributes=TRANSACTIONAL_BIT, producer_id=9,
                           producer_epoch=2, base_sequence=0)
        assert await replicas.append_batch(partition, data) == 0
        assert (partition.last_stable_offset, partition.high_watermark) == (0, 2)

        store = running_broker.broker.store
        real_stage = store.stage
        entered, release = threading.Event(), threading.Event()

        class Held:
            def __init__(self, staged):
                self.staged = staged

            def commit(self):  # on the committer's worker thread
                entered.set()
                release.wait(DEADLINE_S)
                self.staged.commit()

        monkeypatch.setattr(store, "stage", lambda pendings, sync=None: Held(real_stage(pendings, sync)))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(replicas.write_markers, [partition], 9, 2, True, 0)
            try:
                assert await trio.to_thread.run_sync(entered.wait, DEADLINE_S)
                # The commit marker is being written: the transaction is not decided yet for readers.
                assert partition.last_stable_offset == 0
                assert values((await fetch(client, "held", read_committed=True)).records) == []
            finally:
                release.set()
        assert (partition.last_stable_offset, partition.high_watermark) == (3, 3)
        assert values((await fetch(client, "held", read_committed=True)).records) == [b"v", b"w"]


async def test_describe_producers(running_broker, client):
    with trio.fail_after(DEADLINE_S):
        await create_topic(client, "described")
        pid = (await init_producer_id(client)).producer_id
        await produce(client, "described", batch(pid, 0, 0, count=3))
        await produce(client, "described", batch(pid, 0, 3, transactional=True), transactional_id="t")
        build = request_builder(DESCRIBE_PRODUCERS, 0)
        response = await client.request(build.DescribeProducersRequest(topics=(
            build.TopicRequest(name="described", partition_indexes=(0, 7)),
            build.TopicRequest(name="missing", partition_indexes=(0,)))))
        known, missing = response.topics
        present, absent = known.partitions
        assert (present.error_code, absent.error_code, missing.partitions[0].error_code) == (
            NONE, ErrorCode.unknown_topic_or_partition, ErrorCode.unknown_topic_or_partition)
        (state,) = present.active_producers
        assert (state.producer_id, state.producer_epoch, state.last_sequence, state.coordinator_epoch,
                state.current_txn_start_offset) == (pid, 0, 3, -1, 3)
        assert state.last_timestamp > 0


async def test_idle_producers_expire_at_load_and_periodically(tmp_path):
    hour = 3_600_000
    with trio.fail_after(DEADLINE_S):
        async with broker_at(tmp_path / "data", **{"producer.id.expiration.ms": str(hour)}) as (running, client):
            await create_topic(client, "expiring")
            await produce(client, "expiring", batch(1, 0, 0, age_ms=2 * hour))  # idle for two hours already
            await produce(client, "expiring", batch(2, 0, 0))
            await produce(client, "expiring", batch(3, 0, 0, age_ms=2 * hour, transactional=True), transactional_id="t")
            partition = partition_of(running, "expiring")
            assert {p.producer_id for p in partition.active_producers()} == {1, 2, 3}
            running.broker.replicas.expire_producers()
            assert {p.producer_id for p in partition.active_producers()} == {2, 3}  # 3 has an open transaction
            # Forgotten: any sequence is accepted again (Kafka 2.5+), nothing is refused as unknown.
            assert (await produce(client, "expiring", batch(1, 0, 7, age_ms=2 * hour))).error_code == NONE
        async with broker_at(tmp_path / "data", **{"producer.id.expiration.ms": str(hour)}) as (running, client):
            assert {p.producer_id for p in partition_of(running, "expiring").active_producers()} == {2, 3}


async def test_producer_state_survives_sigkill(tmp_path):
    """No snapshot to lag behind: after kill -9 the state is rebuilt from the index entries."""
    from broker_process import BrokerProcess
    from wire_client import WireClient

    process = BrokerProcess(tmp_path / "killed")
    try:
        with trio.fail_after(DEADLINE_S * 2):
            process.start()
            client = await WireClient.connect(process.port)
            await create_topic(client, "killed")
            pid = (await init_producer_id(client)).producer_id
            for seq in range(10):
                assert (await produce(client, "killed", batch(pid, 0, seq))).base_offset == seq
            await client.aclose()
            process.kill()
            process.start()
            client = await WireClient.connect(process.port)
            try:
                for seq in (9, 5):  # still among the last five batches: duplicates
                    retry = await produce(client, "killed", batch(pid, 0, seq))
                    assert (retry.error_code, retry.base_offset) == (NONE, seq)
                assert (await produce(client, "killed", batch(pid, 0, 11))).error_code == (
                    ErrorCode.out_of_order_sequence_number)
                assert (await produce(client, "killed", batch(pid, 0, 10))).base_offset == 10
                assert (await init_producer_id(client)).producer_id > pid
            finally:
                await client.aclose()
    finally:
        process.stop()
