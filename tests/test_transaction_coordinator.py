"""The transaction coordinator under trio's MockClock (autojump) with in-memory logs: fencing,
markers, transactional offsets, timeouts, recovery after a 'restart' on the same logs."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import itertools

import trio
import trio.testing

from lodestream.broker.config import BROKER_CONFIGS
from lodestream.broker.coordinator_runtime import MemoryCoordinatorLog
from lodestream.broker.groups.coordinator import GroupCoordinator
from lodestream.broker.internal_topics import OFFSETS_TOPIC
from lodestream.broker.transactions.coordinator import TransactionCoordinator
from lodestream.broker.transactions.state import TxnState
import inprocess_broker
from lodestream.protocol.errors import ErrorCode

TX = "tx-1"
T0, T1 = ("orders", 0), ("orders", 1)


def config_with(**overrides):
    settings = {k.replace("_", "."): v for k, v in overrides.items()}

    def config(key: str):
        return BROKER_CONFIGS[key].parse(settings.get(key, BROKER_CONFIGS[key].default))

    return config


class FakePartitions:
    """Stands in for ReplicaManager.write_markers; markers on __consumer_offsets go to the group log."""

    def __init__(self, group_log: MemoryCoordinatorLog) -> None:
        self.group_log = group_log
        self.markers: list[tuple[list, int, int, bool]] = []
        self.gate: trio.Event | None = None  # set: write_markers waits for it
        self.entered = trio.Event()
        self.failures = 0  # fail this many writes first

    async def write(self, partitions, producer_id, producer_epoch, commit, coordinator_epoch):
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.failures:
            self.failures -= 1
            raise OSError("disk full")
        self.markers.append((list(partitions), producer_id, producer_epoch, commit))
        for topic, index in partitions:
            if topic == OFFSETS_TOPIC:
                self.group_log.write_marker(index, producer_id, commit)


class Harness:
    def __init__(self, txn_log=None, group_log=None, ids=None, **overrides) -> None:
        self.config = config_with(**overrides)
        self.txn_log = txn_log or MemoryCoordinatorLog()
        self.group_log = group_log or MemoryCoordinatorLog()
        self.ids = ids or itertools.count(1000)
        self.partitions = FakePartitions(self.group_log)
        self.groups = GroupCoordinator(self.config, self.group_log)
        self.groups.load()
        self.txns = TransactionCoordinator(self.config, self.txn_log, self.allocate, self.partitions.write)
        self.txns.load()

    async def allocate(self) -> int:
        return next(self.ids)

    def restart(self, **overrides) -> "Harness":
        return Harness(self.txn_log, self.group_log, self.ids, **overrides)

    def state(self, transactional_id=TX) -> TxnState:
        return self.txns.entries[transactional_id].metadata.state

    async def settle(self, transactional_id=TX) -> None:
        """Wait (with a deadline) until the transaction's markers and completion are written."""
        with trio.fail_after(60):
            while self.state(transactional_id) in (TxnState.PREPARE_COMMIT, TxnState.PREPARE_ABORT):
                await trio.sleep(0.01)

    async def wait_for(self, state: TxnState, seconds: float = 30) -> None:
        with trio.fail_after(seconds):
            while self.state() != state:
                await trio.sleep(0.5)

    async def begin(self, partitions=(T0,), timeout_ms: int = 60_000) -> tuple[int, int]:
        """InitProducerId, then AddPartitionsToTxn: an ongoing transaction."""
        error, pid, epoch = await self.txns.init_producer_id(TX, timeout_ms)
        assert error == ErrorCode.none
        assert await self.txns.add_partitions(TX, pid, epoch, list(partitions)) == ErrorCode.none
        return pid, epoch


@contextlib.asynccontextmanager
async def running(harness: Harness):
    """The coordinators' background tasks, for the duration of the block."""
    async with trio.open_nursery() as nursery:
        await nursery.start(harness.groups.run)
        await nursery.start(harness.txns.run)
        yield harness
        nursery.cancel_scope.cancel()


