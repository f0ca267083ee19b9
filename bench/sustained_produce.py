"""A sustained produce run: throughput per gigabyte over time, and the broker's write amplification.

    .venv/bin/python bench/sustained_produce.py [--gigabytes 10] [--partitions 4] [--size 16384]
                                                [--broker lodestream|lodestream-noflush|kafka|tansu]

One broker on loopback (bench/peers.py's names; by default Lodestream on its durable default: fsync per
group commit); confluent-kafka produces `--gigabytes` of incompressible records (acks=all) to one topic.
Prints MB/s and the broker's RSS for each gigabyte (does LevelDB's background compaction slow the later
ones?) and the write amplification:
bytes the broker process wrote to disk (/proc/PID/io write_bytes: the WAL, the tables and their
compactions) divided by the bytes produced. Figures go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from peers import BROKERS, rss_bytes
from produce_consume import BrokerProcess, produce_waiting, wait_for

GIGABYTE = 1 << 30


def written_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise RuntimeError("no write_bytes in /proc/PID/io")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gigabytes", type=int, default=10, help="GiB to produce")
    parser.add_argument("--broker", default="lodestream", choices=list(BROKERS))
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--size", type=int, default=16384)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-sustained-"))
    kind, overrides = BROKERS[args.broker]
    broker = BrokerProcess(kind, workdir, overrides)
    try:
        broker.start()
        pid = broker.process.pid
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        admin.create_topics([NewTopic("sustained", args.partitions, 1)])["sustained"].result(30)
        wait_for(lambda: "sustained" in admin.list_topics(timeout=5).topics, 30, "topic visible")
        producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 5,
                             "batch.size": 1_000_000, "enable.idempotence": False, "compression.type": "none",
                             "queue.buffering.max.kbytes": 256 * 1024})
        failures: list = []

        def report(err, _msg) -> None:
            if err is not None:
                failures.append(err)

        payloads = [os.urandom(args.size) for _ in range(64)]  # incompressible; LevelDB's snappy gains nothing
        per_gigabyte = GIGABYTE // args.size
        written_before = written_bytes(pid)
        print(f"{args.broker}: {args.gigabytes} GiB of {args.size}-byte records, {args.partitions} partitions, "
              "acks=all")
        sent = 0
        for gigabyte in range(1, args.gigabytes + 1):
            started = time.perf_counter()
            for _ in range(per_gigabyte):
                produce_waiting(producer, "sustained", payloads[sent % 64], partition=sent % args.partitions,
                                on_delivery=report)
                sent += 1
            remaining = producer.flush(300)
            if remaining or failures:
                raise RuntimeError(f"{remaining} undelivered, {len(failures)} failed: {failures[:3]}")
            elapsed = time.perf_counter() - started
            print(f"GiB {gigabyte}: {GIGABYTE / 1e6 / elapsed:.1f} MB/s, RSS {rss_bytes(pid) / 1e6:.0f} MB", flush=True)
        produced = sent * args.size
        written = written_bytes(pid) - written_before
        on_disk = sum(f.stat().st_size for f in (workdir / "data").rglob("*") if f.is_file())
        print(f"produced {produced / 1e9:.2f} GB; the broker wrote {written / 1e9:.2f} GB "
              f"(write amplification {written / produced:.2f}); data directory {on_disk / 1e9:.2f} GB")
    finally:
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
