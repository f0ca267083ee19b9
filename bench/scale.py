"""Scale on one broker: 10,000 partitions and 1,000 idle connections, Lodestream beside its peers.

    .venv/bin/python bench/scale.py [--topics 100 --partitions 100] [--connections 1000]
                                    [--brokers lodestream,kafka,tansu]

For each broker, fresh, in a temporary folder:
1. create `--topics` topics of `--partitions` partitions (10,000 by default): the time it takes;
2. Metadata for all topics: round-trip times of a raw Metadata v1 request (null topic list), over 20 tries,
   median and max, and the response's size;
3. produce 10 records of 1 KiB to every partition (confluent-kafka, acks=all) and read them all back
   (assign from offset 0): MB/s of each;
4. restart (SIGTERM, then the same data folder): seconds from the process's start until Metadata lists
   every partition; RSS once serving;
5. open `--connections` connections that each send ApiVersions and then stay idle: RSS before and after,
   and per connection.
Figures: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import struct
import tempfile
import time
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from peers import BROKERS, rss_bytes
from produce_consume import BrokerProcess, produce_waiting, wait_for  # same folder

RECORDS_PER_PARTITION = 10
RECORD = b"x" * 1024


def request_frame(api_key: int, version: int, correlation_id: int, body: bytes) -> bytes:
    client_id = b"scale-bench"
    header = struct.pack(">hhih", api_key, version, correlation_id, len(client_id)) + client_id
    return struct.pack(">i", len(header) + len(body)) + header + body


def read_frame(sock: socket.socket) -> bytes:
    def exactly(count: int) -> bytes:
        chunks = []
        while count:
            chunk = sock.recv(min(count, 1 << 20))
            if not chunk:
                raise ConnectionError("closed")
            chunks.append(chunk)
            count -= len(chunk)
        return b"".join(chunks)

    return exactly(struct.unpack(">i", exactly(4))[0])


def metadata_round_trips(bootstrap: str, tries: int = 20) -> tuple[list[float], int]:
    host, port = bootstrap.rsplit(":", 1)
    times = []
    with socket.create_connection((host, int(port))) as sock:
        for attempt in range(tries):
            started = time.perf_counter()
            sock.sendall(request_frame(3, 1, attempt, struct.pack(">i", -1)))  # Metadata v1, all topics
            size = len(read_frame(sock))
            times.append((time.perf_counter() - started) * 1000)
    return times, size


def partition_count(bootstrap: str) -> int:
    try:
        topics = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=5).topics
    except Exception:
        return 0
    return sum(len(t.partitions) for name, t in topics.items() if name.startswith("scale-"))


def create_topics(bootstrap: str, topics: int, partitions: int) -> float:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    started = time.perf_counter()
    for first in range(0, topics, 50):  # requests of 50 topics (5,000 partitions)
        names = [f"scale-{i:05d}" for i in range(first, min(first + 50, topics))]
        for future in admin.create_topics([NewTopic(name, partitions, 1) for name in names],
                                          operation_timeout=120, request_timeout=120).values():
            future.result(180)
    wait_for(lambda: partition_count(bootstrap) == topics * partitions, 300, "every partition listed", 0.2)
    return time.perf_counter() - started


def produce_and_fetch_everywhere(bootstrap: str, topics: int, partitions: int) -> tuple[float, float]:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
                         "queue.buffering.max.messages": 2_000_000})
    started = time.perf_counter()
    for topic in range(topics):
        for partition in range(partitions):
            for _ in range(RECORDS_PER_PARTITION):
                produce_waiting(producer, f"scale-{topic:05d}", RECORD, partition=partition)
        producer.poll(0)
    if producer.flush(300):
        raise RuntimeError("records left undelivered")
    produce_s = time.perf_counter() - started
    total = topics * partitions * RECORDS_PER_PARTITION
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "scale", "enable.auto.commit": False})
    consumer.assign([TopicPartition(f"scale-{t:05d}", p, 0) for t in range(topics) for p in range(partitions)])
    started = time.perf_counter()
    received = 0
    deadline = time.monotonic() + 300
    while received < total and time.monotonic() < deadline:
        received += sum(1 for m in consumer.consume(10000, 1.0) if m.error() is None)
    fetch_s = time.perf_counter() - started
    consumer.close()
    if received < total:
        raise RuntimeError(f"read {received} of {total}")
    megabytes = total * len(RECORD) / 1e6
    return megabytes / produce_s, megabytes / fetch_s


def idle_connections(bootstrap: str, pid: int, count: int) -> tuple[float, float]:
    host, port = bootstrap.rsplit(":", 1)
    before = rss_bytes(pid)
    sockets = []
    try:
        for index in range(count):
            sock = socket.create_connection((host, int(port)))
            sock.sendall(request_frame(18, 0, index, b""))  # ApiVersions v0
            sockets.append(sock)
        for sock in sockets:
            read_frame(sock)
        time.sleep(1)  # let the broker settle its per-connection buffers before reading RSS
        after = rss_bytes(pid)
    finally:
        for sock in sockets:
            sock.close()
    return before / 1e6, after / 1e6


def run(name: str, args) -> dict[str, float]:
    kind, overrides = BROKERS[name]
    workdir = Path(tempfile.mkdtemp(prefix=f"scale-{name}-"))
    broker = BrokerProcess(kind, workdir, overrides)
    figures: dict[str, float] = {}
    try:
        broker.start()
        total = args.topics * args.partitions
        figures["create s"] = create_topics(broker.bootstrap, args.topics, args.partitions)
        times, size = metadata_round_trips(broker.bootstrap)
        figures["Metadata median ms"], figures["Metadata max ms"] = statistics.median(times), max(times)
        figures["Metadata KB"] = size / 1000
        figures["produce MB/s"], figures["fetch MB/s"] = produce_and_fetch_everywhere(
            broker.bootstrap, args.topics, args.partitions)
        if kind != "tansu":  # Tansu's in-memory storage does not survive a restart
            broker.stop()
            started = time.perf_counter()
            broker.start(ready_timeout=600)
            wait_for(lambda: partition_count(broker.bootstrap) == total, 600, "every partition back", 0.1)
            figures["start-up s"] = time.perf_counter() - started
            times, _ = metadata_round_trips(broker.bootstrap)
            figures["Metadata median ms, after restart"] = statistics.median(times)
        figures["RSS MB"] = rss_bytes(broker.process.pid) / 1e6
        before, after = idle_connections(broker.bootstrap, broker.process.pid, args.connections)
        figures["RSS MB, idle connections"] = after
        figures["KB per connection"] = (after - before) * 1000 / args.connections
    finally:
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--topics", type=int, default=100)
    parser.add_argument("--partitions", type=int, default=100)
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--brokers", default="lodestream,kafka,tansu")
    args = parser.parse_args()
    results = {}
    for name in args.brokers.split(","):
        results[name] = run(name, args)
        print(f"{name}: {results[name]}", flush=True)
    names = list(results)
    print(f"\n{args.topics} topics x {args.partitions} partitions, {args.connections} idle connections")
    print(f"{'figure':<36}" + "".join(f"{n:>14}" for n in names))
    for figure in dict.fromkeys(k for row in results.values() for k in row):
        print(f"{figure:<36}" + "".join(f"{results[n].get(figure, float('nan')):>14,.2f}" for n in names))


if __name__ == "__main__":
    main()
