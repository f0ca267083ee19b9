"""The classic group state machine under trio's MockClock (autojump): every
timeout (initial delay, rebalance, session) costs no real time."""

from __future__ import annotations

import trio
import trio.testing

from lodestream.broker.config import BROKER_CONFIGS
from lodestream.broker.groups.classic import ClassicGroup, JoinRequest, heartbeat, join_group, leave_group, sync_group
from lodestream.broker.coordinator_runtime import MemoryCoordinatorLog, java_string_hashcode, kafka_abs
from lodestream.broker.groups.coordinator import GroupCoordinator
from lodestream.protocol.errors import ErrorCode

GROUP = "g"
PROTOCOLS = [("range", b"\x00\x00\x00\x00\x00\x01\x00\x01t\x00\x00\x00\x00")]


def make_coordinator(log: MemoryCoordinatorLog | None = None, **overrides) -> GroupCoordinator:
    # A short initial delay so that members joining together form one generation (free under MockClock).
    settings = {"group.initial.rebalance.delay.ms": "1000", **{k.replace("_", "."): v for k, v in overrides.items()}}

    def config(key: str):
        raw = settings.get(key, BROKER_CONFIGS[key].default)
        return BROKER_CONFIGS[key].parse(raw)

    coordinator = GroupCoordinator(config, log or MemoryCoordinatorLog())
    coordinator.load()
    return coordinator


def request(member_id: str = "", *, instance: str | None = None, session: int = 10_000, rebalance: int = 30_000,
            version: int = 9, protocols=PROTOCOLS, client: str = "c") -> JoinRequest:
    return JoinRequest(GROUP, member_id, instance, "consumer", list(protocols), session, rebalance, client, "/127.0.0.1",
                       version)


async def join(coordinator, member_id="", **kw):
    """A JoinGroup as a v4+ client sends it: retry once with the id from MEMBER_ID_REQUIRED."""
    result = await join_group(coordinator, request(member_id, **kw))
    if result.error == ErrorCode.member_id_required:
        result = await join_group(coordinator, request(result.member_id, **kw))
    return result


async def join_all(coordinator, nursery_results: dict, specs: dict):
    """Join several members concurrently; specs: name -> kwargs. Results land in nursery_results[name]."""
    async with trio.open_nursery() as nursery:
        for name, kwargs in specs.items():
            async def one(name=name, kwargs=kwargs):
                nursery_results[name] = await join(coordinator, **kwargs)
            nursery.start_soon(one)


async def sync(coordinator, result, assignments=None):
    return await sync_group(coordinator, GROUP, result.member_id, result.generation_id, None, "consumer",
                            result.protocol_name, assignments or {})


def group(coordinator) -> ClassicGroup:
    return coordinator.groups[GROUP]


async def test_join_sync_heartbeat(autojump_clock):
    coordinator = make_coordinator()
    async with trio.open_nursery() as nursery:
        await nursery.start(coordinator.run)
        # v4+: a new dynamic member is first told its id.
        first = await join_group(coordinator, request())
        assert first.error == ErrorCode.member_id_required and first.member_id.startswith("c-")
        assert group(coordinator).state_name == "Empty"
        result = await join_group(coordinator, request(first.member_id))
        assert result.error == ErrorCode.none
        assert result.generation_id == 1 and result.leader == result.member_id
        assert result.protocol_name == "range" and result.protocol_type == "consumer"
        assert [m[0] for m in result.members] == [result.member_id]
        assert group(coordinator).state_name == "CompletingRebalance"
        synced = await sync(coordinator, result, {result.member_id: b"assignment"})
        assert synced.error == ErrorCode.none and synced.assignment == b"assignment"
        assert group(coordinator).state_name == "Stable"
        # The group (with its assignment) was persisted.
        assert coordinator.log.partitions[coordinator.partition_for(GROUP)]
        # Heartbeats keep the member alive well past its session timeout.
        for _ in range(10):
            await trio.sleep(5)
            assert await heartbeat(coordinator, GROUP, result.member_id, 1, None) == ErrorCode.none
        assert await heartbeat(coordinator, GROUP, result.member_id, 0, None) == ErrorCode.illegal_generation
        assert await heartbeat(coordinator, GROUP, "nobody", 1, None) == ErrorCode.unknown_member_id
        assert await heartbeat(coordinator, "other", result.member_id, 1, None) == ErrorCode.unknown_member_id

        # A second member joins: the group rebalances; the first member learns it from its heartbeat.
        second_task: dict = {}

        async def second():
            second_task["result"] = await join(coordinator, client="d")

        nursery.start_soon(second)
        await trio.testing.wait_all_tasks_blocked()
        assert group(coordinator).state_name == "PreparingRebalance"
        assert await heartbeat(coordinator, GROUP, result.member_id, 1, None) == ErrorCode.rebalance_in_progress
        rejoined = await join(coordinator, result.member_id)
        await trio.testing.wait_all_tasks_blocked()
        other = second_task["result"]
        assert rejoined.generation_id == other.generation_id == 2
        assert rejoined.leader == result.member_id and len(rejoined.members) == 2 and other.members == []
        # Follower's sync waits for the leader's.
        follower_sync: dict = {}

        async def follower():
            follower_sync["r"] = await sync(coordinator, other)

        nursery.start_soon(follower)
        await trio.testing.wait_all_tasks_blocked()
        assert "r" not in follower_sync
        assert await heartbeat(coordinator, GROUP, other.member_id, 2, None) == ErrorCode.none
        leader_sync = await sync(coordinator, rejoined, {rejoined.member_id: b"a", other.member_id: b"b"})
        await trio.testing.wait_all_tasks_blocked()
        assert leader_sync.assignment == b"a" and follower_sync["r"].assignment == b"b"
        assert group(coordinator).state_name == "Stable"
        nursery.cancel_scope.cancel()


