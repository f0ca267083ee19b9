"""The coordinator runtime (broker/coordinator_runtime.py) under the group and transaction coordinators:
per-partition load and unload, state applied by replaying what was written, a failed write leaving
only durable state, and transaction markers replayed in log order. In-memory logs, MockClock."""

from __future__ import annotations

import pytest
import trio

from lodestream.broker.coordinator_runtime import MemoryCoordinatorLog
from lodestream.broker.groups.coordinator import GroupCoordinator
from lodestream.broker.transactions.coordinator import TransactionCoordinator
from lodestream.protocol.errors import ErrorCode, KafkaError

from test_consumer_group import Client, World, config_with, start_coordinator


def hold_appends(log: MemoryCoordinatorLog) -> trio.Event:
    """Appends wait (written, not yet durable) until the returned event is set."""
    gate = trio.Event()

    async def slow_append():
        await gate.wait()

    log.append_hook = slow_append
    return gate


def groups_on_different_partitions(coordinator: GroupCoordinator) -> tuple[str, str]:
    first = "g0"
    other = next(f"g{i}" for i in range(1, 1000)
                 if coordinator.partition_for(f"g{i}") != coordinator.partition_for(first))
    return first, other


async def test_a_partition_unloads_and_loads_again(autojump_clock):
    log = MemoryCoordinatorLog()
    async with trio.open_nursery() as nursery:
        coordinator = await start_coordinator(nursery, log)
        moving, staying = groups_on_different_partitions(coordinator)
        await coordinator.commit_offsets(moving, {("t", 0): (10, -1, "m")})
        await coordinator.commit_offsets(staying, {("t", 0): (20, -1, "")})
        partition = coordinator.partition_for(moving)

        coordinator.runtime.unload(partition)  # another node leads it now
        assert coordinator.committed(moving) == {} and moving not in coordinator.groups
        assert coordinator.committed(staying)[("t", 0)].offset == 20
        with pytest.raises(KafkaError) as refused:
            await coordinator.commit_offsets(moving, {("t", 0): (11, -1, "")})
        assert refused.value.code == ErrorCode.not_coordinator

        coordinator.load([partition])  # and back: rebuilt from its records alone
        committed = coordinator.committed(moving)[("t", 0)]
        assert (committed.offset, committed.metadata) == (10, "m")
        assert moving in coordinator.groups
        nursery.cancel_scope.cancel()


async def test_offsets_are_visible_only_once_durable_and_a_failed_write_changes_nothing(autojump_clock):
    log = MemoryCoordinatorLog()
    async with trio.open_nursery() as nursery:
        coordinator = await start_coordinator(nursery, log)
        await coordinator.commit_offsets("g", {("t", 0): (5, -1, "")})
        gate = hold_appends(log)
        nursery.start_soon(coordinator.commit_offsets, "g", {("t", 0): (6, -1, "")})
        await trio.testing.wait_all_tasks_blocked()
        assert coordinator.committed("g")[("t", 0)].offset == 5  # written, not yet durable
        gate.set()
        await trio.testing.wait_all_tasks_blocked()
        assert coordinator.committed("g")[("t", 0)].offset == 6

        async def failing_append():
            raise KafkaError(ErrorCode.coordinator_not_available, "disk full")

        log.append_hook = failing_append
        with pytest.raises(KafkaError):
            await coordinator.commit_offsets("g", {("t", 0): (7, -1, "")})
        assert coordinator.committed("g")[("t", 0)].offset == 6
        nursery.cancel_scope.cancel()


async def test_a_failed_group_write_puts_the_group_back_to_its_durable_record(autojump_clock):
    """A KIP-848 member joins (durable); a second member's join is not written: the group in memory is
    the durable one again (one member), and the second member gets the error, as after a reload."""
    world = World()
    world.create_topic("t", 4)
    log = MemoryCoordinatorLog()
    async with trio.open_nursery() as nursery:
        coordinator = await start_coordinator(nursery, log)
        first = Client(coordinator, world)
        assert (await first.join()).error == ErrorCode.none
        durable_epoch = coordinator.groups["g"].group_epoch

        async def failing_append():
            raise KafkaError(ErrorCode.coordinator_not_available, "disk full")

        log.append_hook = failing_append
        second = Client(coordinator, world)
        result = await second.join()
        assert result.error == ErrorCode.coordinator_not_available
        group = coordinator.groups["g"]
        assert set(group.members) == {first.member_id}
        assert group.group_epoch == durable_epoch

        log.append_hook = None  # the disk recovers: the member retries and joins
        assert (await second.join()).error == ErrorCode.none
        assert set(coordinator.groups["g"].members) == {first.member_id, second.member_id}
        nursery.cancel_scope.cancel()


async def test_a_marker_landing_during_the_offsets_write_is_replayed_after_it(autojump_clock):
    """Log order: the transactional offsets were appended before the marker, so the marker completes them."""
    log = MemoryCoordinatorLog()
    async with trio.open_nursery() as nursery:
        coordinator = await start_coordinator(nursery, log)
        partition = coordinator.partition_for("g")
        gate = hold_appends(log)
        nursery.start_soon(coordinator.commit_transactional_offsets, "g", 42, 0, {("t", 0): (9, -1, "")})
        await trio.testing.wait_all_tasks_blocked()
        log.write_marker(partition, 42, True)  # durable while the offsets' append is in flight
        gate.set()
        await trio.testing.wait_all_tasks_blocked()
        assert coordinator.committed("g")[("t", 0)].offset == 9
        assert coordinator.pending_transactional_offsets("g") == set()
        nursery.cancel_scope.cancel()


async def test_the_transaction_coordinator_unloads_and_loads_a_partition(autojump_clock):
    ids = iter(range(1000, 2000))

    async def allocate() -> int:
        return next(ids)

    async def no_markers(*args) -> None:
        return None

    config = config_with(**{"transaction.state.log.num.partitions": 50, "transaction.max.timeout.ms": 900_000,
                            "transaction.abort.timed.out.transaction.cleanup.interval.ms": 10_000,
                            "transaction.remove.expired.transaction.cleanup.interval.ms": 3_600_000,
                            "transactional.id.expiration.ms": 604_800_000})
    txns = TransactionCoordinator(config, MemoryCoordinatorLog(), allocate, no_markers)
    txns.load()
    async with trio.open_nursery() as nursery:
        await nursery.start(txns.run)
        error, producer_id, epoch = await txns.init_producer_id("tx", 60_000)
        assert error == ErrorCode.none
        partition = txns.partition_for("tx")
        txns.runtime.unload(partition)
        assert txns.describe("tx") is None
        txns.load([partition])
        described = txns.describe("tx")
        assert (described.producer_id, described.producer_epoch) == (producer_id, epoch)
        nursery.cancel_scope.cancel()
