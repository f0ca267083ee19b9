"""Consumer-group figures for Lodestream, with confluent-kafka.

    /tmp/venv/bin/python bench/groups.py [--rounds 5] [--commit-seconds 5]

Starts one ``lodestream serve`` (``group.initial.rebalance.delay.ms=0``,
KIP-848 session timeout 6 s / heartbeat 0.5 s) and measures, for the classic
protocol and for ``group.protocol=consumer`` (KIP-848):

* rebalance time after a leave: three members (``compat-tests/group_worker.py``
  processes, session.timeout.ms=6000, heartbeat.interval.ms=1000 for classic)
  share a 6-partition topic; one is SIGTERMed (close -> LeaveGroup); the time is
  from the SIGTERM to the moment the last of the two remaining members reports
  its new assignment (the two disjoint and covering all 6 partitions), i.e. the
  group is Stable again. Members poll every 10 ms, so that is the resolution.
  ``--rounds`` fresh groups; min / median / max.
* commit throughput: one member of a group, subscribed and assigned, commits one
  offset synchronously in a loop (``commit(offsets=[...], asynchronous=False)``,
  a new offset each time) for ``--commit-seconds``: OffsetCommit requests/s.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "compat-tests"))
from group_worker import WorkerProcess  # noqa: E402
from produce_consume import BrokerProcess, wait_for  # noqa: E402 (same folder)

PARTITIONS = 6
POLL_S = 0.01  # fine-grained polling: the rebalance time is measured with it
OVERRIDES = {
    "group.initial.rebalance.delay.ms": "0",
    "group.consumer.session.timeout.ms": "6000",
    "group.consumer.heartbeat.interval.ms": "500",
}


def create_topic(bootstrap: str, name: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, num_partitions=PARTITIONS, replication_factor=1)])[name].result(30)
    wait_for(lambda: len(admin.list_topics(name, timeout=5).topics[name].partitions) == PARTITIONS, 30, "metadata", POLL_S)


def cover(ws):
    reports = [w.assignment_report() for w in ws]
    if any(r is None for r in reports):
        return None
    flat = [p for r in reports for p in r["partitions"]]
    sizes = [len(r["partitions"]) for r in reports]
    if len(flat) == len(set(flat)) and set(flat) == set(range(PARTITIONS)) and max(sizes) - min(sizes) <= 1:
        return reports
    return None


def rebalance_after_leave(bootstrap: str, topic: str, client: str, workdir: Path) -> float:
    group = f"bench-{client}-{uuid.uuid4().hex[:8]}"
    ws = [WorkerProcess(client, bootstrap, group, topic, workdir / group / f"m{i}", f"m{i}", commit_every=0,
                        poll_ms=10) for i in range(3)]
    try:
        for w in ws:
            w.start()
        wait_for(lambda: cover(ws), 60, f"{client}: 3 members stable", POLL_S)
        leaver, rest = ws[0], ws[1:]
        t0 = time.monotonic()
        leaver.terminate()
        reports = wait_for(lambda: cover(rest), 60, f"{client}: 2 members stable after a leave", POLL_S)
        return max(r["mono"] for r in reports) - t0
    finally:
        for w in ws:
            w.stop()


def commit_throughput(bootstrap: str, topic: str, client: str, seconds: float) -> tuple[int, float]:
    conf = {"bootstrap.servers": bootstrap, "group.id": f"bench-commit-{client}-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False, "auto.offset.reset": "earliest"}
    if client == "confluent-consumer":
        conf["group.protocol"] = "consumer"
    c = Consumer(conf)
    try:
        c.subscribe([topic])

        def assigned():
            c.poll(0.05)
            return len(c.assignment()) == PARTITIONS

        wait_for(assigned, 60, f"{client}: single member assigned", POLL_S)
        n = 0
        t0 = time.monotonic()
        end = t0 + seconds
        while time.monotonic() < end:
            n += 1
            c.commit(offsets=[TopicPartition(topic, 0, n)], asynchronous=False)
        elapsed = time.monotonic() - t0
        got = c.committed([TopicPartition(topic, 0)], timeout=10)[0].offset
        if got != n:
            raise AssertionError(f"{client}: committed() = {got} after {n} commits")
        return n, elapsed
    finally:
        c.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--commit-seconds", type=float, default=5.0)
    ap.add_argument("--clients", default="confluent,confluent-consumer")
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="lodestream-bench-groups-"))
    broker = BrokerProcess("lodestream", workdir, OVERRIDES)
    broker.start()
    try:
        topic = f"bench-groups-{uuid.uuid4().hex[:8]}"
        create_topic(broker.bootstrap, topic)
        print(f"lodestream {broker.bootstrap}; {PARTITIONS}-partition topic; 3 members, one leaves")
        for client in args.clients.split(","):
            times = [rebalance_after_leave(broker.bootstrap, topic, client, workdir) for _ in range(args.rounds)]
            proto = "classic (session.timeout.ms=6000, heartbeat 1 s)" if client == "confluent" else \
                "consumer / KIP-848 (broker heartbeat 0.5 s)"
            print(f"  {client:19s} {proto}: leave -> Stable again: min {min(times) * 1000:.0f} ms, "
                  f"median {statistics.median(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms "
                  f"over {len(times)} rounds")
        for client in args.clients.split(","):
            n, elapsed = commit_throughput(broker.bootstrap, topic, client, args.commit_seconds)
            print(f"  {client:19s} synchronous OffsetCommit of one offset: {n / elapsed:.0f} commits/s "
                  f"({n} in {elapsed:.1f} s)")
    finally:
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
