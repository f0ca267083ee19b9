"""Consume throughput from closed segments (read through LevelDB) against the active segment (planned from
the in-memory index), in the same broker and run.

    .venv/bin/python bench/closed_segment_reads.py [--messages 100000] [--rounds 3]

One `lodestream serve` (durable default). Two 8-partition topics get the same messages of 1 KiB
(confluent-kafka, acks=all): "active" with the default segment.bytes (everything stays in the active
segment), "closed" with segment.bytes=1 MiB (nearly everything is in closed segments, whose batches have no
in-memory index entry: storage/leveldb_log.py). Then each is consumed from offset 0 with assign(),
alternately, --rounds times; prints MB/s per round and the ratio closed/active. Figures:
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
from pathlib import Path

from confluent_kafka.admin import AdminClient, NewTopic

from produce_consume import BrokerProcess, consume, produce, wait_for  # same folder

PARTITIONS = 8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-closed-"))
    broker = BrokerProcess("lodestream", workdir)
    megabytes = args.messages * 1024 / 1e6
    try:
        broker.start()
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        topics = {"active": {}, "closed": {"segment.bytes": str(1 << 20)}}
        payload = os.urandom(1024)
        for topic, config in topics.items():
            admin.create_topics([NewTopic(topic, PARTITIONS, 1, config=config)])[topic].result(30)
            wait_for(lambda: topic in admin.list_topics(timeout=5).topics, 30, "topic visible")
            produce(broker.bootstrap, topic, PARTITIONS, args.messages, payload)
        rates: dict[str, list[float]] = {topic: [] for topic in topics}
        print(f"{args.messages} messages of 1 KiB ({megabytes:.0f} MB), {PARTITIONS} partitions, consume MB/s")
        for round_number in range(args.rounds):
            for topic in topics:
                rates[topic].append(megabytes / consume(broker.bootstrap, topic, PARTITIONS, args.messages))
            print(f"round {round_number + 1}: active {rates['active'][-1]:.1f}, closed {rates['closed'][-1]:.1f}")
        active, closed = statistics.mean(rates["active"]), statistics.mean(rates["closed"])
        print(f"mean: active {active:.1f}, closed {closed:.1f}; closed/active {closed / active:.2f}x")
    finally:
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
