"""The group coordinator: every group this broker coordinates, their committed
offsets, the timers that drive them, and their persistence in
``__consumer_offsets``.

Shared interface (used by the classic protocol in classic.py and by the
KIP-848 consumer groups in consumer.py)
---------------------------------------------------------------------------

``broker.groups`` is the ``GroupCoordinator``. ``coordinator.groups`` maps a
group id to a group object. A group class provides:

  group_id: str
  group_type: str                 # "classic" | "consumer" (the GROUP_TYPES key)
  state_name: str                 # Kafka's state string, e.g. "Empty", "Stable", "Dead"
  protocol_type: str              # "consumer" for consumer groups; "" for simple groups
  is_empty() -> bool
  to_record() -> dict             # JSON-able persistent state (group_type is added by the log)
  @classmethod from_record(coordinator, group_id, record: dict) -> group
  validate_offset_commit(member_id: str, generation_or_member_epoch: int,
                         group_instance_id: str | None, is_transactional: bool = False) -> ErrorCode
  validate_offset_fetch(member_id: str | None, member_epoch: int | None) -> ErrorCode

and optionally:

  on_loaded() -> None             # called once from the background task for each replayed
                                  # group (schedule session timers here)
  on_deleted() -> None            # the group is being removed (cancel timers, fail waiters)
  offsets_expire_after_ms(commit_timestamp_ms: int) -> int | None
                                  # wall-clock ms from which an offset committed at that time
                                  # may expire; None = never while the group is in this state.
                                  # Default: commit_timestamp when is_empty(), else None.
  validate_delete_group() -> ErrorCode      # default: Dead -> GROUP_ID_NOT_FOUND,
                                            #   not is_empty() -> NON_EMPTY_GROUP
  validate_offset_delete() -> ErrorCode     # default: Dead -> GROUP_ID_NOT_FOUND, else NONE
  is_subscribed_to_topic(topic) -> bool     # OffsetDelete's GROUP_SUBSCRIBED_TO_TOPIC (default False)

A class registers itself in ``GROUP_TYPES`` (``GROUP_TYPES["consumer"] =
ConsumerGroup``) on import; ``load()`` imports ``broker.groups.consumer`` if it
exists so that replay can rebuild consumer groups.

Coordinator services:

  coordinator.config(key) -> parsed broker config value (dynamic overrides win)
  coordinator.now_ms() -> int          trio clock in ms (MockClock-friendly); use for deadlines
  coordinator.wall_ms() -> int         epoch ms that advances with the trio clock; use for
                                       commit timestamps / retention
  coordinator.partition_for(group_id) -> int   abs(java hashCode) % offsets.topic.num.partitions
  await coordinator.ensure_loaded()    creates __consumer_offsets on first use; raises
                                       KafkaError(COORDINATOR_LOAD_IN_PROGRESS) while loading
  coordinator.get_group(group_id) -> group | None
  coordinator.add_group(group) -> group
  await coordinator.persist_group(group)    group metadata record (tombstone when
                                            state_name == "Dead"); returns once durable
  await coordinator.commit_offsets(group_id, {(topic, partition): (offset, leader_epoch, metadata)})
  coordinator.committed(group_id) -> dict[(topic, partition), OffsetAndMetadata]   (read-only)
  await coordinator.delete_group(group_id) -> ErrorCode     NON_EMPTY_GROUP / GROUP_ID_NOT_FOUND / NONE
  coordinator.schedule(key, delay_ms, callback)  one-shot timer (replaces a timer with the same
                                       key); callback is sync or returns an awaitable (then run
                                       as a background task)
  coordinator.cancel(key)
  coordinator.spawn(async_fn, *args)   run a background task in the coordinator's nursery
"""

from __future__ import annotations

import heapq
import importlib
import itertools
import logging
import math
import time
from typing import TYPE_CHECKING, Any, Callable, Hashable, Iterable, Iterator, NamedTuple, Protocol

import trio

from lodestream.protocol.errors import ErrorCode, KafkaError

from lodestream.broker.clock import Clock
from lodestream.broker.internal_topics import OFFSETS_TOPIC
from lodestream.broker.groups.offsets_log import (
    OffsetAndMetadata,
    decode_group_value,
    decode_key,
    group_key,
    group_value,
    offset_key,
)

