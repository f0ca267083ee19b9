"""The Jepsen-style workload: idempotent and transactional producers and read_committed consumers
(confluent-kafka, in threads) against a KRaftCluster, while a nemesis SIGKILLs partition leaders, pauses
brokers with SIGSTOP and cuts nodes off the network; then a final read, and the history for
kafka_history.check. `run` is what tests/test_jepsen.py (short) and bench/jepsen.py (long) call."""

from __future__ import annotations

import random
import signal
import threading
import time
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from kafka_history import History, Send

TOPIC = "jepsen"


@dataclass
class Settings:
    seconds: float = 60.0
    partitions: int = 4
    idempotent_producers: int = 2
    transactional_producers: int = 2
    consumers: int = 2
    fault_every: tuple[float, float] = (10.0, 20.0)  # seconds between faults
    fault_for: tuple[float, float] = (2.0, 5.0)  # how long a pause or a partition lasts, or a killed broker stays down
    faults: tuple[str, ...] = ("kill-leader", "pause", "partition")
    seed: int = 0
    send_interval_s: float = 0.005


@dataclass
class Run:
    history: History = field(default_factory=History)
    faults: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)

    def record(self, send: Send) -> None:
        with self.lock:
            self.history.sends.append(send)


def run(cluster, settings: Settings) -> Run:
    rng = random.Random(settings.seed)
    bootstrap = cluster.bootstrap()
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(TOPIC, settings.partitions, 3, config={"min.insync.replicas": "2"})],
                        operation_timeout=30)[TOPIC].result(60)
    _wait(lambda: all(len(state[1]) == 3 for state in cluster.partition_state(cluster.ids[0], TOPIC).values()),
          60, "every partition with three in-sync replicas")
    state = Run()
    threads = [threading.Thread(target=_idempotent, args=(state, bootstrap, settings, f"p{i}", rng.random()))
               for i in range(settings.idempotent_producers)]
    threads += [threading.Thread(target=_transactional, args=(state, bootstrap, settings, f"t{i}", rng.random()))
                for i in range(settings.transactional_producers)]
    threads += [threading.Thread(target=_consume, args=(state, bootstrap, settings, f"c{i}"))
                for i in range(settings.consumers)]
    for thread in threads:
        thread.start()
    try:
        _nemesis(cluster, state, settings, rng)
    finally:
        state.stop.set()
        for thread in threads:
            thread.join(timeout=120)
        _recover(cluster)
    _final_read(state, bootstrap, settings)
    return state


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.1)  # poll interval inside a deadline loop
    return value


# -- clients ---------------------------------------------------------------------------------------------

def _idempotent(state: Run, bootstrap: str, settings: Settings, name: str, seed: float) -> None:
    rng = random.Random(seed)
    config = {"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 2,
              "message.timeout.ms": 30000, "topic.metadata.refresh.interval.ms": 1000}
    producer = Producer(config)
    counter = 0

    def delivered(send: Send):
        def report(err, msg):
            if err is None:
                send.status, send.offset = "ok", msg.offset()
            # A failed delivery may still have been written (a timeout, NOT_ENOUGH_REPLICAS_AFTER_APPEND):
            # it stays "info", never "fail".
        return report

    while not state.stop.is_set():
        key = rng.randrange(settings.partitions)
        send = Send(name, key, f"{name}-{counter}", "info")
        counter += 1
        state.record(send)
        try:
            producer.produce(TOPIC, send.value.encode(), partition=key, on_delivery=delivered(send))
            producer.poll(settings.send_interval_s)
        except BufferError:
            producer.poll(0.1)
        except KafkaException as exc:  # a fatal idempotence error: a new producer (a new producer id)
            state.faults.append(f"{name}: fatal producer error {exc}")
            producer = Producer(config)
    try:
        producer.flush(60)
    except KafkaException:
        pass


def _transactional(state: Run, bootstrap: str, settings: Settings, name: str, seed: float) -> None:
    rng = random.Random(seed)
    config = {"bootstrap.servers": bootstrap, "transactional.id": name, "acks": "all", "linger.ms": 2,
              "transaction.timeout.ms": 20000, "message.timeout.ms": 20000,
              "topic.metadata.refresh.interval.ms": 1000}
    producer = None
    counter = 0
    while not state.stop.is_set():
        if producer is None:
            producer = Producer(config)
            try:
                producer.init_transactions(30)
            except KafkaException:
                producer = None
                time.sleep(0.5)
                continue
        sends = []
        offsets: dict[str, int] = {}

        def report(err, msg):
            if err is None:
                offsets[msg.value().decode()] = msg.offset()

        try:
            producer.begin_transaction()
            for _ in range(rng.randint(1, 4)):
                send = Send(name, rng.randrange(settings.partitions), f"{name}-{counter}", "info")
                counter += 1
                sends.append(send)
                state.record(send)
                producer.produce(TOPIC, send.value.encode(), partition=send.key, on_delivery=report)
            producer.flush(20)
            if rng.random() < 0.2:
                producer.abort_transaction(20)
                outcome = "fail"
            else:
                producer.commit_transaction(20)
                outcome = "ok"
        except KafkaException as exc:
            error = exc.args[0]
            outcome = "info"
            try:
                if error.txn_requires_abort():
                    producer.abort_transaction(20)
                    outcome = "fail"
                elif not error.retriable():
                    producer = None  # fatal (fenced, ...): a new producer fences the old epoch
            except KafkaException:
                producer = None
        for send in sends:
            send.offset = offsets.get(send.value)
            send.status = outcome
        time.sleep(settings.send_interval_s)


