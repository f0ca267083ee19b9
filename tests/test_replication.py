"""Replicated partitions on three `lodestream serve` processes: followers copy their leaders, acks=all
waits for the ISR, a killed leader's partitions move to an in-sync follower with nothing acknowledged
lost, and a leader cut off from the others acknowledges nothing and later truncates what it wrote alone."""

from __future__ import annotations

import datetime
import signal
import time

import pytest
from confluent_kafka import Consumer, ElectionType, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

import trio

from lodestream.protocol.errors import ErrorCode
from lodestream.protocol.messages import request_builder

import record_batches as rb
from kraft_cluster import KRaftCluster
from wire_client import WireClient

REPLICATION = {
    "replica.lag.time.max.ms": "2000",
    "replica.fetch.backoff.ms": "100",
    "offsets.topic.replication.factor": "3",
}


@pytest.fixture
def cluster(tmp_path):
    cluster = KRaftCluster(tmp_path, overrides=REPLICATION, proxied_clients=True)
    try:
        cluster.start()
        assert cluster.wait_for_brokers(1, set(cluster.ids), timeout=20)
        yield cluster
    finally:
        cluster.stop()


def bootstrap(cluster, ids=None) -> str:
    return ",".join(cluster.nodes[i].bootstrap for i in (ids or cluster.ids))


def create_topic(cluster, name: str, partitions: int = 1, **configs) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap(cluster)})
    futures = admin.create_topics([NewTopic(name, partitions, 3, config=configs)], operation_timeout=20)
    futures[name].result(timeout=30)


def wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.1)  # poll interval inside a deadline loop


def produce(cluster, topic: str, values: list[bytes], ids=None) -> None:
    producer = Producer({"bootstrap.servers": bootstrap(cluster, ids), "enable.idempotence": True, "acks": "all",
                         "message.timeout.ms": 60000})
    failures = []
    for value in values:
        producer.produce(topic, value, on_delivery=lambda err, msg: err and failures.append(err))
        producer.poll(0)
    assert producer.flush(60) == 0
    assert failures == []


