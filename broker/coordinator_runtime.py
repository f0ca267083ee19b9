"""The coordinator runtime: what the group and the transaction coordinators share.

A coordinator's state lives in the partitions of an internal topic (`__consumer_offsets`,
`__transaction_state`); each id (group, transactional id) hashes to one partition. The
runtime owns, per coordinator:

* **Which partitions are loaded.** `load(partitions)` replays those partitions' records
  into the coordinator's state (`CoordinatorState.replay`), then marks them active;
  `unload(partition)` drops that partition's state (timers stopped, waiters answered).
  Requests for an id whose partition is not active get NOT_COORDINATOR, or
  COORDINATOR_LOAD_IN_PROGRESS while it loads. One node loads every partition at
  start-up today; with replication a coordinator moves by unloading here and loading on
  the new leader.
* **Writes.** An operation is a function that looks at the state and returns a `Write`:
  the records to append and the response. The runtime runs it under the partition's
  write lock (records land in operation order), appends the records, and on success
  applies them by replaying them, through the same `replay` that loads the partition,
  so what is in memory is what the log says. When the append fails nothing was applied;
  state a coordinator had to change before writing (a live classic group) is put back by
  `CoordinatorState.write_failed` from the last durable record of that key (no
  hand-written reverts at the call sites).
* **Transaction markers.** When a COMMIT/ABORT marker becomes durable on one of its
  partitions, the log reports it and the runtime replays it (the group coordinator then
  completes that producer's transactional offsets), exactly as a replay at start-up does.
* **Timers and background tasks.** One task per coordinator runs one-shot timers on
  trio's clock (MockClock-friendly), periodic jobs, and spawned work.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Hashable, Iterable, Iterator, NamedTuple, Protocol

import trio

from lodestream.protocol.errors import ErrorCode, KafkaError
from lodestream.protocol.record_batch import (
    TRANSACTIONAL_BIT,
    build_batch,
    control_marker_commit,
    iter_records,
    parse_header,
)

from lodestream.broker.clock import Clock

if TYPE_CHECKING:
    from lodestream.consensus.image import MetadataImage
    from lodestream.broker.replica_manager import ReplicaManager

log = logging.getLogger(__name__)


def java_string_hashcode(text: str) -> int:
    """Java's String.hashCode over UTF-16 code units, as a signed 32-bit int."""
    h = 0
    data = text.encode("utf-16-be")
    for i in range(0, len(data), 2):
        h = (31 * h + ((data[i] << 8) | data[i + 1])) & 0xFFFFFFFF
    return h - (1 << 32) if h & 0x80000000 else h


def kafka_abs(n: int) -> int:
    """org.apache.kafka.common.utils.Utils.abs: Integer.MIN_VALUE maps to 0."""
    return 0 if n == -(1 << 31) else abs(n)


def partition_for(key: str, num_partitions: int) -> int:
    """The internal-topic partition of a group id or transactional id, as Kafka places it."""
    return kafka_abs(java_string_hashcode(key)) % num_partitions


class LogRecord(NamedTuple):
    """One record of an internal topic, as replay() yields it."""

    partition: int
    key: bytes | None
    value: bytes | None
    producer_id: int = -1  # >= 0: a transactional record (TxnOffsetCommit) of this producer
    marker: bool | None = None  # a transaction marker (control batch) of producer_id: True = commit


MarkerListener = Callable[[int, int, bool], None]
"""(partition, producer id, commit): a COMMIT/ABORT marker is durable on that partition."""


class CoordinatorLog(Protocol):
    """Where a coordinator's records go (an internal topic of the broker, or memory in unit tests)."""

    on_marker: MarkerListener | None

    async def ensure_topic(self, num_partitions: int) -> None: ...

    async def append(self, partition: int, records: list[tuple[bytes, bytes | None]]) -> None: ...

    async def append_transactional(self, partition: int, records: list[tuple[bytes, bytes | None]],
                                   producer_id: int, producer_epoch: int) -> None: ...

    def replay(self, partitions: Iterable[int] | None = None) -> Iterator[LogRecord]:
        """Every stored record (and transaction marker) of those partitions (all when None), in log order."""
        ...

    def holds_lease(self) -> bool:
        """False while this broker may have been replaced as the partitions' leader without knowing it yet
        (ControllerClient.holds_lease): the coordinator must not answer from memory then."""
        ...