async def test_member_expiry(autojump_clock):
    coordinator = make_coordinator()
    async with trio.open_nursery() as nursery:
        await nursery.start(coordinator.run)
        result = await join(coordinator, session=10_000)
        await sync(coordinator, result, {result.member_id: b"x"})
        assert group(coordinator).state_name == "Stable"
        start = trio.current_time()
        while group(coordinator).state_name != "Empty":
            await trio.sleep(0.5)
        # Removed once its session timeout passed without a heartbeat, then the group emptied.
        assert 10 <= trio.current_time() - start <= 11
        assert group(coordinator).members == {}
        assert group(coordinator).generation_id == 2
        assert await heartbeat(coordinator, GROUP, result.member_id, 1, None) == ErrorCode.unknown_member_id
        nursery.cancel_scope.cancel()


async def test_pending_member_expires(autojump_clock):
    coordinator = make_coordinator()
    async with trio.open_nursery() as nursery:
        await nursery.start(coordinator.run)
        first = await join_group(coordinator, request(session=6000))
        assert first.member_id in group(coordinator).pending_join
        await trio.sleep(7)
        assert group(coordinator).pending_join == set()
        nursery.cancel_scope.cancel()


async def test_leader_leaving_mid_rebalance(autojump_clock):
    coordinator = make_coordinator()
    async with trio.open_nursery() as nursery:
        await nursery.start(coordinator.run)
        results: dict = {}
        await join_all(coordinator, results, {"a": {"client": "a"}})
        a = results["a"]
        await sync(coordinator, a, {a.member_id: b"1"})
        # b joins -> PreparingRebalance; a (the leader) leaves instead of rejoining.
        joined: dict = {}

        async def b_joins():
            joined["b"] = await join(coordinator, client="b")

        nursery.start_soon(b_joins)
        await trio.testing.wait_all_tasks_blocked()
        assert group(coordinator).state_name == "PreparingRebalance"
        top, errors = await leave_group(coordinator, GROUP, [(a.member_id, None, "bye")])
        assert (top, errors) == (ErrorCode.none, [ErrorCode.none])
        await trio.testing.wait_all_tasks_blocked()
        b = joined["b"]
        # Without its old leader, the group completes with b as the leader of generation 2.
        assert b.error == ErrorCode.none and b.leader == b.member_id and b.generation_id == 2
        assert [m[0] for m in b.members] == [b.member_id]
        assert (await sync(coordinator, b, {b.member_id: b"all"})).assignment == b"all"
        assert group(coordinator).state_name == "Stable"
        nursery.cancel_scope.cancel()


