"""Event-loop blocking by cold reads: small produce round trips while another client fetches a cold log.

    .venv/bin/python bench/fetch_blocking.py [--megabytes 200] [--probes 2000]

Fills a one-partition topic with `--megabytes` of incompressible 16 KiB
records, restarts the broker (its LevelDB memtable is then empty, so reads come
from the snappy-compressed table files) and, as root, drops the page cache.
Then, on a second connection, sends one small acks=1 record at a time and
measures each round trip (send to delivery report): first alone, then while a
consumer reads the whole cold log from offset 0. A fetch that reads LevelDB on
the event loop stalls every other connection for as long as the read takes, so
the p99 and max of the second run show it. Prints p50/p99/max for both runs and
the consumer's MB/s; figures go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import multiprocessing
import time
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from produce_consume import BrokerProcess, produce_waiting, wait_for

RECORD_BYTES = 16 * 1024


def fill(bootstrap: str, topic: str, megabytes: int) -> int:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5, "batch.size": 1_000_000,
                         "enable.idempotence": False, "compression.type": "none"})
    count = megabytes * 1024 * 1024 // RECORD_BYTES
    for _ in range(count):
        produce_waiting(producer, topic, os.urandom(RECORD_BYTES), partition=0)
    if producer.flush(300):
        raise RuntimeError("fill: messages left undelivered")
    return count


def probe(bootstrap: str, topic: str, count: int, stop=None) -> list[float]:
    """Round trips (ms) of single small acks=1 records, one at a time."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": 1, "linger.ms": 0, "enable.idempotence": False})
    producer.produce(topic, b"warm-up", partition=0)
    producer.flush(30)
    latencies = []
    for _ in range(count):
        if stop is not None and stop.is_set():
            break
        started = time.perf_counter()
        producer.produce(topic, b"x" * 100, partition=0)
        if producer.flush(30):
            raise RuntimeError("probe: a record was not delivered within 30 s")
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies


def read_all(bootstrap: str, topic: str, count: int, done, result) -> None:
    """In a process of its own: building the consumer's message objects holds this process's GIL for
    tens of milliseconds, which would show up as stalls of the probe, not of the broker."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"cold-{time.time_ns()}",
                         "enable.auto.commit": False, "fetch.max.bytes": 52_428_800,
                         "max.partition.fetch.bytes": 10_485_760})
    consumer.assign([TopicPartition(topic, 0, 0)])
    received, started = 0, time.perf_counter()
    deadline = time.monotonic() + 300
    try:
        while received < count and time.monotonic() < deadline:
            received += sum(1 for m in consumer.consume(10000, 1.0) if m.error() is None)
    finally:
        consumer.close()
        result["seconds"] = time.perf_counter() - started
        result["received"] = received
        done.set()


def summary(latencies: list[float]) -> str:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (f"{len(ordered)} round trips: p50 {statistics.median(ordered):.2f} ms, p99 {p99:.2f} ms, "
            f"max {ordered[-1]:.2f} ms")


def drop_page_cache() -> bool:
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--megabytes", type=int, default=200)
    parser.add_argument("--probes", type=int, default=2000)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-blocking-"))
    broker = BrokerProcess("lodestream", workdir)
    try:
        broker.start()
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        admin.create_topics([NewTopic("cold", 1, 1), NewTopic("probe", 1, 1)])["cold"].result(30)
        wait_for(lambda: "probe" in admin.list_topics(timeout=5).topics, 30, "topics visible")
        count = fill(broker.bootstrap, "cold", args.megabytes)
        del admin  # its connection would keep retrying the old port
        broker.stop()
        (workdir / "ready.json").unlink()
        dropped = drop_page_cache()
        broker.start()
        print(f"{args.megabytes} MB in {count} records of {RECORD_BYTES} bytes; broker restarted; "
              f"page cache {'dropped' if dropped else 'not dropped (not root)'}")
        print("alone:           ", summary(probe(broker.bootstrap, "probe", args.probes)))
        context = multiprocessing.get_context("spawn")
        done, result = context.Event(), context.Manager().dict()
        reader = context.Process(target=read_all, args=(broker.bootstrap, "cold", count, done, result))
        reader.start()
        during = probe(broker.bootstrap, "probe", 10 * args.probes, stop=done)
        reader.join()
        print("during cold read:", summary(during))
        megabytes_read = result["received"] * RECORD_BYTES / 1e6
        print(f"cold read: {result['received']}/{count} records, {megabytes_read / result['seconds']:.1f} MB/s")
    finally:
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
