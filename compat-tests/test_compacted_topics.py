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


def test_clients_read_a_producers_emptied_last_batch(broker_factory):
    """An idempotent producer's only batch, overwritten by another producer, is kept empty by the cleaner
    (its sequence must survive); confluent-kafka, kafka-python and aiokafka read past it."""
    import asyncio

    from aiokafka import AIOKafkaConsumer
    from kafka import KafkaConsumer

    broker = broker_factory({"log.cleaner.backoff.ms": "200"})
    topic = unique_topic("emptied")
    ck_create_topics(broker.bootstrap, [topic], config={"cleanup.policy": "compact", "segment.bytes": "2000"})
    idempotent = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True})
    idempotent.produce(topic, b"first", b"k")
    assert idempotent.flush(30) == 0
    plain = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0})
    for sequence in range(40):
        plain.produce(topic, b"v%d" % sequence, b"k")
        plain.flush(30)
    plain.produce(topic, b"s" * 3000, b"sentinel")  # closes every segment above
    assert plain.flush(30) == 0
    expected = [(b"k", b"v39"), (b"sentinel", b"s" * 3000)]
    wait_until(lambda: [(k, v) for _, k, v in read_all(broker.bootstrap, topic)] == expected, 60,
               "the compacted log", interval=0.3, describe=lambda: broker.log_tail(20))

    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=5000)
    consumer.assign([__import__("kafka").TopicPartition(topic, 0)])
    assert [(m.key, m.value) for m in consumer] == expected
    consumer.close()

    async def aiokafka_read():
        reader = AIOKafkaConsumer(topic, bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest",
                                  enable_auto_commit=False, group_id=None)
        await reader.start()
        try:
            batches = await reader.getmany(timeout_ms=5000)
            return [(m.key, m.value) for messages in batches.values() for m in messages]
        finally:
            await reader.stop()

    assert asyncio.run(aiokafka_read()) == expected
    # The idempotent producer's batch is still in the log, emptied (what the clients above read past).
    broker.stop()
    from lodestream.protocol.record_batch import parse_header
    from lodestream.storage.leveldb_log import LogStore

    store = LogStore(broker.data_dir / "log", sync_writes=False)
    try:
        headers = [parse_header(batch) for topic_id, index in store.existing_partitions()
                   for batch in store.partition(topic_id, index).read(0, 1 << 30, 1 << 62)]
    finally:
        store.close()
    assert any(h.producer_id >= 0 and h.records_count == 0 and h.base_offset == 0 for h in headers), headers
