"""A consumer-group member in its own process, for the group tests and bench/groups.py.

    python group_worker.py --client confluent|confluent-consumer|kafka-python|aiokafka \\
        --bootstrap HOST:PORT --group G --topic T --control-dir DIR \\
        [--session-timeout-ms 6000] [--heartbeat-interval-ms 1000] \\
        [--commit-every K] [--stop-after N] [--name NAME]

Clients: ``confluent`` is confluent-kafka with the classic protocol,
``confluent-consumer`` is confluent-kafka with ``group.protocol=consumer``
(KIP-848: the session timeout and heartbeat interval are the broker's, so the
two ``--*-ms`` options are not passed to the client), ``kafka-python`` and
``aiokafka`` are the classic protocol. Auto-commit is off and
``auto.offset.reset`` is earliest.

The worker subscribes to the topic, polls one record at a time, and after every
``K``-th record commits (synchronously) the next offset of every partition it
has consumed from and still owns. With ``--stop-after N`` it stops after the
N-th record *without* a final commit (so the records after the last commit are
the uncommitted tail), closes the consumer (LeaveGroup) and exits 0. On SIGTERM
it closes the consumer and exits 0.

Everything it knows goes to files in DIR, each replaced atomically
(write to a temporary file, then ``os.replace``):

* ``assignment.json``, rewritten whenever the assignment changes:
  ``{"seq", "partitions", "mono", "wall", "member_id"}``. ``mono`` is
  ``time.monotonic()``, which is the system-wide CLOCK_MONOTONIC on Linux, so
  it compares with the orchestrator's clock.
* ``state.json``: ``consumed`` {partition: [[offset, value], ...]},
  ``committed`` {partition: offset} (offsets whose synchronous commit
  succeeded), ``committed_read`` {partition: offset or null} (what
  ``committed()`` returned when the partition was assigned: read back through
  OffsetFetch), ``count``, ``commits``, ``commit_errors``, ``events``.
* ``status.json``: ``{"phase": "starting" | "running" | "stopping" | "closed" | "error", ...}``.

Client logs and tracebacks go to DIR/worker.log (the launcher redirects stdout
and stderr there).

``WorkerProcess`` is the launcher used by the tests and the benchmark.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

CLIENTS = ("confluent", "confluent-consumer", "kafka-python", "aiokafka")
POLL_S = 0.1  # default; --poll-ms
STATE_WRITE_INTERVAL_S = 0.1


def write_json_atomic(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


def read_json(path: Path):
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None


# ---------------------------------------------------------------------------
# The worker (runs in the child process)
# ---------------------------------------------------------------------------


class Reporter:
    """The worker's view of itself, flushed to the control directory."""

    def __init__(self, control_dir: Path, args):
        self.dir = control_dir
        self.args = args
        self.assignment: list[int] | None = None
        self.seq = 0
        self.consumed: dict[int, list] = {}
        self.positions: dict[int, int] = {}  # next offset to commit, owned partitions only
        self.committed: dict[int, int] = {}
        self.committed_read: dict[int, int | None] = {}
        self.count = 0
        self.commits = 0
        self.commit_errors: list[str] = []
        self.events: list = []
        self.dirty = False
        self.last_write = 0.0
        self.member_id = None

    def event(self, kind: str, detail="") -> None:
        self.events.append([round(time.monotonic(), 4), kind, str(detail)[:500]])
        self.dirty = True

    def status(self, phase: str, **extra) -> None:
        write_json_atomic(self.dir / "status.json", {"phase": phase, "pid": os.getpid(),
                                                     "mono": time.monotonic(), **extra})

    def set_assignment(self, partitions, member_id=None) -> None:
        parts = sorted(set(int(p) for p in partitions))
        if parts == self.assignment:
            return
        self.assignment = parts
        self.member_id = member_id
        self.seq += 1
        for p in list(self.positions):
            if p not in parts:
                del self.positions[p]
        write_json_atomic(self.dir / "assignment.json", {
            "seq": self.seq, "partitions": parts, "mono": time.monotonic(), "wall": time.time(),
            "member_id": member_id,
        })
        self.event("assignment", parts)

    def record(self, partition: int, offset: int, value) -> None:
        if isinstance(value, (bytes, bytearray)):
            value = value.decode("utf-8", "replace")
        self.consumed.setdefault(partition, []).append([offset, value])
        if self.assignment is None or partition in self.assignment:
            self.positions[partition] = offset + 1
        else:
            self.event("record-from-unassigned-partition", (partition, offset, self.assignment))
        self.count += 1
        self.dirty = True

    def commit_ok(self, offsets: dict[int, int]) -> None:
        self.committed.update(offsets)
        self.commits += 1
        self.flush(force=True)

    def commit_failed(self, err) -> None:
        self.commit_errors.append(str(err)[:300])
        self.event("commit-error", err)

    def flush(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and (not self.dirty or now - self.last_write < STATE_WRITE_INTERVAL_S):
            return
        write_json_atomic(self.dir / "state.json", {
            "consumed": self.consumed, "committed": self.committed, "committed_read": self.committed_read,
            "count": self.count, "commits": self.commits, "commit_errors": self.commit_errors,
            "events": self.events[-200:], "assignment": self.assignment,
        })
        self.dirty = False
        self.last_write = now


class Stop:
    def __init__(self):
        self.requested = False

    def __call__(self, *_):
        self.requested = True


def _should_commit(rep: Reporter, args) -> bool:
    return args.commit_every > 0 and rep.count % args.commit_every == 0


def run_confluent(args, rep: Reporter, stop: Stop, kip848: bool) -> None:
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    conf = {
        "bootstrap.servers": args.bootstrap,
        "group.id": args.group,
        "client.id": args.name,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "socket.timeout.ms": 10000,
    }
    if kip848:
        # KIP-848: session timeout, heartbeat interval and assignor are the broker's.
        conf["group.protocol"] = "consumer"
    else:
        conf["session.timeout.ms"] = args.session_timeout_ms
        conf["heartbeat.interval.ms"] = args.heartbeat_interval_ms
    if args.debug:
        conf["debug"] = args.debug
    c = Consumer(conf)

    def on_assign(consumer, partitions):
        rep.event("on_assign", [p.partition for p in partitions])
        try:
            for tp in consumer.committed(partitions, timeout=10):
                rep.committed_read[tp.partition] = tp.offset if tp.offset >= 0 else None
        except KafkaException as e:
            rep.event("committed-error", e)

    def on_revoke(consumer, partitions):
        rep.event("on_revoke", [p.partition for p in partitions])

    def on_lost(consumer, partitions):
        rep.event("on_lost", [p.partition for p in partitions])

    c.subscribe([args.topic], on_assign=on_assign, on_revoke=on_revoke, on_lost=on_lost)
    rep.status("running")
    try:
        while not stop.requested:
            msg = c.poll(POLL_S)
            rep.set_assignment([tp.partition for tp in c.assignment()], _safe(c.memberid))
            if msg is not None:
                if msg.error():
                    rep.event("consume-error", msg.error())
                else:
                    rep.record(msg.partition(), msg.offset(), msg.value())
                    if _should_commit(rep, args):
                        offsets = dict(rep.positions)
                        try:
                            c.commit(offsets=[TopicPartition(args.topic, p, o) for p, o in offsets.items()],
                                     asynchronous=False)
                            rep.commit_ok(offsets)
                        except KafkaException as e:
                            rep.commit_failed(e)
                    if args.stop_after and rep.count >= args.stop_after:
                        break
            rep.flush()
        rep.status("stopping")
        rep.flush(force=True)
    finally:
        c.close()
    rep.set_assignment([])


def _safe(fn):
    try:
        return fn()
    except Exception:  # noqa: BLE001 - diagnostics only
        return None


def kafka_python_subscribe(consumer, topic: str, listener, attempts: int = 5) -> bool:
    """Subscribe a kafka-python consumer so that it never rejoins for a metadata-snapshot change.

    kafka-python 3.0.12 loses a rejoin's result when two things meet:

    1. The consumer coordinator's metadata snapshot (``_metadata_snapshot``, the subscribed
       topics' partitions) is only rebuilt by a metadata update that arrives *after* ``subscribe()``.
       A leader that performs its first assignment before that update records an empty
       ``_assignment_snapshot``; when the update arrives, ``need_rejoin()`` turns True through the
       snapshot mismatch alone (``rejoin_needed`` stays False) and the leader rejoins, revoking
       everything.
    2. If the ``poll(timeout_ms)`` timer expires while that rejoin's JoinGroup/SyncGroup is in
       flight, ``join_group_async`` returns False and leaves the join task to be re-awaited by the
       next poll. But the leader's ``_perform_assignment`` has already set ``_assignment_snapshot``
       to the current snapshot, so the next poll finds ``need_rejoin()`` False and never looks at
       the task again: the SyncGroup's assignment is dropped, the member stays REBALANCING with
       heartbeats disabled and sends no group request at all. The coordinator expires it after the
       session timeout (as Apache Kafka does) and the member never learns it.

    Fetching all topics' metadata *after* subscribing (``topics()`` always asks the broker) runs the
    coordinator's metadata listener with the subscription in place, so the snapshot covers the topic
    before the first JoinGroup and (1) cannot happen. Prefetching before ``subscribe()`` does not
    help: the listener then snapshots no topic at all.

    Returns whether the snapshot covers the topic (it is read for that check only).
    """
    consumer.subscribe([topic], listener=listener)
    for _ in range(attempts):
        consumer.topics()
        if consumer._coordinator._metadata_snapshot.get(topic):  # noqa: SLF001 - see above
            return True
    return False


def run_kafka_python(args, rep: Reporter, stop: Stop) -> None:
    from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError
    from kafka.structs import OffsetAndMetadata

    c = KafkaConsumer(
        bootstrap_servers=args.bootstrap,
        group_id=args.group,
        client_id=args.name,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=args.session_timeout_ms,
        heartbeat_interval_ms=args.heartbeat_interval_ms,
    )

    class Listener(ConsumerRebalanceListener):
        def on_partitions_revoked(self, revoked):
            rep.event("on_revoke", sorted(tp.partition for tp in revoked))

        def on_partitions_assigned(self, assigned):
            # kafka-python 3 runs listeners on its IO thread, where blocking calls such as
            # committed() are refused: the main loop reads the committed offsets instead.
            rep.event("on_assign", sorted(tp.partition for tp in assigned))

    def member_id():
        return c._coordinator._generation.member_id  # noqa: SLF001 - diagnostics only

    if not kafka_python_subscribe(c, args.topic, Listener()):
        rep.event("metadata-snapshot-missing", args.topic)
    rep.status("running")
    try:
        while not stop.requested:
            batches = c.poll(timeout_ms=int(POLL_S * 1000), max_records=1)
            before = set(rep.assignment or ())
            rep.set_assignment([tp.partition for tp in c.assignment()], _safe(member_id))
            for p in sorted(set(rep.assignment) - before):  # newly assigned: read back before committing
                try:
                    rep.committed_read[p] = c.committed(TopicPartition(args.topic, p))
                except KafkaError as e:
                    rep.event("committed-error", e)
            done = False
            for tp, records in batches.items():
                for r in records:
                    rep.record(r.partition, r.offset, r.value)
                    if _should_commit(rep, args):
                        offsets = dict(rep.positions)
                        try:
                            c.commit({TopicPartition(args.topic, p): OffsetAndMetadata(o, "", -1)
                                      for p, o in offsets.items()})
                            rep.commit_ok(offsets)
                        except KafkaError as e:
                            rep.commit_failed(e)
                    if args.stop_after and rep.count >= args.stop_after:
                        done = True
                        break
                if done:
                    break
            if done:
                break
            rep.flush()
        rep.status("stopping")
        rep.flush(force=True)
    finally:
        c.close(autocommit=False)
    rep.set_assignment([])


def run_aiokafka(args, rep: Reporter, stop: Stop) -> None:
    import asyncio

    from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
    from aiokafka.errors import KafkaError

    async def main():
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop)
        c = AIOKafkaConsumer(
            bootstrap_servers=args.bootstrap,
            group_id=args.group,
            client_id=args.name,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=args.session_timeout_ms,
            heartbeat_interval_ms=args.heartbeat_interval_ms,
        )

        class Listener(ConsumerRebalanceListener):
            async def on_partitions_revoked(self, revoked):
                rep.event("on_revoke", sorted(tp.partition for tp in revoked))

            async def on_partitions_assigned(self, assigned):
                rep.event("on_assign", sorted(tp.partition for tp in assigned))
                for tp in assigned:
                    try:
                        rep.committed_read[tp.partition] = await c.committed(tp)
                    except KafkaError as e:
                        rep.event("committed-error", e)

        def member_id():
            return c._coordinator.member_id  # noqa: SLF001 - diagnostics only

        await c.start()
        try:
            c.subscribe([args.topic], listener=Listener())
            rep.status("running")
            while not stop.requested:
                batches = await c.getmany(timeout_ms=int(POLL_S * 1000), max_records=1)
                rep.set_assignment([tp.partition for tp in c.assignment()], _safe(member_id))
                done = False
                for tp, records in batches.items():
                    for r in records:
                        rep.record(r.partition, r.offset, r.value)
                        if _should_commit(rep, args):
                            offsets = dict(rep.positions)
                            try:
                                await c.commit({TopicPartition(args.topic, p): o for p, o in offsets.items()})
                                rep.commit_ok(offsets)
                            except KafkaError as e:
                                rep.commit_failed(e)
                        if args.stop_after and rep.count >= args.stop_after:
                            done = True
                            break
                    if done:
                        break
                if done:
                    break
                rep.flush()
            rep.status("stopping")
            rep.flush(force=True)
        finally:
            await c.stop()
        rep.set_assignment([])

    asyncio.run(main())