async def test_leader_leaving_while_followers_await_sync(autojump_clock):
    coordinator = make_coordinator()
    async with trio.open_nursery() as nursery:
        await nursery.start(coordinator.run)
        results: dict = {}
        await join_all(coordinator, results, {"a": {"client": "a"}, "b": {"client": "b"}})
        leader = next(r for r in results.values() if r.leader == r.member_id)
        follower = next(r for r in results.values() if r.leader != r.member_id)
        waiting: dict = {}

        async def follower_sync():
            waiting["r"] = await sync(coordinator, follower)

        nursery.start_soon(follower_sync)
        await trio.testing.wait_all_tasks_blocked()
        await leave_group(coordinator, GROUP, [(leader.member_id, None, None)])
        await trio.testing.wait_all_tasks_blocked()
        assert waiting["r"].error == ErrorCode.rebalance_in_progress
        assert group(coordinator).state_name == "PreparingRebalance"
        again = await join(coordinator, follower.member_id)
        assert again.generation_id == follower.generation_id + 1 and again.leader == follower.member_id
        nursery.cancel_scope.cancel()


async def test_rebalance_timeout_removes_slow_member(autojump_clock):
    coordinator = make_coordinator()
    async with trio.open_nursery() as nursery:
        await nursery.start(coordinator.run)
        results: dict = {}
        await join_all(coordinator, results, {"a": {"client": "a", "rebalance": 20_000},
                                              "b": {"client": "b", "rebalance": 20_000}})
        a, b = results["a"], results["b"]
        leader = a if a.leader == a.member_id else b
        await sync(coordinator, leader, {a.member_id: b"1", b.member_id: b"2"})
        for r in (a, b):
            if r is not leader:
                await sync(coordinator, r)
        assert group(coordinator).state_name == "Stable"
        # a rejoins (say, new subscription); b keeps heartbeating but never rejoins.
        rejoin: dict = {}

        async def a_rejoins():
            rejoin["a"] = await join(coordinator, a.member_id, client="a", rebalance=20_000,
                                     protocols=[("range", b"new")])

        start = trio.current_time()
        nursery.start_soon(a_rejoins)
        await trio.testing.wait_all_tasks_blocked()
        while "a" not in rejoin:
            assert await heartbeat(coordinator, GROUP, b.member_id, 1, None) in (
                ErrorCode.rebalance_in_progress, ErrorCode.unknown_member_id)
            await trio.sleep(1)
        # The join phase ended at the rebalance timeout without b.
        assert 20 <= trio.current_time() - start <= 21
        assert rejoin["a"].generation_id == 2 and [m[0] for m in rejoin["a"].members] == [a.member_id]
        assert b.member_id not in group(coordinator).members
        assert await heartbeat(coordinator, GROUP, b.member_id, 1, None) == ErrorCode.unknown_member_id
        nursery.cancel_scope.cancel()


