"""Idempotent producer under connection cuts (issue 6, "Show" item 4).

An idempotent confluent-kafka producer (``enable.idempotence=true``,
``acks=all``, 5 requests in flight per connection) sends 50,000 numbered
messages to 4 partitions through ``drop_proxy.DropProxy``, which cuts the
connection on every 5th Produce request after forwarding it to the broker and
before the client sees the response: alternately after the broker's response
came back (the batch is certainly in the log, the client does not know) and
right after forwarding (it may or may not be). librdkafka retries the
unanswered batches with their original producer id, epoch and sequence numbers;
the broker must answer a batch it already has with its original offsets and
append nothing.

Afterwards, per partition:

* every message has a successful delivery report, and the reported offset of
  the n-th message sent to the partition is n (a retried batch written twice
  would move every later offset);
* reading the partition back yields exactly the sent sequence: zero duplicates,
  zero reorderings, nothing missing, and the high watermark equals the count.
"""

from __future__ import annotations

import time

from confluent_kafka import Producer

from compat_util import Deadline, ck_create_topics, unique_topic
from eos_util import ck_read_all, order_figures

MESSAGES = 50_000
PARTITIONS = 4
CUT_EVERY = 5
MIN_CUTS = 8


def _value(p: int, n: int) -> bytes:
    return b"%d:%06d" % (p, n)


def test_idempotent_producer_survives_connection_cuts(proxied_broker):
    pb = proxied_broker()
    topic = unique_topic("idem-cuts")
    ck_create_topics(pb.bootstrap, [topic], partitions=PARTITIONS)

    errors: list[str] = []
    delivered: dict[int, list[tuple[int, int]]] = {p: [] for p in range(PARTITIONS)}  # (n, offset)

    def on_delivery(err, msg):
        if err is not None:
            errors.append(f"delivery {msg.partition()} {msg.value()!r}: {err}")
            return
        p_s, n_s = msg.value().split(b":")
        delivered[msg.partition()].append((int(n_s), msg.offset()))

    producer = Producer({
        "bootstrap.servers": pb.bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "max.in.flight.requests.per.connection": 5,
        "linger.ms": 2,
        "batch.num.messages": 100,  # many small requests, so many cuts
        "retry.backoff.ms": 20,
        "reconnect.backoff.ms": 10,
        "reconnect.backoff.max.ms": 200,
        "message.timeout.ms": 120_000,
        "error_cb": lambda e: errors.append(f"error_cb: {e} fatal={e.fatal()}") if e.fatal() else None,
    })
    pb.proxy.cut_every = CUT_EVERY
    started = time.monotonic()
    sent = {p: 0 for p in range(PARTITIONS)}
    for i in range(MESSAGES):
        p = i % PARTITIONS
        while True:
            try:
                producer.produce(topic, value=_value(p, sent[p]), partition=p, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.05)
        sent[p] += 1
        if i % 1000 == 0:
            producer.poll(0)
    deadline = Deadline(150, "idempotent produce through the drop proxy")
    while len(producer) > 0 and not deadline.expired():
        producer.flush(1)
    elapsed = time.monotonic() - started
    pb.proxy.cut_every = 0
    remaining = len(producer)
    del producer

    cuts = pb.proxy.cut_counts()
    print(f"\nidempotence: {MESSAGES} messages to {PARTITIONS} partitions in {elapsed:.1f}s; "
          f"{pb.proxy.matching_requests} produce requests, cuts {cuts}, connections {pb.proxy.connections}")
    assert remaining == 0, f"{remaining} messages still undelivered after {deadline.seconds}s; cuts {cuts}"
    assert not errors, f"{len(errors)} errors, e.g. {errors[:10]}"
    assert sum(cuts.values()) >= MIN_CUTS, f"only {cuts} cuts over {pb.proxy.matching_requests} produce requests"

    for p in range(PARTITIONS):
        d = sorted(delivered[p])
        assert [n for n, _ in d] == list(range(sent[p])), f"partition {p}: delivery reports are not one per message"
        bad = [(n, off) for n, off in d if n != off]
        assert not bad, f"partition {p}: {len(bad)} messages delivered at an offset other than their number, e.g. {bad[:10]}"

    got = ck_read_all(pb.bootstrap, topic, range(PARTITIONS), isolation="read_uncommitted")
    figures = {}
    for p in range(PARTITIONS):
        expected = [_value(p, n) for n in range(sent[p])]
        values = [v for _, _, v in got[p]]
        figures[p] = order_figures(expected, values)
        assert [off for off, _, _ in got[p]] == list(range(len(values))), f"partition {p}: offsets not dense"
    print(f"idempotence read-back per partition: {figures}")
    for p in range(PARTITIONS):
        assert figures[p] == {"duplicates": 0, "reorderings": 0, "missing": 0, "unexpected": 0}, (p, figures[p])
        assert [v for _, _, v in got[p]] == [_value(p, n) for n in range(sent[p])]
