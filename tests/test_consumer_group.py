"""KIP-848 consumer groups: the coordinator side under MockClock, the wire APIs, and a real client."""

from __future__ import annotations

import datetime
import time
import uuid

import pytest
import trio

from lodestream.broker.broker import TopicSpec
from lodestream.broker.groups import consumer
from lodestream.broker.groups.consumer import Heartbeat
from lodestream.broker.coordinator_runtime import MemoryCoordinatorLog
from lodestream.broker.groups.coordinator import GroupCoordinator
from lodestream.consensus.image import MetadataImage, replay
from lodestream.consensus.records import PartitionRecord, RemoveTopicRecord, TopicRecord
from lodestream.protocol.errors import ErrorCode

SESSION_MS = 45_000
INTERVAL_MS = 5_000
CONFIG = {
    "offsets.topic.num.partitions": 50,
    "offsets.retention.minutes": 7 * 24 * 60,
    "offsets.retention.check.interval.ms": 600_000,
    "group.consumer.session.timeout.ms": SESSION_MS,
    "group.consumer.heartbeat.interval.ms": INTERVAL_MS,
}


class World:
    """The metadata image the coordinator sees, changed by the tests."""

    def __init__(self) -> None:
        self.image = MetadataImage()
        self.ids: dict[str, uuid.UUID] = {}

    def create_topic(self, name: str, partitions: int) -> uuid.UUID:
        topic_id = uuid.uuid4()
        self.ids[name] = topic_id
        self.image = replay(self.image, TopicRecord(name, topic_id))
        self.add_partitions(name, partitions)
        return topic_id

    def add_partitions(self, name: str, count: int) -> None:
        topic = self.image.topics_by_name[name]
        start = len(topic.partitions)
        for index in range(start, start + count):
            self.image = replay(self.image, PartitionRecord(topic.topic_id, index, (1,), 1, 0))

    def delete_topic(self, name: str) -> None:
        self.image = replay(self.image, RemoveTopicRecord(self.ids.pop(name)))

    def names(self, assignment) -> set[tuple[str, int]]:
        by_id = {v: k for k, v in self.ids.items()}
        return {(by_id.get(t, str(t)), p) for t, ps in (assignment or {}).items() for p in ps}


def config_with(**overrides):
    settings = {**CONFIG, **overrides}

    def config(key):
        return settings[key]  # a KeyError means "not declared": consumer.py falls back to Kafka's default

    return config


async def start_coordinator(nursery, group_log=None, **overrides) -> GroupCoordinator:
    coordinator = GroupCoordinator(config_with(**overrides), group_log or MemoryCoordinatorLog())
    coordinator.load()
    await nursery.start(coordinator.run)
    return coordinator


class Client:
    """A consumer speaking the KIP-848 protocol, like the Java/librdkafka state machine.

    With auto_ack it adopts every assignment at once (revoking before the next
    heartbeat); otherwise it keeps reporting its old partitions until ack().
    """

    def __init__(self, coordinator, world, topics=("t",), group="g", instance_id=None, member_id="",
                 assignor=None, regex=None, version=1):
        self.coordinator = coordinator
        self.world = world
        self.topics = topics
        self.regex = regex
        self.group = group
        self.instance_id = instance_id
        self.member_id = member_id or (consumer.new_member_id() if version >= 1 else "")
        self.assignor = assignor
        self.version = version
        self.epoch = 0
        self.owned: dict = {}
        self.received: dict | None = None  # last assignment from the coordinator
        self.auto_ack = True
        self.last: consumer.HeartbeatResult | None = None

    async def send(self, **fields) -> consumer.HeartbeatResult:
        hb = Heartbeat(group_id=self.group, member_id=self.member_id, member_epoch=self.epoch,
                       client_id="test-client", client_host="/127.0.0.1", api_version=self.version, **fields)
        result = await consumer.heartbeat(self.coordinator, self.world.image, hb)
        self.last = result
        return result

    async def join(self) -> consumer.HeartbeatResult:
        self.epoch = 0
        self.owned = {}
        result = await self.send(
            instance_id=self.instance_id, rebalance_timeout_ms=60_000,
            subscribed_topic_names=None if self.topics is None else tuple(self.topics),
            subscribed_topic_regex=self.regex, server_assignor=self.assignor, owned={},
        )
        self._apply(result)
        return result

    async def beat(self) -> consumer.HeartbeatResult:
        result = await self.send(owned=dict(self.owned))
        self._apply(result)
        return result

    def _apply(self, result: consumer.HeartbeatResult) -> None:
        if result.error != ErrorCode.none:
            return
        self.member_id = result.member_id
        self.epoch = result.member_epoch
        if result.assignment is not None:
            self.received = dict(result.assignment)
            if self.auto_ack:
                self.owned = dict(result.assignment)

    def ack(self) -> None:
        self.owned = dict(self.received or {})

    async def leave(self, epoch=-1) -> consumer.HeartbeatResult:
        self.epoch = epoch
        result = await self.send(instance_id=self.instance_id)
        self.owned = {}
        return result

    @property
    def partitions(self) -> set[tuple[str, int]]:
        return self.world.names(self.owned)