async def test_member_silent_after_its_sync_is_expired_and_the_others_rebalance(autojump_clock):
    """The request sequence of a kafka-python 3.0.12 member that drops its own SyncGroup result
    (compat-tests/group_worker.py, kafka_python_subscribe): after its last SyncGroup it sends nothing.

    As in Kafka: its session expires 6 s after the SyncGroup was answered, which ends the join phase
    of the rebalance a new member started (long before the 300 s rebalance timeout) with the two
    members that rejoined; the silent member's late requests are answered UNKNOWN_MEMBER_ID, and a
    fresh JoinGroup brings it back in the next generation."""
    kw = {"session": 6000, "rebalance": 300_000, "version": 7}
    coordinator = make_coordinator(**{"group.initial.rebalance.delay.ms": "0"})
    async with trio.open_nursery() as nursery:
        await nursery.start(coordinator.run)
        parked: dict = {}

        def park(name, member_id="", client=None):
            async def one():
                parked[name] = await join(coordinator, member_id, client=client or name, **kw)
            nursery.start_soon(one)

        # m2 alone: generation 1.
        m2 = await join(coordinator, client="m2", **kw)
        assert (m2.generation_id, m2.leader) == (1, m2.member_id)
        await sync(coordinator, m2, {m2.member_id: b"0-5"})
        # m1 joins, m2 rejoins (kafka-python's leader rejoin on a metadata-snapshot change): generation 2.
        park("m1")
        await trio.testing.wait_all_tasks_blocked()
        assert group(coordinator).state_name == "PreparingRebalance"
        m2 = await join(coordinator, m2.member_id, client="m2", **kw)
        await trio.testing.wait_all_tasks_blocked()
        m1 = parked.pop("m1")
        assert m1.generation_id == m2.generation_id == 2 and m2.leader == m2.member_id
        follower: dict = {}

        async def m1_syncs():
            follower["r"] = await sync(coordinator, m1)

        nursery.start_soon(m1_syncs)
        await trio.testing.wait_all_tasks_blocked()
        assert (await sync(coordinator, m2, {m2.member_id: b"3-5", m1.member_id: b"0-2"})).error == ErrorCode.none
        await trio.testing.wait_all_tasks_blocked()
        assert follower["r"].assignment == b"0-2"
        synced_at = trio.current_time()
        # From here m2 sends nothing. m0 joins; m1 learns of the rebalance from its heartbeat and rejoins.
        park("m0")
        await trio.testing.wait_all_tasks_blocked()
        assert group(coordinator).state_name == "PreparingRebalance"
        await trio.sleep(1)
        assert await heartbeat(coordinator, GROUP, m1.member_id, 2, None) == ErrorCode.rebalance_in_progress
        park("m1", m1.member_id)
        while len(parked) < 2:
            await trio.sleep(0.1)
        # m2's session ran out: it was removed and generation 3 formed without it.
        assert 6 <= trio.current_time() - synced_at < 6.5
        m0, m1 = parked.pop("m0"), parked.pop("m1")
        assert m0.error == m1.error == ErrorCode.none
        assert m0.generation_id == m1.generation_id == 3
        leader, other = (m1, m0) if m1.leader == m1.member_id else (m0, m1)
        assert other.leader == leader.member_id and other.members == []
        assert sorted(m[0] for m in leader.members) == sorted([m0.member_id, m1.member_id])
        assert m2.member_id not in group(coordinator).members
        assert await heartbeat(coordinator, GROUP, m2.member_id, 2, None) == ErrorCode.unknown_member_id
        assert (await sync(coordinator, m2)).error == ErrorCode.unknown_member_id
        assert (await join_group(coordinator, request(m2.member_id, client="m2", **kw))).error == \
            ErrorCode.unknown_member_id
        # The others complete generation 3; a fresh JoinGroup from m2 starts generation 4.
        follower.clear()

        async def follower_syncs():
            follower["r"] = await sync(coordinator, other)

        nursery.start_soon(follower_syncs)
        await trio.testing.wait_all_tasks_blocked()
        await sync(coordinator, leader, {leader.member_id: b"0-2", other.member_id: b"3-5"})
        await trio.testing.wait_all_tasks_blocked()
        assert follower["r"].assignment == b"3-5" and group(coordinator).state_name == "Stable"
        park("m2")
        await trio.testing.wait_all_tasks_blocked()
        assert group(coordinator).state_name == "PreparingRebalance"
        assert await heartbeat(coordinator, GROUP, m0.member_id, 3, None) == ErrorCode.rebalance_in_progress
        nursery.cancel_scope.cancel()


async def test_static_member_rejoins_without_rebalance_and_fences_old_instance(autojump_clock):
    coordinator = make_coordinator()
    async with trio.open_nursery() as nursery:
        await nursery.start(coordinator.run)
        results: dict = {}
        await join_all(coordinator, results, {"a": {"instance": "ia", "client": "a"},
                                              "b": {"instance": "ib", "client": "b"}})
        a, b = results["a"], results["b"]
        assert a.member_id.startswith("ia-") and b.member_id.startswith("ib-")
        leader, follower = (a, b) if a.leader == a.member_id else (b, a)
        await sync(coordinator, leader, {a.member_id: b"A", b.member_id: b"B"})
        await sync(coordinator, follower)
        assert group(coordinator).generation_id == 1 and group(coordinator).state_name == "Stable"
        log_before = len(coordinator.log.partitions[coordinator.partition_for(GROUP)])

        # The follower restarts: same instance id, no member id, same metadata.
        follower_instance = "ia" if follower is a else "ib"
        restarted = await join_group(coordinator, request("", instance=follower_instance, client="new"))
        assert restarted.error == ErrorCode.none
        assert restarted.member_id != follower.member_id and restarted.generation_id == 1
        assert restarted.leader == leader.member_id and not restarted.skip_assignment
        assert group(coordinator).state_name == "Stable" and group(coordinator).generation_id == 1
        synced = await sync(coordinator, restarted)
        assert synced.assignment == (b"A" if follower is a else b"B")  # its old assignment, no rebalance
        assert len(coordinator.log.partitions[coordinator.partition_for(GROUP)]) == log_before + 1

        # The old instance (old member id) is fenced everywhere.
        old = follower.member_id
        assert await heartbeat(coordinator, GROUP, old, 1, follower_instance) == ErrorCode.fenced_instance_id
        assert (await sync_group(coordinator, GROUP, old, 1, follower_instance, None, None, {})).error == \
            ErrorCode.fenced_instance_id
        assert (await join_group(coordinator, request(old, instance=follower_instance))).error == \
            ErrorCode.fenced_instance_id
        assert group(coordinator).validate_offset_commit(old, 1, follower_instance) == ErrorCode.fenced_instance_id
        assert await heartbeat(coordinator, GROUP, restarted.member_id, 1, follower_instance) == ErrorCode.none

        # The static leader restarting with JoinGroup v9 is told it leads and may skip the assignment.
        leader_instance = "ia" if leader is a else "ib"
        new_leader = await join_group(coordinator, request("", instance=leader_instance))
        assert new_leader.leader == new_leader.member_id and new_leader.skip_assignment
        assert len(new_leader.members) == 2
        assert group(coordinator).generation_id == 1
        nursery.cancel_scope.cancel()


