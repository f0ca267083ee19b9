"""Transactional producers with real clients (issue 6, "Show" items 2 and 5).

``test_commit_abort_commit`` (confluent-kafka's transactional API, aiokafka's
and kafka-python's transactional producers): three transactions over 3 partitions of 2
topics (``A`` with 2 partitions, ``B`` with 1), each also committing a consumer
offset of a source topic for a group (``send_offsets_to_transaction``):

1. commit: 3 records per partition, group offset 10;
2. abort: 4 records per partition, group offset 20;
3. commit: 2 records per partition, group offset 30.

Each transaction end writes one control record (marker) per partition, so
every partition must read ``c1 c1 c1 [C] a2 a2 a2 a2 [A] c3 c3 [C]`` at offsets
0-11. Checked with both confluent-kafka's and aiokafka's consumers:

* ``read_committed`` delivers exactly the records of transactions 1 and 3, at
  offsets 0-2 and 9-10; ``read_uncommitted`` delivers all 9 data records
  (aborted ones included) at 0-2, 4-7, 9-10. The gaps at 3, 8 and 11 are the
  markers: control records are never delivered to the application, and the
  record counts match exactly;
* while transaction 3 is open, ``read_committed`` stops at its first offset
  (the last stable offset, 9) while ``read_uncommitted`` already sees 9-10;
* the producer's delivery reports give the same offsets;
* the group's committed offset (OffsetFetch) is unset while transaction 1 is
  open, 10 after its commit, still 10 after transaction 2's abort (also while
  it is open), and 30 after transaction 3; while a transaction with an offset
  commit is open, OffsetFetch with ``require_stable`` answers
  UNSTABLE_OFFSET_COMMIT.

``test_zombie_fenced``: producer 1 begins a transaction and
writes records; producer 2 with the same ``transactional.id`` calls
``init_transactions``, which fences producer 1 and aborts its transaction.
Producer 1 then either produces once more and commits, or commits at once
(EndTxn with the old epoch): the first refusal is a fencing error, and the
commit fails; none of its records is visible to ``read_committed`` and its late
record is not in the log at all; producer 2's committed records are visible.
With confluent-kafka, aiokafka and kafka-python as both producers; kafka-python
answers the refused late produce with a KIP-360 epoch bump that, as in Apache
Kafka, may abort producer 2's transaction too (see the comment in the test).

``test_transaction_timeout_aborts`` (confluent-kafka, broker checking for
expired transactions every 200 ms): a producer with ``transaction.timeout.ms``
2000 writes 5 records in a transaction and goes quiet; the coordinator aborts
it (the read_committed end offset moves past the abort marker to 6), the
records stay invisible to ``read_committed``, and the producer's late commit
fails.

``test_interleaved_transactions``: 4 confluent-kafka transactional producers at
once over the same 3 partitions, a third of their transactions aborted, while a
read_committed consumer tails the topic, steady or with the broker SIGKILLed and
restarted half-way: every read_committed reader gets exactly the committed
records in each producer's order; read_uncommitted gets all.

``test_transactions_through_connection_cuts`` (each client): 20 transactions
through the proxy cutting every 3rd Produce / AddPartitionsToTxn /
AddOffsetsToTxn / EndTxn / TxnOffsetCommit request between forwarding it and
answering it: exactly the committed records are visible, in order, and the
group offset is the last committed transaction's.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, KafkaError, KafkaException, Producer, TopicPartition

from compat_util import ck_admin, ck_create_topics, unique_topic, wait_until
from eos_util import aio_read_all, ck_read_all
from eos_worker import CLIENT_COMMON

TXN_TIMEOUT_MS = 60_000
OP_TIMEOUT_S = 30
FENCING_CODES = {KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH}

# An exception escaping a client thread fails the test with its traceback, instead of a warning and a
# misleading assertion on what the thread had collected so far.
pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")


@pytest.fixture(autouse=True)
def _lodestream_only(broker_kind):
    if broker_kind != "lodestream":
        pytest.skip("transactions are not implemented by the comparison broker")


class CkTxnProducer:
    """confluent-kafka's transactional API, one call per step."""

    def __init__(self, bootstrap: str, transactional_id: str):
        self.bootstrap = bootstrap
        self.delivery_errors: list = []
        # CLIENT_COMMON: no re-bootstrap (librdkafka#5511: after one, which a dropped connection to the only
        # broker triggers, send_offsets_to_transaction hangs) and short reconnect backoffs (the default
        # grows to 10 s, which a run of dropped connections reaches)
        self.p = Producer({"bootstrap.servers": bootstrap, "transactional.id": transactional_id,
                           "transaction.timeout.ms": TXN_TIMEOUT_MS, "linger.ms": 1, **CLIENT_COMMON})
        self.p.init_transactions(OP_TIMEOUT_S)

    def begin(self) -> None:
        self.p.begin_transaction()

    def produce(self, topic: str, partition: int, values: list[bytes]) -> list[int]:
        """Produce and wait for the delivery reports; the offsets, in order."""
        offsets: list[int] = []

        def on_delivery(err, msg):
            if err is not None:
                self.delivery_errors.append(err)
            else:
                offsets.append(msg.offset())

        for v in values:
            self.p.produce(topic, value=v, partition=partition, on_delivery=on_delivery)
        try:
            remaining = self.p.flush(OP_TIMEOUT_S)
        except SystemError:
            # confluent-kafka now and then loses the exception flush raises for a fatal error (SystemError
            # "returned NULL without setting an exception", seen once in CI for a fenced producer); the
            # delivery reports still carry the error itself.
            if not self.delivery_errors:
                raise
            raise KafkaException(self.delivery_errors[0]) from None
        assert remaining == 0, "flush timed out"
        assert not self.delivery_errors, self.delivery_errors
        return offsets

    def send_offsets(self, group: str, topic: str, partition: int, offset: int) -> None:
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": group})
        try:
            self.p.send_offsets_to_transaction([TopicPartition(topic, partition, offset)],
                                               c.consumer_group_metadata(), OP_TIMEOUT_S)
        finally:
            c.close()

    def commit(self) -> None:
        self.p.commit_transaction(OP_TIMEOUT_S)

    def abort(self) -> None:
        self.p.abort_transaction(OP_TIMEOUT_S)

    def close(self) -> None:
        self.p.flush(5)


