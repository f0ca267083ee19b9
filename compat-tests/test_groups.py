"""Consumer groups with real clients, each member in its own process.

Clients: confluent-kafka with the classic protocol (``confluent``) and with
``group.protocol=consumer`` (``confluent-consumer``, KIP-848
ConsumerGroupHeartbeat), kafka-python and aiokafka (classic). Members are
``group_worker.py`` subprocesses that report their assignment, consumed
records and committed offsets through JSON files; every wait polls those files
against a deadline.

* ``test_membership``: three members over a 6-partition topic get disjoint,
  balanced shares covering all partitions; one is SIGTERMed (close ->
  LeaveGroup) and the other two cover all partitions again within
  session timeout + 5 s; one is SIGKILLed and the last one gets all
  partitions once the broker expires the dead member (session timeout +
  10 s for the expiry and the rebalance).
* ``test_kafka_python_worker_joins_with_metadata_snapshot``: the kafka-python
  worker subscribes so that the consumer's metadata snapshot covers the topic
  before its first JoinGroup (kafka-python 3.0.12 can drop the result of the
  rebalance an empty snapshot causes: see ``group_worker.kafka_python_subscribe``).
* ``test_commit_resume``: one member consumes 200 of 300 numbered records,
  committing synchronously after every 7th (so 4 records are an uncommitted
  tail) and leaves; a new member reads the committed offsets back
  (OffsetFetch), starts exactly at them on every partition, re-reads exactly
  the uncommitted tail and skips nothing.
* ``test_kcat_balanced``: two ``kcat -G`` balanced consumers split the
  partitions (parsed from kcat's rebalance messages on stderr) and together
  consume every record; both exit 0 on SIGTERM.
* ``test_describe_and_list_groups``: ListGroups / DescribeGroups through
  confluent-kafka's AdminClient agree with what two members report.

Each test starts its own broker with ``group.initial.rebalance.delay.ms=0``
and KIP-848 session timeout 6 s / heartbeat 0.5 s. The classic clients use
``session.timeout.ms=6000`` and ``heartbeat.interval.ms=1000``.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import time
import uuid

import pytest
from confluent_kafka import Producer

from compat_util import api_versions, ck_admin, ck_create_topics, unique_topic, wait_until
from group_worker import WorkerProcess, kafka_python_subscribe

PARTITIONS = 6
SESSION_TIMEOUT_MS = 6000
HEARTBEAT_INTERVAL_MS = 1000
SESSION_S = SESSION_TIMEOUT_MS / 1000

GROUP_OVERRIDES = {
    "group.initial.rebalance.delay.ms": "0",
    "group.consumer.session.timeout.ms": str(SESSION_TIMEOUT_MS),
    "group.consumer.heartbeat.interval.ms": "500",
}

CLIENTS = ["confluent", "confluent-consumer", "kafka-python", "aiokafka"]

JOIN_TIMEOUT_S = 30  # first stable assignment of 3 freshly started members
LEAVE_TIMEOUT_S = SESSION_S + 5  # the bound for a member that leaves
KILL_TIMEOUT_S = SESSION_S + 10  # expiry after the session timeout, then a rebalance

JOIN_GROUP, CONSUMER_GROUP_HEARTBEAT = 11, 68

KCAT = shutil.which("kcat") or "/usr/bin/kcat"


# -- fixtures -----------------------------------------------------------------


@pytest.fixture
def group_broker(broker_factory):
    return broker_factory(GROUP_OVERRIDES)


def require_group_apis(broker, client: str) -> None:
    """Fail (not skip) with a clear message if the broker does not advertise the group APIs."""
    keys = api_versions(broker.bootstrap)
    needed = {JOIN_GROUP: "JoinGroup"}
    if client == "confluent-consumer":
        needed[CONSUMER_GROUP_HEARTBEAT] = "ConsumerGroupHeartbeat"
    missing = [f"{name} (key {k})" for k, name in needed.items() if k not in keys]
    if missing:
        pytest.fail(f"broker does not advertise {', '.join(missing)} in ApiVersions; advertised keys: "
                    f"{sorted(keys)}", pytrace=False)


@pytest.fixture
def workers(tmp_path):
    """``spawn(client, bootstrap, group, topic, name, **kw)`` -> started WorkerProcess; all stopped at teardown."""
    started: list[WorkerProcess] = []

    def spawn(client, bootstrap, group, topic, name, **kw) -> WorkerProcess:
        w = WorkerProcess(client, bootstrap, group, topic, tmp_path / name, name,
                          session_timeout_ms=SESSION_TIMEOUT_MS, heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS, **kw)
        started.append(w)
        return w.start()

    spawn.started = started
    try:
        yield spawn
    finally:
        for w in started:
            w.stop()


def describe_all(ws) -> str:
    return "\n".join(w.describe() for w in ws)


def balanced_cover(ws, partitions=PARTITIONS):
    """The members' reported assignments are disjoint, cover all partitions, and differ in size by at most 1."""
    sets = [w.assignment() for w in ws]
    if any(s is None for s in sets):
        return False
    flat = [p for s in sets for p in s]
    if len(flat) != len(set(flat)) or set(flat) != set(range(partitions)):
        return False
    sizes = [len(s) for s in sets]
    return sets if max(sizes) - min(sizes) <= 1 else False


