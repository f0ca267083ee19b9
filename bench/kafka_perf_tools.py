"""Apache Kafka's own perf tools against Lodestream and Tansu, one broker after the other, in one run.

    .venv/bin/python bench/kafka_perf_tools.py [--records 500000] [--record-size 1024] [--partitions 8]

kafka-producer-perf-test (Java client defaults of Kafka 4.1: acks=all, idempotent, linger.ms=5,
batch.size=16384, unless --producer-props adds more) then kafka-consumer-perf-test over the same topic,
against a fresh broker each: Lodestream on its durable default, and Tansu (in-memory storage). The
tools come from Maven Central through compat-tests/java (make kafka-java). Prints each tool's summary
and the ratios. Figures: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from confluent_kafka.admin import AdminClient, NewTopic

from produce_consume import BrokerProcess  # same folder

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "compat-tests"))
from kafka_tools import KafkaTools, perf_test_figures  # noqa: E402


def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        future.result(30)


def measure(tools: KafkaTools, bootstrap: str, args) -> dict[str, float]:
    topic = "perf"
    create_topic(bootstrap, topic, args.partitions)
    produced = tools.run("kafka-producer-perf-test", "--topic", topic, "--num-records", str(args.records),
                         "--record-size", str(args.record_size), "--throughput", "-1", "--producer-props",
                         f"bootstrap.servers={bootstrap}", *args.producer_props, timeout=1800).stdout
    summary = produced.strip().splitlines()[-1]
    print("  producer:", summary)
    # "N records sent, R records/sec (M MB/sec), A ms avg latency, X ms max latency, p50, p95, p99, p99.9"
    fields = summary.replace("(", ",").replace(")", ",").split(",")
    figures = {"produce MB/s": float(fields[2].split()[0]), "produce records/s": float(fields[1].split()[0]),
               "produce avg ms": float(fields[4].split()[0]), "produce p99 ms": float(fields[8].split()[0])}
    consumed = tools.run("kafka-consumer-perf-test", "--bootstrap-server", bootstrap, "--topic", topic,
                         "--messages", str(args.records), "--timeout", "60000", timeout=1800).stdout
    row = perf_test_figures(consumed)
    print("  consumer:", ", ".join(f"{k}={v}" for k, v in row.items()))
    figures["consume MB/s (fetch)"] = float(row["fetch.MB.sec"])
    figures["consume records/s (fetch)"] = float(row["fetch.nMsg.sec"])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=500_000)
    parser.add_argument("--record-size", type=int, default=1024)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--producer-props", nargs="*", default=["acks=all"],
                        help="extra producer properties (key=value); default acks=all")
    args = parser.parse_args()
    tools = KafkaTools.load()
    results = {}
    for name in ("lodestream", "tansu"):
        workdir = Path(tempfile.mkdtemp(prefix=f"perf-tools-{name}-"))
        broker = BrokerProcess(name, workdir)
        try:
            broker.start()
            print(f"{name}:")
            results[name] = measure(tools, broker.bootstrap, args)
        finally:
            broker.stop()
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"\n{args.records} records of {args.record_size} B, {args.partitions} partitions, "
          f"producer props {' '.join(args.producer_props)}")
    print(f"{'figure':<28} {'lodestream':>12} {'tansu':>12} {'ratio':>7}")
    for figure in results["lodestream"]:
        ours, theirs = results["lodestream"][figure], results["tansu"][figure]
        print(f"{figure:<28} {ours:>12.1f} {theirs:>12.1f} {ours / theirs if theirs else float('nan'):>7.2f}")


if __name__ == "__main__":
    main()
