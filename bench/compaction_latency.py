"""Produce throughput and latency while the log cleaner compacts about 1 GB.

    .venv/bin/python bench/compaction_latency.py [--fill-mb 1024] [--io-budget BYTES_PER_S]

One `lodestream serve` (durable default: every append synced). A compacted topic
"keyed" is filled with --fill-mb of 1 KiB records over 100,000 keys (64 MiB
segments) while min.compaction.lag.ms keeps the cleaner off it. Then, on another
topic, a latency probe (a producer at a fixed 2,000 records/s of 1 KiB, acks=all,
linger.ms=0, for --probe-seconds; latency from produce() to the delivery report)
and a burst (100 MB as fast as it goes, MB/s) run three times; before each
latency probe outside the pass, LevelDB is left to settle after the fill or burst
(see settle):

1. before: the cleaner has nothing to do (--baseline-probes probes pooled, as long
   as a pass at the default budget, so the p99s compare over the same duration);
2. during: min.compaction.lag.ms is set to 0 just before, so the cleaner starts
   on "keyed"; the burst, then latency probes back to back until the pass is over
   (their latencies pooled: both sweeps of the pass are covered);
3. after: the pass is over (--baseline-probes probes pooled).

--io-budget sets log.cleaner.io.max.bytes.per.second (default: the broker's, 20 MiB/s;
1e308 is Kafka's default, unlimited). Figures: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic

from produce_consume import BrokerProcess, produce_waiting  # same folder

KEYS = 100_000
VALUE_SIZE = 1024
PROBE_RATE = 2000
BURST_MB = 100
LONG_MAX = str(2**63 - 1)


def fill(bootstrap: str, megabytes: int) -> float:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "batch.size": 1_000_000,
                         "queue.buffering.max.messages": 500_000, "acks": "all"})
    value = os.urandom(VALUE_SIZE)
    started = time.perf_counter()
    for sequence in range(megabytes * 1024):
        produce_waiting(producer, "keyed", value, b"key-%06d" % (sequence % KEYS))
        producer.poll(0)
    assert producer.flush(120) == 0
    return time.perf_counter() - started


def percentiles(latencies: list[float]) -> tuple[float, float]:
    """(p50 ms, p99 ms)."""
    latencies = sorted(latencies)
    return statistics.median(latencies) * 1000, latencies[int(len(latencies) * 0.99)] * 1000


def latency(bootstrap: str, seconds: float) -> list[float]:
    """Latencies (s) of a producer at PROBE_RATE records/s, from produce() to the delivery report."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "acks": "all"})
    value = os.urandom(VALUE_SIZE)
    latencies: list[float] = []
    count = int(seconds * PROBE_RATE)
    # Delivery reports are served by a thread blocked in poll (it wakes as each arrives), and the pacing
    # sleeps: a loop spinning on poll(0) would take a whole core of this 2-core machine from the broker.
    sending = threading.Event()
    sending.set()

    def serve_reports() -> None:
        while sending.is_set():
            producer.poll(0.05)

    poller = threading.Thread(target=serve_reports)
    poller.start()
    started = time.perf_counter()
    try:
        for i in range(count):
            gap = started + i / PROBE_RATE - time.perf_counter()
            if gap > 0:
                time.sleep(gap)
            sent = time.perf_counter()
            producer.produce("probe", value,
                             on_delivery=lambda e, m, sent=sent: latencies.append(time.perf_counter() - sent))
    finally:
        sending.clear()
        poller.join()
    assert producer.flush(60) == 0
    return latencies


def pooled(bootstrap: str, seconds: float, probes: int) -> list[float]:
    """The latencies of `probes` probes back to back: a p99 over as long a time as the pass's."""
    return [sample for _ in range(probes) for sample in latency(bootstrap, seconds)]


