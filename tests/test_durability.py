"""Acknowledged writes survive a SIGKILL (and a SIGTERM with background flush).

Issue requirement: produce with acks=all in a loop, kill the broker with
SIGKILL mid-stream, restart it on the same data dir, and find every
acknowledged message, in order, with no gaps in offsets.

The broker is a real `lodestream serve` subprocess; the producer and consumer
are confluent-kafka (librdkafka) in the test process. Each message's value is
its sequence number i, sent to partition i % 3. Delivery callbacks record every
acknowledged (partition, offset, i). Messages that were sent but never
acknowledged may or may not be in the log afterwards; that is allowed.
With retries disabled every message is sent at most once, so a partition must
hold strictly increasing sequence numbers.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from broker_process import BrokerProcess

PARTITIONS = 3
ACKED_BEFORE_KILL = 3000  # per kill cycle
MAX_OUTSTANDING = 2000  # unacknowledged messages the producer may hold
PRODUCE_DEADLINE_S = 20.0
MESSAGE_TIMEOUT_S = 30  # the producer's message.timeout.ms: every message is reported within it
CONSUME_DEADLINE_S = 20.0


@pytest.fixture
def make_broker(tmp_path):
    started: list[BrokerProcess] = []

    def make(overrides: dict[str, str] | None = None) -> BrokerProcess:
        broker = BrokerProcess(tmp_path / f"broker{len(started)}", overrides, fail_on_ignored_sigterm=True)
        started.append(broker)
        broker.start()
        return broker

    try:
        yield make
    finally:
        for broker in started:
            broker.stop()


def create_topic(bootstrap: str, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)],
                        operation_timeout=20, request_timeout=20)[topic].result(timeout=20)
    deadline = time.monotonic() + 20
    while True:
        md = admin.list_topics(topic=topic, timeout=10).topics[topic]
        if md.error is None and len(md.partitions) == PARTITIONS and all(p.leader >= 0 for p in md.partitions.values()):
            return
        assert time.monotonic() < deadline, f"topic {topic} has no leaders: {md.partitions}"
        time.sleep(0.05)  # poll interval inside a deadline loop


@dataclass
class History:
    """What the producer sent and what the broker acknowledged."""

    next_seq: int = 0
    acked: dict[int, dict[int, int]] = field(default_factory=lambda: {p: {} for p in range(PARTITIONS)})
    failed: int = 0
    ack_errors: list[str] = field(default_factory=list)

    @property
    def acked_count(self) -> int:
        return sum(map(len, self.acked.values()))


def produce_until_stopped(bootstrap: str, topic: str, history: History, stop_broker, acked_before_stop: int) -> dict:
    """Produce numbered messages as fast as the broker takes them; once `acked_before_stop`
    more are acknowledged, call `stop_broker()` while messages are still in flight, then stop."""
    producer = Producer({
        "bootstrap.servers": bootstrap,
        "acks": "all",
        "enable.idempotence": False,
        "linger.ms": 2,
        "retries": 0,  # at most once: no duplicates, order within a partition = send order
        "max.in.flight.requests.per.connection": 5,
        "message.timeout.ms": MESSAGE_TIMEOUT_S * 1000,
        "socket.timeout.ms": 10000,
    })
    target = history.acked_count + acked_before_stop

    def on_delivery(err, msg):
        if err is not None:
            history.failed += 1
            return
        seq = int(msg.value())
        partition, offset = msg.partition(), msg.offset()
        if offset in history.acked[partition]:
            history.ack_errors.append(f"offset {offset} of partition {partition} acknowledged twice "
                                      f"(seq {history.acked[partition][offset]} and {seq})")
        history.acked[partition][offset] = seq

    deadline = time.monotonic() + PRODUCE_DEADLINE_S
    while history.acked_count < target or len(producer) == 0:  # stop only with messages in flight
        assert time.monotonic() < deadline, (
            f"only {history.acked_count - (target - acked_before_stop)} of {acked_before_stop} messages "
            f"acknowledged within {PRODUCE_DEADLINE_S}s ({history.failed} failed)")
        if len(producer) >= MAX_OUTSTANDING:
            producer.poll(0.01)
            continue
        seq = history.next_seq
        try:
            producer.produce(topic, value=str(seq).encode(), partition=seq % PARTITIONS, on_delivery=on_delivery)
        except BufferError:
            producer.poll(0.01)
            continue
        history.next_seq += 1
        producer.poll(0)
    # Mid-stream: messages are queued and in flight right now.
    outstanding_at_stop = len(producer)
    stop_broker()
    # Stop producing; whatever was not acknowledged is now unacknowledged for good.
    producer.purge(in_queue=True, in_flight=True)
    # A message whose request was being written when the broker died is purged only once its request
    # fails, which can take the client's socket.timeout.ms; message.timeout.ms bounds every report.
    remaining = producer.flush(MESSAGE_TIMEOUT_S + 10)
    assert remaining == 0, f"{remaining} messages neither delivered nor failed after the purge"
    assert not history.ack_errors, history.ack_errors[:5]
    return {"outstanding_at_stop": outstanding_at_stop}


def read_partition(bootstrap: str, topic: str, partition: int) -> tuple[int, int, list[tuple[int, int]]]:
    """(low, high watermark, [(offset, seq)]) of everything in the partition, from the beginning."""
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"durability-{uuid.uuid4().hex[:8]}",  # required by the client; nothing is committed
        "enable.auto.commit": False,
        "auto.offset.reset": "error",
        "enable.partition.eof": True,
        "check.crcs": True,  # a half-written or corrupt batch fails here
    })
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        records: list[tuple[int, int]] = []
        if high == low:
            return low, high, records
        consumer.assign([TopicPartition(topic, partition, low)])
        deadline = time.monotonic() + CONSUME_DEADLINE_S
        while not records or records[-1][0] < high - 1:
            assert time.monotonic() < deadline, (
                f"partition {partition}: read up to {records[-1][0] if records else None}, high watermark {high}")
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                assert msg.error().code() == KafkaError._PARTITION_EOF, f"partition {partition}: {msg.error()}"
                continue
            value = msg.value()
            try:
                seq = int(value)
            except (TypeError, ValueError):
                raise AssertionError(f"partition {partition} offset {msg.offset()}: undecodable value {value!r}")
            records.append((msg.offset(), seq))
        return low, high, records
    finally:
        consumer.close()


def verify(bootstrap: str, topic: str, history: History) -> dict[int, int]:
    """Every acknowledged message at its offset; offsets 0..N-1 without gaps; send order kept."""
    sizes = {}
    for partition in range(PARTITIONS):
        low, high, records = read_partition(bootstrap, topic, partition)
        acked = history.acked[partition]
        assert low == 0, f"partition {partition}: log start offset {low}"
        offsets = [offset for offset, _ in records]
        assert offsets == list(range(high)), (
            f"partition {partition}: offsets are not 0..{high - 1} without gaps: "
            f"first missing {next((o for o in range(high) if o not in set(offsets)), None)}")
        if acked:
            assert high > max(acked), (
                f"partition {partition}: high watermark {high} but offset {max(acked)} was acknowledged")
        by_offset = dict(records)
        lost = [(o, s) for o, s in sorted(acked.items()) if by_offset.get(o) != s]
        assert not lost, (
            f"partition {partition}: {len(lost)} acknowledged messages missing or changed, first "
            f"{[(o, s, by_offset.get(o)) for o, s in lost[:5]]} as (offset, acked seq, found seq)")
        seqs = [s for _, s in records]
        assert all(s % PARTITIONS == partition for s in seqs), f"partition {partition}: foreign sequence numbers"
        assert all(a < b for a, b in zip(seqs, seqs[1:])), (
            f"partition {partition}: sequence numbers out of send order or duplicated")
        assert max(seqs, default=-1) < history.next_seq, f"partition {partition}: a message that was never sent"
        sizes[partition] = high
    return sizes


def test_acknowledged_messages_survive_sigkill(make_broker):
    started = time.monotonic()
    broker = make_broker()
    topic = f"durability-{uuid.uuid4().hex[:8]}"
    create_topic(broker.bootstrap, topic)
    history = History()
    for cycle in range(2):
        info = produce_until_stopped(broker.bootstrap, topic, history, broker.kill, ACKED_BEFORE_KILL)
        assert info["outstanding_at_stop"] > 0, "the kill did not happen mid-stream"
        broker.start()  # same data dir, new port
        sizes = verify(broker.bootstrap, topic, history)
        print(f"cycle {cycle}: sent {history.next_seq}, acknowledged {history.acked_count}, "
              f"in flight at SIGKILL {info['outstanding_at_stop']}, log sizes {sizes}")
    # The restarted broker still takes writes after the last recovery, at the next offsets.
    producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
    reports = []
    for partition in range(PARTITIONS):
        producer.produce(topic, value=b"after", partition=partition,
                         on_delivery=lambda err, msg: reports.append((err, msg.partition(), msg.offset())))
    assert producer.flush(20) == 0
    assert sorted((p, o) for err, p, o in reports if err is None) == sorted(sizes.items())
    print(f"took {time.monotonic() - started:.1f}s")


def test_background_flush_survives_sigterm(make_broker):
    """log.flush.interval.messages=Long.MAX: fsync in the background; SIGTERM must still sync."""
    broker = make_broker({"log.flush.interval.messages": "9223372036854775807"})
    topic = f"durability-bg-{uuid.uuid4().hex[:8]}"
    create_topic(broker.bootstrap, topic)
    history = History()
    rc: list[int | None] = []

    def terminate() -> None:
        rc.append(broker.stop())

    produce_until_stopped(broker.bootstrap, topic, history, terminate, ACKED_BEFORE_KILL)
    assert rc == [0], f"broker exited with {rc} on SIGTERM; log tail:\n{broker.log_tail()}"
    broker.start()
    sizes = verify(broker.bootstrap, topic, history)
    print(f"sent {history.next_seq}, acknowledged {history.acked_count}, log sizes {sizes}")