def produce_numbered(bootstrap: str, topic: str, per_partition: int) -> None:
    """``per_partition`` records on each partition, value ``b"<partition>:<offset>"``."""
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all"})
    errors = []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(err)
        elif msg.value() != f"{msg.partition()}:{msg.offset()}".encode():
            errors.append(f"delivered {msg.value()!r} at {msg.partition()}:{msg.offset()}")

    for part in range(PARTITIONS):
        for i in range(per_partition):
            p.produce(topic, value=f"{part}:{i}".encode(), partition=part, on_delivery=on_delivery)
        p.flush(30)  # one partition at a time, so the offsets in the values are exact
    assert p.flush(30) == 0
    assert not errors, errors[:5]


def new_group(prefix: str) -> str:
    return f"compat-{prefix}-{uuid.uuid4().hex[:8]}"


# -- three members: join, leave, SIGKILL --------------------------------------


@pytest.mark.parametrize("client", CLIENTS)
def test_membership(group_broker, workers, client):
    require_group_apis(group_broker, client)
    boot = group_broker.bootstrap
    topic = unique_topic("grp")
    ck_create_topics(boot, [topic], partitions=PARTITIONS)
    group = new_group(client)

    ws = [workers(client, boot, group, topic, f"{client}-m{i}") for i in range(3)]
    t_start = time.monotonic()
    shares = wait_until(lambda: balanced_cover(ws), JOIN_TIMEOUT_S,
                        f"[{client}] 3 members with disjoint balanced shares of {PARTITIONS} partitions",
                        lambda: describe_all(ws))
    t_stable = time.monotonic() - t_start
    assert sorted(len(s) for s in shares) == [2, 2, 2], shares

    # A member leaves (SIGTERM -> close() -> LeaveGroup / heartbeat with epoch -1).
    leaver, rest = ws[0], ws[1:]
    t0 = time.monotonic()
    leaver.terminate()
    wait_until(lambda: not leaver.alive() and balanced_cover(rest), LEAVE_TIMEOUT_S,
               f"[{client}] after {leaver.name} left, the other two cover all partitions",
               lambda: describe_all(ws))
    t_leave = time.monotonic() - t0
    assert leaver.returncode() == 0, leaver.describe()
    assert (leaver.status() or {}).get("phase") == "closed", leaver.describe()
    assert sorted(len(a) for a in (w.assignment() for w in rest)) == [3, 3]

    # A member dies (SIGKILL: no LeaveGroup); the broker must expire it.
    victim, survivor = rest
    t1 = time.monotonic()
    victim.kill()
    wait_until(lambda: survivor.assignment() == list(range(PARTITIONS)), KILL_TIMEOUT_S,
               f"[{client}] after {victim.name} was SIGKILLed, {survivor.name} owns all partitions",
               lambda: describe_all(ws))
    t_kill = time.monotonic() - t1
    assert survivor.alive(), survivor.describe()
    print(f"\n[{client}] stable with 3 members after {t_stable:.2f}s; leave -> reassigned in {t_leave:.2f}s; "
          f"SIGKILL -> reassigned in {t_kill:.2f}s (session timeout {SESSION_S}s)")


