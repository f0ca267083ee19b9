"""`lodestream dev-cluster`: a local KRaft cluster for development, N combined nodes (broker and controller)
as `lodestream serve` processes on loopback, each with its data under one folder; Ctrl-C stops them all.

Node i listens for clients on base-port + i - 1 (9092, 9093, 9094 by default), for the quorum on
controller-base-port + i - 1, and serves its REST API on admin-base-port + i - 1. A base port of 0 picks a
free port for each node instead (tests); the ready line names them. The cluster id is kept in
<dir>/cluster.id, so a second run restarts the same cluster. `lodestream random-cluster-id` prints a new
id for clusters set up by hand (every node's cluster.id must be the same).
"""

from __future__ import annotations

import argparse
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from lodestream.broker.config import random_cluster_id

READY_TIMEOUT_S = 60.0
STOP_GRACE_S = 15.0


def _ports(base: int, count: int) -> list[int]:
    """count consecutive ports from base; with base 0, free ones (bound to port 0, read, released)."""
    if base:
        return [base + i for i in range(count)]
    ports = []
    for _ in range(count):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            ports.append(probe.getsockname()[1])
    return ports


def add_subcommands(sub) -> None:
    cluster = sub.add_parser("dev-cluster", help="run a local KRaft cluster of combined nodes for development")
    cluster.add_argument("--nodes", type=int, default=3, help="how many nodes (voters); default 3")
    cluster.add_argument("--dir", type=Path, default=Path("data-cluster"), help="data folder (one per node inside)")
    cluster.add_argument("--base-port", type=int, default=9092, help="node 1's client port; the others follow")
    cluster.add_argument("--controller-base-port", type=int, default=19092, help="node 1's controller port")
    cluster.add_argument("--admin-base-port", type=int, default=8083, help="node 1's REST port; 0 = no REST API")
    cluster.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                         help="a broker property for every node (repeatable)")
    sub.add_parser("random-cluster-id", help="print a new cluster id for cluster.id")


def run(args: argparse.Namespace) -> int:
    if args.command == "random-cluster-id":
        print(random_cluster_id())
        return 0
    if not 1 <= args.nodes <= 9:
        print("lodestream dev-cluster: --nodes must be between 1 and 9", file=sys.stderr)
        return 2
    base: Path = args.dir
    base.mkdir(parents=True, exist_ok=True)
    id_file = base / "cluster.id"
    if not id_file.exists():
        id_file.write_text(random_cluster_id() + "\n")
    cluster_id = id_file.read_text().strip()
    ids = range(1, args.nodes + 1)
    client_ports = _ports(args.base_port, args.nodes)
    controller_ports = _ports(args.controller_base_port, args.nodes)
    voters = ",".join(f"{i}@127.0.0.1:{controller_ports[i - 1]}" for i in ids)
    exe = Path(sys.executable).parent / "lodestream"
    processes: dict[int, subprocess.Popen] = {}
    for i in ids:
        node_dir = base / f"node{i}"
        node_dir.mkdir(exist_ok=True)
        (node_dir / "ready.json").unlink(missing_ok=True)
        admin = f"http://127.0.0.1:{args.admin_base_port + i - 1}" if args.admin_base_port > 0 else ""
        settings = {
            "node.id": str(i), "cluster.id": cluster_id, "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://127.0.0.1:{client_ports[i - 1]},CONTROLLER://127.0.0.1:{controller_ports[i - 1]}",
            "log.dirs": str(node_dir / "data"), "admin.listeners": admin,
        }
        command = [str(exe), "serve", "--ready-file", str(node_dir / "ready.json")]
        for key, value in settings.items():
            command += ["--override", f"{key}={value}"]
        for override in args.override:
            command += ["--override", override]
        log = open(node_dir / "broker.log", "ab")
        processes[i] = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        log.close()
    stopping = False

    def stop(*_) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not stopping and not all((base / f"node{i}" / "ready.json").exists() for i in ids):
            failed = [i for i, process in processes.items() if process.poll() is not None]
            if failed or time.monotonic() > deadline:
                why = f"node {failed[0]} exited" if failed else f"not ready within {READY_TIMEOUT_S:.0f} s"
                print(f"lodestream dev-cluster: {why}; see {base}/node*/broker.log", file=sys.stderr)
                return 1
            time.sleep(0.1)  # poll interval inside a deadline loop
        if not stopping:
            bootstrap = ",".join(f"127.0.0.1:{port}" for port in client_ports)
            print(f"cluster {cluster_id}: {args.nodes} nodes ready; bootstrap.servers={bootstrap}; "
                  f"controllers {voters}; logs in {base}/node*/broker.log; Ctrl-C stops", flush=True)
        reported: set[int] = set()
        while not stopping:  # a node that exits (killed to try a failover) is reported; the rest run on
            for i, process in processes.items():
                if i not in reported and process.poll() is not None:
                    reported.add(i)
                    print(f"node {i} exited with status {process.returncode}", flush=True)
            time.sleep(0.2)  # wait for Ctrl-C
        return 0
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes.values():
            try:
                process.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