def group_of(coordinator, group_id="g") -> consumer.ConsumerGroup:
    group = coordinator.groups[group_id]
    assert isinstance(group, consumer.ConsumerGroup)
    return group


async def settle(clients, rounds=10):
    for _ in range(rounds):
        for client in clients:
            result = await client.beat()
            assert result.error == ErrorCode.none, result
    return clients


def assert_disjoint_cover(clients, expected):
    seen = [tp for c in clients for tp in c.partitions]
    assert len(seen) == len(set(seen)), f"a partition is owned twice: {sorted(seen)}"
    assert set(seen) == expected


# ------------------------------------------------------------------------------------------
# coordinator behaviour (MockClock: timeouts cost no real time)
# ------------------------------------------------------------------------------------------


async def test_three_members_get_a_disjoint_cover(autojump_clock, nursery):
    world = World()
    world.create_topic("t", 6)
    coordinator = await start_coordinator(nursery)
    clients = [Client(coordinator, world) for _ in range(3)]
    for client in clients:
        result = await client.join()
        assert result.error == ErrorCode.none
        assert result.heartbeat_interval_ms == INTERVAL_MS
        assert result.assignment is not None  # a joining member always gets its assignment
    await settle(clients)
    assert_disjoint_cover(clients, {("t", p) for p in range(6)})
    assert sorted(len(c.partitions) for c in clients) == [2, 2, 2]
    group = group_of(coordinator)
    assert group.state_name == "Stable"
    assert {c.epoch for c in clients} == {group.group_epoch} == {group.assignment_epoch}
    # Steady state: heartbeats carry no assignment and change nothing.
    before = group.to_record()
    result = await clients[0].beat()
    assert result.assignment is None and group.to_record() == before


async def test_member_ids_are_generated_in_v0_and_kept_in_v1(autojump_clock, nursery):
    world = World()
    world.create_topic("t", 1)
    coordinator = await start_coordinator(nursery)
    old = Client(coordinator, world, version=0)
    assert (await old.join()).error == ErrorCode.none
    assert len(old.member_id) == 22
    new = Client(coordinator, world, member_id="client-chosen-id")
    assert (await new.join()).member_id == "client-chosen-id"


async def test_partitions_move_only_after_their_owner_revoked_them(autojump_clock, nursery):
    world = World()
    world.create_topic("t", 6)
    coordinator = await start_coordinator(nursery)
    a = Client(coordinator, world)
    await a.join()
    await settle([a])
    assert len(a.partitions) == 6
    a.auto_ack = False  # a slow consumer: it keeps its partitions until its revocation callback completes

    b = Client(coordinator, world)
    await b.join()
    group = group_of(coordinator)
    assert group.state_name == "Reconciling"
    assert b.partitions == set(), "B may not get partitions A still owns"
    assert b.epoch == group.group_epoch  # B is at the new epoch, waiting for unreleased partitions

    result = await a.beat()  # A learns it must give up three partitions; its epoch does not move yet
    assert len(world.names(result.assignment)) == 3
    assert a.epoch == group.group_epoch - 1
    assert group.members[a.member_id].state == consumer.UNREVOKED_PARTITIONS
    for _ in range(3):
        await b.beat()
        assert b.partitions == set()
        await a.beat()  # still reports the revoked partitions as owned
    a.ack()  # revocation done
    await a.beat()
    assert a.epoch == group.group_epoch and len(a.partitions) == 3
    await b.beat()
    assert len(b.partitions) == 3
    assert_disjoint_cover([a, b], {("t", p) for p in range(6)})
    assert group.state_name == "Stable"


async def test_a_leaving_member_releases_its_partitions(autojump_clock, nursery):
    world = World()
    world.create_topic("t", 6)
    coordinator = await start_coordinator(nursery)
    clients = [Client(coordinator, world) for _ in range(3)]
    for c in clients:
        await c.join()
    await settle(clients)
    leaving = clients.pop()
    released = leaving.partitions
    epoch = group_of(coordinator).group_epoch
    result = await leaving.leave()
    assert result.error == ErrorCode.none and result.member_epoch == -1
    group = group_of(coordinator)
    assert leaving.member_id not in group.members
    assert group.group_epoch == epoch + 1 and group.state_name == "Assigning"
    kept = {c.member_id: c.partitions for c in clients}
    await settle(clients)
    assert_disjoint_cover(clients, {("t", p) for p in range(6)})
    for c in clients:
        assert kept[c.member_id] <= c.partitions, "survivors keep their partitions (sticky)"
    assert released <= clients[0].partitions | clients[1].partitions
    # Its heartbeats are now refused.
    leaving.epoch = epoch
    assert (await leaving.beat()).error == ErrorCode.unknown_member_id