def verified(h, pid, epoch, topic, partition, for_produce=True) -> ErrorCode:
    """A verification as the produce path (or TxnOffsetCommit) reports it."""
    result = h.txns.verify_partitions(TX, pid, epoch, [(topic, partition)])
    result = result[(topic, partition)] if isinstance(result, dict) else result
    return TransactionCoordinator.produce_error(result) if for_produce else TransactionCoordinator.offset_commit_error(result)


async def test_full_transaction_with_offsets(autojump_clock):
    h = Harness()
    async with running(h):
        error, pid, epoch = await h.txns.init_producer_id(TX, 60_000)
        assert (error, pid, epoch) == (ErrorCode.none, 1000, 0)
        assert h.txns.partition_for(TX) in h.txn_log.partitions
        assert await h.txns.add_partitions(TX, pid, epoch, [T0, T1]) == ErrorCode.none
        assert h.state() == TxnState.ONGOING
        assert verified(h, pid, epoch, *T0) == ErrorCode.none
        assert verified(h, pid, epoch, "other", 0) == ErrorCode.invalid_txn_state
        group_tp = (OFFSETS_TOPIC, h.groups.partition_for("g"))
        assert verified(h, pid, epoch, *group_tp, for_produce=False) == ErrorCode.invalid_txn_state
        assert await h.txns.add_partitions(TX, pid, epoch, [group_tp]) == ErrorCode.none
        assert verified(h, pid, epoch, *group_tp, for_produce=False) == ErrorCode.none
        await h.groups.commit_transactional_offsets("g", pid, epoch, {("in", 0): (42, -1, "m")})
        assert h.groups.pending_transactional_offsets("g") == {("in", 0)}
        assert h.groups.committed("g") == {}
        assert await h.txns.end_transaction(TX, pid, epoch, True) == (ErrorCode.none, pid, epoch)
        await h.settle()
        assert h.state() == TxnState.COMPLETE_COMMIT
        assert h.partitions.markers == [([group_tp, T0, T1], pid, epoch, True)]
        assert h.groups.committed("g")[("in", 0)].offset == 42
        assert h.groups.pending_transactional_offsets("g") == set()
        # A retried EndTxn with the same result succeeds; the other result does not.
        assert (await h.txns.end_transaction(TX, pid, epoch, True))[0] == ErrorCode.none
        assert (await h.txns.end_transaction(TX, pid, epoch, False))[0] == ErrorCode.invalid_txn_state
    # Replay: the coordinator state and the committed offsets come back.
    again = h.restart()
    assert again.state() == TxnState.COMPLETE_COMMIT
    assert again.groups.committed("g")[("in", 0)].offset == 42


async def test_aborted_offsets_are_dropped_and_replay_agrees(autojump_clock):
    h = Harness()
    async with running(h):
        _, pid, epoch = await h.txns.init_producer_id(TX, 60_000)
        group_tp = (OFFSETS_TOPIC, h.groups.partition_for("g"))
        await h.groups.commit_offsets("g", {("in", 0): (5, -1, "")})
        assert await h.txns.add_partitions(TX, pid, epoch, [group_tp]) == ErrorCode.none
        await h.groups.commit_transactional_offsets("g", pid, epoch, {("in", 0): (9, -1, "")})
        assert (await h.txns.end_transaction(TX, pid, epoch, False))[0] == ErrorCode.none
        await h.settle()
        assert h.state() == TxnState.COMPLETE_ABORT
        assert h.groups.committed("g")[("in", 0)].offset == 5
    assert h.restart().groups.committed("g")[("in", 0)].offset == 5


async def test_init_fences_an_ongoing_transaction(autojump_clock):
    h = Harness()
    async with running(h):
        pid, epoch = await h.begin([T0])
        # A second producer with the same transactional id: the ongoing txn is aborted with a bumped
        # epoch, then the new producer gets the epoch after that (Kafka answers CONCURRENT_TRANSACTIONS
        # first and the client retries; we wait for the abort instead).
        error, pid2, epoch2 = await h.txns.init_producer_id(TX, 60_000)
        assert (error, pid2, epoch2) == (ErrorCode.none, pid, epoch + 2)
        assert h.partitions.markers == [([T0], pid, epoch + 1, False)]
        assert h.state() == TxnState.EMPTY
        # The zombie is fenced everywhere.
        assert await h.txns.add_partitions(TX, pid, epoch, [T0]) == ErrorCode.producer_fenced
        assert (await h.txns.end_transaction(TX, pid, epoch, True))[0] == ErrorCode.producer_fenced
        assert verified(h, pid, epoch, *T0) == ErrorCode.invalid_producer_epoch


