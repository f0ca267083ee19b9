"""Client quotas with real clients (docs/quotas.md): rates held within 10 %, throttle_time
reported to the client (KIP-219), unthrottled clients and groups unaffected, and
kafka-python / aiokafka round trips under a quota.

Slow (tens of seconds each): marked ``slow``. Client quotas are set with AlterClientQuotas
over a plain socket (neither confluent-kafka nor kafka-python has the API); the consumer-group
quota is set as a group config (resource type GROUP) with confluent-kafka's AdminClient.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import threading
import time

import pytest

from compat_util import CLUSTER, ck_create_topics, unique_topic

# The repo's own codec (kio) encodes the raw AlterClientQuotas requests.
from lodestream.protocol.codec import decode_response, encode_request, response_type
from lodestream.protocol.messages import request_builder

pytestmark = pytest.mark.slow

MB = 1024 * 1024
VALUE = os.urandom(10_000)


def set_quotas(bootstrap: str, entity: list[tuple[str, str | None]], ops: dict[str, float]) -> None:
    """AlterClientQuotas v1 over a plain socket; asserts success."""
    b = request_builder(49, 1)
    body = b.AlterClientQuotasRequest(entries=(b.EntryData(
        entity=tuple(b.EntityData(entity_type=t, entity_name=n) for t, n in entity),
        ops=tuple(b.OpData(key=k, value=float(v), remove=False) for k, v in ops.items())),), validate_only=False)
    host, port = bootstrap.split(",")[0].rsplit(":", 1)  # any broker: a quota change goes to the controller
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(encode_request(1, body, "compat-quotas"))
        buf = b""
        while len(buf) < 4 or len(buf) < 4 + struct.unpack(">i", buf[:4])[0]:
            chunk = s.recv(65536)
            assert chunk, "broker closed the connection"
            buf += chunk
    _, response = decode_response(buf[4:], response_type(49, 1))
    assert [int(e.error_code) for e in response.entries] == [0], response


def set_group_config(bootstrap: str, group: str, key: str, value: str) -> None:
    """IncrementalAlterConfigs on resource type GROUP with confluent-kafka; checks DescribeConfigs shows it."""
    from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

    admin = AdminClient({"bootstrap.servers": bootstrap})
    resource = ConfigResource(ResourceType.GROUP, group, incremental_configs=[
        ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)])
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(timeout=30)
    (described,) = admin.describe_configs([ConfigResource(ResourceType.GROUP, group)]).values()
    assert described.result(timeout=30)[key].value == value


class ThrottleStats:
    """Reads librdkafka's statistics: the largest brokers[*].throttle.max seen (ms)."""

    def __init__(self) -> None:
        self.max_ms = 0

    def __call__(self, stats_json: str) -> None:
        stats = json.loads(stats_json)
        for b in stats.get("brokers", {}).values():
            self.max_ms = max(self.max_ms, int(b.get("throttle", {}).get("max", 0)))


class Producer:
    """A confluent-kafka producer pushing 10 kB values as fast as it can, recording acked bytes."""

    def __init__(self, bootstrap: str, client_id: str, topic: str, partition: int) -> None:
        from confluent_kafka import Producer as CkProducer

        self.stats = ThrottleStats()
        self.acked: list[tuple[float, int]] = []  # (monotonic time, bytes)
        self.errors: list = []
        self.topic, self.partition = topic, partition
        self.producer = CkProducer({
            "bootstrap.servers": bootstrap, "client.id": client_id, "linger.ms": 5, "batch.size": 65536,
            "queue.buffering.max.kbytes": 4096, "compression.type": "none", "acks": 1,
            "statistics.interval.ms": 500, "stats_cb": self.stats,
        })
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _delivered(self, err, msg) -> None:
        if err is not None:
            self.errors.append(err)
        else:
            self.acked.append((time.monotonic(), len(msg.value())))

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                self.producer.produce(self.topic, VALUE, partition=self.partition, on_delivery=self._delivered)
            except BufferError:
                self.producer.poll(0.05)  # the local queue is full: wait for deliveries
            else:
                self.producer.poll(0)
        self.producer.flush(60)

    def start(self) -> "Producer":
        self.thread.start()
        return self

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(90)
        assert not self.thread.is_alive()
        self.producer.poll(1.0)  # a last statistics callback
        assert not self.errors, self.errors[:3]

    def rate(self, start: float, end: float) -> float:
        return sum(n for t, n in self.acked if start <= t < end) / (end - start)


