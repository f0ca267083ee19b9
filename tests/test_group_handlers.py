"""Group coordinator APIs over the wire (in-process broker, real socket): FindCoordinator,
JoinGroup, SyncGroup, Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch, ListGroups,
DescribeGroups, DeleteGroups, OffsetDelete — oldest and newest advertised versions."""

from __future__ import annotations

import datetime

import pytest
import trio

from lodestream.broker.internal_topics import OFFSETS_TOPIC
from inprocess_broker import start_broker
from lodestream.protocol.errors import ErrorCode
from lodestream.protocol.messages import request_builder

TIMEOUT = datetime.timedelta(seconds=30)
SESSION = datetime.timedelta(seconds=10)
SUBSCRIPTION = b"\x00\x00\x00\x00\x00\x01\x00\x05topic\x00\x00\x00\x00"


def req(api_key: int, version: int):
    return request_builder(api_key, version)


@pytest.fixture
async def broker(tmp_path):
    async with trio.open_nursery() as nursery:
        running = await start_broker(nursery, tmp_path / "data", **{"group.initial.rebalance.delay.ms": "0",
                                                                    "offsets.topic.num.partitions": "5"})
        yield running
        nursery.cancel_scope.cancel()
    running.broker.close()


async def create_topic(client, name: str, partitions: int = 2):
    b = req(19, 7)
    response = await client.request(b.CreateTopicsRequest(
        topics=(b.CreatableTopic(name=name, num_partitions=partitions, replication_factor=1, assignments=(),
                                 configs=()),), timeout=TIMEOUT, validate_only=False))
    assert response.topics[0].error_code == ErrorCode.none


async def join(client, version: int, group: str, member_id: str = "", instance: str | None = None,
               protocols=(("range", SUBSCRIPTION),)):
    b = req(11, version)
    return await client.request(b.JoinGroupRequest(
        group_id=group, session_timeout=SESSION, rebalance_timeout=SESSION, member_id=member_id,
        group_instance_id=instance, protocol_type="consumer",
        protocols=tuple(b.JoinGroupRequestProtocol(name=n, metadata=m) for n, m in protocols), reason=None))


async def sync(client, version: int, group: str, joined, assignments: dict[str, bytes]):
    b = req(14, version)
    return await client.request(b.SyncGroupRequest(
        group_id=group, generation_id=joined.generation_id, member_id=joined.member_id, group_instance_id=None,
        protocol_type="consumer", protocol_name="range",
        assignments=tuple(b.SyncGroupRequestAssignment(member_id=m, assignment=a) for m, a in assignments.items())))


async def heartbeat(client, version: int, group: str, member_id: str, generation: int):
    b = req(12, version)
    response = await client.request(b.HeartbeatRequest(group_id=group, generation_id=generation, member_id=member_id,
                                                       group_instance_id=None))
    return response.error_code


async def commit(client, version: int, group: str, offsets: dict, generation: int = -1, member_id: str = ""):
    b = req(8, version)
    by_topic: dict = {}
    for (topic, partition), (offset, metadata) in offsets.items():
        by_topic.setdefault(topic, []).append(b.OffsetCommitRequestPartition(
            partition_index=partition, committed_offset=offset, committed_leader_epoch=-1,
            commit_timestamp=-1, committed_metadata=metadata))
    response = await client.request(b.OffsetCommitRequest(
        group_id=group, generation_id_or_member_epoch=generation, member_id=member_id, group_instance_id=None,
        retention_time=datetime.timedelta(milliseconds=-1),
        topics=tuple(b.OffsetCommitRequestTopic(name=t, partitions=tuple(ps)) for t, ps in by_topic.items())))
    return {(t.name, p.partition_index): p.error_code for t in response.topics for p in t.partitions}


async def fetch_offsets(client, version: int, group: str, topics: dict[str, list[int]] | None):
    b = req(9, version)
    topic_list = None if topics is None else tuple(
        b.OffsetFetchRequestTopic(name=t, partition_indexes=tuple(ps)) for t, ps in topics.items())
    response = await client.request(b.OffsetFetchRequest(group_id=group, topics=topic_list, require_stable=False))
    return response


def offsets_of(topics) -> dict:
    return {(t.name, p.partition_index): (p.committed_offset, p.metadata, p.error_code)
            for t in topics for p in t.partitions}