class AioTxnProducer:
    """aiokafka's transactional producer driven from sync code on a private event loop."""

    def __init__(self, bootstrap: str, transactional_id: str):
        from aiokafka import AIOKafkaProducer

        self.loop = asyncio.new_event_loop()

        async def make():
            p = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=transactional_id,
                                 enable_idempotence=True, transaction_timeout_ms=TXN_TIMEOUT_MS,
                                 request_timeout_ms=30000)
            await p.start()
            return p

        self.p = self._run(make())

    def _run(self, coro):
        return self.loop.run_until_complete(asyncio.wait_for(coro, OP_TIMEOUT_S))

    def begin(self) -> None:
        self._run(self.p.begin_transaction())

    def produce(self, topic: str, partition: int, values: list[bytes]) -> list[int]:
        async def send_all():
            futs = [await self.p.send(topic, value=v, partition=partition) for v in values]
            return [(await f).offset for f in futs]

        return self._run(send_all())

    def send_offsets(self, group: str, topic: str, partition: int, offset: int) -> None:
        from aiokafka import TopicPartition as AioTP

        self._run(self.p.send_offsets_to_transaction({AioTP(topic, partition): offset}, group))

    def commit(self) -> None:
        self._run(self.p.commit_transaction())

    def abort(self) -> None:
        self._run(self.p.abort_transaction())

    def close(self) -> None:
        try:
            self._run(self.p.stop())
        finally:
            self.loop.close()


class KpTxnProducer:
    """kafka-python's transactional producer."""

    def __init__(self, bootstrap: str, transactional_id: str):
        from kafka import KafkaProducer

        self.p = KafkaProducer(bootstrap_servers=bootstrap, transactional_id=transactional_id,
                               transaction_timeout_ms=TXN_TIMEOUT_MS, request_timeout_ms=30000)
        self.p.init_transactions()

    def begin(self) -> None:
        self.p.begin_transaction()

    def produce(self, topic: str, partition: int, values: list[bytes]) -> list[int]:
        futures = [self.p.send(topic, value=v, partition=partition) for v in values]
        self.p.flush(timeout=OP_TIMEOUT_S)
        return [f.get(timeout=OP_TIMEOUT_S).offset for f in futures]

    def send_offsets(self, group: str, topic: str, partition: int, offset: int) -> None:
        from kafka import TopicPartition as KpTP
        from kafka.structs import OffsetAndMetadata

        self.p.send_offsets_to_transaction({KpTP(topic, partition): OffsetAndMetadata(offset, "", -1)}, group)

    def commit(self) -> None:
        self.p.commit_transaction()

    def abort(self) -> None:
        self.p.abort_transaction()

    def close(self) -> None:
        self.p.close(timeout=10)


