"""Read-back helpers for the idempotence / transaction / exactly-once tests.

Each reads whole partitions from the beginning to their end at the given
isolation level (for ``read_committed`` the end is the last stable offset, which
equals the high watermark once no transaction is open) and returns, per
partition, the ``(offset, key, value)`` of every record the client delivered
to the application. Control records (transaction markers) occupy offsets but
are never delivered, so they show as gaps in the offsets.
"""

from __future__ import annotations

import asyncio

from compat_util import Deadline, unique_topic

Read = dict[int, list[tuple[int, bytes | None, bytes | None]]]


def ck_read_all(bootstrap: str, topic: str, partitions, *, isolation: str, timeout: float = 60.0, **config) -> Read:
    """confluent-kafka: assign every partition at the beginning, consume until EOF at the end offset.
    ``config``: more consumer settings (e.g. small fetch sizes)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    partitions = list(partitions)
    deadline = Deadline(timeout, f"confluent-kafka {isolation} read of {topic}")
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": unique_topic("eos-reader"),  # required by the client; nothing is committed
        "enable.auto.commit": False,
        "auto.offset.reset": "error",
        "enable.partition.eof": True,
        "fetch.wait.max.ms": 50,  # the end of the partition is reached sooner
        "isolation.level": isolation,
        **config,
    })
    try:
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=max(1.0, deadline.remaining()))[1]
                for p in partitions}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        got: Read = {p: [] for p in partitions}
        done = {p for p in partitions if ends[p] == 0}
        while len(done) < len(partitions):
            deadline.check(f"(ends {ends}, read { {p: len(v) for p, v in got.items()} }, done {sorted(done)})")
            for m in consumer.consume(num_messages=5000, timeout=0.1):
                err = m.error()
                if err is None:
                    got[m.partition()].append((m.offset(), m.key(), m.value()))
                elif err.code() == KafkaError._PARTITION_EOF:
                    if m.offset() >= ends[m.partition()]:
                        done.add(m.partition())
                else:
                    raise AssertionError(f"consume error on {m.topic()}[{m.partition()}]: {err}")
        return got
    finally:
        consumer.close()


def aio_read_all(bootstrap: str, topic: str, partitions, *, isolation: str, timeout: float = 60.0) -> Read:
    """aiokafka: assign, seek to the beginning, getmany until the position reaches the end offset."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    partitions = list(partitions)

    async def main() -> Read:
        deadline = Deadline(timeout, f"aiokafka {isolation} read of {topic}")
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                    isolation_level=isolation, request_timeout_ms=30000)
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in partitions]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            got: Read = {p: [] for p in partitions}
            while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
                deadline.check(f"(ends {ends}, read { {p: len(v) for p, v in got.items()} })")
                batches = await consumer.getmany(*tps, timeout_ms=500)
                for tp, msgs in batches.items():
                    got[tp.partition] += [(m.offset, m.key, m.value) for m in msgs]
            return got
        finally:
            await consumer.stop()

    return asyncio.run(main())


def order_figures(expected: list, got: list) -> dict[str, int]:
    """Duplicates, reorderings and missing values of one partition's read-back values against the
    expected sequence (values must be distinct there). A reordering is a value read after a value
    that is expected later."""
    pos = {v: i for i, v in enumerate(expected)}
    seen: set = set()
    dups = reorders = unknown = 0
    last = -1
    for v in got:
        if v in seen:
            dups += 1
            continue
        seen.add(v)
        i = pos.get(v)
        if i is None:
            unknown += 1
            continue
        if i < last:
            reorders += 1
        last = max(last, i)
    return {"duplicates": dups, "reorderings": reorders, "missing": len(set(expected) - seen), "unexpected": unknown}