async def test_session_expiry_fences_a_silent_member(autojump_clock, nursery):
    world = World()
    world.create_topic("t", 4)
    coordinator = await start_coordinator(nursery)
    alive, silent = Client(coordinator, world), Client(coordinator, world)
    await alive.join()
    await silent.join()
    await settle([alive, silent])
    group = group_of(coordinator)
    start = trio.current_time()
    while silent.member_id in group.members:
        await trio.sleep(INTERVAL_MS / 1000)
        await alive.beat()
        assert trio.current_time() - start < SESSION_MS / 1000 + 2 * INTERVAL_MS / 1000
    assert trio.current_time() - start >= SESSION_MS / 1000
    await settle([alive])
    assert alive.partitions == {("t", p) for p in range(4)}
    assert (await silent.beat()).error == ErrorCode.unknown_member_id
    # A fenced member rejoins with epoch 0 (keeping its member id, KIP-1082) and gets a share again.
    assert (await silent.join()).error == ErrorCode.none
    await settle([alive, silent])
    assert_disjoint_cover([alive, silent], {("t", p) for p in range(4)})


@pytest.mark.parametrize("seed", range(12))
async def test_random_churn_never_gives_a_partition_to_two_consumers(seed, autojump_clock, nursery):
    """Joins, leaves, slow revocations, subscription and partition changes in random order:
    at no point do two consumers hold the same partition, and the group converges."""
    import random

    rng = random.Random(seed)
    world = World()
    world.create_topic("a", 5)
    world.create_topic("b", 3)
    coordinator = await start_coordinator(nursery)
    assignor = rng.choice([None, "range"])
    clients: list[Client] = []

    def check():
        held = [tp for c in clients for tp in c.partitions]
        assert len(held) == len(set(held)), f"seed {seed}: a partition is held twice: {sorted(held)}"

    for _ in range(250):
        roll = rng.random()
        if roll < 0.12 and len(clients) < 6:
            client = Client(coordinator, world, topics=tuple(rng.sample(["a", "b"], rng.randint(1, 2))),
                            assignor=assignor)
            client.auto_ack = rng.random() < 0.5
            assert (await client.join()).error == ErrorCode.none
            clients.append(client)
        elif roll < 0.18 and clients:
            client = clients.pop(rng.randrange(len(clients)))
            assert (await client.leave()).error == ErrorCode.none
        elif roll < 0.21:
            world.add_partitions(rng.choice(["a", "b"]), 1)
        elif roll < 0.24 and clients:
            client = rng.choice(clients)  # a new subscription
            client.topics = tuple(rng.sample(["a", "b"], rng.randint(1, 2)))
            result = await client.send(subscribed_topic_names=client.topics, owned=dict(client.owned))
            client._apply(result)
        elif clients:
            client = rng.choice(clients)
            if not client.auto_ack and rng.random() < 0.4:
                client.ack()
            assert (await client.beat()).error == ErrorCode.none
        check()

    for client in clients:
        client.auto_ack = True
        client.ack()
    await settle(clients, rounds=8)
    check()
    subscribed = {t for c in clients for t in c.topics}
    expected = {(t, p) for t in subscribed for p in range(len(world.image.topics_by_name[t].partitions))}
    assert_disjoint_cover(clients, expected)
    for client in clients:
        assert {t for t, _ in client.partitions} <= set(client.topics)
    if clients:
        assert group_of(coordinator).state_name == "Stable"


async def test_member_that_never_revokes_is_fenced_after_its_rebalance_timeout(autojump_clock, nursery):
    world = World()
    world.create_topic("t", 2)
    coordinator = await start_coordinator(nursery)
    stuck = Client(coordinator, world)
    await stuck.join()
    await settle([stuck])
    stuck.auto_ack = False
    other = Client(coordinator, world)
    await other.join()
    await stuck.beat()
    group = group_of(coordinator)
    assert group.members[stuck.member_id].state == consumer.UNREVOKED_PARTITIONS
    for _ in range(14):  # heartbeats keep the session alive, but not the rebalance
        await trio.sleep(INTERVAL_MS / 1000)
        await stuck.beat()
        await other.beat()
    assert stuck.member_id not in group.members
    assert stuck.last.error == ErrorCode.unknown_member_id
    await settle([other])
    assert other.partitions == {("t", 0), ("t", 1)}