PRODUCERS = {"confluent": CkTxnProducer, "aiokafka": AioTxnProducer, "kafka-python": KpTxnProducer}
READERS = {"confluent": ck_read_all, "aiokafka": aio_read_all}


def _group_offset(bootstrap: str, group: str, topic: str, partition: int, *, require_stable: bool):
    """The group's committed offset through OffsetFetch (confluent-kafka's AdminClient):
    ``(offset or None, error code or None)``."""
    admin = ck_admin(bootstrap)
    futures = admin.list_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(group, [TopicPartition(topic, partition)])],
        require_stable=require_stable, request_timeout=OP_TIMEOUT_S)
    (tp,) = futures[group].result(timeout=OP_TIMEOUT_S).topic_partitions
    return (tp.offset if tp.offset >= 0 else None), (tp.error.code() if tp.error is not None else None)


def _check_reads(bootstrap: str, topics: dict[str, int], expected: dict[str, dict[str, dict[int, list]]]) -> None:
    """``expected[isolation][topic][partition]`` = [(offset, value), ...]; read with both clients."""
    for reader_name, read in READERS.items():
        for isolation, per_topic in expected.items():
            for topic, nparts in topics.items():
                got = read(bootstrap, topic, range(nparts), isolation=isolation)
                got = {p: [(off, v) for off, _k, v in recs] for p, recs in got.items()}
                assert got == per_topic[topic], f"{reader_name} {isolation} read of {topic}"


@pytest.mark.parametrize("client", list(PRODUCERS))
def test_commit_abort_commit(broker, client):
    topic_a, topic_b, source = unique_topic(f"txn-{client}-a"), unique_topic(f"txn-{client}-b"), unique_topic("txn-src")
    topics = {topic_a: 2, topic_b: 1}
    for name, n in topics.items():
        ck_create_topics(broker.bootstrap, [name], partitions=n)
    ck_create_topics(broker.bootstrap, [source], partitions=1)
    group = unique_topic(f"txn-{client}-group")
    targets = [(topic_a, 0), (topic_a, 1), (topic_b, 0)]

    def values(tag: str, n: int, t: str, p: int) -> list[bytes]:
        return [f"{tag}-{t[-4:]}-{p}-{i}".encode() for i in range(n)]

    txns = [("c1", 3, 10, True), ("a2", 4, 20, False), ("c3", 2, 30, True)]
    # expected offsets per partition: data records then one marker per transaction
    layout: dict[str, list[int]] = {}  # per transaction: the offsets of its records in every partition
    next_off = 0
    for tag, n, _, _ in txns:
        layout[tag] = list(range(next_off, next_off + n))
        next_off += n + 1  # + the marker
    high_watermark = next_off

    def expect(tags) -> dict[str, dict[int, list]]:
        out: dict[str, dict[int, list]] = {t: {} for t in topics}
        for t, p in targets:
            out[t][p] = [(off, v) for tag, n, _, _ in txns if tag in tags
                         for off, v in zip(layout[tag], values(tag, n, t, p))]
        return out

    producer = PRODUCERS[client](broker.bootstrap, unique_topic(f"txn-{client}-id"))
    try:
        for tag, n, group_offset, commit in txns:
            producer.begin()
            for t, p in targets:
                offsets = producer.produce(t, p, values(tag, n, t, p))
                assert offsets == layout[tag], f"{tag}: delivery offsets on {t}[{p}]"
            producer.send_offsets(group, source, 0, group_offset)
            stable = None if tag == "c1" else 10
            before = _group_offset(broker.bootstrap, group, source, 0, require_stable=False)
            assert before == (stable, None), f"{tag}: group offset visible before the transaction ended"
            pending = _group_offset(broker.bootstrap, group, source, 0, require_stable=True)
            assert pending[1] == KafkaError.UNSTABLE_OFFSET_COMMIT, f"{tag}: require_stable while pending: {pending}"
            if tag == "c3":
                # the open transaction holds read_committed back at its first offset (the LSO)
                _check_reads(broker.bootstrap, topics, {"read_committed": expect({"c1"}),
                                                        "read_uncommitted": expect({"c1", "a2", "c3"})})
            if commit:
                producer.commit()
            else:
                producer.abort()
            for require_stable in (False, True):
                after = _group_offset(broker.bootstrap, group, source, 0, require_stable=require_stable)
                assert after == (group_offset if commit else 10, None), f"{tag}: group offset after the end"
    finally:
        producer.close()

    _check_reads(broker.bootstrap, topics, {"read_committed": expect({"c1", "c3"}),
                                            "read_uncommitted": expect({"c1", "a2", "c3"})})
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group})
    try:
        for t, p in targets:
            lo, hi = c.get_watermark_offsets(TopicPartition(t, p), timeout=OP_TIMEOUT_S)
            assert (lo, hi) == (0, high_watermark), f"{t}[{p}]: the three markers take one offset each"
    finally:
        c.close()


