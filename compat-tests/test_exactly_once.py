"""Exactly-once consume-transform-produce through process and broker crashes (issue 6, "Show" item 3).

100,000 numbered messages are written to a 3-partition input topic (number
``i`` to partition ``i % 3``). ``eos_worker.py`` (confluent-kafka,
transactional, ``read_committed`` input, ``send_offsets_to_transaction``,
1,000 records per transaction) copies input partition ``p`` to output
partition ``p``; its input consumer either uses ``assign`` (``mode=assign``)
or joins the group as a static member (``mode=subscribe``: the offset commits
carry member id and generation, KIP-447). With ``mode=subscribe+cuts`` the
proxy in front of the broker also cuts the connection on every 5th Produce,
AddPartitionsToTxn, AddOffsetsToTxn, EndTxn and TxnOffsetCommit request after
forwarding it (so retried EndTxn, TxnOffsetCommit and AddPartitionsToTxn
requests reach the broker after it handled the first copy).

The test watches the worker's committed input offsets (``progress.json``,
written after each commit and at each step of a transaction). As they pass
15 %, 35 % and 55 % of the input, at a moment when the worker is inside a
transaction whose records are already written (it freezes the worker with
SIGSTOP when its progress says so, and checks again while it is frozen), it
SIGKILLs the worker and starts a new one (same ``transactional.id``: its
``init_transactions`` fences the dead one and aborts its open transaction; it
resumes from the group's committed offsets). At 75 % (the worker frozen inside
a transaction again) it SIGKILLs the broker, which restarts on the same data
dir, then lets the worker go on: it finishes its open transaction against the
restarted broker, reconnecting by itself (the broker advertises a proxy whose
address survives the restart).

Afterwards the output, read ``read_committed`` (in small fetches of at most
16 KiB per partition, so that fetches start inside and between transactions),
holds every input number
exactly once, in input order per partition (zero duplicates, zero
reorderings, nothing missing), the group's committed offsets are the input
partitions' ends, and the log also holds aborted records (the kills did hit
open transactions). The figures (copied, duplicates, reorderings, kills,
transactions, aborted records left in the log) are printed.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from compat_util import ck_create_topics, unique_topic, wait_until
from eos_util import ck_read_all, order_figures
from eos_worker import EosWorkerProcess

MESSAGES = 100_000
PARTITIONS = 3
BATCH = 1000
PLAN = [("worker", 0.15), ("worker", 0.35), ("worker", 0.55), ("broker", 0.75)]
# "+cuts": the proxy also cuts the connection on every 5th request of these APIs between forwarding it and
# returning the response (alternately after the broker answered and right after forwarding)
TXN_API_KEYS = frozenset({0, 24, 25, 26, 28})
API_NAMES = {0: "Produce", 24: "AddPartitionsToTxn", 25: "AddOffsetsToTxn", 26: "EndTxn", 28: "TxnOffsetCommit"}
CUT_EVERY = 5
COPY_TIMEOUT_S = 120  # per step; a whole copy takes 3-40 s here


def _produce_input(bootstrap: str, topic: str) -> None:
    errors: list = []
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 20})
    for i in range(MESSAGES):
        while True:
            try:
                producer.produce(topic, value=b"%d" % i, partition=i % PARTITIONS,
                                 on_delivery=lambda err, msg: err and errors.append(err))
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(60) == 0, "input not delivered within 60 s"
    assert not errors, errors[:5]


@pytest.mark.parametrize("mode", ["assign", "subscribe", "subscribe+cuts"])
def test_exactly_once_copy_through_kills(proxied_broker, tmp_path, mode):
    pb = proxied_broker({"group.initial.rebalance.delay.ms": "0"})
    source, sink = unique_topic("eos-in"), unique_topic("eos-out")
    ck_create_topics(pb.bootstrap, [source, sink], partitions=PARTITIONS)
    _produce_input(pb.bootstrap, source)
    group, txn_id = unique_topic("eos-group"), unique_topic("eos-txn")

    worker = EosWorkerProcess(tmp_path / "worker", "eos-worker", bootstrap=pb.bootstrap, input=source,
                              output=sink, partitions=PARTITIONS, group=group, transactional_id=txn_id,
                              batch=BATCH, stop_at=MESSAGES, subscribe=mode.startswith("subscribe"))
    if mode.endswith("+cuts"):
        pb.proxy.cut_api_keys = TXN_API_KEYS
        pb.proxy.cut_every = CUT_EVERY
    incarnations: list[dict] = []  # the last progress report of each worker process
    kills: list[tuple[str, int, float]] = []  # (what, committed input records, seconds in)
    started = time.monotonic()

    def own_progress() -> dict:
        prog = worker.progress()
        return prog if worker.proc is not None and prog.get("pid") == worker.proc.pid else {}

    def freeze_inside_transaction(threshold: int):
        """SIGSTOP the worker at a moment when it has committed >= threshold input records and has an
        open transaction whose records are written (step "send_offsets": flushed, commit not begun).
        Checked again once frozen; otherwise SIGCONT and keep watching. Returns the frozen progress."""
        def attempt():
            if not worker.alive():
                return {"exited": worker.returncode()}
            prog = own_progress()
            if prog.get("total", 0) < threshold or prog.get("step") != "send_offsets":
                return None
            worker.freeze()
            prog = own_progress()
            if prog.get("step") == "send_offsets":
                return prog
            worker.thaw()
            return None

        prog = wait_until(attempt, COPY_TIMEOUT_S, f"worker past {threshold} inside a transaction",
                          worker.describe, interval=0.005)
        assert "exited" not in prog, f"worker exited by itself before {threshold}: {worker.describe()}"
        return prog

    try:
        worker.start()
        for what, fraction in PLAN:
            prog = freeze_inside_transaction(int(MESSAGES * fraction))
            if what == "worker":
                worker.kill()
                assert worker.wait(10) is not None
                incarnations.append(worker.progress())
                worker.stop()  # closes its log handle
                worker.start()
            else:
                pb.kill()  # SIGKILL + restart on the same data dir; the proxy follows the new port
                worker.thaw()  # carries on with its open transaction against the restarted broker
            kills.append((what, prog["total"], round(time.monotonic() - started, 1)))
        rc = wait_until(lambda: worker.returncode() is not None and (worker.returncode(),), COPY_TIMEOUT_S,
                        "worker copies everything and exits", worker.describe)[0]
        incarnations.append(worker.progress())
        assert rc == 0, f"worker exited with {rc}: {worker.describe()}"
    finally:
        worker.stop()
        pb.proxy.cut_every = 0
    copy_s = time.monotonic() - started
    cuts = Counter(API_NAMES.get(api_key, api_key) for _mode, api_key, _corr in pb.proxy.cuts)

    # small fetches, so that many of them start inside or between transactions (aborted ones included)
    committed = ck_read_all(pb.bootstrap, sink, range(PARTITIONS), isolation="read_committed", timeout=120,
                            **{"fetch.max.bytes": 65536, "max.partition.fetch.bytes": 16384, "message.max.bytes": 65536})
    everything = ck_read_all(pb.bootstrap, sink, range(PARTITIONS), isolation="read_uncommitted", timeout=120)
    figures = {}
    for p in range(PARTITIONS):
        expected = [b"%d" % i for i in range(p, MESSAGES, PARTITIONS)]
        figures[p] = order_figures(expected, [v for _, _, v in committed[p]])
    total_committed = sum(len(v) for v in committed.values())
    total_log = sum(len(v) for v in everything.values())

    c = Consumer({"bootstrap.servers": pb.bootstrap, "group.id": group, "isolation.level": "read_committed"})
    try:
        group_offsets = {tp.partition: tp.offset for tp in
                         c.committed([TopicPartition(source, p) for p in range(PARTITIONS)], timeout=30)}
        input_ends = {p: c.get_watermark_offsets(TopicPartition(source, p), timeout=30)[1] for p in range(PARTITIONS)}
    finally:
        c.close()

    print(f"\nexactly-once ({mode}): {total_committed} records committed to the output ({MESSAGES} input) in {copy_s:.1f}s; "
          f"kills {kills}; worker processes {len(incarnations)}: transactions "
          f"{[i.get('transactions') for i in incarnations]}, aborts {[i.get('aborts') for i in incarnations]}, "
          f"retries {[i.get('retries') for i in incarnations]}, assignments {[i.get('assignments') for i in incarnations]}, resumed at {[i.get('start_offsets') for i in incarnations]}; "
          f"connection cuts {dict(cuts)}; output log holds {total_log} data records ({total_log - total_committed} aborted); per partition {figures}")
    assert sum(1 for k in kills if k[0] == "worker") >= 3 and sum(1 for k in kills if k[0] == "broker") >= 1
    for p in range(PARTITIONS):
        assert figures[p] == {"duplicates": 0, "reorderings": 0, "missing": 0, "unexpected": 0}, (p, figures[p])
    assert total_committed == MESSAGES
    # each worker kill left an open transaction with records in the log, aborted by the next worker
    assert total_log - total_committed >= sum(1 for k in kills if k[0] == "worker"), (total_log, total_committed)
    assert group_offsets == input_ends, f"group offsets {group_offsets} != input ends {input_ends}"