def test_kafka_python_worker_joins_with_metadata_snapshot(group_broker):
    """The kafka-python worker subscribes so that no rebalance is needed for a metadata-snapshot change.

    kafka-python 3.0.12 drops the result of a rejoin that only its metadata snapshot asked for
    when a poll times out during it (``group_worker.kafka_python_subscribe`` explains): the member
    then never heartbeats or rejoins again and the coordinator expires it, which failed
    ``test_membership[kafka-python]`` under load. The trigger is a leader whose first assignment
    was made with an empty metadata snapshot; the worker must have the topic in the snapshot
    before its first JoinGroup, which this checks without any timing.
    """
    from kafka import KafkaConsumer

    require_group_apis(group_broker, "kafka-python")
    boot = group_broker.bootstrap
    topic = unique_topic("grpk")
    ck_create_topics(boot, [topic], partitions=PARTITIONS)
    c = KafkaConsumer(bootstrap_servers=boot, group_id=new_group("kafka-python-snapshot"), client_id="snapshot",
                      enable_auto_commit=False, auto_offset_reset="earliest",
                      session_timeout_ms=SESSION_TIMEOUT_MS, heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS)
    try:
        covered = kafka_python_subscribe(c, topic, None)
        coordinator = c._coordinator  # noqa: SLF001 - the client state this is about
        assert coordinator._generation.generation_id == -1, "no JoinGroup may have been sent yet"
        assert coordinator._metadata_snapshot == {topic: set(range(PARTITIONS))}, (
            "the first JoinGroup would go out with the metadata snapshot "
            f"{coordinator._metadata_snapshot}: a leader assigning with it rejoins once the metadata arrives")
        assert covered

        # The lone member leads the group; its assignment snapshot is the full one, so nothing asks it
        # to rejoin. (It may take two generations: kafka-python also sends a new JoinGroup instead of
        # reading a join task that completed between two polls, but that rejoin has rejoin_needed set
        # and completes on a later poll.)
        def assigned_everything():
            c.poll(timeout_ms=100)
            return sorted(tp.partition for tp in c.assignment()) == list(range(PARTITIONS))

        wait_until(assigned_everything, JOIN_TIMEOUT_S, "the lone kafka-python member gets all partitions",
                   lambda: f"generation {coordinator._generation}")
        assert coordinator._assignment_snapshot == coordinator._metadata_snapshot
        assert not coordinator.need_rejoin()
    finally:
        c.close(autocommit=False)


# -- committed offsets are where a new member resumes -------------------------

PER_PARTITION = 50
STOP_AFTER = 200
COMMIT_EVERY = 7