async def test_init_errors(autojump_clock):
    h = Harness(transaction_max_timeout_ms="10000")
    async with running(h):
        assert (await h.txns.init_producer_id(TX, 10_001))[0] == ErrorCode.invalid_transaction_timeout
        assert (await h.txns.init_producer_id(TX, 0))[0] == ErrorCode.invalid_transaction_timeout
        assert (await h.txns.init_producer_id("", 1000))[0] == ErrorCode.invalid_request
        _, pid, epoch = await h.txns.init_producer_id(TX, 10_000)
        # KIP-360: a producer retrying with its id and epoch bumps; an unknown id is fenced.
        assert await h.txns.init_producer_id(TX, 10_000, pid, epoch) == (ErrorCode.none, pid, epoch + 1)
        assert (await h.txns.init_producer_id(TX, 10_000, pid + 77, 0))[0] == ErrorCode.producer_fenced
        assert (await h.txns.init_producer_id(TX, 10_000, pid, epoch - 1 if epoch else 5))[0] == ErrorCode.producer_fenced


async def test_epoch_exhaustion_gets_a_new_producer_id(autojump_clock):
    h = Harness()
    async with running(h):
        _, pid, _ = await h.txns.init_producer_id(TX, 60_000)
        entry = h.txns.entries[TX]
        from dataclasses import replace

        entry.metadata = replace(entry.metadata, producer_epoch=32766)
        error, new_pid, epoch = await h.txns.init_producer_id(TX, 60_000)
        assert error == ErrorCode.none and new_pid != pid and epoch == 0


async def test_timeout_aborts_and_fences(autojump_clock):
    h = Harness()
    async with running(h):
        pid, epoch = await h.begin([T0], timeout_ms=5_000)
        # Default check interval 10 s: aborted within timeout + interval.
        await h.wait_for(TxnState.COMPLETE_ABORT, 20)
        assert h.partitions.markers == [([T0], pid, epoch + 1, False)]
        assert h.txns.entries[TX].metadata.producer_epoch == epoch + 1
        assert (await h.txns.end_transaction(TX, pid, epoch, True))[0] == ErrorCode.producer_fenced


async def test_timeout_does_not_abort_a_commit_whose_markers_are_being_written(autojump_clock):
    h = Harness()
    async with running(h):
        pid, epoch = await h.begin([T0], timeout_ms=1_000)
        h.partitions.gate = trio.Event()
        assert (await h.txns.end_transaction(TX, pid, epoch, True))[0] == ErrorCode.none
        await h.partitions.entered.wait()
        await trio.sleep(60)  # several timeout checks pass while the commit markers hang
        assert h.state() == TxnState.PREPARE_COMMIT
        assert (await h.txns.init_producer_id(TX, 1_000))[0] == ErrorCode.concurrent_transactions
        assert await h.txns.add_partitions(TX, pid, epoch, [T1]) == ErrorCode.concurrent_transactions
        h.partitions.gate.set()
        await h.settle()
        assert h.state() == TxnState.COMPLETE_COMMIT
        assert h.partitions.markers == [([T0], pid, epoch, True)]


async def test_marker_failures_are_retried(autojump_clock):
    h = Harness()
    async with running(h):
        pid, epoch = await h.begin([T0])
        h.partitions.failures = 3
        await h.txns.end_transaction(TX, pid, epoch, False)
        await h.settle()
        assert h.state() == TxnState.COMPLETE_ABORT and len(h.partitions.markers) == 1