class MemoryCoordinatorLog:
    """An in-memory CoordinatorLog: unit tests, and 'restarts' by building a new coordinator on it."""

    def __init__(self) -> None:
        # (key, value), or (key, value, producer_id, marker) for transactional records and markers
        self.partitions: dict[int, list[tuple]] = {}
        self.created = False
        self.append_hook: Callable[[], Any] | None = None  # awaited before each append (tests inject failures)
        self.on_marker: MarkerListener | None = None

    async def ensure_topic(self, num_partitions: int) -> None:
        self.created = True

    async def append(self, partition: int, records: list[tuple[bytes, bytes | None]]) -> None:
        if self.append_hook is not None:
            await self.append_hook()
        self.partitions.setdefault(partition, []).extend(records)

    async def append_transactional(self, partition: int, records: list[tuple[bytes, bytes | None]],
                                   producer_id: int, producer_epoch: int) -> None:
        await self.append(partition, [(key, value, producer_id, None) for key, value in records])

    def holds_lease(self) -> bool:
        return True

    def write_marker(self, partition: int, producer_id: int, commit: bool) -> None:
        """What the partition layer's write_markers leaves in the log (fakes of it in tests)."""
        self.partitions.setdefault(partition, []).append((None, None, producer_id, commit))
        if self.on_marker is not None:
            self.on_marker(partition, producer_id, commit)

    def replay(self, partitions: Iterable[int] | None = None) -> Iterator[LogRecord]:
        wanted = None if partitions is None else set(partitions)
        for partition, records in sorted(self.partitions.items()):
            if wanted is None or partition in wanted:
                for record in records:
                    yield LogRecord(partition, *record)


class InternalTopicLog:
    """An internal topic (__consumer_offsets, __transaction_state) in the broker's own partition logs."""

    READ_CHUNK = 4 * 1024 * 1024

    def __init__(self, topic: str, configs: dict[str, str], image: Callable[[], "MetadataImage"],
                 replicas: "ReplicaManager", create_topic: Callable[[str, int, dict[str, str]], Awaitable[Any]],
                 holds_lease: Callable[[], bool]) -> None:
        self.topic = topic
        self.holds_lease = holds_lease
        self.configs = configs
        self._image = image
        self._replicas = replicas
        self._create_topic = create_topic
        self._create_lock = trio.Lock()
        self.on_marker: MarkerListener | None = None
        replicas.marker_listeners[topic] = self._marker_written

    def _marker_written(self, partition: int, producer_id: int, commit: bool) -> None:
        if self.on_marker is not None:
            self.on_marker(partition, producer_id, commit)

    def _topic(self):
        return self._image().topic(self.topic)

    async def ensure_topic(self, num_partitions: int) -> None:
        if self._topic() is not None:
            return
        async with self._create_lock:
            if self._topic() is None:
                await self._create_topic(self.topic, num_partitions, self.configs)

    async def append(self, partition: int, records: list[tuple[bytes, bytes | None]]) -> None:
        await self._append(partition, build_batch(records, int(time.time() * 1000)))

    async def append_transactional(self, partition: int, records: list[tuple[bytes, bytes | None]],
                                   producer_id: int, producer_epoch: int) -> None:
        batch = build_batch(records, int(time.time() * 1000), attributes=TRANSACTIONAL_BIT,
                            producer_id=producer_id, producer_epoch=producer_epoch, base_sequence=0)
        await self._append(partition, batch)

    def partition(self, index: int):
        """The Partition of this topic (None if it does not exist or this broker does not lead it)."""
        topic = self._topic()
        partition = None if topic is None else self._replicas.get(topic.topic_id, index)
        return partition if partition is not None and partition.is_leader else None

    async def _append(self, partition: int, batch: bytes) -> None:
        if self._topic() is None:
            raise KafkaError(ErrorCode.coordinator_not_available, f"{self.topic} does not exist")
        target = self.partition(partition)
        if target is None:
            raise KafkaError(ErrorCode.not_coordinator, f"not the leader of {self.topic}-{partition}")
        try:
            await self._replicas.append_batch(target, batch)
        except KafkaError as exc:
            if exc.code == ErrorCode.not_leader_or_follower:  # leadership moved before the ISR had it
                raise KafkaError(ErrorCode.not_coordinator, exc.message) from None
            raise  # the partition's producer state refused a transactional batch (fenced epoch)
        except Exception as exc:  # storage failure: Kafka maps a failed append to COORDINATOR_NOT_AVAILABLE
            log.error("writing to %s-%d failed: %s", self.topic, partition, exc)
            raise KafkaError(ErrorCode.coordinator_not_available, str(exc)) from None

    def replay(self, partitions: Iterable[int] | None = None) -> Iterator[LogRecord]:
        topic = self._topic()
        if topic is None:
            return
        for index in sorted(topic.partitions if partitions is None else set(partitions) & set(topic.partitions)):
            partition = self._replicas.get(topic.topic_id, index)
            if partition is None:
                continue
            position = partition.log_start_offset
            end = partition.local_end_offset  # a new leader's whole log: what it holds becomes committed
            while position < end:
                batches = partition.read_at_start_up(position, self.READ_CHUNK, end)
                if not batches:
                    break
                for batch in batches:
                    header = parse_header(batch)
                    producer_id = header.producer_id if header.is_transactional else -1
                    for offset, _timestamp, key, value in iter_records(batch):
                        if offset < position:
                            continue
                        if header.is_control:
                            commit = control_marker_commit(key)
                            if commit is not None:
                                yield LogRecord(index, None, None, producer_id, commit)
                        else:
                            yield LogRecord(index, key, value, producer_id)
                    position = max(position, header.last_offset + 1)