SIDE_BY_SIDE_S = 12.0
WARM_UP_S = 2.0


def test_producer_quota_holds_rate_and_spares_other_clients(broker_factory):
    # Both phases run on a fresh broker, measured over the same window: a produce rate
    # falls as LevelDB grows and compacts, so measuring "beside" on the broker that has
    # just stored the "alone" run would charge that growth to the quota.
    def fresh_broker():
        broker = broker_factory()
        topic = unique_topic("quota-produce")
        ck_create_topics(broker.bootstrap, [topic], partitions=2)
        set_quotas(broker.bootstrap, [("client-id", "throttled")], {"producer_byte_rate": MB})
        return broker, topic

    broker, topic = fresh_broker()
    alone = Producer(broker.bootstrap, "free-alone", topic, 1).start()
    t0 = time.monotonic()
    alone.thread.join(SIDE_BY_SIDE_S)  # a timed run, not synchronisation
    end = time.monotonic()
    alone.finish()
    alone_rate = alone.rate(t0 + WARM_UP_S, end)
    del alone  # destroys its librdkafka instance, which would keep reconnecting to the stopped broker
    broker.stop()  # its background compaction must not slow the next phase

    broker, topic = fresh_broker()
    throttled = Producer(broker.bootstrap, "throttled", topic, 0).start()
    free = Producer(broker.bootstrap, "free", topic, 1).start()
    t0 = time.monotonic()
    throttled.thread.join(SIDE_BY_SIDE_S)
    end = time.monotonic()
    free.finish()
    throttled.finish()
    # Skip the warm-up: the bucket starts full (one second of burst) and the first
    # throttles arrive. The steady rate is what the quota bounds.
    rate = throttled.rate(t0 + WARM_UP_S, end)
    free_rate = free.rate(t0 + WARM_UP_S, end)
    print(f"\nthrottled producer: {rate / MB:.3f} MB/s (quota 1 MB/s), throttle max {throttled.stats.max_ms} ms; "
          f"free producer alone {alone_rate / MB:.1f} MB/s, beside it {free_rate / MB:.1f} MB/s")
    assert abs(rate - MB) <= 0.10 * MB, rate / MB
    assert throttled.stats.max_ms > 0, "librdkafka's statistics show no throttle"
    assert free.stats.max_ms == 0
    # The failure this guards against is the free client held near the quota (a hundredth of its rate);
    # two runs on this shared 2-core machine differ by up to a third, so the bound leaves room for that.
    assert free_rate >= 0.5 * alone_rate, (free_rate / MB, alone_rate / MB)


class GroupConsumer:
    """A confluent-kafka consumer in a thread, recording consumed bytes."""

    def __init__(self, bootstrap: str, group: str, client_id: str, topic: str) -> None:
        from confluent_kafka import Consumer

        self.stats = ThrottleStats()
        self.got: list[tuple[float, int]] = []
        self.consumer = Consumer({
            "bootstrap.servers": bootstrap, "group.id": group, "client.id": client_id,
            "auto.offset.reset": "earliest", "max.partition.fetch.bytes": 262144,
            "statistics.interval.ms": 500, "stats_cb": self.stats, "enable.auto.commit": True,
        })
        self.consumer.subscribe([topic])
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            for msg in self.consumer.consume(num_messages=500, timeout=0.2):
                if msg.error() is None:
                    self.got.append((time.monotonic(), len(msg.value())))
        self.consumer.close()

    def bytes_between(self, start: float, end: float) -> int:
        return sum(n for t, n in self.got if start <= t < end)

    def total(self) -> int:
        return sum(n for _, n in self.got)