async def test_member_epoch_fencing(autojump_clock, nursery):
    world = World()
    world.create_topic("t", 4)
    coordinator = await start_coordinator(nursery)
    a = Client(coordinator, world)
    await a.join()
    await settle([a])
    first_epoch = a.epoch
    a.epoch = first_epoch + 1
    assert (await a.beat()).error == ErrorCode.fenced_member_epoch  # ahead of the coordinator
    a.epoch = first_epoch

    for _ in range(2):  # two more members: A moves through two more epochs
        newcomer = Client(coordinator, world)
        await newcomer.join()
        await settle([a, newcomer])
    member = group_of(coordinator).members[a.member_id]
    assert member.member_epoch == first_epoch + 2 and member.previous_member_epoch == first_epoch + 1
    # The previous epoch is accepted with owned partitions that are a subset (the response was lost)...
    a.epoch = member.previous_member_epoch
    assert (await a.send(owned=dict(member.assigned))).error == ErrorCode.none
    # ...but not while reporting partitions it no longer owns.
    everything = {world.ids["t"]: frozenset(range(4))}
    assert (await a.send(owned=everything)).error == ErrorCode.fenced_member_epoch
    # Anything older is fenced.
    a.epoch = first_epoch
    assert (await a.send(owned={})).error == ErrorCode.fenced_member_epoch
    # The fenced member rejoins with epoch 0 and is a member again.
    assert (await a.join()).error == ErrorCode.none