FENCING_ERROR_NAMES = {"ProducerFenced", "ProducerFencedError", "InvalidProducerEpoch", "InvalidProducerEpochError"}


def _fencing_error(exc: BaseException) -> str | None:
    """How ``exc`` reports fencing (confluent-kafka: a fatal _FENCED / PRODUCER_FENCED /
    INVALID_PRODUCER_EPOCH; aiokafka and kafka-python: their ProducerFenced / InvalidProducerEpoch
    errors, possibly as the cause of a state error), or None if it does not."""
    if isinstance(exc, KafkaException):
        err = exc.args[0]
        return str(err) if err.fatal() and err.code() in FENCING_CODES else None
    chain = [exc, exc.__cause__, exc.__context__]
    return repr(exc) if any(e is not None and type(e).__name__ in FENCING_ERROR_NAMES for e in chain) else None


@pytest.mark.parametrize("late", ["produce", "commit"])
@pytest.mark.parametrize("client", list(PRODUCERS))
def test_zombie_fenced(broker, client, late):
    topic = unique_topic("txn-zombie")
    ck_create_topics(broker.bootstrap, [topic], partitions=2)
    txn_id = unique_topic("txn-zombie-id")

    # kafka-python answers the INVALID_PRODUCER_EPOCH of its late produce with a KIP-360 epoch bump:
    # InitProducerId carrying its old producer id and epoch. The producer id is the current one, so, as
    # in Apache Kafka's coordinator (prepareInitProducerIdTransit: the Ongoing state fences before any
    # epoch check), that aborts the successor's open transaction and bumps the epoch past both: the
    # successor's commit is fenced too, and nothing at all becomes visible. (The bump is sent by
    # kafka-python's sender thread; if the successor's commit gets there first, it commits, and the
    # bump is refused: both outcomes are checked for consistency.)
    zombie_bumps = client == "kafka-python" and late == "produce"
    zombie = PRODUCERS[client](broker.bootstrap, txn_id)
    successor = None
    try:
        zombie.begin()
        for p in range(2):
            assert zombie.produce(topic, p, [b"zombie-%d-%d" % (p, i) for i in range(5)]) == list(range(5))

        successor = PRODUCERS[client](broker.bootstrap, txn_id)  # init_transactions fences the zombie
        successor.begin()
        for p in range(2):
            # offset 5 is the abort marker of the zombie's transaction
            assert successor.produce(topic, p, [b"successor-%d-%d" % (p, i) for i in range(3)]) == [6, 7, 8]

        # The zombie, still believing in its transaction, either produces once more (the broker refuses
        # the old epoch) and then commits, or commits straight away (EndTxn with the old epoch).
        errors: list[BaseException] = []
        if late == "produce":
            with pytest.raises(Exception) as excinfo:
                zombie.produce(topic, 0, [b"zombie-late"])
            errors.append(excinfo.value)
        with pytest.raises(Exception) as excinfo:
            zombie.commit()
        errors.append(excinfo.value)
        print(f"\nzombie ({client}, {late}): {[repr(e) for e in errors]}")
        # The first refusal is a fencing error; after it a client may also fail the commit with a state
        # error of its own (kafka-python: "Invalid transition ... BUMPING_PRODUCER_EPOCH").
        assert _fencing_error(errors[0]), f"the fenced producer's {late}: {errors[0]!r} (cause {errors[0].__cause__!r})"

        try:
            successor.commit()
            successor_committed = True
        except Exception as e:
            if not zombie_bumps:
                raise
            assert _fencing_error(e), f"successor after the zombie's epoch bump: {e!r}"
            successor_committed = False
    finally:
        for producer in (successor, zombie):
            if producer is not None:
                try:
                    producer.close()
                except Exception:
                    pass  # the zombie may refuse even that

    committed = ck_read_all(broker.bootstrap, topic, range(2), isolation="read_committed")
    everything = ck_read_all(broker.bootstrap, topic, range(2), isolation="read_uncommitted")
    for p in range(2):
        assert [(o, v) for o, _, v in committed[p]] == (
            [(6 + i, b"successor-%d-%d" % (p, i)) for i in range(3)] if successor_committed else [])
        assert [(o, v) for o, _, v in everything[p]] == (
            [(i, b"zombie-%d-%d" % (p, i)) for i in range(5)] + [(6 + i, b"successor-%d-%d" % (p, i)) for i in range(3)])