def worker_main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--client", choices=CLIENTS, required=True)
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--control-dir", required=True, type=Path)
    ap.add_argument("--name", default="group-worker")
    ap.add_argument("--session-timeout-ms", type=int, default=6000)
    ap.add_argument("--heartbeat-interval-ms", type=int, default=1000)
    ap.add_argument("--commit-every", type=int, default=1, help="0 = never commit")
    ap.add_argument("--stop-after", type=int, default=0, help="stop after N records (0 = run until SIGTERM)")
    ap.add_argument("--debug", default="", help="librdkafka debug contexts (confluent clients)")
    ap.add_argument("--poll-ms", type=int, default=100,
                    help="poll timeout: how late an assignment change can be reported")
    args = ap.parse_args(argv)
    global POLL_S
    POLL_S = args.poll_ms / 1000
    args.control_dir.mkdir(parents=True, exist_ok=True)

    import logging

    verbose = os.environ.get("GROUP_WORKER_VERBOSE", "")  # "1": INFO, "debug": DEBUG client logs
    logging.basicConfig(level=logging.DEBUG if verbose == "debug" else logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)

    rep = Reporter(args.control_dir, args)
    stop = Stop()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    rep.status("starting")
    try:
        if args.client in ("confluent", "confluent-consumer"):
            run_confluent(args, rep, stop, kip848=args.client == "confluent-consumer")
        elif args.client == "kafka-python":
            run_kafka_python(args, rep, stop)
        else:
            run_aiokafka(args, rep, stop)
    except BaseException as e:  # noqa: BLE001 - reported to the orchestrator
        traceback.print_exc()
        rep.flush(force=True)
        rep.status("error", error=repr(e))
        return 1
    rep.flush(force=True)
    rep.status("closed", count=rep.count)
    return 0