def test_consumer_group_quota_is_shared_by_the_members(broker_factory):
    if CLUSTER:  # docs/quotas.md: a group's members are known to the broker that coordinates it
        pytest.skip("a consumer-group quota throttles the fetches its coordinator's broker serves; on a cluster "
                    "the members' fetches to other brokers are not attributed to the group")
    from confluent_kafka import Producer as CkProducer

    broker = broker_factory()
    topic = unique_topic("quota-group")
    ck_create_topics(broker.bootstrap, [topic], partitions=3)
    count = 3600  # 36 MB
    producer = CkProducer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5, "compression.type": "none"})
    for i in range(count):
        while True:
            try:
                producer.produce(topic, VALUE, partition=i % 3)
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(60) == 0
    set_group_config(broker.bootstrap, "limited", "consumer.byte.rate", str(2 * MB))

    limited = [GroupConsumer(broker.bootstrap, "limited", f"limited-{i}", topic) for i in range(3)]
    free = [GroupConsumer(broker.bootstrap, "free", f"free-{i}", topic) for i in range(3)]
    for c in limited + free:
        c.thread.start()
    try:
        # The measurement starts once every limited member is fetching, plus 2 s (the burst).
        from compat_util import wait_until

        wait_until(lambda: all(c.got for c in limited), 60, "every limited member consuming")
        start = max(c.got[0][0] for c in limited) + 2.0
        # A 12 s window: over 8 s one fetch more or less (each up to 1 MB) moved the rate by 10% on a loaded
        # machine (2.24 MB/s measured once in CI).
        limited[0].thread.join(max(0.0, start + 12.0 - time.monotonic()))
        end = time.monotonic()
        group_rate = sum(c.bytes_between(start, end) for c in limited) / (end - start)
        wait_until(lambda: sum(c.total() for c in free) >= count * len(VALUE), 60, "the free group reading it all")
        free_first = min(c.got[0][0] for c in free if c.got)
        free_last = max(c.got[-1][0] for c in free if c.got)
    finally:
        for c in limited + free:
            c.stop.set()
        for c in limited + free:
            c.thread.join(30)
    free_rate = count * len(VALUE) / max(free_last - free_first, 1e-3)
    per_member = [c.bytes_between(start, end) / (end - start) / MB for c in limited]
    print(f"\nlimited group: {group_rate / MB:.3f} MB/s (quota 2 MB/s; members {[round(r, 2) for r in per_member]}), "
          f"throttle max {[c.stats.max_ms for c in limited]} ms; free group {free_rate / MB:.1f} MB/s")
    assert abs(group_rate - 2 * MB) <= 0.10 * 2 * MB, group_rate / MB
    assert all(r > 0 for r in per_member), "every member shares the bucket"
    assert max(c.stats.max_ms for c in limited) > 0
    assert all(c.stats.max_ms == 0 for c in free), "the other group is not throttled"
    assert free_rate > 3 * 2 * MB


# -- kafka-python and aiokafka under a quota -----------------------------------------------

N = 300  # 3 MB at 1 MB/s each way: throttled for about 2 s producing and 2 s consuming


def _quota_for(bootstrap: str, client_id: str) -> None:
    set_quotas(bootstrap, [("client-id", client_id)], {"producer_byte_rate": MB, "consumer_byte_rate": MB})


def test_kafka_python_round_trip_under_quota(broker_factory):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    broker = broker_factory()
    topic = unique_topic("quota-kp")
    ck_create_topics(broker.bootstrap, [topic], partitions=1)
    _quota_for(broker.bootstrap, "kp-quota")
    values = [i.to_bytes(4, "big") + VALUE for i in range(N)]
    started = time.monotonic()
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, client_id="kp-quota", linger_ms=5,
                             batch_size=65536, max_request_size=2 * MB, request_timeout_ms=60000,
                             enable_idempotence=False)  # InitProducerId is covered by test_kafka_python
    try:
        futures = [producer.send(topic, v, partition=0) for v in values]
        producer.flush(120)
        offsets = [f.get(timeout=60).offset for f in futures]
    finally:
        producer.close(30)
    produced_in = time.monotonic() - started
    assert offsets == list(range(N))

    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, client_id="kp-quota", enable_auto_commit=False,
                             auto_offset_reset="earliest", max_partition_fetch_bytes=262144, fetch_max_bytes=262144)
    got = []
    try:
        consumer.assign([TopicPartition(topic, 0)])
        consumer.seek_to_beginning()
        deadline = time.monotonic() + 120
        while len(got) < N and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                got.extend(r.value for r in records)
    finally:
        consumer.close()
    print(f"\nkafka-python: produced {N * len(VALUE) / MB:.1f} MB in {produced_in:.1f} s under a 1 MB/s quota")
    assert got == values
    assert produced_in >= 1.5  # (3 MB - 1 MB burst) / 1 MB/s, less slack: the quota applied