class CoordinatorState(Protocol):
    """What a coordinator gives the runtime."""

    def replay(self, record: LogRecord) -> None:
        """Apply one durable record: at load, after each successful write, for each durable marker."""

    def write_failed(self, record: LogRecord) -> None:
        """The append holding this record failed: undo what was changed ahead of it (back to the key's last
        durable record). Most state is only changed by replay and needs nothing here."""

    def partition_loaded(self, partition: int) -> None:
        """Every record of the partition is replayed (start timers, complete what was interrupted)."""

    def partition_unloaded(self, partition: int) -> None:
        """Forget the partition's ids (stop their timers, answer their waiters)."""


@dataclass(slots=True)
class Write:
    """An operation's outcome: the records to append, and the response once they are durable."""

    records: list[tuple[bytes, bytes | None]] = field(default_factory=list)
    response: Any = None


LOADING = "loading"
ACTIVE = "active"


class CoordinatorRuntime:
    def __init__(self, name: str, coordinator_log: CoordinatorLog, num_partitions: Callable[[], int],
                 clock: Clock | None = None) -> None:
        self.name = name  # the internal topic, for messages
        self.log = coordinator_log
        self.num_partitions = num_partitions
        self.clock = clock or Clock()
        self.state: CoordinatorState | None = None
        self.partitions: dict[int, str] = {}  # partition -> LOADING | ACTIVE; absent: not ours
        self._write_locks: dict[int, trio.Lock] = {}
        self._deferred_markers: dict[int, list[LogRecord]] = {}  # partitions with an append in flight
        self.log.on_marker = self.replay_marker
        # timers and background work
        self._timers: dict[Hashable, tuple[float, int, Callable[[], Any]]] = {}
        self._heap: list[tuple[float, int, Hashable]] = []
        self._seq = itertools.count()
        self._wakeup: trio.Event | None = None
        self._nursery: trio.Nursery | None = None
        self._pending_spawns: list[tuple[Callable, tuple]] = []
        self._periodic: list[tuple[Callable[[], float], Callable[[], Awaitable[None]]]] = []

    def bind(self, state: CoordinatorState) -> None:
        self.state = state

    # -- loading -------------------------------------------------------------------------------------
    def load(self, partitions: Iterable[int] | None = None) -> int:
        """Replay the partitions' records into the state (synchronous: at start-up, before serving,
        or when this node becomes the partitions' leader); returns how many records were replayed."""
        assert self.state is not None
        wanted = list(range(self.num_partitions())) if partitions is None else list(partitions)
        for partition in wanted:
            self.partitions[partition] = LOADING
        count = 0
        try:
            for record in self.log.replay(wanted):
                count += 1
                try:
                    self.state.replay(record)
                except Exception as exc:  # a record we cannot read must not stop the broker from starting
                    log.warning("skipping unreadable %s record %r: %s", self.name, (record.key or b"")[:100], exc)
        finally:
            for partition in wanted:
                self.partitions[partition] = ACTIVE
        for partition in wanted:
            self.state.partition_loaded(partition)
        return count

    def unload(self, partition: int) -> None:
        """Stop coordinating the partition's ids (another node leads it now)."""
        assert self.state is not None
        if self.partitions.pop(partition, None) is not None:
            self.state.partition_unloaded(partition)

    @property
    def loaded(self) -> bool:
        return all(status == ACTIVE for status in self.partitions.values())

    def check_active(self, partition: int) -> None:
        """NOT_COORDINATOR unless this broker coordinates the partition's ids now (and is sure of it: a broker
        whose lease expired may have been replaced), COORDINATOR_LOAD_IN_PROGRESS while it loads them."""
        status = self.partitions.get(partition)
        if status is None:
            raise KafkaError(ErrorCode.not_coordinator, f"this broker does not coordinate {self.name}-{partition}")
        if status == LOADING:
            raise KafkaError(ErrorCode.coordinator_load_in_progress)
        if not self.log.holds_lease():
            raise KafkaError(ErrorCode.not_coordinator, f"this broker has not heard from the controller within its "
                                                        f"session timeout: it may no longer coordinate {self.name}-{partition}")

    def coordination_error(self, partition: int) -> ErrorCode:
        """check_active as an error code (NONE when this broker coordinates the partition's ids now)."""
        try:
            self.check_active(partition)
        except KafkaError as exc:
            return exc.code
        return ErrorCode.none

    async def ensure_topic(self) -> None:
        """Create the internal topic on first use (Kafka creates it on the first FindCoordinator)."""
        await self.log.ensure_topic(self.num_partitions())

    # -- writes ----------------------------------------------------------------------------------------
    async def write(self, partition: int, operation: Callable[[], Write],
                    producer: tuple[int, int] | None = None) -> Any:
        """Run `operation` on the current state, append its records (in a transactional batch of `producer`
        = (id, epoch) when given), apply them by replay once durable, and return its response."""
        assert self.state is not None
        self.check_active(partition)
        await self.ensure_topic()
        lock = self._write_locks.get(partition)
        if lock is None:
            lock = self._write_locks[partition] = trio.Lock()
        async with lock:
            self.check_active(partition)  # it may have been unloaded while we waited
            write = operation()
            if not write.records:
                return write.response
            producer_id = producer[0] if producer is not None else -1
            records = [LogRecord(partition, key, value, producer_id) for key, value in write.records]
            self._deferred_markers[partition] = []
            try:
                if producer is None:
                    await self.log.append(partition, write.records)
                else:
                    await self.log.append_transactional(partition, write.records, *producer)
            except BaseException:
                for record in records:
                    self.state.write_failed(record)
                raise
            else:
                for record in records:
                    self.state.replay(record)
            finally:
                for marker in self._deferred_markers.pop(partition):
                    self.state.replay(marker)
            return write.response

    def replay_marker(self, partition: int, producer_id: int, commit: bool) -> None:
        """A COMMIT/ABORT marker of producer_id is durable on the partition: replay it. A marker that
        lands while this runtime's own append to the partition is in flight is replayed after that
        append's records, so a transactional offset written just before its marker is not left pending."""
        if self.state is None or self.partitions.get(partition) != ACTIVE:
            return
        marker = LogRecord(partition, None, None, producer_id, commit)
        deferred = self._deferred_markers.get(partition)
        if deferred is not None:
            deferred.append(marker)
        else:
            self.state.replay(marker)

    # -- timers and background work ---------------------------------------------------------------------
    def schedule(self, key: Hashable, delay_ms: float, callback: Callable[[], Any]) -> None:
        """A one-shot timer (replaces the timer with the same key); callback is sync or returns an awaitable."""
        deadline = trio.current_time() + max(delay_ms, 0) / 1000
        seq = next(self._seq)
        self._timers[key] = (deadline, seq, callback)
        heapq.heappush(self._heap, (deadline, seq, key))
        if self._wakeup is not None:
            self._wakeup.set()

    def cancel(self, key: Hashable) -> None:
        self._timers.pop(key, None)

    def every(self, interval_s: Callable[[], float], job: Callable[[], Awaitable[None]]) -> None:
        """Run `job` every interval (read from the config when the previous run is scheduled)."""
        self._periodic.append((interval_s, job))

    def spawn(self, async_fn: Callable[..., Any], *args: Any) -> None:
        """Background work in the runtime's nursery (queued until run() starts)."""
        if self._nursery is None:
            self._pending_spawns.append((async_fn, args))
        else:
            self._nursery.start_soon(self._guarded, async_fn, *args)

    async def _guarded(self, async_fn, *args) -> None:
        try:
            await async_fn(*args)
        except KafkaError as exc:
            log.warning("%s coordinator task %s failed: %s", self.name, getattr(async_fn, "__name__", async_fn), exc)
        except Exception:
            log.exception("%s coordinator task failed", self.name)

    def _fire(self, callback: Callable[[], Any]) -> None:
        try:
            result = callback()
        except Exception:
            log.exception("%s coordinator timer failed", self.name)
            return
        if result is not None and hasattr(result, "__await__"):
            async def await_it(awaitable=result):
                await awaitable

            self.spawn(await_it)

    async def run(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """The coordinator's background task: timers, periodic jobs, spawned work."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._wakeup = trio.Event()
            for async_fn, args in self._pending_spawns:
                nursery.start_soon(self._guarded, async_fn, *args)
            self._pending_spawns.clear()
            task_status.started()
            next_runs = [trio.current_time() + interval() for interval, _job in self._periodic]
            while True:
                now = trio.current_time()
                while self._heap and self._heap[0][0] <= now:
                    _deadline, seq, key = heapq.heappop(self._heap)
                    current = self._timers.get(key)
                    if current is None or current[1] != seq:
                        continue  # cancelled or rescheduled
                    del self._timers[key]
                    self._fire(current[2])
                for position, (interval, job) in enumerate(self._periodic):
                    if now >= next_runs[position]:
                        next_runs[position] = now + interval()
                        nursery.start_soon(self._guarded, job)
                wake_at = min(self._heap[0][0] if self._heap else math.inf, *next_runs, math.inf)
                with trio.move_on_at(wake_at):
                    await self._wakeup.wait()
                self._wakeup = trio.Event()
