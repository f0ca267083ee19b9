"""Reading a partition from an offset with confluent-kafka, for tests: the values, bounded by a deadline."""

from __future__ import annotations

import time

from confluent_kafka import Consumer, TopicPartition

DEADLINE_S = 60


def read_values(settings: dict, topic: str, count: int, partition: int = 0, offset: int = 0,
                deadline_s: float = DEADLINE_S) -> list[bytes]:
    """Up to `count` values of `topic`/`partition` from `offset` (fewer if the deadline passes first), with a
    consumer made of `settings` (bootstrap.servers, group.id, ...); it is closed before returning."""
    consumer = Consumer({"enable.auto.commit": False, **settings})
    values: list[bytes] = []
    try:
        consumer.assign([TopicPartition(topic, partition, offset)])
        deadline = time.monotonic() + deadline_s
        while len(values) < count and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                values.append(message.value())
    finally:
        consumer.close()
    return values
