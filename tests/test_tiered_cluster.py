"""Tiered storage on three replicated brokers (docs/tiered-storage.md): leaders that are not the active
controller commit their manifests through it (UpdateRemoteSegments on the controller listener), followers
delete what their leader offloaded and deleted, and when a leader is SIGKILLed its successor serves the
offloaded segments and goes on offloading after them."""

from __future__ import annotations

import time

import trio
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from kraft_cluster import KRaftCluster
from lodestream.protocol.messages import request_builder
from test_replication import REPLICATION, wait_until
from wire_client import WireClient

TOPIC = "tiered"
PARTITIONS = 3
RECORDS_PER_ROUND = 600


def value_of(index: int) -> bytes:
    return (b"%08d" % index) * 50


def produce(bootstrap: str, first: int, count: int) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                         "batch.num.messages": 20, "message.timeout.ms": 60000})
    for index in range(first, first + count):
        producer.produce(TOPIC, value_of(index), key=b"%d" % (index % PARTITIONS), partition=index % PARTITIONS)
        producer.poll(0)
    assert producer.flush(60) == 0


def consume(bootstrap: str, expected: int) -> dict[int, list[bytes]]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{time.monotonic_ns()}",
                         "enable.auto.commit": False})
    values: dict[int, list[bytes]] = {p: [] for p in range(PARTITIONS)}
    try:
        consumer.assign([TopicPartition(TOPIC, p, 0) for p in range(PARTITIONS)])
        deadline = time.monotonic() + 60
        while sum(map(len, values.values())) < expected and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                values[message.partition()].append(message.value())
    finally:
        consumer.close()
    return values


async def _local_sizes(port: int) -> dict[int, int]:
    client = await WireClient.connect(port)
    try:
        b = request_builder(35, 4)
        response = await client.request(b.DescribeLogDirsRequest(topics=(
            b.DescribableLogDirTopic(topic=TOPIC, partitions=tuple(range(PARTITIONS))),)))
        return {int(p.partition_index): int(p.partition_size)
                for result in response.results for topic in result.topics for p in topic.partitions}
    finally:
        await client.aclose()


def test_three_brokers_offload_through_the_controller_and_a_new_leader_carries_on(tmp_path):
    stores = ",".join(f"file://{tmp_path / f'store{i}'}" for i in range(3))  # shared by the brokers, as S3 is
    cluster = KRaftCluster(tmp_path, overrides={
        **REPLICATION, "remote.log.storage.system.enable": "true", "remote.fragment.stores": stores,
        "remote.erasure.code": "rs:2+1", "remote.stripe.bytes": "16384",
        "remote.log.manager.task.interval.ms": "100"}, proxied_clients=True)
    try:
        cluster.start()
        assert cluster.wait_for_brokers(1, set(cluster.ids), timeout=20)
        bootstrap = cluster.bootstrap()
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_topics([NewTopic(TOPIC, PARTITIONS, 3, config={
            "remote.storage.enable": "true", "segment.bytes": "30000", "local.retention.ms": "0",
            "min.insync.replicas": "2"})])[TOPIC].result(30)
        produce(bootstrap, 0, RECORDS_PER_ROUND)
        leaders = cluster.partition_leaders(1, TOPIC)
        assert len(set(leaders.values())) > 1  # leaders on several brokers: not all of them the controller

        def local_sizes() -> dict[int, dict[int, int]]:
            return {i: trio.run(_local_sizes, cluster.nodes[i].port) for i in cluster.ids}

        # Every replica's local log (about 85 KB per partition produced) shrinks to about its active segment:
        # leaders by local retention, followers by following their leader's local log start.
        wait_until(lambda: all(size < 40_000 for sizes in local_sizes().values() for size in sizes.values()),
                   60, "every replica's offloaded segments deleted locally")
        values = consume(bootstrap, RECORDS_PER_ROUND)
        assert values == {p: [value_of(i) for i in range(p, RECORDS_PER_ROUND, PARTITIONS)] for p in range(PARTITIONS)}

        # The leader of partition 0 dies: its successor serves the offloaded segments and offloads the rest.
        old = leaders[0]
        cluster.nodes[old].kill()
        wait_until(lambda: cluster.partition_leaders(next(i for i in cluster.ids if i != old), TOPIC).get(0, old)
                   not in (old, -1), 30, "a new leader for partition 0")
        survivors = [i for i in cluster.ids if i != old]
        bootstrap = ",".join(cluster.nodes[i].bootstrap for i in survivors)
        produce(bootstrap, RECORDS_PER_ROUND, RECORDS_PER_ROUND)
        wait_until(lambda: all(trio.run(_local_sizes, cluster.nodes[i].port)[0] < 40_000 for i in survivors),
                   60, "the new leader's offload of partition 0")
        total = 2 * RECORDS_PER_ROUND
        values = consume(bootstrap, total)
        assert values == {p: [value_of(i) for i in range(p, total, PARTITIONS)] for p in range(PARTITIONS)}
    finally:
        cluster.stop()
