"""A consume-transform-produce worker (confluent-kafka, transactional) in its own process.

    python eos_worker.py --bootstrap HOST:PORT --input IN --output OUT --partitions N \\
        --group G --transactional-id T --control-dir DIR [--batch 1000] [--stop-at TOTAL] [--subscribe]

It copies every record of input partition ``p`` to output partition ``p``
(same key and value, lz4-compressed batches), ``--batch`` records per transaction, waits for them to be
written (flush), and commits the input offsets in the same transaction
(``send_offsets_to_transaction``). The
input consumer is ``read_committed`` and uses ``assign`` (no group membership:
the group only stores offsets), or with ``--subscribe`` joins the group as a
static member (``group.instance.id``, so a restarted worker takes the dead
one's place without waiting for its session to expire), and its offset commits
then carry the member id and generation (KIP-447). Zombies are fenced by the
fixed ``transactional.id``: a restarted worker's ``init_transactions`` bumps
the epoch and aborts whatever transaction the killed one left open. It resumes
from the group's committed offsets.

On an abortable error it aborts and rewinds the consumer to the offsets of the
last commit; retriable errors of send_offsets / commit / abort are retried. With ``--stop-at TOTAL`` it
exits 0 once the committed offsets add up to TOTAL. SIGTERM: finish or abort
the current transaction, close, exit 0.

Reports ``DIR/progress.json`` after every commit (atomically):
``{"pid", "committed": {partition: next offset}, "total", "transactions",
"aborts", "retries", "start_offsets", "phase", "step"}`` (also rewritten at each step of a
transaction: produce, send_offsets, commit, abort, consume); client logs and
tracebacks go to DIR/worker.log (the launcher redirects stdout and stderr).
``EosWorkerProcess`` is the launcher.
"""

from __future__ import annotations

import argparse
import faulthandler
import os
import signal
import sys
import time
from pathlib import Path

from compat_util import wait_until
from group_worker import WorkerProcess, read_json, write_json_atomic

OP_TIMEOUT_S = 60
# librdkafka re-bootstraps (KIP-899) as soon as all known brokers are down, which with one broker is
# every broker restart: the broker handle is decommissioned, but the coordinator cache keeps pointing
# at it, and the next send_offsets_to_transaction waits for the group coordinator forever, past its
# timeout (seen with 2.16: "Decommissioning 1 broker(s): re-bootstrap", then the old handle loops
# "Handle is terminating in state INIT"). Known client bugs: confluentinc/librdkafka#5511 (hang when
# the group coordinator is decommissioned) and #5456 (the coordinator request timeout is never
# checked). The broker's address does not change here (a proxy), so plain reconnection is enough.
CLIENT_COMMON = {"metadata.recovery.strategy": "none", "reconnect.backoff.ms": 10, "reconnect.backoff.max.ms": 100,
                 "retry.backoff.ms": 20, "retry.backoff.max.ms": 100}
RETRY_FOR_S = 120