async def test_find_coordinator_creates_offsets_topic(broker):
    client = await broker.client()
    listener = broker.broker.bound_listeners[0]
    for version in (0, 3):
        b = req(10, version)
        response = await client.request(b.FindCoordinatorRequest(key="group-a", key_type=0))
        assert response.error_code == ErrorCode.none
        assert (response.node_id, response.host, response.port) == (
            broker.broker.node_id, listener.advertised_host, listener.advertised_port)
    for version in (4, 6):
        b = req(10, version)
        response = await client.request(b.FindCoordinatorRequest(key_type=0, coordinator_keys=("a", "b", "")))
        assert [c.key for c in response.coordinators] == ["a", "b", ""]
        assert [c.error_code for c in response.coordinators] == [ErrorCode.none, ErrorCode.none,
                                                                 ErrorCode.invalid_request]
        assert response.coordinators[0].port == listener.advertised_port
    topic = broker.broker.image.topic(OFFSETS_TOPIC)
    assert topic is not None and len(topic.partitions) == 5
    assert topic.configs["cleanup.policy"] == "compact"
    # Like Kafka, an all-topics Metadata request lists the internal topic, flagged internal.
    b = req(3, 12)
    metadata = await client.request(b.MetadataRequest(topics=None, allow_auto_topic_creation=False,
                                                      include_topic_authorized_operations=False))
    listed = {t.name: t.is_internal for t in metadata.topics}
    assert listed[OFFSETS_TOPIC] is True
    await client.aclose()