def burst(bootstrap: str) -> float:
    """MB/s of BURST_MB produced as fast as it goes."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "batch.size": 1_000_000, "acks": "all",
                         "queue.buffering.max.messages": 500_000})
    value = os.urandom(VALUE_SIZE)
    started = time.perf_counter()
    for _ in range(BURST_MB * 1024):
        produce_waiting(producer, "probe", value)
        producer.poll(0)
    assert producer.flush(60) == 0
    return BURST_MB * 1.048576 / (time.perf_counter() - started)


def settle(bootstrap: str) -> None:
    """LevelDB compacts what a fill or burst wrote for a while after it, and appends stall meanwhile:
    probe until two 5-second probes in a row agree, so a latency probe measures the broker, not that."""
    previous = None
    for _ in range(24):
        p99 = percentiles(latency(bootstrap, 5))[1]
        if previous is not None and p99 < 50 and abs(p99 - previous) < 0.25 * previous:
            return
        previous = p99


def metric(admin_url: str, name: str, topic: str) -> float:
    text = urllib.request.urlopen(f"{admin_url}/metrics", timeout=10).read().decode()
    found = re.findall(rf'{name}\{{[^}}]*topic="{topic}"[^}}]*\}} (\S+)', text)
    return sum(float(value) for value in found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fill-mb", type=int, default=1024)
    parser.add_argument("--probe-seconds", type=float, default=15)
    parser.add_argument("--baseline-probes", type=int, default=7,
                        help="probes pooled before and after the pass (a pass at the default budget takes ~7)")
    parser.add_argument("--io-budget", type=float, default=None)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="compaction-latency-"))
    overrides = {"log.cleaner.backoff.ms": "500"}
    if args.io_budget:
        overrides["log.cleaner.io.max.bytes.per.second"] = str(args.io_budget)
    broker = BrokerProcess("lodestream", workdir, overrides, log_level="INFO")
    try:
        broker.start()
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        futures = admin.create_topics([
            NewTopic("keyed", 1, 1, config={"cleanup.policy": "compact", "segment.bytes": str(64 << 20),
                                           "min.compaction.lag.ms": LONG_MAX}),
            NewTopic("probe", 1, 1)])
        for future in futures.values():
            future.result(30)
        seconds = fill(broker.bootstrap, args.fill_mb)
        print(f"filled {args.fill_mb} MB of keyed records in {seconds:.1f} s")
        admin_url = broker.listeners["ADMIN"]
        settle(broker.bootstrap)
        before_burst = burst(broker.bootstrap)
        settle(broker.bootstrap)
        rows = [("before", *percentiles(pooled(broker.bootstrap, args.probe_seconds, args.baseline_probes)),
                 before_burst, f"{args.baseline_probes} probes")]
        size_before = metric(admin_url, "lodestream_log_size_bytes", "keyed")
        resource = ConfigResource("topic", "keyed", incremental_configs=[
            ConfigEntry("min.compaction.lag.ms", "0", incremental_operation=AlterConfigOpType.SET)])
        for future in admin.incremental_alter_configs([resource]).values():
            future.result(30)
        cleaning_started = time.perf_counter()
        during_burst = burst(broker.bootstrap)
        # Probes back to back until the pass is over, pooled: both sweeps (reading, then writing) are covered.
        during: list[float] = []
        probes = 0
        while metric(admin_url, "lodestream_log_cleaner_passes_total", "keyed") == 0:
            if time.perf_counter() - cleaning_started > 1800:
                raise TimeoutError("the cleaning pass")
            during += latency(broker.bootstrap, args.probe_seconds)
            probes += 1
        cleaning = time.perf_counter() - cleaning_started
        rows.append(("during", *percentiles(during), during_burst, f"{probes} probes, until the pass ended"))
        size_after = metric(admin_url, "lodestream_log_size_bytes", "keyed")
        settle(broker.bootstrap)
        rows.append(("after", *percentiles(pooled(broker.bootstrap, args.probe_seconds, args.baseline_probes)),
                     burst(broker.bootstrap), f"{args.baseline_probes} probes"))
        print(f"cleaner pass over {size_before / 1e6:.0f} MB of 'keyed': {cleaning:.1f} s "
              f"({size_before / 1e6 / cleaning:.1f} MB/s), log {size_before / 1e6:.0f} -> {size_after / 1e6:.0f} MB")
        print(f"{'probe':>8} {'p50 ms':>8} {'p99 ms':>8} {'burst MB/s':>11}")
        for name, p50, p99, mb_s, note in rows:
            print(f"{name:>8} {p50:>8.2f} {p99:>8.2f} {mb_s:>11.1f}  {note}")
        baseline = (rows[0][2] + rows[2][2]) / 2
        print(f"p99 during / mean of before and after: {rows[1][2] / baseline:.2f}")
    finally:
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