def test_aiokafka_round_trip_under_quota(broker_factory):
    import asyncio

    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    broker = broker_factory()
    topic = unique_topic("quota-aio")
    ck_create_topics(broker.bootstrap, [topic], partitions=1)
    _quota_for(broker.bootstrap, "aio-quota")
    values = [i.to_bytes(4, "big") + VALUE for i in range(N)]

    async def run():
        started = time.monotonic()
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, client_id="aio-quota", linger_ms=5,
                                    max_batch_size=65536, request_timeout_ms=60000)
        await producer.start()
        try:
            futures = [await producer.send(topic, v, partition=0) for v in values]
            offsets = [(await f).offset for f in futures]
        finally:
            await producer.stop()
        produced_in = time.monotonic() - started
        consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, client_id="aio-quota",
                                    enable_auto_commit=False, auto_offset_reset="earliest",
                                    max_partition_fetch_bytes=262144, fetch_max_bytes=262144)
        await consumer.start()
        got = []
        try:
            consumer.assign([TopicPartition(topic, 0)])
            await consumer.seek_to_beginning()
            async with asyncio.timeout(120):
                while len(got) < N:
                    for records in (await consumer.getmany(timeout_ms=500)).values():
                        got.extend(r.value for r in records)
        finally:
            await consumer.stop()
        return offsets, produced_in, got

    offsets, produced_in, got = asyncio.run(run())
    print(f"\naiokafka: produced {N * len(VALUE) / MB:.1f} MB in {produced_in:.1f} s under a 1 MB/s quota")
    assert offsets == list(range(N))
    assert got == values
    assert produced_in >= 1.5


def _one_request_per_message(bootstrap: str, client_id: str, topic: str, seconds: float) -> tuple[int, int, int]:
    """Produce one message per request (flush after each) for `seconds`: (sent, delivered, throttle max ms)."""
    from confluent_kafka import Producer as CkProducer

    stats = ThrottleStats()
    delivered = []
    producer = CkProducer({"bootstrap.servers": bootstrap, "client.id": client_id, "linger.ms": 0, "acks": 1,
                           "statistics.interval.ms": 200, "stats_cb": stats})
    sent = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        producer.produce(topic, b"x", on_delivery=lambda err, msg: delivered.append(err))
        sent += 1
        assert producer.flush(30) == 0
    producer.poll(0.5)  # a last statistics callback
    assert all(err is None for err in delivered), delivered[:3]
    return sent, len(delivered), stats.max_ms


def test_request_percentage_throttles_a_real_client(broker_factory):
    """request_percentage=1 (10 ms of the broker's request-thread time per second) for one client id:
    confluent-kafka sees throttle_time (statistics throttle.max > 0), delivers every message, and gets far
    fewer requests through than an unthrottled client id on the same broker."""
    broker = broker_factory()
    topic = unique_topic("quota-request")
    ck_create_topics(broker.bootstrap, [topic], partitions=1)
    set_quotas(broker.bootstrap, [("client-id", "chatty")], {"request_percentage": 1.0})
    free_sent, free_delivered, free_throttle = _one_request_per_message(broker.bootstrap, "free", topic, 3.0)
    sent, delivered, throttle = _one_request_per_message(broker.bootstrap, "chatty", topic, 3.0)
    print(f"\nrequest_percentage=1: {sent / 3.0:.0f} requests/s, throttle max {throttle} ms; "
          f"unthrottled client {free_sent / 3.0:.0f} requests/s, throttle max {free_throttle} ms")
    assert delivered == sent and free_delivered == free_sent
    assert throttle > 0 and free_throttle == 0
    assert sent < free_sent / 3