if TYPE_CHECKING:
    from lodestream.broker.broker import Broker

log = logging.getLogger(__name__)

GROUP_TYPES: dict[str, type] = {}
"""group_type -> class with from_record(); filled by the group modules on import."""

_OPTIONAL_GROUP_MODULES = ("lodestream.broker.groups.classic", "lodestream.broker.groups.consumer")


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


class LogRecord(NamedTuple):
    """One record of an internal topic, as replay() yields it."""

    partition: int
    key: bytes | None
    value: bytes | None
    producer_id: int = -1  # >= 0: a transactional record (TxnOffsetCommit) of this producer
    marker: bool | None = None  # a transaction marker (control batch) of producer_id: True = commit


class GroupLog(Protocol):
    """Where the coordinator's records go (the broker's log, or memory in unit tests)."""

    async def ensure_topic(self, num_partitions: int) -> None: ...

    async def append(self, partition: int, records: list[tuple[bytes, bytes | None]]) -> None: ...

    async def append_transactional(self, partition: int, records: list[tuple[bytes, bytes | None]],
                                   producer_id: int, producer_epoch: int) -> None: ...

    def replay(self) -> Iterator[LogRecord]:
        """Every stored record (and transaction marker), in log order per partition."""
        ...


class MemoryGroupLog:
    """An in-memory GroupLog: unit tests, and 'restarts' by building a new coordinator on it.
    Also the in-memory __transaction_state of the transaction coordinator's tests."""

    def __init__(self) -> None:
        # (key, value), or (key, value, producer_id, marker) for transactional records and markers
        self.partitions: dict[int, list[tuple]] = {}
        self.created = False
        self.append_hook: Callable[[], Any] | None = None

    async def ensure_topic(self, num_partitions: int) -> None:
        self.created = True

    async def append(self, partition: int, records: list[tuple[bytes, bytes | None]]) -> None:
        if self.append_hook is not None:
            await self.append_hook()
        self.partitions.setdefault(partition, []).extend(records)

    async def append_transactional(self, partition: int, records: list[tuple[bytes, bytes | None]],
                                   producer_id: int, producer_epoch: int) -> None:
        await self.append(partition, [(key, value, producer_id, None) for key, value in records])

    def write_marker(self, partition: int, producer_id: int, commit: bool) -> None:
        """What the partition layer's write_markers leaves in the log (fakes of it in tests)."""
        self.partitions.setdefault(partition, []).append((None, None, producer_id, commit))

    def replay(self) -> Iterator[LogRecord]:
        for partition, records in sorted(self.partitions.items()):
            for record in records:
                yield LogRecord(partition, *record)


class BrokerInternalLog:
    """An internal topic (__consumer_offsets, __transaction_state) in the broker's own partition logs."""

    READ_CHUNK = 4 * 1024 * 1024

    def __init__(self, broker: "Broker", topic: str = OFFSETS_TOPIC,
                 configs: dict[str, str] | None = None) -> None:
        self.broker = broker
        self.topic = topic
        self.configs = configs if configs is not None else {"cleanup.policy": "compact", "segment.bytes": "104857600"}
        self._create_lock = trio.Lock()

    def _topic(self):
        return self.broker.image.topic(self.topic)

    async def ensure_topic(self, num_partitions: int) -> None:
        if self._topic() is not None:
            return
        async with self._create_lock:
            if self._topic() is None:
                await self.broker.create_internal_topic(self.topic, num_partitions, self.configs)

    async def append(self, partition: int, records: list[tuple[bytes, bytes | None]]) -> None:
        from lodestream.protocol.record_batch import build_batch

        await self._append(partition, build_batch(records, int(time.time() * 1000)))

    async def append_transactional(self, partition: int, records: list[tuple[bytes, bytes | None]],
                                   producer_id: int, producer_epoch: int) -> None:
        from lodestream.protocol.record_batch import TRANSACTIONAL_BIT, build_batch

        batch = build_batch(records, int(time.time() * 1000), attributes=TRANSACTIONAL_BIT,
                            producer_id=producer_id, producer_epoch=producer_epoch, base_sequence=0)
        await self._append(partition, batch)

    def partition(self, index: int):
        """The Partition of this topic (None if it does not exist or this broker does not lead it)."""
        topic = self._topic()
        if topic is None or self.broker.replicas is None:
            return None
        return self.broker.replicas.get(topic.topic_id, index)

    async def _append(self, partition: int, batch: bytes) -> None:
        if self._topic() is None:
            raise KafkaError(ErrorCode.coordinator_not_available, f"{self.topic} does not exist")
        assert self.broker.replicas is not None
        target = self.partition(partition)
        if target is None:
            raise KafkaError(ErrorCode.not_coordinator, f"not the leader of {self.topic}-{partition}")
        try:
            await self.broker.replicas.append_batch(target, batch)
        except KafkaError:
            raise  # the partition's producer state refused a transactional batch (fenced epoch)
        except Exception as exc:  # storage failure: Kafka maps a failed append to COORDINATOR_NOT_AVAILABLE
            log.error("writing to %s-%d failed: %s", self.topic, partition, exc)
            raise KafkaError(ErrorCode.coordinator_not_available, str(exc)) from None

    def replay(self) -> Iterator[LogRecord]:
        from lodestream.protocol.record_batch import control_marker_commit, iter_records, parse_header

        topic = self._topic()
        if topic is None or self.broker.replicas is None:
            return
        for index in sorted(topic.partitions):
            partition = self.broker.replicas.get(topic.topic_id, index)
            if partition is None:
                continue
            position = partition.log_start_offset
            end = partition.high_watermark
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