def _consume(state: Run, bootstrap: str, settings: Settings, name: str) -> None:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"jepsen-{name}", "enable.auto.commit": False,
                         "isolation.level": "read_committed", "auto.offset.reset": "earliest",
                         "topic.metadata.refresh.interval.ms": 1000})
    consumer.assign([TopicPartition(TOPIC, p, 0) for p in range(settings.partitions)])
    try:
        while not state.stop.is_set():
            message = consumer.poll(0.2)
            if message is None or message.error() is not None:
                continue
            with state.lock:
                state.history.read(name, message.partition(), message.offset(), message.value().decode())
    finally:
        consumer.close()


def _final_read(state: Run, bootstrap: str, settings: Settings) -> None:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "jepsen-final", "enable.auto.commit": False,
                         "isolation.level": "read_committed", "auto.offset.reset": "earliest"})
    try:
        ends = {p: consumer.get_watermark_offsets(TopicPartition(TOPIC, p), timeout=30)[1]
                for p in range(settings.partitions)}
        consumer.assign([TopicPartition(TOPIC, p, 0) for p in range(settings.partitions)])
        positions = {p: 0 for p in ends}
        final: dict[int, list[tuple[int, str]]] = {p: [] for p in ends}
        deadline = time.monotonic() + 120
        while any(positions[p] < ends[p] for p in ends) and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                # Control records and aborted data are not delivered: a partition may end on them.
                for p in ends:
                    position = consumer.position([TopicPartition(TOPIC, p)])[0].offset
                    if position >= 0:
                        positions[p] = max(positions[p], position)
                continue
            if message.error() is not None:
                continue
            final[message.partition()].append((message.offset(), message.value().decode()))
            positions[message.partition()] = message.offset() + 1
        state.history.final = final
        state.history.final_ends = ends
    finally:
        consumer.close()


# -- the nemesis -----------------------------------------------------------------------------------------

def _nemesis(cluster, state: Run, settings: Settings, rng: random.Random) -> None:
    ends = time.monotonic() + settings.seconds
    while time.monotonic() < ends:
        time.sleep(min(rng.uniform(*settings.fault_every), max(0.0, ends - time.monotonic())))
        if time.monotonic() >= ends:
            break
        fault = rng.choice(settings.faults)
        lasting = rng.uniform(*settings.fault_for)
        try:
            if fault == "kill-leader":
                leaders = {p: s[0] for p, s in cluster.partition_state(_live_node(cluster), TOPIC).items() if s[0] >= 0}
                if not leaders:
                    continue
                partition = rng.choice(sorted(leaders))
                victim = leaders[partition]
                cluster.nodes[victim].kill()
                state.faults.append(f"{time.strftime('%X')} SIGKILL broker {victim} (leader of {TOPIC}-{partition}), "
                                    f"restarted after {lasting:.1f} s")
                time.sleep(lasting)
                cluster.start_node(victim)
            elif fault == "pause":
                victim = rng.choice(cluster.ids)
                process = cluster.nodes[victim].proc
                process.send_signal(signal.SIGSTOP)
                state.faults.append(f"{time.strftime('%X')} SIGSTOP broker {victim} for {lasting:.1f} s")
                time.sleep(lasting)
                process.send_signal(signal.SIGCONT)
            else:
                victim = rng.choice(cluster.ids)
                cluster.isolate(victim)
                state.faults.append(f"{time.strftime('%X')} network partition: broker {victim} cut off for "
                                    f"{lasting:.1f} s")
                time.sleep(lasting)
                cluster.heal()
        except AssertionError as exc:  # a broker that would not come back is a result, not a crash
            state.faults.append(f"{fault} failed: {exc}")


def _live_node(cluster) -> int:
    return next(i for i in cluster.ids if cluster.nodes[i].proc is not None)


def _recover(cluster) -> None:
    """Every broker running and reachable, every partition with three in-sync replicas again."""
    cluster.heal()
    for i in cluster.ids:
        if cluster.nodes[i].proc is None:
            cluster.start_node(i)
        else:
            cluster.nodes[i].proc.send_signal(signal.SIGCONT)
    _wait(lambda: all(len(s[1]) == 3 and s[0] >= 0 for s in cluster.partition_state(cluster.ids[0], TOPIC).values()),
          90, "every partition back to three in-sync replicas")