@pytest.mark.parametrize("versions", [
    # join, sync, heartbeat, leave, commit, fetch, describe, list
    (0, 0, 0, 0, 2, 1, 0, 0),
    (9, 5, 4, 5, 9, 7, 6, 5),
])
async def test_group_lifecycle(broker, versions):
    join_v, sync_v, hb_v, leave_v, commit_v, fetch_v, describe_v, list_v = versions
    client = await broker.client()
    await create_topic(client, "topic")
    joined = await join(client, join_v, "grp")
    if join_v >= 4:
        assert joined.error_code == ErrorCode.member_id_required and joined.member_id
        joined = await join(client, join_v, "grp", joined.member_id)
    assert joined.error_code == ErrorCode.none
    assert joined.generation_id == 1 and joined.leader == joined.member_id
    assert joined.protocol_name == "range"
    if join_v >= 7:
        assert joined.protocol_type == "consumer"
    assert [m.member_id for m in joined.members] == [joined.member_id]
    assert joined.members[0].metadata == SUBSCRIPTION
    synced = await sync(client, sync_v, "grp", joined, {joined.member_id: b"assigned"})
    assert synced.error_code == ErrorCode.none and synced.assignment == b"assigned"
    if sync_v >= 5:
        assert (synced.protocol_type, synced.protocol_name) == ("consumer", "range")
    assert await heartbeat(client, hb_v, "grp", joined.member_id, 1) == ErrorCode.none
    assert await heartbeat(client, hb_v, "grp", joined.member_id, 5) == ErrorCode.illegal_generation

    # Offsets: generation and member checked; metadata strings kept.
    errors = await commit(client, commit_v, "grp", {("topic", 0): (10, "m0"), ("topic", 1): (20, None)},
                          generation=1, member_id=joined.member_id)
    assert set(errors.values()) == {ErrorCode.none}
    errors = await commit(client, commit_v, "grp", {("topic", 0): (11, "x")}, generation=0,
                          member_id=joined.member_id)
    assert errors == {("topic", 0): ErrorCode.illegal_generation}
    errors = await commit(client, commit_v, "grp", {("nope", 0): (1, ""), ("topic", 7): (1, "")}, generation=1,
                          member_id=joined.member_id)
    assert set(errors.values()) == {ErrorCode.unknown_topic_or_partition}
    errors = await commit(client, commit_v, "grp", {("topic", 0): (1, "x" * 5000)}, generation=1,
                          member_id=joined.member_id)
    assert errors == {("topic", 0): ErrorCode.offset_metadata_too_large}
    response = await fetch_offsets(client, fetch_v, "grp", {"topic": [0, 1, 2]})
    assert offsets_of(response.topics) == {("topic", 0): (10, "m0", 0), ("topic", 1): (20, "", 0),
                                           ("topic", 2): (-1, "", 0)}
    if fetch_v >= 2:
        everything = await fetch_offsets(client, fetch_v, "grp", None)
        assert offsets_of(everything.topics) == {("topic", 0): (10, "m0", 0), ("topic", 1): (20, "", 0)}

    b = req(15, describe_v)
    described = await client.request(b.DescribeGroupsRequest(groups=("grp", "missing"),
                                                             include_authorized_operations=False))
    grp, missing = described.groups
    assert (grp.error_code, grp.group_state, grp.protocol_type, grp.protocol_data) == (0, "Stable", "consumer", "range")
    (member,) = grp.members
    assert member.member_id == joined.member_id and member.client_id == "test" and member.client_host == "/127.0.0.1"
    assert member.member_assignment == b"assigned" and member.member_metadata == SUBSCRIPTION
    assert missing.group_state == "Dead"
    assert missing.error_code == (ErrorCode.group_id_not_found if describe_v >= 6 else ErrorCode.none)

    b = req(16, list_v)
    listed = await client.request(b.ListGroupsRequest(states_filter=(), types_filter=()))
    assert [(g.group_id, g.protocol_type) for g in listed.groups] == [("grp", "consumer")]
    if list_v >= 4:
        assert listed.groups[0].group_state == "Stable"
        none = await client.request(b.ListGroupsRequest(states_filter=("empty",), types_filter=()))
        assert none.groups == ()
    if list_v >= 5:
        assert listed.groups[0].group_type == "classic"
        typed = await client.request(b.ListGroupsRequest(states_filter=("STABLE",), types_filter=("Classic",)))
        assert [g.group_id for g in typed.groups] == ["grp"]
        consumer = await client.request(b.ListGroupsRequest(states_filter=(), types_filter=("consumer",)))
        assert consumer.groups == ()

    # Leave; the group is empty, still holds its offsets.
    b = req(13, leave_v)
    if leave_v >= 3:
        left = await client.request(b.LeaveGroupRequest(group_id="grp", members=(
            b.MemberIdentity(member_id=joined.member_id, group_instance_id=None, reason="done"),
            b.MemberIdentity(member_id="stranger", group_instance_id=None, reason=None))))
        assert left.error_code == ErrorCode.none
        assert [m.error_code for m in left.members] == [ErrorCode.none, ErrorCode.unknown_member_id]
    else:
        left = await client.request(b.LeaveGroupRequest(group_id="grp", member_id=joined.member_id))
        assert left.error_code == ErrorCode.none
        again = await client.request(b.LeaveGroupRequest(group_id="grp", member_id=joined.member_id))
        assert again.error_code == ErrorCode.unknown_member_id
    assert broker.broker.groups.groups["grp"].state_name == "Empty"
    # An empty group accepts commits without a generation (admin / manual assignment).
    assert await commit(client, commit_v, "grp", {("topic", 0): (12, "admin")}) == {("topic", 0): ErrorCode.none}
    response = await fetch_offsets(client, fetch_v, "grp", {"topic": [0]})
    assert offsets_of(response.topics) == {("topic", 0): (12, "admin", 0)}
    await client.aclose()


async def test_offset_commit_unknown_group(broker):
    client = await broker.client()
    await create_topic(client, "t")
    assert await commit(client, 9, "ghost", {("t", 0): (1, "")}, generation=3, member_id="m") == \
        {("t", 0): ErrorCode.group_id_not_found}
    assert await commit(client, 8, "ghost", {("t", 0): (1, "")}, generation=3, member_id="m") == \
        {("t", 0): ErrorCode.illegal_generation}
    # Generation -1: a simple group is created to hold the offsets.
    assert await commit(client, 2, "simple", {("t", 0): (5, "s")}) == {("t", 0): ErrorCode.none}
    b = req(16, 5)
    listed = await client.request(b.ListGroupsRequest(states_filter=(), types_filter=()))
    assert [(g.group_id, g.group_state, g.protocol_type) for g in listed.groups] == [("simple", "Empty", "")]
    await client.aclose()