# ---------------------------------------------------------------------------
# The launcher (runs in the test / benchmark process)
# ---------------------------------------------------------------------------


class WorkerProcess:
    """One ``group_worker.py`` subprocess and its control directory."""

    def __init__(self, client: str, bootstrap: str, group: str, topic: str, control_dir: Path,
                 name: str, *, session_timeout_ms: int = 6000, heartbeat_interval_ms: int = 1000,
                 commit_every: int = 1, stop_after: int = 0, debug: str = "", poll_ms: int = 100):
        self.client = client
        self.name = name
        self.dir = Path(control_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.cmd = [
            sys.executable, str(Path(__file__).resolve()),
            "--client", client, "--bootstrap", bootstrap, "--group", group, "--topic", topic,
            "--control-dir", str(self.dir), "--name", name,
            "--session-timeout-ms", str(session_timeout_ms),
            "--heartbeat-interval-ms", str(heartbeat_interval_ms),
            "--commit-every", str(commit_every), "--stop-after", str(stop_after),
            "--poll-ms", str(poll_ms),
        ]
        if debug:
            self.cmd += ["--debug", debug]
        self.proc: subprocess.Popen | None = None
        self.log_path = self.dir / "worker.log"
        self._log = None

    def start(self) -> "WorkerProcess":
        self._log = open(self.log_path, "ab", buffering=0)
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"))
        return self

    # -- reports ------------------------------------------------------------

    def assignment_report(self) -> dict | None:
        return read_json(self.dir / "assignment.json")

    def assignment(self) -> list[int] | None:
        a = self.assignment_report()
        return None if a is None else a["partitions"]

    def state(self) -> dict | None:
        s = read_json(self.dir / "state.json")
        if s is not None:
            s["consumed"] = {int(p): v for p, v in s["consumed"].items()}
            s["committed"] = {int(p): v for p, v in s["committed"].items()}
            s["committed_read"] = {int(p): v for p, v in s["committed_read"].items()}
        return s

    def status(self) -> dict | None:
        return read_json(self.dir / "status.json")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "<no worker log>"

    def describe(self) -> str:
        st = self.state() or {}
        return (f"{self.name} ({self.client}, pid {self.proc.pid if self.proc else None}, "
                f"rc {self.returncode()}): status={self.status()} assignment={self.assignment_report()} "
                f"count={st.get('count')} commits={st.get('commits')} commit_errors={st.get('commit_errors')} "
                f"events={st.get('events', [])[-12:]}\n  log tail:\n    "
                + self.log_tail(15).replace("\n", "\n    "))

    # -- process control ----------------------------------------------------

    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def terminate(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)

    def wait(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, grace: float = 10.0) -> int | None:
        """SIGTERM, up to ``grace`` seconds, then SIGKILL. Safe to call more than once."""
        rc = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                rc = self.wait(grace)
                if rc is None:
                    self.proc.kill()
                    rc = self.proc.wait(timeout=10)
            else:
                rc = self.proc.returncode
        if self._log is not None:
            self._log.close()
            self._log = None
        return rc


if __name__ == "__main__":
    sys.exit(worker_main())
