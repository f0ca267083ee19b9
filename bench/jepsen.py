"""The Jepsen-style run of replicated partitions, long (tests/test_jepsen.py runs 40 s of it in CI):

    .venv/bin/python bench/jepsen.py [--seconds 300] [--seed 1] [--faults kill-leader,pause,partition]
                                     [--plant ack-before-isr] [--keep DIR]

Three `lodestream serve` processes (RF 3, min.insync.replicas=2), two idempotent and two transactional
producers, two read_committed consumers, a fault every 10-20 s; then the checker (tests/kafka_history.py)
prints the faults, the counts and every anomaly class with its first cases. Exit code 1 if any anomaly.

--plant ack-before-isr starts the brokers with a bug: the high watermark is the leader's log end, so acks=all
is answered before the followers have the batch. The checker must then report lost writes (a killed
leader's last acknowledged batches are not on the follower that takes over). The bug is planted through a
sitecustomize module on the brokers' PYTHONPATH: the broker's code is not changed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from kafka_history import check, summary  # noqa: E402
from kafka_workload import Settings, run  # noqa: E402
from kraft_cluster import KRaftCluster  # noqa: E402

PLANTS = {
    "ack-before-isr": (
        "import lodestream.broker.partition as partition\n"
        "partition.Partition.high_watermark = property(lambda self: self._log.log_end_offset)\n"),
}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--faults", default="kill-leader,pause,partition")
    parser.add_argument("--every", default="10,20", help="seconds between faults: low,high")
    parser.add_argument("--plant", choices=sorted(PLANTS))
    parser.add_argument("--keep", type=Path, help="run in this directory and keep it (broker logs: node*/broker.log)")
    args = parser.parse_args()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    with (contextlib.nullcontext(str(args.keep)) if args.keep else tempfile.TemporaryDirectory()) as directory:
        if args.plant:
            planted = Path(directory) / "plant"
            planted.mkdir()
            (planted / "sitecustomize.py").write_text(PLANTS[args.plant])
            os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(planted), os.environ.get("PYTHONPATH")]))
        cluster = KRaftCluster(Path(directory), overrides={"replica.lag.time.max.ms": "2000",
                                                          "replica.fetch.backoff.ms": "100"}, proxied_clients=True)
        low, high = (float(x) for x in args.every.split(","))
        try:
            cluster.start()
            cluster.wait_for_brokers(cluster.ids[0], set(cluster.ids), timeout=30)
            result = run(cluster, Settings(seconds=args.seconds, seed=args.seed, fault_every=(low, high),
                                           faults=tuple(args.faults.split(","))))
        finally:
            cluster.stop()
    found = check(result.history)
    print("\n".join(result.faults))
    print(summary(result.history, found))
    for name, cases in found.items():
        if cases:
            print(f"{name}: {len(cases)}, first: {cases[:3]}")
    return 1 if any(found.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