async def test_static_member_rejoin_while_awaiting_join_fences_pending_request(autojump_clock):
    coordinator = make_coordinator()
    async with trio.open_nursery() as nursery:
        await nursery.start(coordinator.run)
        results: dict = {}
        await join_all(coordinator, results, {"a": {"instance": "ia", "client": "a"},
                                              "b": {"instance": "ib", "client": "b"}})
        a, b = results["a"], results["b"]
        # b's old process is parked in a JoinGroup when its new process starts.
        parked: dict = {}

        async def old_b():
            parked["r"] = await join_group(coordinator, request(b.member_id, instance="ib",
                                                                protocols=[("range", b"changed")]))

        nursery.start_soon(old_b)
        await trio.testing.wait_all_tasks_blocked()
        assert group(coordinator).state_name == "PreparingRebalance"
        new_b: dict = {}

        async def new_b_joins():
            new_b["r"] = await join_group(coordinator, request("", instance="ib"))

        nursery.start_soon(new_b_joins)
        await trio.testing.wait_all_tasks_blocked()
        assert parked["r"].error == ErrorCode.fenced_instance_id
        assert (await join_group(coordinator, request(a.member_id, instance="ia"))).error == ErrorCode.none
        await trio.testing.wait_all_tasks_blocked()
        assert new_b["r"].error == ErrorCode.none and new_b["r"].generation_id == 2
        nursery.cancel_scope.cancel()


async def test_initial_rebalance_delay_collects_members(autojump_clock):
    coordinator = make_coordinator(**{"group.initial.rebalance.delay.ms": "3000"})
    async with trio.open_nursery() as nursery:
        await nursery.start(coordinator.run)
        results: dict = {}
        start = trio.current_time()

        async def member(name, delay):
            await trio.sleep(delay)
            results[name] = await join(coordinator, client=name)

        nursery.start_soon(member, "a", 0)
        nursery.start_soon(member, "b", 2)  # arrives during the delay: extends it by another 3 s
        while len(results) < 2:
            await trio.sleep(0.1)
        elapsed = trio.current_time() - start
        assert 6 <= elapsed < 6.5
        assert results["a"].generation_id == results["b"].generation_id == 1
        assert len(next(r for r in results.values() if r.members).members) == 2
        nursery.cancel_scope.cancel()


async def test_group_errors(autojump_clock):
    coordinator = make_coordinator(**{"group.max.size": "1"})
    async with trio.open_nursery() as nursery:
        await nursery.start(coordinator.run)
        assert (await join_group(coordinator, request(session=1000))).error == ErrorCode.invalid_session_timeout
        assert (await join_group(coordinator, request("unknown"))).error == ErrorCode.unknown_member_id
        first = await join(coordinator)
        await sync(coordinator, first, {first.member_id: b""})
        assert (await join(coordinator, client="second")).error == ErrorCode.group_max_size_reached
        other = JoinRequest(GROUP, "", None, "connect", [("x", b"")], 10_000, 10_000, "c", "/h", 9)
        assert (await join_group(coordinator, other)).error == ErrorCode.inconsistent_group_protocol
        # v0-v3 clients get a member id directly.
        old = JoinRequest("old", "", None, "consumer", PROTOCOLS, 10_000, 10_000, "c", "/h", 3)
        assert (await join_group(coordinator, old)).error == ErrorCode.none
        bad_sync = await sync_group(coordinator, GROUP, first.member_id, 1, None, "consumer", "roundrobin", {})
        assert bad_sync.error == ErrorCode.inconsistent_group_protocol
        assert (await sync_group(coordinator, GROUP, first.member_id, 7, None, None, None, {})).error == \
            ErrorCode.illegal_generation
        nursery.cancel_scope.cancel()