async def test_offset_fetch_several_groups(broker):
    client = await broker.client()
    await create_topic(client, "t")
    await commit(client, 9, "g1", {("t", 0): (1, "a"), ("t", 1): (2, "b")})
    await commit(client, 9, "g2", {("t", 1): (3, "c")})
    b = req(9, 9)
    response = await client.request(b.OffsetFetchRequest(groups=(
        b.OffsetFetchRequestGroup(group_id="g1", member_id=None, member_epoch=-1, topics=None),
        b.OffsetFetchRequestGroup(group_id="g2", member_id=None, member_epoch=-1, topics=(
            b.OffsetFetchRequestTopics(name="t", partition_indexes=(0, 1)),)),
        b.OffsetFetchRequestGroup(group_id="none", member_id=None, member_epoch=-1, topics=None),
    ), require_stable=True))
    g1, g2, none = response.groups
    assert offsets_of(g1.topics) == {("t", 0): (1, "a", 0), ("t", 1): (2, "b", 0)}
    assert offsets_of(g2.topics) == {("t", 0): (-1, "", 0), ("t", 1): (3, "c", 0)}
    assert none.topics == () and none.error_code == ErrorCode.none
    await client.aclose()


async def test_delete_groups_and_offset_delete(broker):
    client = await broker.client()
    await create_topic(client, "t")
    await create_topic(client, "topic")  # the one SUBSCRIPTION names
    joined = await join(client, 9, "busy")
    joined = await join(client, 9, "busy", joined.member_id)
    await sync(client, 5, "busy", joined, {joined.member_id: b""})
    await commit(client, 9, "busy", {("t", 0): (1, ""), ("topic", 0): (1, "")}, generation=1,
                 member_id=joined.member_id)
    await commit(client, 9, "idle", {("t", 0): (1, ""), ("t", 1): (2, "")})

    b = req(47, 0)
    deleted = await client.request(b.OffsetDeleteRequest(group_id="idle", topics=(
        b.OffsetDeleteRequestTopic(name="t", partitions=(b.OffsetDeleteRequestPartition(partition_index=0),)),)))
    assert deleted.error_code == ErrorCode.none
    assert deleted.topics[0].partitions[0].error_code == ErrorCode.none
    assert list(broker.broker.groups.committed("idle")) == [("t", 1)]
    # A consumer-protocol group keeps the offsets of topics it is subscribed to, loses the others.
    busy = await client.request(b.OffsetDeleteRequest(group_id="busy", topics=(
        b.OffsetDeleteRequestTopic(name="topic", partitions=(b.OffsetDeleteRequestPartition(partition_index=0),)),
        b.OffsetDeleteRequestTopic(name="t", partitions=(b.OffsetDeleteRequestPartition(partition_index=0),)))))
    assert [t.partitions[0].error_code for t in busy.topics] == [ErrorCode.group_subscribed_to_topic, ErrorCode.none]
    assert list(broker.broker.groups.committed("busy")) == [("topic", 0)]
    missing = await client.request(b.OffsetDeleteRequest(group_id="missing", topics=()))
    assert missing.error_code == ErrorCode.group_id_not_found

    for version in (0, 2):
        b = req(42, version)
        response = await client.request(b.DeleteGroupsRequest(groups_names=("busy", "missing")))
        assert [(r.group_id, r.error_code) for r in response.results] == [
            ("busy", ErrorCode.non_empty_group), ("missing", ErrorCode.group_id_not_found)]
    response = await client.request(req(42, 2).DeleteGroupsRequest(groups_names=("idle",)))
    assert response.results[0].error_code == ErrorCode.none
    assert "idle" not in broker.broker.groups.groups and not broker.broker.groups.committed("idle")
    await client.aclose()


async def test_two_members_rebalance_over_the_wire(broker):
    a_client, b_client = await broker.client(), await broker.client()
    a = await join(a_client, 9, "pair")
    a = await join(a_client, 9, "pair", a.member_id)
    await sync(a_client, 5, "pair", a, {a.member_id: b"all"})
    results = {}

    async def b_joins():
        first = await join(b_client, 9, "pair")
        results["b"] = await join(b_client, 9, "pair", first.member_id)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(b_joins)
        # a learns about the rebalance from its heartbeat, then rejoins.
        with trio.fail_after(10):
            while await heartbeat(a_client, 4, "pair", a.member_id, 1) == ErrorCode.none:
                await trio.sleep(0.01)  # poll until the broker reports the rebalance
        results["a"] = await join(a_client, 9, "pair", a.member_id)
    assert results["a"].generation_id == results["b"].generation_id == 2
    assert results["a"].leader == a.member_id and len(results["a"].members) == 2
    await a_client.aclose()
    await b_client.aclose()
