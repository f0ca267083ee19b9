"""Log compaction seen by real clients: 100,000 keyed records over 1,000 keys (overwrites and tombstones,
LZ4-compressed by the producer) into a compacted topic of a `lodestream serve` subprocess; once the cleaner
has run, confluent-kafka and kcat reading from offset 0 see exactly the last value of every live key, in
ascending offsets, far fewer records than were produced."""

from __future__ import annotations

import json
import random
import shutil
import subprocess

from confluent_kafka import Consumer, Producer, TopicPartition

from compat_util import ck_create_topics, unique_topic, wait_until

KCAT = shutil.which("kcat") or "/usr/bin/kcat"
RECORDS = 100_000
KEYS = 1_000
SEGMENT_BYTES = 100_000


def produce_workload(bootstrap: str, topic: str) -> dict[bytes, tuple[int, bytes | None]]:
    """Returns each key's last write: (offset, value or None for a tombstone)."""
    rng = random.Random(848)
    last: dict[bytes, tuple[int, bytes | None]] = {}

    def delivered(error, message):
        assert error is None, error
        last[message.key()] = max(last.get(message.key(), (-1, None)), (message.offset(), message.value()),
                                  key=lambda entry: entry[0])

    producer = Producer({"bootstrap.servers": bootstrap, "compression.type": "lz4", "linger.ms": 5,
                         "enable.idempotence": True})
    for sequence in range(RECORDS):
        key = b"key-%04d" % rng.randrange(KEYS)
        value = None if rng.random() < 0.05 else b"%s=%d" % (key, sequence)
        producer.produce(topic, value, key, on_delivery=delivered)
        if sequence % 1000 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0
    # A batch bigger than segment.bytes starts a segment of its own: every record above is then in a closed
    # segment, which is what the cleaner compacts (the active segment is never cleaned, as in Kafka).
    producer.produce(topic, b"s" * (SEGMENT_BYTES + 1000), b"sentinel", on_delivery=delivered)
    assert producer.flush(30) == 0
    return last


def read_all(bootstrap: str, topic: str) -> list[tuple[int, bytes | None, bytes | None]]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "compaction-reader",
                         "enable.auto.commit": False, "fetch.max.bytes": 4 << 20})
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        consumer.assign([TopicPartition(topic, 0, 0)])
        records = []
        position = low
        while position < high:
            message = consumer.poll(5)
            assert message is not None, f"no record at position {position} of {high}"
            assert message.error() is None, message.error()
            records.append((message.offset(), message.key(), message.value()))
            position = message.offset() + 1
        return records
    finally:
        consumer.close()


def test_compacted_topic_keeps_the_last_value_of_every_live_key(broker_factory):
    broker = broker_factory({"log.cleaner.backoff.ms": "200"})
    topic = unique_topic("compacted")
    ck_create_topics(broker.bootstrap, [topic], config={
        "cleanup.policy": "compact", "segment.bytes": str(SEGMENT_BYTES), "delete.retention.ms": "0"})
    last = produce_workload(broker.bootstrap, topic)
    sentinel_offset = last.pop(b"sentinel")[0]
    expected = sorted((offset, key, value) for key, (offset, value) in last.items() if value is not None)
    tombstoned = sum(1 for offset, value in last.values() if value is None)
    assert len(expected) > 900 and tombstoned > 0

    # The first pass keeps tombstones (delete.retention.ms counts from their first cleaning), a later one
    # removes them: wait until a reader from offset 0 sees exactly the live keys.
    def compacted():
        records = read_all(broker.bootstrap, topic)
        return records if records[:-1] == expected else None

    records = wait_until(compacted, 120, "the compacted log", interval=0.5,
                         describe=lambda: broker.log_tail(20))
    assert records[-1][0] == sentinel_offset
    offsets = [offset for offset, _, _ in records]
    assert offsets == sorted(set(offsets))
    assert len(records) < RECORDS / 50  # ~950 live keys of 100,000 records

    # kcat (librdkafka's consumer in a separate tool) reads the same log from offset 0.
    out = subprocess.run([KCAT, "-b", broker.bootstrap, "-C", "-t", topic, "-p", "0", "-o", "beginning", "-e", "-J"],
                         capture_output=True, timeout=60, check=True).stdout
    seen = [json.loads(line) for line in out.decode().splitlines() if line.strip()]
    assert [(m["offset"], m["key"].encode(), m["payload"].encode()) for m in seen[:-1]] == expected
    print(f"compaction: {RECORDS} records over {KEYS} keys -> {len(records)} after cleaning "
          f"({len(expected)} live keys + the sentinel, {tombstoned} keys deleted)")