def test_transaction_timeout_aborts(broker_factory):
    """A producer that opens a transaction, writes and then goes quiet past ``transaction.timeout.ms``:
    the coordinator aborts the transaction by itself (abort marker, LSO moves past it), nothing of it
    becomes visible to read_committed, and the producer's late commit fails."""
    b = broker_factory({"transaction.abort.timed.out.transaction.cleanup.interval.ms": "200"})
    topic = unique_topic("txn-timeout")
    ck_create_topics(b.bootstrap, [topic], partitions=1)
    producer = Producer({"bootstrap.servers": b.bootstrap, "transactional.id": unique_topic("txn-timeout-id"),
                         "transaction.timeout.ms": 2000, "linger.ms": 1})
    producer.init_transactions(OP_TIMEOUT_S)
    producer.begin_transaction()
    for i in range(5):
        producer.produce(topic, value=b"doomed-%d" % i, partition=0)
    assert producer.flush(OP_TIMEOUT_S) == 0

    reader = Consumer({"bootstrap.servers": b.bootstrap, "group.id": unique_topic("txn-timeout-reader"),
                       "isolation.level": "read_committed"})
    try:
        # 5 records and the coordinator's abort marker: the last stable offset reaches 6
        started = time.monotonic()
        wait_until(lambda: reader.get_watermark_offsets(TopicPartition(topic, 0), timeout=5)[1] == 6, 30,
                   "the coordinator aborts the timed-out transaction")
        print(f"\ntimed-out transaction aborted {time.monotonic() - started:.1f}s after its last write")
    finally:
        reader.close()
    with pytest.raises(KafkaException) as excinfo:
        producer.commit_transaction(OP_TIMEOUT_S)
    print(f"late commit: {excinfo.value.args[0]}")

    assert ck_read_all(b.bootstrap, topic, [0], isolation="read_committed") == {0: []}
    assert [v for _, _, v in ck_read_all(b.bootstrap, topic, [0], isolation="read_uncommitted")[0]] == [
        b"doomed-%d" % i for i in range(5)]


INTERLEAVED_PRODUCERS = 4
INTERLEAVED_TXNS = 25
INTERLEAVED_RECORDS = 20


def _end_transaction(producer: CkTxnProducer, commit: bool, deadline: float) -> tuple[bool, int]:
    """Commit or abort, following librdkafka's rules: retry a retriable error, abort when the commit
    says the transaction must be aborted. Returns (committed, retries)."""
    retries = 0
    while True:
        try:
            if commit:
                producer.commit()
            else:
                producer.abort()
            return commit, retries
        except KafkaException as e:
            err = e.args[0]
            if err.retriable() and time.monotonic() < deadline:
                retries += 1
            elif commit and err.txn_requires_abort():
                commit = False
            else:
                raise


