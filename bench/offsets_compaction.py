"""Start-up replay of __consumer_offsets before and after log compaction.

    .venv/bin/python bench/offsets_compaction.py [--groups 100] [--commits 1000000]

One `lodestream serve` with offsets.topic.segment.bytes=100 KiB (Kafka's default
is 100 MiB: a segment is only compacted once closed, so small segments show the
effect on a workload of this size: ~2 MB per partition) and the cleaner off. 100 groups commit
1,000,000 offsets in all (confluent-kafka, 100 partitions per OffsetCommit,
each group over and over the same 100 partitions). Then:

1. restart with the cleaner still off: time from process start to the ready
   file, and the records the group coordinator replayed (its start-up log line);
2. restart with the cleaner on (backoff 1 s) and wait until every
   __consumer_offsets partition has no dirty bytes left (/metrics);
3. restart again: the same two figures, and the data directory's size.
"""

from __future__ import annotations

import argparse
import re
import shutil
import tempfile
import time
import urllib.request
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from produce_consume import BrokerProcess, wait_for  # same folder

PARTITIONS_PER_COMMIT = 100
BASE = {"offsets.topic.segment.bytes": str(100 << 10), "log.cleaner.backoff.ms": "1000",
        "group.initial.rebalance.delay.ms": "0"}
LOADED = re.compile(rb"from (\d+) __consumer_offsets records")


def commit_offsets(bootstrap: str, topic: str, groups: int, commits: int) -> float:
    rounds = commits // (groups * PARTITIONS_PER_COMMIT)
    started = time.perf_counter()
    for group in range(groups):
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-group-{group}",
                             "enable.auto.commit": False})
        for round_ in range(rounds):
            consumer.commit(offsets=[TopicPartition(topic, p, round_ + 1) for p in range(PARTITIONS_PER_COMMIT)],
                            asynchronous=False)
        consumer.close()
    return time.perf_counter() - started


def directory_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def timed_start(broker: BrokerProcess) -> tuple[float, int]:
    """(seconds from process start to ready, records replayed) of one start."""
    before = (broker.workdir / "lodestream.log").read_bytes() if (broker.workdir / "lodestream.log").exists() else b""
    started = time.perf_counter()
    broker.start(ready_timeout=600)
    seconds = time.perf_counter() - started
    found = LOADED.findall((broker.workdir / "lodestream.log").read_bytes()[len(before):])
    return seconds, int(found[-1]) if found else 0


def dirty_partitions(admin_address: str) -> int:
    """__consumer_offsets partitions with dirty bytes, or not checked yet by the cleaner."""
    text = urllib.request.urlopen(f"{admin_address}/metrics", timeout=10).read().decode()
    ratios = re.findall(r'lodestream_log_cleaner_dirty_ratio\{partition="\d+",topic="__consumer_offsets"\} (\S+)', text)
    return 50 if not ratios else sum(1 for ratio in ratios if float(ratio) > 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--groups", type=int, default=100)
    parser.add_argument("--commits", type=int, default=1_000_000)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="offsets-compaction-"))
    broker = BrokerProcess("lodestream", workdir, {**BASE, "log.cleaner.enable": "false"}, log_level="INFO")
    try:
        broker.start()
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        admin.create_topics([NewTopic("committed", num_partitions=PARTITIONS_PER_COMMIT)])["committed"].result(30)
        del admin  # no client left to reconnect while the broker restarts
        seconds = commit_offsets(broker.bootstrap, "committed", args.groups, args.commits)
        print(f"{args.commits} offset commits from {args.groups} groups in {seconds:.1f} s "
              f"({args.commits / seconds:,.0f} commits/s)")
        broker.stop()
        size_before = directory_bytes(workdir / "data")
        start_before, replayed_before = timed_start(broker)
        broker.stop()
        broker.overrides["log.cleaner.enable"] = "true"
        broker.start(ready_timeout=600)
        cleaning_started = time.perf_counter()
        wait_for(lambda: dirty_partitions(broker.listeners["ADMIN"]) == 0, 1800, "compaction", interval=1)
        cleaning = time.perf_counter() - cleaning_started
        broker.stop()
        size_after = directory_bytes(workdir / "data")
        start_after, replayed_after = timed_start(broker)
        print(f"compaction of __consumer_offsets: {cleaning:.1f} s (cleaner checks every second)")
        print(f"{'':>22} {'start-up s':>11} {'replayed records':>17} {'data dir MB':>12}")
        print(f"{'before compaction':>22} {start_before:>11.2f} {replayed_before:>17,} {size_before / 1e6:>12.1f}")
        print(f"{'after compaction':>22} {start_after:>11.2f} {replayed_after:>17,} {size_after / 1e6:>12.1f}")
    finally:
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
