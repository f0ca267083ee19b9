"""Groups and committed offsets survive restarts: they live in __consumer_offsets and
are replayed at start-up. In-process (clean stop) and a `lodestream serve` process
killed with SIGKILL; plus a real confluent-kafka consumer group."""

from __future__ import annotations

import datetime

import pytest
import trio

from lodestream.broker.internal_topics import OFFSETS_TOPIC
from broker_process import BrokerProcess
from inprocess_broker import start_broker
from lodestream.protocol.errors import ErrorCode
from test_group_handlers import commit, create_topic, join, offsets_of, req, sync
from wire_client import WireClient

GROUP_OVERRIDES = {"group.initial.rebalance.delay.ms": "0", "offsets.topic.num.partitions": "7"}


async def commit_as_group_member(client, group: str) -> str:
    """Join + sync (Stable) and commit offsets with metadata; returns the member id."""
    await create_topic(client, "orders", partitions=3)
    joined = await join(client, 9, group)
    joined = await join(client, 9, group, joined.member_id)
    assert (await sync(client, 5, group, joined, {joined.member_id: b"orders-0-1-2"})).error_code == ErrorCode.none
    errors = await commit(client, 9, group, {("orders", 0): (100, "first"), ("orders", 1): (200, None),
                                              ("orders", 2): (300, "x" * 100)},
                          generation=joined.generation_id, member_id=joined.member_id)
    assert set(errors.values()) == {ErrorCode.none}
    # A second commit of one partition: the latest value wins on replay.
    errors = await commit(client, 9, group, {("orders", 0): (150, "second")},
                          generation=joined.generation_id, member_id=joined.member_id)
    assert set(errors.values()) == {ErrorCode.none}
    assert await commit(client, 9, "simple", {("orders", 1): (7, "s")}) == {("orders", 1): ErrorCode.none}
    return joined.member_id


EXPECTED = {("orders", 0): (150, "second", 0), ("orders", 1): (200, "", 0), ("orders", 2): (300, "x" * 100, 0)}


async def check_after_restart(client, group: str, member_id: str) -> None:
    fetched = await client.request(req(9, 9).OffsetFetchRequest(groups=(
        req(9, 9).OffsetFetchRequestGroup(group_id=group, member_id=None, member_epoch=-1, topics=None),
        req(9, 9).OffsetFetchRequestGroup(group_id="simple", member_id=None, member_epoch=-1, topics=None),
    ), require_stable=False))
    assert offsets_of(fetched.groups[0].topics) == EXPECTED
    assert offsets_of(fetched.groups[1].topics) == {("orders", 1): (7, "s", 0)}
    old = await client.request(req(9, 1).OffsetFetchRequest(group_id=group, topics=(
        req(9, 1).OffsetFetchRequestTopic(name="orders", partition_indexes=(0, 1, 2)),)))
    assert offsets_of(old.topics) == EXPECTED
    described = await client.request(req(15, 6).DescribeGroupsRequest(groups=(group,),
                                                                      include_authorized_operations=False))
    (g,) = described.groups
    assert (g.error_code, g.group_state, g.protocol_type, g.protocol_data) == (0, "Stable", "consumer", "range")
    assert [m.member_id for m in g.members] == [member_id]
    assert g.members[0].member_assignment == b"orders-0-1-2"
    listed = await client.request(req(16, 5).ListGroupsRequest(states_filter=(), types_filter=()))
    assert sorted((x.group_id, x.group_state) for x in listed.groups) == [(group, "Stable"), ("simple", "Empty")]


async def test_restart_in_process(tmp_path):
    data = tmp_path / "data"
    async with trio.open_nursery() as nursery:
        running = await start_broker(nursery, data, **GROUP_OVERRIDES)
        client = await running.client()
        member_id = await commit_as_group_member(client, "app")
        await client.aclose()
        nursery.cancel_scope.cancel()
    running.broker.close()
    async with trio.open_nursery() as nursery:
        running = await start_broker(nursery, data, **GROUP_OVERRIDES)
        assert len(running.broker.image.topic(OFFSETS_TOPIC).partitions) == 7
        client = await running.client()
        await check_after_restart(client, "app", member_id)
        # The member that was in the group before the restart must heartbeat to stay in it.
        hb = req(12, 4).HeartbeatRequest(group_id="app", generation_id=1, member_id=member_id, group_instance_id=None)
        assert (await client.request(hb)).error_code == ErrorCode.none
        await client.aclose()
        nursery.cancel_scope.cancel()
    running.broker.close()


@pytest.fixture
def broker_process(tmp_path):
    process = BrokerProcess(tmp_path / "broker", GROUP_OVERRIDES)
    yield process
    process.stop()


async def test_offsets_survive_sigkill(broker_process):
    broker_process.start()
    client = await WireClient.connect(broker_process.port)
    member_id = await commit_as_group_member(client, "app")
    await client.aclose()
    broker_process.kill()  # SIGKILL: no shutdown work at all
    broker_process.start()
    client = await WireClient.connect(broker_process.port)
    await check_after_restart(client, "app", member_id)
    await client.aclose()


def _confluent_consume_and_commit(bootstrap: str, topic: str) -> dict[int, int]:
    from confluent_kafka import Consumer, Producer, TopicPartition

    producer = Producer({"bootstrap.servers": bootstrap})
    for i in range(30):
        producer.produce(topic, value=f"m{i}".encode(), partition=i % 3)
    assert producer.flush(30) == 0
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "confluent", "auto.offset.reset": "earliest",
                         "enable.auto.commit": False, "session.timeout.ms": 6000})
    consumer.subscribe([topic])
    received = 0
    deadline = datetime.datetime.now() + datetime.timedelta(seconds=30)
    while received < 30 and datetime.datetime.now() < deadline:
        message = consumer.poll(1.0)
        if message is not None and message.error() is None:
            received += 1
    assert received == 30
    consumer.commit(asynchronous=False)
    committed = consumer.committed([TopicPartition(topic, p) for p in range(3)], timeout=10)
    consumer.close()
    return {tp.partition: tp.offset for tp in committed}


def _confluent_committed(bootstrap: str, topic: str) -> dict[int, int]:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "confluent"})
    committed = consumer.committed([TopicPartition(topic, p) for p in range(3)], timeout=10)
    consumer.close()
    return {tp.partition: tp.offset for tp in committed}


async def test_confluent_consumer_group_commits_survive_sigkill(broker_process):
    broker_process.start()
    client = await WireClient.connect(broker_process.port)
    await create_topic(client, "events", partitions=3)
    await client.aclose()
    committed = await trio.to_thread.run_sync(_confluent_consume_and_commit, broker_process.bootstrap, "events")
    assert committed == {0: 10, 1: 10, 2: 10}
    broker_process.kill()
    broker_process.start()
    assert await trio.to_thread.run_sync(_confluent_committed, broker_process.bootstrap, "events") == committed