@pytest.mark.parametrize("client", CLIENTS)
def test_commit_resume(group_broker, workers, client):
    require_group_apis(group_broker, client)
    boot = group_broker.bootstrap
    topic = unique_topic("grpc")
    ck_create_topics(boot, [topic], partitions=PARTITIONS)
    produce_numbered(boot, topic, PER_PARTITION)
    group = new_group(client + "-commit")

    first = workers(client, boot, group, topic, f"{client}-first", stop_after=STOP_AFTER, commit_every=COMMIT_EVERY)
    wait_until(lambda: not first.alive(), 60, f"[{client}] first member consumes {STOP_AFTER} records and exits",
               first.describe)
    s1 = first.state()
    assert first.returncode() == 0, first.describe()
    assert s1["count"] == STOP_AFTER, first.describe()
    assert s1["commit_errors"] == [], first.describe()
    assert s1["commits"] == STOP_AFTER // COMMIT_EVERY, first.describe()
    committed = s1["committed"]  # what the first member's successful synchronous commits said
    tail_expected = STOP_AFTER - (STOP_AFTER // COMMIT_EVERY) * COMMIT_EVERY
    assert committed, first.describe()

    second = workers(client, boot, group, topic, f"{client}-second", commit_every=1)

    def second_done():
        st = second.state()
        # A partition the first member consumed and committed to the end has nothing left to read.
        return st and all(committed.get(p) == PER_PARTITION
                          or (st["consumed"].get(p) and st["consumed"][p][-1][0] >= PER_PARTITION - 1)
                          for p in range(PARTITIONS))

    wait_until(second_done, 60, f"[{client}] second member reaches the end of every partition", second.describe)
    second.terminate()
    assert second.wait(15) == 0, second.describe()
    s2 = second.state()

    problems = []
    reread_total = 0
    for p in range(PARTITIONS):
        c = committed.get(p)
        start = 0 if c is None else c
        read_back = s2["committed_read"].get(p)
        if read_back != c:
            problems.append(f"p{p}: second member's committed() = {read_back}, first member committed {c}")
        got1 = s1["consumed"].get(p, [])
        got2 = s2["consumed"].get(p, [])
        for o, v in got1 + got2:
            if v != f"{p}:{o}":
                problems.append(f"p{p}: record at offset {o} has value {v!r}")
        offs1 = [o for o, _ in got1]
        offs2 = [o for o, _ in got2]
        if offs1 != list(range(len(offs1))):
            problems.append(f"p{p}: first member's offsets not 0..n contiguous: {offs1[:8]}...")
        if start < PER_PARTITION and (not offs2 or offs2[0] != start):
            problems.append(f"p{p}: second member started at {offs2[:1]}, committed offset is {c} "
                            f"(expected start {start})")
        if offs2 != list(range(start, PER_PARTITION)):
            problems.append(f"p{p}: second member's offsets are not exactly {start}..{PER_PARTITION - 1}: "
                            f"first {offs2[:5]} last {offs2[-3:]} n={len(offs2)}")
        reread = sorted(set(offs1) & set(offs2))
        tail = [o for o in offs1 if o >= start]
        if reread != tail:
            problems.append(f"p{p}: re-read {reread}, uncommitted tail was {tail}")
        reread_total += len(reread)
        missing = set(range(PER_PARTITION)) - set(offs1) - set(offs2)
        if missing:
            problems.append(f"p{p}: never consumed: {sorted(missing)[:10]}")
    if reread_total != tail_expected:
        problems.append(f"re-read {reread_total} records in total, the uncommitted tail was {tail_expected}")
    assert not problems, (f"[{client}] committed={committed}\n  " + "\n  ".join(problems)
                          + "\n" + describe_all([first, second]))


# -- kcat -G ------------------------------------------------------------------

KCAT_EVENT = re.compile(r"% Group (\S+) rebalanced \(memberid ([^)]*)\): (assigned|revoked): ?(.*)")


def _kcat_assignment(stderr_path, topic):
    """Current assignment from kcat's "% Group ... rebalanced ... assigned:/revoked:" lines (None before any)."""
    try:
        text = stderr_path.read_text(errors="replace")
    except FileNotFoundError:
        return None
    owned = None
    part_re = re.compile(re.escape(topic) + r" ?\[(\d+)\]")
    for line in text.splitlines():
        m = KCAT_EVENT.search(line)
        if not m:
            continue
        parts = {int(x) for x in part_re.findall(m.group(4))}
        owned = owned or set()
        if m.group(3) == "assigned":
            owned |= parts
        else:
            owned -= parts
    return owned


def _kcat_consumed(stdout_path) -> set[tuple[int, int]]:
    try:
        lines = stdout_path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return set()
    return {(int(p), int(o)) for p, o in (ln.split(":") for ln in lines if ln.count(":") == 1)}


KCAT_PER_PARTITION = 5


def test_kcat_balanced(group_broker, tmp_path):
    require_group_apis(group_broker, "kcat")
    boot = group_broker.bootstrap
    topic = unique_topic("grpk")
    ck_create_topics(boot, [topic], partitions=PARTITIONS)
    produce_numbered(boot, topic, KCAT_PER_PARTITION)
    group = new_group("kcat")
    procs = []  # (Popen, stderr path, stdout path)
    handles = []
    try:
        for i in range(2):
            err = tmp_path / f"kcat{i}.stderr"
            out = tmp_path / f"kcat{i}.stdout"
            # -u: unbuffered stdout (kcat block-buffers a file otherwise, so nothing shows until exit)
            cmd = [KCAT, "-b", boot, "-G", group, "-u", "-o", "beginning", "-f", "%p:%o\\n",
                   "-X", f"session.timeout.ms={SESSION_TIMEOUT_MS}",
                   "-X", f"heartbeat.interval.ms={HEARTBEAT_INTERVAL_MS}", topic]
            fo, fe = open(out, "wb"), open(err, "wb")
            handles += [fo, fe]
            procs.append((subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=fo, stderr=fe), err, out))

        def describe():
            return "\n".join(f"kcat{i} rc={p.poll()} stderr:\n{e.read_text(errors='replace')[-3000:]}"
                             for i, (p, e, _) in enumerate(procs))

        everything = {(p, o) for p in range(PARTITIONS) for o in range(KCAT_PER_PARTITION)}

        def split():
            sets = [_kcat_assignment(e, topic) for _, e, _ in procs]
            if any(not s for s in sets):
                return False
            a, b = sets
            if a & b or a | b != set(range(PARTITIONS)):
                return False
            # Every record was consumed by one of them (at least once: kcat auto-commits every 5 s,
            # so records consumed before a rebalance may be read again by the new owner).
            consumed = set().union(*(_kcat_consumed(o) for _, _, o in procs))
            return (a, b) if consumed >= everything else False

        a, b = wait_until(split, JOIN_TIMEOUT_S, "two kcat -G instances split the partitions and consume all records",
                          describe)
        assert sorted([len(a), len(b)]) == [3, 3], (a, b)
        for p, _, _ in procs:
            assert p.poll() is None, describe()
    finally:
        for p, _, _ in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p, _, _ in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
        for h in handles:
            h.close()
    for i, (p, e, _) in enumerate(procs):
        assert p.returncode == 0, f"kcat{i} exited {p.returncode} after SIGTERM:\n{e.read_text(errors='replace')[-2000:]}"


