"""Replication figures on three `lodestream serve` processes (the cluster helper of the tests):

    .venv/bin/python bench/replication.py [--kills 20] [--messages 50000] [--size 1024]

1. Failover: a topic with replication factor 3 and min.insync.replicas=2, an idempotent acks=all producer
   sending a record every few milliseconds; the partition's leader is SIGKILLed, and the time from the kill
   to the first record acknowledged after it is measured (then the broker is restarted and waits to be in
   the ISR again). p50 / p99 / max over `--kills` kills. The cluster runs the tests' timers
   (broker.session.timeout.ms=3000), so most of a failover is the controller noticing the dead broker.
2. Throughput: `--messages` records of `--size` bytes with confluent-kafka, acks=all, to one partition of
   an RF 1 topic and of an RF 3 topic, in the same run: MB/s each and the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from kraft_cluster import KRaftCluster  # noqa: E402

SETTINGS = {"replica.lag.time.max.ms": "2000", "replica.fetch.backoff.ms": "100"}


def wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.05)
    return value


def create(cluster, bootstrap: str, name: str, factor: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, 1, factor, config={"min.insync.replicas": str(min(2, factor))})],
                        operation_timeout=20)[name].result(30)
    wait_until(lambda: len(cluster.partition_state(1, name).get(0, (-1, ()))[1]) == factor, 30, "ISR complete")


def failover(cluster, bootstrap: str, kills: int) -> list[float]:
    create(cluster, bootstrap, "failover", 3)
    acked: list[float] = []
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                         "linger.ms": 0, "message.timeout.ms": 120000, "topic.metadata.refresh.interval.ms": 1000})

    def delivered(err, _msg):
        if err is None:
            acked.append(time.monotonic())

    times = []
    for kill in range(kills):
        leader = cluster.partition_state(cluster.ids[0], "failover")[0][0]  # every node is up here
        for _ in range(50):  # steady traffic before the kill
            producer.produce("failover", b"x" * 100, on_delivery=delivered)
            producer.poll(0.005)
        producer.flush(30)
        killed_at = time.monotonic()
        cluster.nodes[leader].kill()
        while not acked or acked[-1] < killed_at:
            producer.produce("failover", b"y" * 100, on_delivery=delivered)
            producer.poll(0.005)
        times.append(acked[-1] - killed_at)
        producer.flush(30)
        print(f"kill {kill + 1}: leader {leader}, first acknowledged produce after {times[-1] * 1000:.0f} ms",
              flush=True)
        cluster.start_node(leader)
        survivor = next(i for i in cluster.ids if i != leader)
        wait_until(lambda: cluster.partition_state(survivor, "failover")[0][1] == (1, 2, 3), 60, "back in ISR")
    return times


def throughput(bootstrap: str, topic: str, messages: int, size: int) -> float:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
                         "batch.size": 1 << 20, "queue.buffering.max.messages": 1_000_000})
    payload = b"v" * size
    started = time.monotonic()
    for _ in range(messages):
        while True:
            try:
                producer.produce(topic, payload)
                break
            except BufferError:
                producer.poll(0.01)
    producer.flush(120)
    return messages * size / (time.monotonic() - started) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--size", type=int, default=1024)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        cluster = KRaftCluster(Path(directory), overrides=SETTINGS)
        try:
            cluster.start()
            bootstrap = ",".join(node.bootstrap for node in cluster.nodes.values())
            create(cluster, bootstrap, "rf1", 1)
            create(cluster, bootstrap, "rf3", 3)
            rf1 = throughput(bootstrap, "rf1", args.messages, args.size)
            rf3 = throughput(bootstrap, "rf3", args.messages, args.size)
            print(f"throughput, acks=all, {args.messages} x {args.size} B: RF 1 {rf1:.1f} MB/s, RF 3 {rf3:.1f} MB/s "
                  f"(RF 3 / RF 1 = {rf3 / rf1:.2f})", flush=True)
            times = sorted(failover(cluster, bootstrap, args.kills))
            p99 = times[min(len(times) - 1, round(0.99 * (len(times) - 1)))]
            print(f"failover over {len(times)} kills: p50 {statistics.median(times) * 1000:.0f} ms, "
                  f"p99 {p99 * 1000:.0f} ms, max {times[-1] * 1000:.0f} ms")
        finally:
            cluster.stop()


if __name__ == "__main__":
    main()