async def test_offset_commit_validation_and_restart(autojump_clock):
    log = MemoryCoordinatorLog()
    coordinator = make_coordinator(log)
    async with trio.open_nursery() as nursery:
        await nursery.start(coordinator.run)
        result = await join(coordinator)
        g = group(coordinator)
        assert g.validate_offset_commit(result.member_id, 1, None) == ErrorCode.rebalance_in_progress
        await sync(coordinator, result, {result.member_id: b"x"})
        assert g.validate_offset_commit(result.member_id, 1, None) == ErrorCode.none
        assert g.validate_offset_commit(result.member_id, 0, None) == ErrorCode.illegal_generation
        assert g.validate_offset_commit("nobody", 1, None) == ErrorCode.unknown_member_id
        assert g.validate_offset_commit("", -1, None) == ErrorCode.unknown_member_id
        await coordinator.commit_offsets(GROUP, {("t", 0): (42, 3, "meta"), ("t", 1): (7, -1, "")})
        nursery.cancel_scope.cancel()
    # A new coordinator on the same log: same offsets, same group.
    again = make_coordinator(log)
    committed = again.committed(GROUP)
    assert committed[("t", 0)].offset == 42 and committed[("t", 0)].metadata == "meta"
    assert committed[("t", 0)].leader_epoch == 3 and committed[("t", 1)].offset == 7
    restored = again.groups[GROUP]
    assert restored.state_name == "Stable" and restored.generation_id == 1
    assert list(restored.members) == [result.member_id]
    assert restored.members[result.member_id].assignment == b"x"


async def test_offset_retention_and_group_cleanup(autojump_clock):
    coordinator = make_coordinator(**{"offsets.retention.minutes": "1", "offsets.retention.check.interval.ms": "1000"})
    async with trio.open_nursery() as nursery:
        await nursery.start(coordinator.run)
        result = await join(coordinator)
        await sync(coordinator, result, {result.member_id: b"x"})
        await coordinator.commit_offsets(GROUP, {("t", 0): (1, -1, "")})
        await coordinator.commit_offsets("simple", {("t", 0): (5, -1, "")})

        async def heartbeats(task_status=trio.TASK_STATUS_IGNORED):
            with trio.CancelScope() as scope:
                task_status.started(scope)
                while True:
                    await trio.sleep(3)
                    assert await heartbeat(coordinator, GROUP, result.member_id, 1, None) == ErrorCode.none

        beating = await nursery.start(heartbeats)
        await trio.sleep(120)
        beating.cancel()
        # Offsets of an active group stay; the simple group's expire and it disappears.
        assert coordinator.committed(GROUP)
        assert "simple" not in coordinator.groups and not coordinator.committed("simple")
        await leave_group(coordinator, GROUP, [(result.member_id, None, None)])
        assert group(coordinator).state_name == "Empty"
        await trio.sleep(59)
        assert coordinator.committed(GROUP)
        await trio.sleep(3)
        assert not coordinator.committed(GROUP) and GROUP not in coordinator.groups
        nursery.cancel_scope.cancel()


async def test_delete_group():
    coordinator = make_coordinator()
    async with trio.open_nursery() as nursery:
        await nursery.start(coordinator.run)
        result = await join(coordinator)
        assert await coordinator.delete_group(GROUP) == ErrorCode.non_empty_group
        assert await coordinator.delete_group("missing") == ErrorCode.group_id_not_found
        await leave_group(coordinator, GROUP, [(result.member_id, None, None)])
        await coordinator.commit_offsets(GROUP, {("t", 0): (1, -1, "")})
        assert await coordinator.delete_group(GROUP) == ErrorCode.none
        assert GROUP not in coordinator.groups and not coordinator.committed(GROUP)
        nursery.cancel_scope.cancel()
    assert GROUP not in make_coordinator(coordinator.log).groups


def test_partition_for_matches_kafka():
    assert java_string_hashcode("") == 0
    assert java_string_hashcode("a") == 97
    assert java_string_hashcode("hello") == 99162322
    assert java_string_hashcode("polygenelubricants") == -(1 << 31)
    assert kafka_abs(-(1 << 31)) == 0
    coordinator = make_coordinator()
    assert coordinator.partition_for("hello") == 99162322 % 50
