"""Idempotent producer under retries (issue 6, "Show" item 4).

An idempotent producer sends 50,000 numbered messages to 4 partitions through
``drop_proxy.DropProxy``: confluent-kafka (``enable.idempotence=true``,
``acks=all``, 5 requests in flight per connection, batches of 100 messages so
that there are many requests), aiokafka and kafka-python
(``enable_idempotence=True``, 2,000-byte batches).

* ``test_idempotent_producer_survives_connection_cuts``: the proxy cuts the
  connection on every 5th Produce request after forwarding it to the broker and
  before the client sees the response: alternately after the broker's response
  came back (the batch is certainly in the log, the client does not know) and
  right after forwarding (it may or may not be). The client retries the
  unanswered batches with their original producer id, epoch and sequence
  numbers; the broker must answer a batch it already has with its original
  offsets and append nothing. (The same runs without idempotence write
  thousands of duplicates.)
* ``test_idempotent_producer_survives_broker_kill``: once 15,000 messages are
  acknowledged, the proxy holds back the broker's responses until one to a
  Produce is held (the batch is written and fsynced), the broker is SIGKILLed
  and restarted on the same data dir, and the held responses are dropped; the
  producer reconnects through the proxy and retries. The broker must recognise
  the retried batches that it wrote before the crash from the producer state it
  rebuilt at start-up.

Afterwards, per partition:

* every message has a successful delivery report, and the reported offset of
  the n-th message sent to the partition is n (a retried batch written twice
  would move every later offset);
* reading the partition back yields exactly the sent sequence: zero duplicates,
  zero reorderings, nothing missing, and the offsets are dense.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from confluent_kafka import Producer

from compat_util import Deadline, ck_create_topics, unique_topic, wait_until
from eos_util import ck_read_all, order_figures

MESSAGES = 50_000
PARTITIONS = 4  # MESSAGES is a multiple
CUT_EVERY = 5
MIN_CUTS = 8
KILL_AFTER_ACKED = 15_000
PRODUCER_CONFIG = {
    "enable.idempotence": True,
    "acks": "all",
    "max.in.flight.requests.per.connection": 5,
    "linger.ms": 2,
    "batch.num.messages": 100,  # many small requests
    "retry.backoff.ms": 20,
    "reconnect.backoff.ms": 10,
    "reconnect.backoff.max.ms": 200,
    "message.timeout.ms": 120_000,
}


def _value(p: int, n: int) -> bytes:
    return b"%d:%06d" % (p, n)


Delivered = dict[int, list[tuple[int, int]]]  # partition -> [(message number, offset)]


def _ck_produce(bootstrap: str, topic: str, on_progress, deadline: Deadline) -> tuple[Delivered, list[str]]:
    """confluent-kafka: queue every message, then flush in 0.1 s steps, calling ``on_progress(acked)``."""
    errors: list[str] = []
    delivered: Delivered = {p: [] for p in range(PARTITIONS)}

    def on_delivery(err, msg):
        if err is not None:
            errors.append(f"delivery {msg.partition()} {msg.value()!r}: {err}")
            return
        _, n = msg.value().split(b":")
        delivered[msg.partition()].append((int(n), msg.offset()))

    def on_error(err):
        if err.fatal():
            errors.append(f"fatal error: {err}")

    producer = Producer({"bootstrap.servers": bootstrap, **PRODUCER_CONFIG, "error_cb": on_error})
    for i in range(MESSAGES):
        while True:
            try:
                producer.produce(topic, value=_value(i % PARTITIONS, i // PARTITIONS), partition=i % PARTITIONS,
                                 on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.05)
    while len(producer) > 0 and not deadline.expired() and not errors:
        producer.flush(0.1)
        on_progress(sum(len(d) for d in delivered.values()))
    if len(producer):
        errors.append(f"{len(producer)} messages still undelivered after {deadline.seconds}s")
    return delivered, errors


def _aio_produce(bootstrap: str, topic: str, on_progress, deadline: Deadline) -> tuple[Delivered, list[str]]:
    """aiokafka (``enable_idempotence=True``): send everything, await the futures; ``on_progress``
    runs in a thread so that the client keeps going meanwhile."""
    from aiokafka import AIOKafkaProducer

    errors: list[str] = []
    delivered: Delivered = {p: [] for p in range(PARTITIONS)}

    async def main():
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all", linger_ms=2,
                                    max_batch_size=2000, retry_backoff_ms=20, request_timeout_ms=30000)
        await producer.start()
        acked = [0]
        try:
            futures = []
            for i in range(MESSAGES):
                fut = await producer.send(topic, value=_value(i % PARTITIONS, i // PARTITIONS), partition=i % PARTITIONS)
                fut.add_done_callback(lambda _f: acked.__setitem__(0, acked[0] + 1))
                futures.append((i % PARTITIONS, i // PARTITIONS, fut))
                if i % 500 == 0:
                    await asyncio.to_thread(on_progress, acked[0])
            pending = {f for _, _, f in futures}
            while pending and not deadline.expired():
                _, pending = await asyncio.wait(pending, timeout=0.1)
                await asyncio.to_thread(on_progress, acked[0])
            if pending:
                errors.append(f"{len(pending)} messages still undelivered after {deadline.seconds}s")
            for p, n, f in futures:
                if f.done() and f.exception() is not None:
                    errors.append(f"delivery {p} {n}: {f.exception()!r}")
                elif f.done():
                    delivered[p].append((n, f.result().offset))
        finally:
            await producer.stop()

    asyncio.run(main())
    return delivered, errors


def _kp_produce(bootstrap: str, topic: str, on_progress, deadline: Deadline) -> tuple[Delivered, list[str]]:
    """kafka-python (``enable_idempotence=True``, its default): send everything, then wait for the
    futures in 0.1 s steps, calling ``on_progress(acked)`` (its sender is a thread of its own)."""
    from kafka import KafkaProducer

    errors: list[str] = []
    delivered: Delivered = {p: [] for p in range(PARTITIONS)}
    acked = [0]
    producer = KafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all", linger_ms=2,
                             batch_size=2000, retry_backoff_ms=20, request_timeout_ms=30000,
                             max_in_flight_requests_per_connection=5)
    try:
        futures = []
        for i in range(MESSAGES):
            fut = producer.send(topic, value=_value(i % PARTITIONS, i // PARTITIONS), partition=i % PARTITIONS)
            fut.add_both(lambda _r: acked.__setitem__(0, acked[0] + 1))
            futures.append((i % PARTITIONS, i // PARTITIONS, fut))
            if i % 500 == 0:
                on_progress(acked[0])
        try:
            wait_until(lambda: on_progress(acked[0]) or acked[0] >= MESSAGES, deadline.remaining(),
                       "kafka-python acknowledgements", interval=0.1)
        except AssertionError:
            pass  # what is missing is reported message by message below
        for p, n, f in futures:
            if not f.is_done:
                errors.append(f"delivery {p} {n}: not done after {deadline.seconds}s")
            elif f.failed():
                errors.append(f"delivery {p} {n}: {f.exception!r}")
            else:
                delivered[p].append((n, f.value.offset))
    finally:
        producer.close(timeout=10)
    return delivered, errors


PRODUCERS = {"confluent": _ck_produce, "aiokafka": _aio_produce, "kafka-python": _kp_produce}


def _produce_and_check(pb, client: str, label: str, on_progress=lambda acked: None) -> dict:
    """Produce MESSAGES numbered messages idempotently with ``client``, calling ``on_progress(acked)``
    while waiting for the acknowledgements; check delivery reports and the read-back. Returns the figures."""
    topic = unique_topic(f"idem-{client}-{label}")
    ck_create_topics(pb.bootstrap, [topic], partitions=PARTITIONS)
    started = time.monotonic()
    delivered, errors = PRODUCERS[client](pb.bootstrap, topic, on_progress, Deadline(150, f"{client} produce"))
    elapsed = time.monotonic() - started
    assert not errors, f"{len(errors)} errors, e.g. {errors[:10]}"
    per_partition = MESSAGES // PARTITIONS
    for p in range(PARTITIONS):
        d = sorted(delivered[p])
        assert [n for n, _ in d] == list(range(per_partition)), f"partition {p}: delivery reports are not one per message"
        bad = [(n, off) for n, off in d if n != off]
        assert not bad, f"partition {p}: {len(bad)} messages delivered at an offset other than their number, e.g. {bad[:10]}"

    got = ck_read_all(pb.bootstrap, topic, range(PARTITIONS), isolation="read_uncommitted")
    figures = {}
    for p in range(PARTITIONS):
        values = [v for _, _, v in got[p]]
        figures[p] = order_figures([_value(p, n) for n in range(per_partition)], values)
        assert [off for off, _, _ in got[p]] == list(range(len(values))), f"partition {p}: offsets not dense"
    print(f"\nidempotence ({client}, {label}): {MESSAGES} messages to {PARTITIONS} partitions in {elapsed:.1f}s; "
          f"{pb.proxy.matching_requests} produce requests, cuts {pb.proxy.cut_counts()}, "
          f"connections {pb.proxy.connections}; read back per partition: {figures}")
    for p in range(PARTITIONS):
        assert figures[p] == {"duplicates": 0, "reorderings": 0, "missing": 0, "unexpected": 0}, (p, figures[p])
    return figures


@pytest.mark.parametrize("client", list(PRODUCERS))
def test_idempotent_producer_survives_connection_cuts(proxied_broker, client):
    pb = proxied_broker()
    pb.proxy.cut_every = CUT_EVERY
    _produce_and_check(pb, client, "cuts")
    cuts = sum(pb.proxy.cut_counts().values())
    assert cuts >= MIN_CUTS, f"only {cuts} cuts over {pb.proxy.matching_requests} produce requests"


@pytest.mark.parametrize("client", list(PRODUCERS))
def test_idempotent_producer_survives_broker_kill(proxied_broker, client):
    pb = proxied_broker()
    killed: list[tuple[int, int]] = []  # (acknowledged messages, connections cut with a held response)

    def kill_once(acked: int) -> None:
        if killed or acked < KILL_AFTER_ACKED:
            return
        # the broker has answered a Produce that the producer will never hear of, then it dies
        pb.proxy.hold_responses()
        wait_until(lambda: pb.proxy.held() >= 1, 30, "a Produce response held back by the proxy")
        pb.kill()  # SIGKILL + restart on the same data dir; the proxy follows the new port
        killed.append((acked, pb.proxy.cut_held()))

    _produce_and_check(pb, client, "broker-kill", kill_once)
    assert killed, "the broker was never killed"
    print(f"broker SIGKILLed after {killed[0][0]} acknowledged messages, with {killed[0][1]} Produce "
          f"response(s) written by the broker and never delivered")