@pytest.mark.parametrize("kill", [False, True], ids=["steady", "broker-kill"])
def test_interleaved_transactions(proxied_broker, kill):
    """4 transactional producers (confluent-kafka, one thread each) run 25 transactions of 20 records
    each over the same 3 partitions at the same time, aborting about a third (seeded), so open, committed
    and aborted transactions of different producers interleave in every partition's log. A read_committed
    consumer tails the topic meanwhile (at the last stable offset, while transactions are open). With
    ``broker-kill``, the broker is SIGKILLed and restarted once half the transactions are done (several
    are open then); the producers and the consumer carry on through the proxy, retrying as librdkafka
    says (a commit that must be aborted counts as aborted). Then: read_committed (confluent-kafka in
    16 KiB fetches, and aiokafka) delivers exactly the committed records, each producer's in the order
    it wrote them, and the live consumer got the same; read_uncommitted delivers every record."""
    import random
    import threading

    pb = proxied_broker()
    topic = unique_topic("txn-interleaved")
    ck_create_topics(pb.bootstrap, [topic], partitions=3)
    outcomes: dict[int, list[tuple[bool, list[tuple[int, bytes]]]]] = {}
    failures: list[str] = []
    retries = [0]

    def run(n: int) -> None:
        rng = random.Random(1000 + n)
        producer = CkTxnProducer(pb.bootstrap, unique_topic(f"txn-interleaved-{n}"))
        mine: list[tuple[bool, list[tuple[int, bytes]]]] = []
        outcomes[n] = mine
        try:
            for t in range(INTERLEAVED_TXNS):
                producer.begin()
                records = [(rng.randrange(3), b"%d:%d:%d" % (n, t, i)) for i in range(INTERLEAVED_RECORDS)]
                for p, v in records:
                    producer.p.produce(topic, value=v, partition=p)
                producer.p.flush(OP_TIMEOUT_S)
                committed, r = _end_transaction(producer, rng.random() >= 1 / 3, time.monotonic() + 120)
                retries[0] += r
                mine.append((committed, records))
        except Exception as e:  # reported by the main thread
            failures.append(f"producer {n}: {e!r}")
        finally:
            producer.close()

    live: dict[int, list[bytes]] = {p: [] for p in range(3)}
    done = threading.Event()

    def tail() -> None:
        # CLIENT_COMMON as for the producers: without it the consumer re-bootstraps when the broker
        # is killed (the only broker drops) and, with the default reconnect backoff of up to 10 s,
        # may not be connected again when the producers are done.
        c = Consumer({"bootstrap.servers": pb.bootstrap, "group.id": unique_topic("txn-tail"),
                      "isolation.level": "read_committed", "enable.auto.commit": False,
                      "auto.offset.reset": "earliest", **CLIENT_COMMON})
        try:
            c.assign([TopicPartition(topic, p, 0) for p in range(3)])
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                finished = done.is_set()
                got = c.consume(num_messages=1000, timeout=0.2)
                for m in got:
                    if m.error() is None:
                        live[m.partition()].append(m.value())
                if finished and not got:
                    try:
                        ends = [c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(3)]
                    except KafkaException:  # not connected again yet (e.g. _UNKNOWN_PARTITION): keep consuming
                        continue
                    positions = [tp.offset for tp in c.position([TopicPartition(topic, p) for p in range(3)])]
                    if positions == ends:
                        return
            failures.append("the live read_committed consumer did not reach the end")
        except Exception as e:  # reported by the main thread, not lost as a thread warning
            failures.append(f"live consumer: {e!r}")
        finally:
            c.close()

    tailer = threading.Thread(target=tail)
    tailer.start()
    workers = [threading.Thread(target=run, args=(n,)) for n in range(INTERLEAVED_PRODUCERS)]
    for w in workers:
        w.start()
    if kill:
        half = INTERLEAVED_PRODUCERS * INTERLEAVED_TXNS // 2
        wait_until(lambda: sum(len(v) for v in outcomes.values()) >= half or failures, 120, "half the transactions")
        pb.kill()  # SIGKILL + restart on the same data dir; the proxy follows the new port
    for w in workers:
        w.join(timeout=180)
    done.set()
    tailer.join(timeout=180)
    assert not failures, failures
    assert not any(w.is_alive() for w in workers + [tailer]), "a thread did not finish"

    committed = {p: [] for p in range(3)}
    aborted_count = 0
    for n, txns in outcomes.items():
        for commit, records in txns:
            for p, v in records:
                if commit:
                    committed[p].append(v)
                else:
                    aborted_count += 1

    def check(label: str, got: dict[int, list[bytes]]) -> None:
        for p in range(3):
            assert sorted(got[p]) == sorted(committed[p]), f"{label}: partition {p} holds other records than committed"
            for n in range(INTERLEAVED_PRODUCERS):
                prefix = b"%d:" % n
                mine = [v for v in got[p] if v.startswith(prefix)]
                assert mine == [v for v in committed[p] if v.startswith(prefix)], f"{label}: producer {n} order on {p}"

    small = {"fetch.max.bytes": 65536, "max.partition.fetch.bytes": 16384, "message.max.bytes": 65536}
    check("confluent read_committed", {p: [v for _, _, v in recs] for p, recs in
                                       ck_read_all(pb.bootstrap, topic, range(3), isolation="read_committed",
                                                   **small).items()})
    check("aiokafka read_committed", {p: [v for _, _, v in recs] for p, recs in
                                      aio_read_all(pb.bootstrap, topic, range(3), isolation="read_committed").items()})
    check("live read_committed consumer", live)
    everything = ck_read_all(pb.bootstrap, topic, range(3), isolation="read_uncommitted")
    total = sum(len(v) for v in everything.values())
    assert total == INTERLEAVED_PRODUCERS * INTERLEAVED_TXNS * INTERLEAVED_RECORDS
    print(f"\ninterleaved ({'broker-kill' if kill else 'steady'}): {total} records, {retries[0]} retried ends, {sum(len(v) for v in committed.values())} committed, "
          f"{aborted_count} aborted; transactions committed per producer "
          f"{[sum(c for c, _ in outcomes[n]) for n in range(INTERLEAVED_PRODUCERS)]}")