class GroupCoordinator:
    def __init__(self, config: Callable[[str], Any], group_log: GroupLog, clock: Clock | None = None) -> None:
        self.config = config
        self.log = group_log
        self.clock = clock or Clock()
        self.groups: dict[str, Any] = {}
        self.offsets: dict[str, dict[tuple[str, int], OffsetAndMetadata]] = {}
        self.loading = False
        self.loaded = False
        self._timers: dict[Hashable, tuple[float, int, Callable[[], Any]]] = {}
        self._heap: list[tuple[float, int, Hashable]] = []
        self._seq = itertools.count()
        self._wakeup: trio.Event | None = None
        self._nursery: trio.Nursery | None = None
        self._pending_spawns: list[tuple[Callable, tuple]] = []
        # TxnOffsetCommit: producer id -> group -> partition -> (offset, commit order) until the marker
        self.pending_txn_offsets: dict[int, dict[str, dict[tuple[str, int], tuple[OffsetAndMetadata, int]]]] = {}
        # commit order (log order) of the latest plain commit per (group, partition): a transactional
        # offset committed before it must not overwrite it when its transaction commits (as in Kafka)
        self._commit_order: dict[tuple[str, tuple[str, int]], int] = {}
        self._order = itertools.count()
        self._last_retention_check = -math.inf

    # -- time ------------------------------------------------------------------------------
    def now_ms(self) -> int:
        """The trio clock in ms: deadlines and timeouts (MockClock moves it)."""
        return self.clock.monotonic_ms()

    def wall_ms(self) -> int:
        """Epoch ms for commit timestamps and retention, advancing with the trio clock."""
        return self.clock.wall_ms()

    # -- configuration / placement ---------------------------------------------------------------
    @property
    def num_partitions(self) -> int:
        return int(self.config("offsets.topic.num.partitions"))

    def partition_for(self, group_id: str) -> int:
        return kafka_abs(java_string_hashcode(group_id)) % self.num_partitions

    # -- loading ----------------------------------------------------------------------------------
    def load(self) -> None:
        """Replay __consumer_offsets (synchronous; runs before the listeners start)."""
        for module in _OPTIONAL_GROUP_MODULES:
            try:
                importlib.import_module(module)
            except ModuleNotFoundError as exc:
                if exc.name != module:
                    raise
        self.loading = True
        try:
            records = 0
            for record in self.log.replay():
                if record.marker is not None:
                    self.complete_transaction(record.producer_id, record.marker)
                    continue
                key, value = record.key, record.value
                if key is None:
                    continue
                records += 1
                try:
                    if record.producer_id >= 0:
                        self._apply_transactional(record.producer_id, key, value)
                    else:
                        self._apply(key, value)
                except Exception as exc:  # a record we cannot read must not stop the broker from starting
                    log.warning("skipping unreadable %s record %r: %s", OFFSETS_TOPIC, key[:100], exc)
            for group_id in self.offsets:
                if group_id not in self.groups:
                    self._create_simple_group(group_id)
            if records:
                log.info("loaded %d groups and offsets of %d groups from %d %s records",
                         len(self.groups), len(self.offsets), records, OFFSETS_TOPIC)
        finally:
            self.loading = False
            self.loaded = True
        self._needs_on_loaded = list(self.groups.values())

    def _apply(self, key: bytes, value: bytes | None) -> None:
        try:
            decoded = decode_key(key)
        except ValueError:
            log.warning("skipping undecodable %s key %r", OFFSETS_TOPIC, key[:100])
            return
        kind = decoded.get("k")
        group_id = decoded.get("group")
        if kind == "offset":
            tp = (decoded["topic"], int(decoded["partition"]))
            if value is None:
                offsets = self.offsets.get(group_id)
                if offsets is not None:
                    offsets.pop(tp, None)
                    if not offsets:
                        del self.offsets[group_id]
            else:
                self.offsets.setdefault(group_id, {})[tp] = OffsetAndMetadata.from_value(value)
                self._commit_order[(group_id, tp)] = next(self._order)
        elif kind == "group":
            if value is None:
                self.groups.pop(group_id, None)
                return
            group_type, record = decode_group_value(value)
            cls = GROUP_TYPES.get(group_type)
            if cls is None:
                log.warning("group %s has unknown type %s; skipped", group_id, group_type)
                return
            self.groups[group_id] = cls.from_record(self, group_id, record)

    def _create_simple_group(self, group_id: str):
        cls = GROUP_TYPES["classic"]
        group = cls(self, group_id)
        self.groups[group_id] = group
        return group

    async def ensure_loaded(self) -> None:
        """Create __consumer_offsets on first use; COORDINATOR_LOAD_IN_PROGRESS while loading."""
        if self.loading or not self.loaded:
            raise KafkaError(ErrorCode.coordinator_load_in_progress)
        await self.log.ensure_topic(self.num_partitions)

    # -- groups -----------------------------------------------------------------------------------
    def get_group(self, group_id: str):
        return self.groups.get(group_id)

    def add_group(self, group):
        self.groups[group.group_id] = group
        return group

    async def persist_group(self, group) -> None:
        """Write the group's metadata record (a tombstone when Dead); returns once durable."""
        await self.ensure_loaded()
        if group.state_name == "Dead":
            value = None
        else:
            value = group_value(group.group_type, group.to_record())
        await self.log.append(self.partition_for(group.group_id), [(group_key(group.group_id), value)])

    async def delete_group(self, group_id: str) -> ErrorCode:
        """DeleteGroups: only empty groups; writes tombstones for the group and its offsets."""
        group = self.groups.get(group_id)
        if group is None:
            if group_id not in self.offsets:
                return ErrorCode.group_id_not_found
        else:
            error = validate_delete_group(group)
            if error != ErrorCode.none:
                return error
        await self.ensure_loaded()
        offsets = self.offsets.get(group_id, {})
        records = [(offset_key(group_id, t, p), None) for (t, p) in offsets]
        records.append((group_key(group_id), None))
        if group is not None:
            hook = getattr(group, "on_deleted", None)
            if hook is not None:
                hook()
            if self.groups.get(group_id) is group:
                del self.groups[group_id]
        self.offsets.pop(group_id, None)
        await self.log.append(self.partition_for(group_id), records)
        return ErrorCode.none

    # -- offsets ------------------------------------------------------------------------------------
    def committed(self, group_id: str) -> dict[tuple[str, int], OffsetAndMetadata]:
        return self.offsets.get(group_id, {})

    def pending_transactional_offsets(self, group_id: str) -> set[tuple[str, int]]:
        """Partitions with transactional offset commits not yet completed (OffsetFetch require_stable)."""
        pending: set[tuple[str, int]] = set()
        for by_group in self.pending_txn_offsets.values():
            pending.update(by_group.get(group_id, ()))
        return pending

    async def commit_transactional_offsets(self, group_id: str, producer_id: int, producer_epoch: int,
                                           offsets: dict[tuple[str, int], tuple[int, int, str | None]]) -> None:
        """TxnOffsetCommit: written in a transactional batch of the producer; visible only once
        complete_transaction(producer_id, True) runs after the commit marker."""
        if not offsets:
            return
        values, records = await self._offset_records(group_id, offsets)
        # Pending before the write: a marker that lands right after the batch must find it.
        pending = self.pending_txn_offsets.setdefault(producer_id, {}).setdefault(group_id, {})
        previous = {tp: pending[tp] for tp in values if tp in pending}
        order = next(self._order)
        pending.update({tp: (v, order) for tp, v in values.items()})
        try:
            await self.log.append_transactional(self.partition_for(group_id), records, producer_id, producer_epoch)
        except BaseException:
            for tp in values:
                if tp in previous:
                    pending[tp] = previous[tp]
                else:
                    pending.pop(tp, None)
            raise
        if group_id not in self.groups:
            self._create_simple_group(group_id)

    async def _offset_records(self, group_id: str, offsets: dict[tuple[str, int], tuple[int, int, str | None]]):
        """(values, records) of a commit, once __consumer_offsets exists."""
        await self.ensure_loaded()
        now = self.wall_ms()
        values = {tp: OffsetAndMetadata(int(o), int(e), m, now) for tp, (o, e, m) in offsets.items()}
        return values, [(offset_key(group_id, t, p), v.to_value()) for (t, p), v in values.items()]

    def _apply_transactional(self, producer_id: int, key: bytes, value: bytes | None) -> None:
        decoded = decode_key(key)
        if decoded.get("k") != "offset" or value is None:
            return
        tp = (decoded["topic"], int(decoded["partition"]))
        by_group = self.pending_txn_offsets.setdefault(producer_id, {}).setdefault(decoded["group"], {})
        by_group[tp] = (OffsetAndMetadata.from_value(value), next(self._order))

    def complete_transaction(self, producer_id: int, commit: bool) -> None:
        """The producer's marker is durable on __consumer_offsets: apply (commit) or drop (abort)
        its pending transactional offsets."""
        by_group = self.pending_txn_offsets.pop(producer_id, None)
        if not by_group or not commit:
            return
        for group_id, pending in by_group.items():
            offsets = self.offsets.setdefault(group_id, {})
            for tp, (value, order) in pending.items():
                if self._commit_order.get((group_id, tp), -1) < order:
                    offsets[tp] = value
                    self._commit_order[(group_id, tp)] = order
            if group_id not in self.groups and not self.loading:
                self._create_simple_group(group_id)

    async def commit_offsets(self, group_id: str, offsets: dict[tuple[str, int], tuple[int, int, str | None]]) -> None:
        """Write committed offsets; the cache is updated once the write is durable."""
        if not offsets:
            return
        values, records = await self._offset_records(group_id, offsets)
        await self.log.append(self.partition_for(group_id), records)
        self.offsets.setdefault(group_id, {}).update(values)
        order = next(self._order)
        self._commit_order.update({(group_id, tp): order for tp in values})
        if group_id not in self.groups:
            self._create_simple_group(group_id)

    async def delete_offsets(self, group_id: str, partitions: Iterable[tuple[str, int]]) -> None:
        doomed = [tp for tp in partitions if tp in self.offsets.get(group_id, {})]
        if not doomed:
            return
        await self.ensure_loaded()
        await self.log.append(self.partition_for(group_id), [(offset_key(group_id, t, p), None) for t, p in doomed])
        offsets = self.offsets.get(group_id, {})
        for tp in doomed:
            offsets.pop(tp, None)
        if not offsets:
            self.offsets.pop(group_id, None)

    # -- offset retention -------------------------------------------------------------------------------
    async def expire_offsets(self) -> None:
        """Expire offsets per offsets.retention.minutes; remove empty groups left without offsets."""
        retention_ms = int(self.config("offsets.retention.minutes")) * 60_000
        now = self.wall_ms()
        for group_id in list(set(self.offsets) | set(self.groups)):
            group = self.groups.get(group_id)
            offsets = self.offsets.get(group_id, {})
            expired = []
            for tp, value in offsets.items():
                base = _expiry_base(group, value.commit_timestamp)
                if base is not None and now - base >= retention_ms:
                    expired.append(tp)
            if expired:
                log.info("expiring %d offsets of group %s", len(expired), group_id)
                await self.delete_offsets(group_id, expired)
            group = self.groups.get(group_id)
            if (group is not None and group.is_empty() and not getattr(group, "pending_join", None)
                    and group.state_name != "Dead" and not self.offsets.get(group_id)):
                log.info("group %s is empty and has no offsets: removing it", group_id)
                hook = getattr(group, "on_deleted", None)
                if hook is not None:
                    hook()
                if self.groups.get(group_id) is group:
                    del self.groups[group_id]
                await self.log.append(self.partition_for(group_id), [(group_key(group_id), None)])

    # -- timers and background work -------------------------------------------------------------------
    def schedule(self, key: Hashable, delay_ms: float, callback: Callable[[], Any]) -> None:
        deadline = trio.current_time() + max(delay_ms, 0) / 1000
        seq = next(self._seq)
        self._timers[key] = (deadline, seq, callback)
        heapq.heappush(self._heap, (deadline, seq, key))
        if self._wakeup is not None:
            self._wakeup.set()

    def cancel(self, key: Hashable) -> None:
        self._timers.pop(key, None)

    def spawn(self, async_fn: Callable[..., Any], *args: Any) -> None:
        if self._nursery is None:
            self._pending_spawns.append((async_fn, args))
        else:
            self._nursery.start_soon(self._guarded, async_fn, *args)

    @staticmethod
    async def _guarded(async_fn, *args) -> None:
        try:
            await async_fn(*args)
        except KafkaError as exc:
            log.warning("group coordinator background task %s failed: %s", getattr(async_fn, "__name__", async_fn), exc)
        except Exception:
            log.exception("group coordinator background task failed")

    def _fire(self, callback: Callable[[], Any]) -> None:
        try:
            result = callback()
        except Exception:
            log.exception("group coordinator timer failed")
            return
        if result is not None and hasattr(result, "__await__"):
            async def await_it(awaitable=result):
                await awaitable

            self.spawn(await_it)

    async def run(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Background task: timers (joins, sessions, rebalances) and offset retention."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._wakeup = trio.Event()
            for async_fn, args in self._pending_spawns:
                nursery.start_soon(self._guarded, async_fn, *args)
            self._pending_spawns.clear()
            for group in getattr(self, "_needs_on_loaded", []):
                hook = getattr(group, "on_loaded", None)
                if hook is not None:
                    hook()
            self._needs_on_loaded = []
            task_status.started()
            interval = int(self.config("offsets.retention.check.interval.ms")) / 1000
            next_retention = trio.current_time() + interval
            while True:
                now = trio.current_time()
                while self._heap and self._heap[0][0] <= now:
                    deadline, seq, key = heapq.heappop(self._heap)
                    current = self._timers.get(key)
                    if current is None or current[1] != seq:
                        continue  # cancelled or rescheduled
                    del self._timers[key]
                    self._fire(current[2])
                if now >= next_retention:
                    next_retention = now + interval
                    nursery.start_soon(self._guarded, self.expire_offsets)
                wake_at = min(self._heap[0][0] if self._heap else math.inf, next_retention)
                with trio.move_on_at(wake_at):
                    await self._wakeup.wait()
                self._wakeup = trio.Event()


def validate_delete_group(group) -> ErrorCode:
    hook = getattr(group, "validate_delete_group", None)
    if hook is not None:
        return hook()
    if group.state_name == "Dead":
        return ErrorCode.group_id_not_found
    return ErrorCode.none if group.is_empty() else ErrorCode.non_empty_group


def validate_offset_delete(group) -> ErrorCode:
    hook = getattr(group, "validate_offset_delete", None)
    if hook is not None:
        return hook()
    return ErrorCode.group_id_not_found if group.state_name == "Dead" else ErrorCode.none


def is_subscribed_to_topic(group, topic: str) -> bool:
    hook = getattr(group, "is_subscribed_to_topic", None)
    return bool(hook(topic)) if hook is not None else False


def _expiry_base(group, commit_timestamp: int) -> int | None:
    if group is None:
        return commit_timestamp
    hook = getattr(group, "offsets_expire_after_ms", None)
    if hook is not None:
        return hook(commit_timestamp)
    return commit_timestamp if group.is_empty() else None