def consume_all(cluster, topic: str, count: int, ids=None) -> list[bytes]:
    consumer = Consumer({"bootstrap.servers": bootstrap(cluster, ids), "group.id": f"reader-{time.monotonic()}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        values = []
        deadline = time.monotonic() + 60
        while len(values) < count and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                values.append(message.value())
        return values
    finally:
        consumer.close()


def test_a_killed_leader_loses_nothing_acknowledged_and_an_in_sync_follower_takes_over(cluster):
    create_topic(cluster, "replicated", **{"min.insync.replicas": "2"})
    state = wait_until(lambda: (s := cluster.partition_state(1, "replicated")) and len(s[0][1]) == 3 and s, 20,
                       "a partition with three in-sync replicas")
    leader, isr, epoch = state[0]
    assert isr == (1, 2, 3)
    first = [b"before-%d" % i for i in range(200)]
    produce(cluster, "replicated", first)
    cluster.nodes[leader].kill()
    survivors = [i for i in cluster.ids if i != leader]
    moved = wait_until(lambda: (s := cluster.partition_state(survivors[0], "replicated")[0])[0] in survivors and s,
                       20, "a new leader among the survivors")
    assert moved[2] > epoch and leader not in moved[1]  # a new leader epoch, the dead broker out of the ISR
    second = [b"after-%d" % i for i in range(200)]
    produce(cluster, "replicated", second, survivors)
    assert consume_all(cluster, "replicated", 400, survivors) == first + second  # nothing lost, nothing twice
    cluster.start_node(leader)  # it catches up as a follower and rejoins the ISR
    wait_until(lambda: cluster.partition_state(survivors[0], "replicated")[0][1] == (1, 2, 3), 30,
               "the restarted broker back in the ISR")
    # Preferred-leader election (kafka-leader-election, Admin.electLeaders) gives it its leadership back.
    admin = AdminClient({"bootstrap.servers": bootstrap(cluster, survivors)})
    elected = admin.elect_leaders(ElectionType.PREFERRED, [TopicPartition("replicated", 0)]).result(30)
    assert list(elected.values()) == [None]
    # The controller answers once the election is committed; another node's image sees it a moment later.
    wait_until(lambda: cluster.partition_state(survivors[0], "replicated")[0][0] == leader, 20,
               "the preferred leader back, in a survivor's image")
    again = admin.elect_leaders(ElectionType.PREFERRED, [TopicPartition("replicated", 0)]).result(30)
    assert [error.code() for error in again.values()] == [KafkaError.ELECTION_NOT_NEEDED]
    assert consume_all(cluster, "replicated", 400, survivors) == first + second


def test_an_isolated_leader_acknowledges_nothing_and_truncates_its_unacknowledged_suffix(cluster):
    create_topic(cluster, "isolated", **{"min.insync.replicas": "2"})
    leader, isr, epoch = wait_until(lambda: (s := cluster.partition_state(1, "isolated")[0]) and len(s[1]) == 3 and s,
                                    20, "three in-sync replicas")
    produce(cluster, "isolated", [b"committed-%d" % i for i in range(50)])
    cluster.isolate(leader)
    # Straight to the isolated leader's own port: acks=all waits for followers that cannot fetch, and
    # answers with an error, never success; an acks=1 batch is written there alone.
    alone = trio.run(_produce_direct, cluster.nodes[leader].port, "isolated", [b"alone-%d" % i for i in range(5)], 1)
    refused = trio.run(_produce_direct, cluster.nodes[leader].port, "isolated", [b"unacked"], -1)
    assert alone == ErrorCode.none
    assert refused in (ErrorCode.request_timed_out, ErrorCode.not_enough_replicas,
                       ErrorCode.not_enough_replicas_after_append, ErrorCode.not_leader_or_follower), refused
    survivors = [i for i in cluster.ids if i != leader]
    wait_until(lambda: cluster.partition_state(survivors[0], "isolated")[0][0] in survivors, 20,
               "the majority elects a new leader")
    produce(cluster, "isolated", [b"majority-%d" % i for i in range(50)], survivors)
    cluster.heal()
    wait_until(lambda: cluster.partition_state(survivors[0], "isolated")[0][1] == (1, 2, 3), 30,
               "the old leader back in the ISR")
    assert "truncating from" in cluster.nodes[leader].log_tail(400)
    values = consume_all(cluster, "isolated", 100)
    assert values == [b"committed-%d" % i for i in range(50)] + [b"majority-%d" % i for i in range(50)]


async def _produce_direct(port: int, topic: str, values: list[bytes], acks: int) -> ErrorCode:
    build = request_builder(0, 9)
    batch = rb.build_batch([rb.Record(value=value) for value in values])
    with trio.fail_after(20):
        client = await WireClient.connect(port)
        try:
            response = await client.request(build.ProduceRequest(
                transactional_id=None, acks=acks, timeout=datetime.timedelta(seconds=3),
                topic_data=(build.TopicProduceData(name=topic, partition_data=(
                    build.PartitionProduceData(index=0, records=batch),)),)))
        finally:
            await client.aclose()
    return ErrorCode(response.responses[0].partition_responses[0].error_code)


def test_a_reassignment_moves_a_partition_to_other_brokers_and_reports_its_progress(cluster):
    """AlterPartitionReassignments from brokers (a, b) to (b, c): c catches up as a follower, then a leaves (and
    deletes its copy); ListPartitionReassignments lists the move until then. c is paused meanwhile, so the
    move is seen in progress; it is not the active controller, which must stay up to carry it out."""
    controller, _, _ = cluster.wait_for_leader(cluster.ids, timeout=15)
    c = next(i for i in reversed(cluster.ids) if i != controller)
    a, b = [i for i in cluster.ids if i != c]
    admin = AdminClient({"bootstrap.servers": bootstrap(cluster)})
    admin.create_topics([NewTopic("moving", num_partitions=1, replica_assignment=[[a, b]])],
                        operation_timeout=20)["moving"].result(30)
    wait_until(lambda: cluster.partition_state(a, "moving")[0][1] == (a, b), 20, "two in-sync replicas")
    values = [b"v-%d" % i for i in range(300)]
    produce(cluster, "moving", values)
    cluster.nodes[c].proc.send_signal(signal.SIGSTOP)  # c cannot catch up yet: the move stays open
    try:
        errors = trio.run(_reassign, cluster.nodes[b].port, "moving", [b, c])  # forwarded to the controller
        assert errors == [ErrorCode.none]
        # a learns of the move from the metadata log, a moment after the controller answered
        expected = [("moving", 0, (b, c, a), (c,), (a,))]
        wait_until(lambda: trio.run(_ongoing, cluster.nodes[a].port) == expected, 15, "a to list the move")
        assert cluster.partition_state(a, "moving")[0][1] == (a, b)  # a still leads and stays in sync
    finally:
        cluster.nodes[c].proc.send_signal(signal.SIGCONT)
    wait_until(lambda: not trio.run(_ongoing, cluster.nodes[a].port), 30, "the reassignment to finish")
    leader, isr, _ = cluster.partition_state(c, "moving")[0]
    assert isr == tuple(sorted((b, c))) and leader in (b, c)
    assert cluster.partition_replicas(c, "moving")[0] == [b, c]
    assert consume_all(cluster, "moving", 300) == values
    wait_until(lambda: "partition replicas a reassignment moved" in cluster.nodes[a].log_tail(400), 20,
               f"broker {a} deleting its copy")


async def _reassign(port: int, topic: str, replicas: list[int]) -> list[ErrorCode]:
    build = request_builder(45, 0)
    client = await WireClient.connect(port)
    try:
        response = await client.request(build.AlterPartitionReassignmentsRequest(
            timeout=datetime.timedelta(seconds=30), topics=(build.ReassignableTopic(name=topic, partitions=(
                build.ReassignablePartition(partition_index=0, replicas=tuple(replicas)),)),)))
    finally:
        await client.aclose()
    return [ErrorCode(p.error_code) for t in response.responses for p in t.partitions]


async def _ongoing(port: int) -> list[tuple]:
    build = request_builder(46, 0)
    client = await WireClient.connect(port)
    try:
        response = await client.request(build.ListPartitionReassignmentsRequest(
            timeout=datetime.timedelta(seconds=30), topics=None))
    finally:
        await client.aclose()
    return [(t.name, p.partition_index, tuple(p.replicas), tuple(p.adding_replicas), tuple(p.removing_replicas))
            for t in response.topics for p in t.partitions]


def test_a_paused_coordinator_answers_nothing_from_its_stale_state(cluster):
    """A transaction coordinator SIGSTOPped past its session timeout loses the coordination to another broker,
    which starts the producer's next transaction. When the old one resumes, its memory still says the last
    transaction was aborted; an EndTxn(abort) that reached it while it was stopped must not be answered
    success from that memory (the producer would think the new transaction aborted, and a later commit
    would publish it: a G1a aborted read)."""
    create_topic(cluster, "paused-txn")
    assert trio.run(_ask_a_broker_that_does_not_coordinate, cluster) == (ErrorCode.not_coordinator,) * 2
    answer = trio.run(_abort_at_a_paused_coordinator, cluster, "paused-txn")
    assert answer == ErrorCode.not_coordinator


async def _ask_a_broker_that_does_not_coordinate(cluster) -> tuple[ErrorCode, ErrorCode]:
    """OffsetFetch and EndTxn at a broker that does not coordinate the group / transactional id: what a
    client with a stale FindCoordinator answer sends. Not "no committed offsets", not "unknown producer"."""
    ports = {i: cluster.nodes[i].port for i in cluster.ids}
    with trio.fail_after(30):
        group_coordinator = await _agreed_coordinator(ports.values(), "a-group", key_type=0)
        txn_coordinator = await _agreed_coordinator(ports.values(), "an-id", key_type=1)
        not_group = await WireClient.connect(ports[next(i for i in cluster.ids if i != group_coordinator)])
        not_txn = await WireClient.connect(ports[next(i for i in cluster.ids if i != txn_coordinator)])
        try:
            fetched = await not_group.request(request_builder(9, 7).OffsetFetchRequest(
                group_id="a-group", topics=None, require_stable=True))
            ended = await not_txn.request(_end_txn("an-id", (1, 0), commit=True))
        finally:
            await not_group.aclose()
            await not_txn.aclose()
        return ErrorCode(fetched.error_code), ErrorCode(ended.error_code)


async def _abort_at_a_paused_coordinator(cluster, topic: str) -> ErrorCode:
    transactional_id = "paused-coordinator"
    ports = {i: cluster.nodes[i].port for i in cluster.ids}
    with trio.fail_after(90):
        old = await _coordinator(ports[cluster.ids[0]], transactional_id, key_type=1)
        stale = await WireClient.connect(ports[old])
        init = await stale.request(request_builder(22, 4).InitProducerIdRequest(
            transactional_id=transactional_id, transaction_timeout=datetime.timedelta(seconds=60), producer_id=-1,
            producer_epoch=-1))
        assert init.error_code == ErrorCode.none
        producer = (init.producer_id, init.producer_epoch)
        assert await _add_partition(stale, transactional_id, producer, topic) == ErrorCode.none
        assert (await stale.request(_end_txn(transactional_id, producer, commit=False))).error_code == ErrorCode.none
        process = cluster.nodes[old].proc
        process.send_signal(signal.SIGSTOP)
        try:
            survivor = next(i for i in cluster.ids if i != old)
            while (new := await _coordinator(ports[survivor], transactional_id, key_type=1)) == old:
                await trio.sleep(0.2)  # poll interval inside the fail_after deadline
            fresh = await WireClient.connect(ports[new])
            while await _add_partition(fresh, transactional_id, producer, topic) != ErrorCode.none:
                await trio.sleep(0.2)  # the new coordinator is loading the partition
            abort = _end_txn(transactional_id, producer, commit=False)
            await stale.send(abort)  # waits in the paused broker's socket
        finally:
            process.send_signal(signal.SIGCONT)
        return ErrorCode((await stale.receive(abort)).error_code)


async def _coordinator(port: int, key: str, key_type: int) -> int:
    """The coordinator of a group (key type 0) or a transactional id (1), as the broker on `port` finds it."""
    client = await WireClient.connect(port)
    try:
        while True:
            found = await client.request(request_builder(10, 4).FindCoordinatorRequest(
                key_type=key_type, coordinator_keys=(key,)))
            if found.coordinators[0].error_code == ErrorCode.none:
                return int(found.coordinators[0].node_id)
            await trio.sleep(0.2)  # the internal topic is being created, or its leader elected
    finally:
        await client.aclose()


async def _agreed_coordinator(ports, key: str, key_type: int) -> int:
    """The coordinator every broker names: a new internal topic's leaders reach each broker's metadata a moment
    apart, and a broker that is not the coordinator must be one by every broker's account."""
    while True:
        found = {await _coordinator(port, key, key_type) for port in ports}
        if len(found) == 1:
            return found.pop()
        await trio.sleep(0.2)  # the metadata log is still reaching a broker


async def _add_partition(client: WireClient, transactional_id: str, producer: tuple[int, int], topic: str) -> ErrorCode:
    build = request_builder(24, 3)
    added = await client.request(build.AddPartitionsToTxnRequest(
        v3_and_below_transactional_id=transactional_id, v3_and_below_producer_id=producer[0],
        v3_and_below_producer_epoch=producer[1],
        v3_and_below_topics=(build.AddPartitionsToTxnTopic(name=topic, partitions=(0,)),)))
    return ErrorCode(added.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code)


def _end_txn(transactional_id: str, producer: tuple[int, int], commit: bool):
    return request_builder(26, 3).EndTxnRequest(transactional_id=transactional_id, producer_id=producer[0],
                                                producer_epoch=producer[1], committed=commit)