def run(args) -> int:
    from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # the launcher's dump_stacks()
    control = Path(args.control_dir)
    progress = {"pid": None, "committed": {}, "total": 0, "transactions": 0, "aborts": 0,
                "retries": 0, "start_offsets": None, "phase": "starting", "step": None, "assignments": 0}

    def report(**kw) -> None:
        progress.update(kw)
        write_json_atomic(control / "progress.json", progress)

    report(pid=os.getpid())

    def retrying(what: str, fn):
        """Call ``fn`` until it does not raise a retriable error (librdkafka's rule for
        init_transactions, send_offsets_to_transaction, commit_transaction, abort_transaction)."""
        deadline = time.monotonic() + RETRY_FOR_S
        while True:
            try:
                return fn()
            except KafkaException as e:
                if not e.args[0].retriable() or time.monotonic() > deadline:
                    raise
                progress["retries"] += 1
                print(f"{what}: retry after {e.args[0]}", flush=True)

    producer = Producer({
        "bootstrap.servers": args.bootstrap,
        "transactional.id": args.transactional_id,
        "transaction.timeout.ms": args.transaction_timeout_ms,
        "linger.ms": 5,
        "compression.type": "lz4",
        **CLIENT_COMMON,
        **({"debug": args.debug} if args.debug else {}),
    })
    retrying("init_transactions", lambda: producer.init_transactions(OP_TIMEOUT_S))
    consumer = Consumer({
        "bootstrap.servers": args.bootstrap,
        "group.id": args.group,
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": False,
        **({"group.instance.id": f"{args.group}-static", "session.timeout.ms": 10000} if args.subscribe else {}),
        **CLIENT_COMMON,
    })
    committed: dict[int, int] = {}  # partition -> next offset, as committed (updated in place)

    def resume_at_committed(partitions) -> list:
        """Read the group's committed offsets (read_committed: OffsetFetch with require_stable)."""
        got = retrying("committed", lambda: consumer.committed(partitions, timeout=OP_TIMEOUT_S))
        committed.update({tp.partition: max(tp.offset, 0) for tp in got})
        return [TopicPartition(args.input, tp.partition, committed[tp.partition]) for tp in got]

    if args.subscribe:
        def on_assign(c, partitions):
            c.assign(resume_at_committed(partitions))
            report(committed=dict(committed), total=sum(committed.values()),
                   start_offsets=progress["start_offsets"] or dict(committed), assignments=progress["assignments"] + 1)

        consumer.subscribe([args.input], on_assign=on_assign)
    else:
        consumer.assign(resume_at_committed([TopicPartition(args.input, p) for p in range(args.partitions)]))
        report(committed=dict(committed), total=sum(committed.values()), start_offsets=dict(committed))
    report(phase="running")

    def rewind() -> None:
        for tp in consumer.assignment():
            consumer.seek(TopicPartition(args.input, tp.partition, committed[tp.partition]))

    while not stop:
        if args.stop_at and sum(committed.values()) >= args.stop_at:
            break
        records = []
        for m in consumer.consume(num_messages=args.batch, timeout=0.5):
            err = m.error()
            if err is None:
                records.append(m)
            elif err.fatal():
                raise KafkaException(err)
            else:
                print(f"consumer: {err}", flush=True)  # e.g. transport errors while the broker restarts
        if not records:
            continue
        positions: dict[int, int] = {}
        report(step="produce")
        producer.begin_transaction()
        try:
            for m in records:
                while True:
                    try:
                        producer.produce(args.output, key=m.key(), value=m.value(), partition=m.partition())
                        break
                    except BufferError:
                        producer.poll(0.05)
                positions[m.partition()] = m.offset() + 1
            # Wait for the records to be in the log before going on, so a kill from here on always
            # leaves an open transaction with data that the next worker's init_transactions must abort.
            producer.flush(OP_TIMEOUT_S)
            offsets = [TopicPartition(args.input, p, o) for p, o in positions.items()]
            report(step="send_offsets")
            retrying("send_offsets_to_transaction", lambda: producer.send_offsets_to_transaction(
                offsets, consumer.consumer_group_metadata(), OP_TIMEOUT_S))
            report(step="commit")
            retrying("commit_transaction", lambda: producer.commit_transaction(OP_TIMEOUT_S))
        except KafkaException as e:
            err = e.args[0]
            if not err.txn_requires_abort():
                raise
            print(f"abort after: {err}", flush=True)
            report(step="abort")
            retrying("abort_transaction", lambda: producer.abort_transaction(OP_TIMEOUT_S))
            rewind()
            report(aborts=progress["aborts"] + 1)
            continue
        committed.update(positions)
        report(committed=dict(committed), total=sum(committed.values()), transactions=progress["transactions"] + 1,
               step="consume")
    report(phase="stopping")
    consumer.close()
    producer.flush(10)
    report(phase="closed")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--input", required=True)
    ap.add_argument("--output", required=True)
    ap.add_argument("--partitions", type=int, required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--transactional-id", required=True)
    ap.add_argument("--control-dir", required=True)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--stop-at", type=int, default=0)
    ap.add_argument("--transaction-timeout-ms", type=int, default=60000)
    ap.add_argument("--debug", default="", help="librdkafka debug contexts of the producer")
    ap.add_argument("--subscribe", action="store_true",
                    help="join the group (static member) instead of assign: offsets carry the member id and "
                         "generation (KIP-447)")
    args = ap.parse_args(argv)
    try:
        return run(args)
    except Exception:
        import traceback

        traceback.print_exc()
        return 3


class EosWorkerProcess(WorkerProcess):
    """Launcher: ``start``, ``kill``, ``stop``, ``alive``, ``wait``, ``log_tail`` as group_worker's, plus
    ``freeze`` / ``thaw`` (SIGSTOP / SIGCONT), ``progress`` and ``dump_stacks``."""

    def __init__(self, control_dir: Path, name: str, **options):
        self.client = "confluent"
        self.name = name
        self.dir = Path(control_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.cmd = [sys.executable, str(Path(__file__).resolve()), "--control-dir", str(self.dir)]
        for k, v in options.items():
            flag = f"--{k.replace('_', '-')}"
            if v is True:
                self.cmd.append(flag)
            elif v is not False:
                self.cmd += [flag, str(v)]
        self.proc = None
        self.log_path = self.dir / "worker.log"
        self._log = None

    def _send(self, sig: int) -> None:
        if self.alive():
            self.proc.send_signal(sig)

    def freeze(self) -> None:
        self._send(signal.SIGSTOP)

    def thaw(self) -> None:
        self._send(signal.SIGCONT)

    def stop(self, grace: float = 10.0) -> int | None:
        self.thaw()  # a stopped process would not act on SIGTERM
        return super().stop(grace)

    def dump_stacks(self) -> None:
        """Python stacks of every thread into the worker log (faulthandler on SIGUSR1), for describe()."""
        if not self.alive():
            return
        size = self.log_path.stat().st_size if self.log_path.exists() else 0
        self.thaw()
        self._send(signal.SIGUSR1)

        def dumped():
            with open(self.log_path, "rb") as f:
                f.seek(size)
                return b"most recent call first" in f.read()

        try:
            wait_until(dumped, 2.0, "stack dump")
        except AssertionError:
            pass  # a diagnostic only

    def progress(self) -> dict:
        return read_json(self.dir / "progress.json") or {}

    def describe(self) -> str:
        self.dump_stacks()
        return (f"{self.name} (pid {self.proc.pid if self.proc else None}, rc {self.returncode()}): "
                f"progress={self.progress()}\n  log tail:\n    " + self.log_tail(60).replace("\n", "\n    "))


if __name__ == "__main__":
    sys.exit(main())