async def test_prepared_transaction_is_completed_after_a_restart(autojump_clock):
    h = Harness()
    async with running(h):
        _, pid, epoch = await h.txns.init_producer_id(TX, 60_000)
        group_tp = (OFFSETS_TOPIC, h.groups.partition_for("g"))
        await h.txns.add_partitions(TX, pid, epoch, [T0, group_tp])
        await h.groups.commit_transactional_offsets("g", pid, epoch, {("in", 0): (7, -1, "")})
        h.partitions.gate = trio.Event()  # "crash" while the markers are being written
        await h.txns.end_transaction(TX, pid, epoch, True)
        await h.partitions.entered.wait()
    again = h.restart()
    assert again.state() == TxnState.PREPARE_COMMIT
    assert again.groups.pending_transactional_offsets("g") == {("in", 0)}
    async with running(again):
        await again.settle()
        assert again.state() == TxnState.COMPLETE_COMMIT
        assert again.partitions.markers == [([group_tp, T0], pid, epoch, True)]
        assert again.groups.committed("g")[("in", 0)].offset == 7


async def test_ongoing_transaction_after_a_restart_times_out(autojump_clock):
    h = Harness()
    async with running(h):
        pid, epoch = await h.begin([T0], timeout_ms=2_000)
    again = h.restart()
    assert again.state() == TxnState.ONGOING
    async with running(again):
        await again.wait_for(TxnState.COMPLETE_ABORT)


async def test_end_txn_v5_bumps_the_epoch(autojump_clock):
    h = Harness()
    async with running(h):
        pid, epoch = await h.begin([T0])
        assert await h.txns.end_transaction(TX, pid, epoch, True, tv2=True) == (ErrorCode.none, pid, epoch + 1)
        await h.settle()
        assert h.partitions.markers == [([T0], pid, epoch + 1, True)]
        # A retry with the old epoch succeeds and tells the new epoch; a late one of an older epoch is fenced.
        assert await h.txns.end_transaction(TX, pid, epoch, True, tv2=True) == (ErrorCode.none, pid, epoch + 1)
        assert (await h.txns.add_partitions(TX, pid, epoch, [T0])) == ErrorCode.producer_fenced
        assert await h.txns.add_partitions(TX, pid, epoch + 1, [T0]) == ErrorCode.none


async def test_expired_transactional_ids_are_removed(autojump_clock):
    h = Harness(transactional_id_expiration_ms="60000",
                transaction_remove_expired_transaction_cleanup_interval_ms="10000")
    async with running(h):
        await h.txns.init_producer_id(TX, 10_000)
        with trio.fail_after(120):
            while TX in h.txns.entries:
                await trio.sleep(1)
    assert TX not in h.restart().txns.entries  # the tombstone replays


async def test_describe_and_list(autojump_clock):
    h = Harness()
    async with running(h):
        _, pid, epoch = await h.txns.init_producer_id(TX, 60_000)
        await h.txns.init_producer_id("tx-2", 60_000)
        await h.txns.add_partitions(TX, pid, epoch, [T0])
        md = h.txns.describe(TX)
        assert md.state == TxnState.ONGOING and md.partitions == {T0}
        assert h.txns.describe("nope") is None
        listed, unknown = h.txns.list_transactions(["Ongoing", "Bogus"])
        assert [m.transactional_id for m in listed] == [TX] and unknown == ["Bogus"]
        assert [m.transactional_id for m in h.txns.list_transactions(producer_ids=[pid])[0]] == [TX]
        assert len(h.txns.list_transactions()[0]) == 2
        await trio.sleep(5)
        ongoing = ["Ongoing"]
        assert [m.transactional_id for m in h.txns.list_transactions(ongoing, duration_ms=4000)[0]] == [TX]
        assert h.txns.list_transactions(ongoing, duration_ms=6000)[0] == []
        assert [m.transactional_id for m in h.txns.list_transactions(pattern="-2$")[0]] == ["tx-2"]


# -- over the wire: an in-process broker on a loopback socket ----------------------------------------

NONE = ErrorCode.none


def req(api_key: int, version: int):
    from lodestream.protocol.messages import request_builder

    return request_builder(api_key, version)


def broker_at(data_dir):
    return inprocess_broker.broker_at(data_dir, **{"offsets.topic.num.partitions": "3",
                                                   "transaction.state.log.num.partitions": "3"})