CUT_TXN_API_KEYS = frozenset({0, 24, 25, 26, 28})  # Produce, AddPartitionsToTxn, AddOffsetsToTxn, EndTxn, TxnOffsetCommit
CUT_TRANSACTIONS = 20


@pytest.mark.parametrize("client", list(PRODUCERS))
def test_transactions_through_connection_cuts(proxied_broker, client):
    """20 transactions (10 records to each of 2 partitions, a group offset, about a third aborted, seeded)
    through the proxy, which cuts the connection on every 3rd Produce / AddPartitionsToTxn /
    AddOffsetsToTxn / EndTxn / TxnOffsetCommit request after forwarding it (alternately after the broker
    answered and right after forwarding), so the client retries requests the broker may already have
    handled: a second EndTxn for a transaction already ended, a second AddPartitionsToTxn, ... Afterwards
    read_committed delivers exactly the committed records in order, read_uncommitted all of them, and the
    group offset is the last committed transaction's."""
    import random

    pb = proxied_broker()
    topic, source = unique_topic(f"txn-cuts-{client}"), unique_topic("txn-cuts-src")
    ck_create_topics(pb.bootstrap, [topic, source], partitions=2)
    group = unique_topic(f"txn-cuts-{client}-group")
    producer = PRODUCERS[client](pb.bootstrap, unique_topic(f"txn-cuts-{client}-id"))
    rng = random.Random(7)
    committed: dict[int, list[bytes]] = {0: [], 1: []}
    written = 0
    last_committed_offset = None
    pb.proxy.cut_api_keys = CUT_TXN_API_KEYS
    pb.proxy.cut_every = 3
    try:
        for t in range(CUT_TRANSACTIONS):
            producer.begin()
            records = {p: [b"%d-%d-%d" % (t, p, i) for i in range(10)] for p in range(2)}
            for p in range(2):
                producer.produce(topic, p, records[p])
            written += 20
            producer.send_offsets(group, source, 0, t + 1)
            if rng.random() < 1 / 3:
                producer.abort()
            else:
                producer.commit()
                for p in range(2):
                    committed[p] += records[p]
                last_committed_offset = t + 1
    finally:
        pb.proxy.cut_every = 0
        producer.close()
    cuts = Counter(api_key for _mode, api_key, _corr in pb.proxy.cuts)
    print(f"\ntransactions through cuts ({client}): {CUT_TRANSACTIONS} transactions, "
          f"{sum(len(v) for v in committed.values())} of {written} records committed; cuts by API key {dict(cuts)}")
    assert {26, 28, 24} <= set(cuts), f"not every transactional API was cut: {dict(cuts)}"

    got = ck_read_all(pb.bootstrap, topic, range(2), isolation="read_committed")
    assert {p: [v for _, _, v in got[p]] for p in range(2)} == committed
    everything = ck_read_all(pb.bootstrap, topic, range(2), isolation="read_uncommitted")
    assert sum(len(v) for v in everything.values()) == written
    assert _group_offset(pb.bootstrap, group, source, 0, require_stable=True) == (last_committed_offset, None)