# -- ListGroups / DescribeGroups ----------------------------------------------


def test_describe_and_list_groups(group_broker, workers):
    from confluent_kafka import ConsumerGroupState

    require_group_apis(group_broker, "confluent")
    boot = group_broker.bootstrap
    topic = unique_topic("grpd")
    ck_create_topics(boot, [topic], partitions=PARTITIONS)
    group = new_group("describe")
    ws = [workers("confluent", boot, group, topic, f"describe-m{i}") for i in range(2)]
    wait_until(lambda: balanced_cover(ws), JOIN_TIMEOUT_S, "2 members share the partitions", lambda: describe_all(ws))

    admin = ck_admin(boot)
    listed = admin.list_consumer_groups(request_timeout=20).result(30)
    ids = {g.group_id: g for g in listed.valid}
    assert group in ids, f"ListGroups: {group} not in {sorted(ids)} (errors {listed.errors})"
    assert ids[group].state == ConsumerGroupState.STABLE, ids[group].state

    desc = admin.describe_consumer_groups([group], request_timeout=20)[group].result(30)
    assert desc.state == ConsumerGroupState.STABLE, desc
    assert desc.is_simple_consumer_group is False
    assert desc.partition_assignor in ("range", "roundrobin"), desc.partition_assignor
    by_client = {m.client_id: m for m in desc.members}
    assert sorted(by_client) == sorted(w.name for w in ws), desc.members
    for w in ws:
        m = by_client[w.name]
        parts = sorted(tp.partition for tp in m.assignment.topic_partitions if tp.topic == topic)
        assert parts == w.assignment(), f"DescribeGroups says {w.name} owns {parts}; it reports {w.assignment()}"
        assert m.member_id == w.assignment_report()["member_id"], (m.member_id, w.assignment_report())