async def describe_txn(client, transactional_id: str = TX):
    response = await client.request(req(65, 0).DescribeTransactionsRequest(transactional_ids=(transactional_id,)))
    return response.transaction_states[0]


async def wait_for_state(client, state: str) -> None:
    with trio.fail_after(20):
        while (await describe_txn(client)).transaction_state != state:
            await trio.sleep(0.01)


async def fetch_committed(client, group: str, require_stable: bool, all_topics: bool = False):
    """(offset, error) of orders-0; all_topics: ask with a null topic list (every committed partition)."""
    b = req(9, 7)
    topics = None if all_topics else (b.OffsetFetchRequestTopic(name="orders", partition_indexes=(0,)),)
    response = await client.request(b.OffsetFetchRequest(group_id=group, topics=topics, require_stable=require_stable))
    part = response.topics[0].partitions[0]
    return part.committed_offset, part.error_code


async def txn_offset_commit(client, pid: int, epoch: int, offset: int, metadata: str = "") -> ErrorCode:
    b = req(28, 3)
    response = await client.request(b.TxnOffsetCommitRequest(
        transactional_id=TX, group_id="g", producer_id=pid, producer_epoch=epoch, generation_id=-1, member_id="",
        group_instance_id=None, topics=(b.TxnOffsetCommitRequestTopic(name="orders", partitions=(
            b.TxnOffsetCommitRequestPartition(partition_index=0, committed_offset=offset, committed_leader_epoch=-1,
                                              committed_metadata=metadata),)),)))
    return response.topics[0].partitions[0].error_code