async def test_static_member_rejoins_with_its_assignment(autojump_clock, nursery):
    world = World()
    world.create_topic("t", 6)
    coordinator = await start_coordinator(nursery)
    static = Client(coordinator, world, instance_id="instance-1")
    dynamic = Client(coordinator, world)
    await static.join()
    await dynamic.join()
    await settle([static, dynamic])
    mine = static.partitions
    group = group_of(coordinator)
    epoch = group.group_epoch

    result = await static.leave(epoch=-2)  # a restart: leave temporarily, keep the assignment
    assert result.error == ErrorCode.none and result.member_epoch == -2
    assert group.group_epoch == epoch, "a temporary leave does not rebalance"
    await settle([dynamic])
    assert len(dynamic.partitions) == 3, "the absent static member's partitions are not given away"

    # Another process with the same instance id cannot join while the first one is active.
    restarted = Client(coordinator, world, instance_id="instance-1")
    assert (await restarted.join()).error == ErrorCode.none
    assert restarted.member_id != static.member_id
    assert restarted.partitions == mine and restarted.epoch == epoch
    assert group.group_epoch == epoch and static.member_id not in group.members
    usurper = Client(coordinator, world, instance_id="instance-1")
    assert (await usurper.join()).error == ErrorCode.unreleased_instance_id
    # The replaced member is fenced by instance id.
    static.epoch = epoch
    assert (await static.send(instance_id="instance-1", owned={})).error == ErrorCode.fenced_instance_id
    # A static member that does not come back within the session timeout is removed.
    await restarted.leave(epoch=-2)
    for _ in range(SESSION_MS // INTERVAL_MS + 1):
        await trio.sleep(INTERVAL_MS / 1000)
        await dynamic.beat()
    assert restarted.member_id not in group.members
    await settle([dynamic])
    assert len(dynamic.partitions) == 6


async def test_new_partitions_and_matching_topics_trigger_a_new_assignment(autojump_clock, nursery):
    world = World()
    world.create_topic("t", 2)
    coordinator = await start_coordinator(nursery)
    a, b = Client(coordinator, world, topics=("t", "later")), Client(coordinator, world, topics=("t", "later"))
    await a.join()
    await b.join()
    await settle([a, b])
    epoch = group_of(coordinator).group_epoch
    world.add_partitions("t", 4)  # CreatePartitions
    await settle([a, b])
    assert group_of(coordinator).group_epoch == epoch + 1
    assert_disjoint_cover([a, b], {("t", p) for p in range(6)})
    world.create_topic("later", 2)  # a subscribed topic appears
    await settle([a, b])
    assert_disjoint_cover([a, b], {("t", p) for p in range(6)} | {("later", 0), ("later", 1)})
    world.delete_topic("later")
    await settle([a, b])
    assert_disjoint_cover([a, b], {("t", p) for p in range(6)})


async def test_regex_subscription(autojump_clock, nursery):
    world = World()
    world.create_topic("orders-eu", 2)
    world.create_topic("payments", 2)
    coordinator = await start_coordinator(nursery)
    a = Client(coordinator, world, topics=None, regex="orders-.*")
    assert (await a.join()).error == ErrorCode.none
    await settle([a])
    assert a.partitions == {("orders-eu", 0), ("orders-eu", 1)}
    world.create_topic("orders-us", 1)
    await settle([a])
    assert a.partitions == {("orders-eu", 0), ("orders-eu", 1), ("orders-us", 0)}
    bad = Client(coordinator, world, topics=None, regex="orders-(")
    assert (await bad.join()).error == ErrorCode.invalid_regular_expression


async def test_range_assignor_on_request(autojump_clock, nursery):
    world = World()
    world.create_topic("x", 4)
    world.create_topic("y", 4)
    coordinator = await start_coordinator(nursery)
    clients = [Client(coordinator, world, topics=("x", "y"), assignor="range", member_id=f"m{i}") for i in range(2)]
    for c in clients:
        await c.join()
    await settle(clients)
    for c in clients:  # co-partitioned: the same partition numbers of both topics
        assert {p for t, p in c.partitions if t == "x"} == {p for t, p in c.partitions if t == "y"}
    assert group_of(coordinator).describe(world.image)["assignor_name"] == "range"
    bad = Client(coordinator, world, assignor="sticky")
    assert (await bad.join()).error == ErrorCode.unsupported_assignor


async def test_request_validation_and_errors(autojump_clock, nursery):
    world = World()
    world.create_topic("t", 1)
    coordinator = await start_coordinator(nursery, **{"group.consumer.max.size": 1})

    async def send(**fields):
        hb = {"group_id": "g", "member_id": "m", "member_epoch": 0, "rebalance_timeout_ms": 1000,
              "subscribed_topic_names": ("t",), "owned": {}, **fields}
        return await consumer.heartbeat(coordinator, world.image, Heartbeat(**hb))

    assert (await send(member_id="")).error == ErrorCode.invalid_request  # v1 requires the member id
    assert (await send(member_id="", api_version=0)).error == ErrorCode.none  # v0: the coordinator makes one
    assert (await send(member_id="x", group_id="")).error == ErrorCode.invalid_request
    assert (await send(member_id="x", rebalance_timeout_ms=-1)).error == ErrorCode.invalid_request
    assert (await send(member_id="x", owned=None)).error == ErrorCode.invalid_request
    assert (await send(member_id="x", owned={uuid.uuid4(): frozenset({0})})).error == ErrorCode.invalid_request
    assert (await send(member_id="x", subscribed_topic_names=None)).error == ErrorCode.invalid_request
    assert (await send(member_id="x", instance_id="")).error == ErrorCode.invalid_request
    assert (await send(member_id="x", member_epoch=-2)).error == ErrorCode.invalid_request  # no instance id
    assert (await send(member_id="x", member_epoch=-3)).error == ErrorCode.invalid_request
    assert (await send(member_id="x", server_assignor="nope")).error == ErrorCode.unsupported_assignor
    assert (await send(member_id="x")).error == ErrorCode.group_max_size_reached
    assert (await send(member_id="x", member_epoch=3)).error == ErrorCode.unknown_member_id
    assert (await send(member_id="x", member_epoch=-1)).error == ErrorCode.unknown_member_id
    assert (await send(group_id="other", member_id="x", member_epoch=3)).error == ErrorCode.group_id_not_found


async def test_consumer_protocol_can_be_disabled(autojump_clock, nursery):
    world = World()
    coordinator = await start_coordinator(nursery, **{"group.coordinator.rebalance.protocols": "classic"})
    assert (await Client(coordinator, world).join()).error == ErrorCode.unsupported_version
    assert consumer.describe(coordinator, world.image, "g")[0] == ErrorCode.unsupported_version


async def test_an_empty_consumer_group_can_be_deleted(autojump_clock, nursery):
    world = World()
    world.create_topic("t", 2)
    coordinator = await start_coordinator(nursery)
    a = Client(coordinator, world)
    await a.join()
    assert await coordinator.delete_group("g") == ErrorCode.non_empty_group
    epoch = a.epoch
    await a.leave()
    assert await coordinator.delete_group("g") == ErrorCode.none
    assert "g" not in coordinator.groups
    a.epoch = epoch
    assert (await a.beat()).error == ErrorCode.group_id_not_found
    assert (await a.join()).error == ErrorCode.none  # a new group under the same id
    assert group_of(coordinator).group_epoch == 1


async def test_an_offset_reset_of_a_running_group_fences_its_members_only_online(autojump_clock, nursery):
    """broker/offset_snapshots.py: Kafka refuses to reset a group with members; online, the members are fenced
    (their next heartbeat answers UNKNOWN_MEMBER_ID) and the new offsets are committed, None removing one."""
    from lodestream.protocol.errors import KafkaError

    world = World()
    world.create_topic("t", 2)
    coordinator = await start_coordinator(nursery)
    a = Client(coordinator, world)
    await a.join()
    assert group_of(coordinator).is_subscribed_to_topic("t")  # OffsetDelete's GROUP_SUBSCRIBED_TO_TOPIC
    assert not group_of(coordinator).is_subscribed_to_topic("other")
    await coordinator.commit_offsets("g", {("t", 0): (7, -1, ""), ("t", 1): (9, -1, "")})
    with pytest.raises(KafkaError) as refused:
        await coordinator.reset_offsets("g", {("t", 0): 5}, online=False)
    assert refused.value.code == ErrorCode.non_empty_group
    assert await coordinator.reset_offsets("g", {("t", 0): 5, ("t", 1): None}, online=True) == [a.member_id]
    assert {key: c.offset for key, c in coordinator.committed("g").items()} == {("t", 0): 5}
    assert (await a.beat()).error == ErrorCode.unknown_member_id
    assert (await a.join()).error == ErrorCode.none  # rejoins, and reads the new offsets


class NonEmptyClassicGroup:
    group_type = "classic"
    protocol_type = "consumer"
    state_name = "Stable"

    def __init__(self, group_id):
        self.group_id = group_id

    def is_empty(self):
        return False


class EmptyClassicGroup(NonEmptyClassicGroup):
    state_name = "Empty"
    deleted = False

    def is_empty(self):
        return True

    def on_deleted(self):
        self.deleted = True


async def test_classic_and_consumer_groups_share_the_id_space(autojump_clock, nursery):
    world = World()
    world.create_topic("t", 1)
    coordinator = await start_coordinator(nursery)
    coordinator.add_group(NonEmptyClassicGroup("busy"))
    client = Client(coordinator, world, group="busy")
    assert (await client.join()).error == ErrorCode.group_id_not_found
    empty = coordinator.add_group(EmptyClassicGroup("idle"))
    client = Client(coordinator, world, group="idle")
    assert (await client.join()).error == ErrorCode.none  # an empty classic group becomes a consumer group
    assert empty.deleted and coordinator.groups["idle"].group_type == "consumer"
    assert consumer.describe(coordinator, world.image, "busy")[0] == ErrorCode.group_id_not_found
    assert consumer.describe(coordinator, world.image, "missing")[0] == ErrorCode.group_id_not_found


async def test_offset_commit_and_fetch_validation(autojump_clock, nursery):
    world = World()
    world.create_topic("t", 2)
    coordinator = await start_coordinator(nursery)
    a = Client(coordinator, world)
    await a.join()
    await settle([a])
    group = group_of(coordinator)
    assert group.validate_offset_commit(a.member_id, a.epoch, None) == ErrorCode.none
    assert group.validate_offset_commit(a.member_id, a.epoch - 1, None) == ErrorCode.stale_member_epoch
    assert group.validate_offset_commit("nobody", a.epoch, None) == ErrorCode.unknown_member_id
    assert group.validate_offset_commit("", -1, None) == ErrorCode.unknown_member_id  # admin commit, non-empty group
    assert group.validate_offset_commit("", -1, None, is_transactional=True) == ErrorCode.none
    assert group.validate_offset_fetch(None, -1) == ErrorCode.none
    assert group.validate_offset_fetch(a.member_id, a.epoch) == ErrorCode.none
    assert group.validate_offset_fetch(a.member_id, a.epoch + 1) == ErrorCode.stale_member_epoch
    assert group.validate_offset_fetch("nobody", 1) == ErrorCode.unknown_member_id
    await a.leave()
    assert group.is_empty() and group.state_name == "Empty"
    assert group.validate_offset_commit("", -1, None) == ErrorCode.none


async def test_state_survives_a_restart_and_sessions_restart(autojump_clock, nursery):
    world = World()
    world.create_topic("t", 6)
    group_log = MemoryCoordinatorLog()
    async with trio.open_nursery() as first:
        coordinator = await start_coordinator(first, group_log)
        clients = [Client(coordinator, world, instance_id=f"i{i}" if i == 0 else None) for i in range(3)]
        for c in clients:
            await c.join()
        await settle(clients)
        before = group_of(coordinator).to_record()
        first.cancel_scope.cancel()

    await trio.sleep(30)  # the broker is down for a while
    coordinator = await start_coordinator(nursery, group_log)
    group = group_of(coordinator)
    assert group.to_record() == before
    assert group.state_name == "Stable"
    for c in clients:
        c.coordinator = coordinator
    # Members carry on where they were: same epochs, same partitions, no rebalance.
    for c in clients:
        result = await c.beat()
        assert result.error == ErrorCode.none and result.member_epoch == before["group_epoch"]
    # Sessions restarted at load: a member silent since the restart is fenced one session later.
    silent = clients.pop()
    start = trio.current_time()
    while silent.member_id in group.members:
        await trio.sleep(1)
        for c in clients:
            await c.beat()
    assert SESSION_MS / 1000 - 6 <= trio.current_time() - start <= SESSION_MS / 1000 + 1
    await settle(clients)
    assert_disjoint_cover(clients, {("t", p) for p in range(6)})


async def test_describe(autojump_clock, nursery):
    world = World()
    world.create_topic("t", 3)
    coordinator = await start_coordinator(nursery)
    a = Client(coordinator, world, instance_id="inst")
    await a.join()
    await settle([a])
    error, message, described = consumer.describe(coordinator, world.image, "g")
    assert error == ErrorCode.none
    assert described["group_state"] == "Stable" and described["assignor_name"] == "uniform"
    assert described["group_epoch"] == described["assignment_epoch"] == a.epoch
    (member,) = described["members"]
    assert member["member_id"] == a.member_id and member["instance_id"] == "inst"
    assert member["assignment"] == member["target_assignment"] == [(world.ids["t"], "t", [0, 1, 2])]
    assert consumer.describe(coordinator, world.image, "")[0] == ErrorCode.invalid_group_id


# ------------------------------------------------------------------------------------------
# over the wire
# ------------------------------------------------------------------------------------------

def _needs_coordinator(running_broker):
    if getattr(running_broker.broker, "groups", None) is None:
        pytest.skip("the broker has no group coordinator wired in")


async def test_heartbeat_and_describe_over_the_wire(running_broker):
    from lodestream.protocol.messages import request_builder

    _needs_coordinator(running_broker)
    broker = running_broker.broker
    client = await running_broker.client()
    create = request_builder(19, 7)
    created = await client.request(create.CreateTopicsRequest(
        topics=(create.CreatableTopic(name="wire", num_partitions=4, replication_factor=1, assignments=(),
                                      configs=()),),
        timeout=datetime.timedelta(seconds=5), validate_only=False))
    assert created.topics[0].error_code == ErrorCode.none
    topic_id = broker.image.topics_by_name["wire"].topic_id

    hb = request_builder(68, 1)

    def heartbeat(member_id, epoch, owned=(), join=False):
        return hb.ConsumerGroupHeartbeatRequest(
            group_id="wire-group", member_id=member_id, member_epoch=epoch, instance_id=None, rack_id=None,
            rebalance_timeout=datetime.timedelta(milliseconds=30_000 if join else -1),
            subscribed_topic_names=("wire",) if join else None, subscribed_topic_regex=None, server_assignor=None,
            topic_partitions=(None if not (owned or join)
                              else () if join else (hb.TopicPartitions(topic_id=topic_id, partitions=tuple(owned)),)),
        )

    joined = await client.request(heartbeat("member-a", 0, join=True))
    assert joined.error_code == ErrorCode.none and joined.member_id == "member-a"
    assert joined.member_epoch >= 1 and joined.heartbeat_interval == datetime.timedelta(seconds=5)
    (tp,) = joined.assignment.topic_partitions
    assert tp.topic_id == topic_id and sorted(tp.partitions) == [0, 1, 2, 3]
    again = await client.request(heartbeat("member-a", joined.member_epoch, owned=(0, 1, 2, 3)))
    assert again.error_code == ErrorCode.none and again.member_epoch == joined.member_epoch
    fenced = await client.request(heartbeat("member-a", joined.member_epoch + 5))
    assert fenced.error_code == ErrorCode.fenced_member_epoch

    v0 = request_builder(68, 0)
    anonymous = await client.request(v0.ConsumerGroupHeartbeatRequest(
        group_id="wire-group", member_id="", member_epoch=0, instance_id=None, rack_id=None,
        rebalance_timeout=datetime.timedelta(seconds=30), subscribed_topic_names=("wire",), server_assignor="range",
        topic_partitions=()))
    assert anonymous.error_code == ErrorCode.none and len(anonymous.member_id) == 22

    describe = request_builder(69, 1)
    described = await client.request(describe.ConsumerGroupDescribeRequest(
        group_ids=("wire-group", "nope"), include_authorized_operations=True))
    group, missing = described.groups
    assert missing.error_code == ErrorCode.group_id_not_found
    assert group.error_code == ErrorCode.none and group.group_state in ("Reconciling", "Stable")
    assert {m.member_id for m in group.members} == {"member-a", anonymous.member_id}
    member_a = next(m for m in group.members if m.member_id == "member-a")
    assert member_a.member_type == 1 and member_a.client_id == "test" and member_a.client_host == "/127.0.0.1"
    assert member_a.subscribed_topic_names == ("wire",)
    assert member_a.assignment.topic_partitions[0].topic_name == "wire"
    assert group.authorized_operations != -2147483648

    left = await client.request(heartbeat("member-a", -1))
    assert left.error_code == ErrorCode.none and left.member_epoch == -1
    await client.aclose()


async def test_consumer_group_survives_a_broker_restart(tmp_path):
    """The group's record goes through the real __consumer_offsets log and comes back on replay."""
    from inprocess_broker import start_broker
    from lodestream.protocol.messages import request_builder

    hb = request_builder(68, 1)
    describe = request_builder(69, 1)

    async with trio.open_nursery() as nursery:
        running = await start_broker(nursery, tmp_path / "data")
        broker = running.broker
        await broker.create_topic(TopicSpec("durable", 3))
        client = await running.client()
        joined = await client.request(hb.ConsumerGroupHeartbeatRequest(
            group_id="durable-group", member_id="m1", member_epoch=0, instance_id="static-1", rack_id=None,
            rebalance_timeout=datetime.timedelta(seconds=30), subscribed_topic_names=("durable",),
            subscribed_topic_regex=None, server_assignor="range", topic_partitions=()))
        assert joined.error_code == ErrorCode.none
        before = (await client.request(describe.ConsumerGroupDescribeRequest(
            group_ids=("durable-group",), include_authorized_operations=False))).groups[0]
        await client.aclose()
        nursery.cancel_scope.cancel()
    broker.close()

    async with trio.open_nursery() as nursery:
        running = await start_broker(nursery, tmp_path / "data")
        client = await running.client()
        after = (await client.request(describe.ConsumerGroupDescribeRequest(
            group_ids=("durable-group",), include_authorized_operations=False))).groups[0]
        assert after == before
        assert after.assignor_name == "range" and after.members[0].instance_id == "static-1"
        # The member carries on with its epoch after the restart.
        again = await client.request(hb.ConsumerGroupHeartbeatRequest(
            group_id="durable-group", member_id="m1", member_epoch=joined.member_epoch, instance_id=None,
            rack_id=None, rebalance_timeout=datetime.timedelta(milliseconds=-1), subscribed_topic_names=None,
            subscribed_topic_regex=None, server_assignor=None, topic_partitions=None))
        assert again.error_code == ErrorCode.none and again.member_epoch == joined.member_epoch
        await client.aclose()
        nursery.cancel_scope.cancel()
    running.broker.close()


# ------------------------------------------------------------------------------------------
# a real client: librdkafka (confluent-kafka) with group.protocol=consumer
# ------------------------------------------------------------------------------------------


def test_confluent_kafka_consumers_with_the_consumer_protocol(tmp_path):
    ck = pytest.importorskip("confluent_kafka")
    from confluent_kafka.admin import AdminClient, NewTopic

    from broker_process import BrokerProcess

    broker = BrokerProcess(tmp_path, {
        "group.initial.rebalance.delay.ms": "0",
        "group.consumer.heartbeat.interval.ms": "500",
        "admin.listeners": "http://127.0.0.1:0",
    })
    broker.start()
    consumers = []
    try:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        for future in admin.create_topics([NewTopic("kip848", num_partitions=4, replication_factor=1)]).values():
            future.result(15)
        producer = ck.Producer({"bootstrap.servers": broker.bootstrap})
        for i in range(40):
            producer.produce("kip848", key=str(i).encode(), value=f"v{i}".encode(), partition=i % 4)
        assert producer.flush(15) == 0

        def new_consumer():
            # group.protocol=consumer: no session.timeout.ms / partition.assignment.strategy allowed.
            c = ck.Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "kip848-group",
                             "group.protocol": "consumer", "auto.offset.reset": "earliest",
                             "enable.auto.commit": False})
            c.subscribe(["kip848"])
            consumers.append(c)
            return c

        first = new_consumer()
        seen = set()
        deadline = time.monotonic() + 30
        while len(seen) < 40 and time.monotonic() < deadline:
            message = first.poll(0.2)
            if message is not None and not message.error():
                seen.add((message.partition(), message.offset()))
        assert len(seen) == 40, f"consumed {len(seen)} of 40; log tail:\n{broker.log_tail()}"
        first.commit(asynchronous=False)

        second = new_consumer()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            first.poll(0.1)
            second.poll(0.1)
            mine = {tp.partition for tp in first.assignment()}
            theirs = {tp.partition for tp in second.assignment()}
            if len(mine) == 2 and len(theirs) == 2:
                break
        assert mine | theirs == {0, 1, 2, 3} and not mine & theirs, (mine, theirs, broker.log_tail())

        committed = first.committed([ck.TopicPartition("kip848", p) for p in range(4)], timeout=15)
        assert [tp.offset for tp in committed] == [10, 10, 10, 10]

        described = admin.describe_consumer_groups(["kip848-group"])["kip848-group"].result(15)
        assert described.type == ck.ConsumerGroupType.CONSUMER
        assert described.state == ck.ConsumerGroupState.STABLE
        assert sorted(len(m.assignment.topic_partitions) for m in described.members) == [2, 2]
        listed = admin.list_consumer_groups().result(15)
        assert any(g.group_id == "kip848-group" and g.type == ck.ConsumerGroupType.CONSUMER for g in listed.valid)

        for c in consumers:
            c.close()
        consumers.clear()
        described = admin.describe_consumer_groups(["kip848-group"])["kip848-group"].result(15)
        assert described.state == ck.ConsumerGroupState.EMPTY and not described.members
    finally:
        for c in consumers:
            c.close()
        broker.stop()