async def test_transaction_over_the_wire_and_after_a_restart(tmp_path):
    from test_group_handlers import commit
    from test_produce_fetch import create_topic, produce_request

    import record_batches as rb
    from lodestream.protocol.record_batch import TRANSACTIONAL_BIT

    with trio.fail_after(60):
        async with broker_at(tmp_path / "data") as (running, client):
            found = await client.request(req(10, 4).FindCoordinatorRequest(key_type=1, coordinator_keys=(TX,)))
            assert found.coordinators[0].error_code == NONE and found.coordinators[0].port == running.port
            assert running.broker.image.topic("__transaction_state") is not None
            await create_topic(client, "orders", 2)
            b = req(22, 4)
            init = await client.request(b.InitProducerIdRequest(
                transactional_id=TX, transaction_timeout=datetime.timedelta(seconds=60), producer_id=-1,
                producer_epoch=-1))
            assert init.error_code == NONE
            pid, epoch = init.producer_id, init.producer_epoch
            b = req(24, 3)
            added = await client.request(b.AddPartitionsToTxnRequest(
                v3_and_below_transactional_id=TX, v3_and_below_producer_id=pid, v3_and_below_producer_epoch=epoch,
                v3_and_below_topics=(b.AddPartitionsToTxnTopic(name="orders", partitions=(0, 1)),
                                     b.AddPartitionsToTxnTopic(name="missing", partitions=(0,)))))
            errors = {(t.name, r.partition_index): r.partition_error_code
                      for t in added.results_by_topic_v3_and_below for r in t.results_by_partition}
            assert errors == {("orders", 0): ErrorCode.operation_not_attempted,
                              ("orders", 1): ErrorCode.operation_not_attempted,
                              ("missing", 0): ErrorCode.unknown_topic_or_partition}
            added = await client.request(b.AddPartitionsToTxnRequest(
                v3_and_below_transactional_id=TX, v3_and_below_producer_id=pid, v3_and_below_producer_epoch=epoch,
                v3_and_below_topics=(b.AddPartitionsToTxnTopic(name="orders", partitions=(0, 1)),)))
            assert all(r.partition_error_code == NONE for t in added.results_by_topic_v3_and_below
                       for r in t.results_by_partition)
            records = rb.build_batch([rb.Record(key=None, value=b"x")], producer_id=pid, producer_epoch=epoch,
                                     base_sequence=0, extra_attributes=TRANSACTIONAL_BIT)
            produced = await client.request(dataclasses.replace(produce_request("orders", {0: records}, version=9),
                                                                transactional_id=TX))
            assert produced.responses[0].partition_responses[0].error_code == NONE
            b = req(25, 3)
            offsets_added = await client.request(b.AddOffsetsToTxnRequest(
                transactional_id=TX, producer_id=pid, producer_epoch=epoch, group_id="g"))
            assert offsets_added.error_code == NONE
            assert await commit(client, 9, "g", {("orders", 0): (0, "")}) == {("orders", 0): NONE}
            assert await txn_offset_commit(client, pid, epoch, 1, "m") == NONE
            assert await fetch_committed(client, "g", True, all_topics=True) == (-1, ErrorCode.unstable_offset_commit)
            assert await fetch_committed(client, "g", True) == (-1, ErrorCode.unstable_offset_commit)
            assert await fetch_committed(client, "g", False) == (0, NONE)
            described = await describe_txn(client)
            assert described.transaction_state == "Ongoing" and described.producer_id == pid
            assert {(t.topic, p) for t in described.topics for p in t.partitions} == {
                ("orders", 0), ("orders", 1), ("__consumer_offsets", running.broker.groups.partition_for("g"))}
            b = req(26, 3)
            ended = await client.request(b.EndTxnRequest(transactional_id=TX, producer_id=pid, producer_epoch=epoch,
                                                         committed=True))
            assert ended.error_code == NONE
            await wait_for_state(client, "CompleteCommit")
            assert await fetch_committed(client, "g", True) == (1, NONE)
            orders = running.broker.image.topic("orders")
            for index in (0, 1):  # a commit marker on each partition of the transaction
                partition = running.broker.replicas.get(orders.topic_id, index)
                assert partition.local_end_offset == (2 if index == 0 else 1)
            listed = await client.request(req(66, 1).ListTransactionsRequest(
                state_filters=("CompleteCommit",), producer_id_filters=(), duration_filter=-1))
            assert [(t.transactional_id, t.transaction_state) for t in listed.transaction_states] == [
                (TX, "CompleteCommit")]
            b = req(24, 5)
            verified = await client.request(b.AddPartitionsToTxnRequest(transactions=(b.AddPartitionsToTxnTransaction(
                transactional_id=TX, producer_id=pid, producer_epoch=epoch, verify_only=True,
                topics=(b.AddPartitionsToTxnTopic(name="orders", partitions=(0,)),)),)))
            result = verified.results_by_transaction[0].topic_results[0].results_by_partition[0]
            assert result.partition_error_code == ErrorCode.transaction_abortable  # the txn is over
            # A retried EndTxn after completion succeeds.
            again = await client.request(req(26, 3).EndTxnRequest(
                transactional_id=TX, producer_id=pid, producer_epoch=epoch, committed=True))
            assert again.error_code == NONE
        async with broker_at(tmp_path / "data") as (running, client):
            described = await describe_txn(client)
            assert (described.transaction_state, described.producer_id) == ("CompleteCommit", pid)
            assert await fetch_committed(client, "g", True) == (1, NONE)


async def test_errors_over_the_wire_by_version(tmp_path):
    from test_produce_fetch import create_topic

    with trio.fail_after(60):
        async with broker_at(tmp_path / "data") as (running, client):
            await create_topic(client, "orders", 1)
            init = await client.request(req(22, 4).InitProducerIdRequest(
                transactional_id=TX, transaction_timeout=datetime.timedelta(seconds=60), producer_id=-1,
                producer_epoch=-1))
            pid, epoch = init.producer_id, init.producer_epoch
            # A stale epoch: PRODUCER_FENCED from v2 on, INVALID_PRODUCER_EPOCH before (KIP-588).
            for version, expected in ((1, ErrorCode.invalid_producer_epoch), (2, ErrorCode.producer_fenced)):
                added = await client.request(req(25, version).AddOffsetsToTxnRequest(
                    transactional_id=TX, producer_id=pid, producer_epoch=epoch + 1, group_id="g"))
                assert added.error_code == expected
                ended = await client.request(req(26, version).EndTxnRequest(
                    transactional_id=TX, producer_id=pid, producer_epoch=epoch + 1, committed=True))
                assert ended.error_code == expected
            # KIP-360 InitProducerId with a stale epoch: PRODUCER_FENCED from v4 on, INVALID_PRODUCER_EPOCH before.
            for version, expected in ((3, ErrorCode.invalid_producer_epoch), (4, ErrorCode.producer_fenced)):
                stale = await client.request(req(22, version).InitProducerIdRequest(
                    transactional_id=TX, transaction_timeout=datetime.timedelta(seconds=60), producer_id=pid,
                    producer_epoch=epoch + 7))
                assert stale.error_code == expected
            # Unknown transactional id / producer id; no transaction to commit.
            unknown = await client.request(req(26, 3).EndTxnRequest(
                transactional_id="nope", producer_id=pid, producer_epoch=epoch, committed=True))
            assert unknown.error_code == ErrorCode.invalid_producer_id_mapping
            empty = await client.request(req(26, 3).EndTxnRequest(
                transactional_id=TX, producer_id=pid, producer_epoch=epoch, committed=True))
            assert empty.error_code == ErrorCode.invalid_txn_state
            assert await txn_offset_commit(client, pid, epoch, 1) == ErrorCode.invalid_txn_state  # no AddOffsetsToTxn
            # EndTxn v5 (KIP-890): the epoch is bumped at the end of every transaction and returned.
            b = req(24, 3)
            await client.request(b.AddPartitionsToTxnRequest(
                v3_and_below_transactional_id=TX, v3_and_below_producer_id=pid, v3_and_below_producer_epoch=epoch,
                v3_and_below_topics=(b.AddPartitionsToTxnTopic(name="orders", partitions=(0,)),)))
            ended = await client.request(req(26, 5).EndTxnRequest(
                transactional_id=TX, producer_id=pid, producer_epoch=epoch, committed=False))
            assert (ended.error_code, ended.producer_id, ended.producer_epoch) == (NONE, pid, epoch + 1)
            # An unknown id: start time -1 as Kafka sends it, which kio refuses to decode, so read the bytes:
            # correlation id, header tags, throttle time, array length, then the first error code.
            from lodestream.protocol.codec import encode_request

            await client.send_raw(encode_request(999, req(65, 0).DescribeTransactionsRequest(transactional_ids=("nope",))))
            frame = await client.read_frame()
            assert int.from_bytes(frame[10:12], "big") == ErrorCode.transactional_id_not_found.value
            listed = await client.request(req(66, 0).ListTransactionsRequest(state_filters=("Bogus",),
                                                                             producer_id_filters=()))
            assert listed.unknown_state_filters == ("Bogus",) and listed.transaction_states == ()


async def test_prepared_commit_is_completed_by_the_next_broker_on_the_same_logs(tmp_path, monkeypatch):
    """A broker stops between PrepareCommit and its markers (as after kill -9: the markers never
    reach the log); the next broker on the same data replays __transaction_state and
    __consumer_offsets, writes the markers and makes the offsets visible."""
    from test_produce_fetch import create_topic

    import lodestream.broker.transactions.coordinator as coordinator_module

    monkeypatch.setattr(coordinator_module, "COMPLETION_WAIT_S", 0.05)
    with trio.fail_after(60):
        async with broker_at(tmp_path / "data") as (running, client):
            await create_topic(client, "orders", 1)
            txns = running.broker.transactions
            _, pid, epoch = await txns.init_producer_id(TX, 60_000)
            group_tp = (OFFSETS_TOPIC, running.broker.groups.partition_for("g"))
            assert await txns.add_partitions(TX, pid, epoch, [T0, group_tp]) == NONE
            assert await txn_offset_commit(client, pid, epoch, 7) == NONE
            never = trio.Event()

            async def hang(*args):
                await never.wait()

            txns.write_markers = hang
            assert (await txns.end_transaction(TX, pid, epoch, True))[0] == NONE
            assert txns.entries[TX].metadata.state == TxnState.PREPARE_COMMIT
        async with broker_at(tmp_path / "data") as (running, client):
            await wait_for_state(client, "CompleteCommit")
            assert await fetch_committed(client, "g", True) == (7, NONE)
            orders = running.broker.image.topic("orders")
            assert running.broker.replicas.get(orders.topic_id, 0).local_end_offset == 1  # the marker
