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

Coordinator services (the shared runtime, broker/coordinator_runtime.py, does the loading,
writing, replaying and timers; this class is the groups' state and its records):

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
                                            state_name == "Dead"); returns once durable. If the
                                            write fails the runtime reloads the group from its
                                            last durable record (waiters answered, timers reset)
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

import importlib
import itertools
import logging
from typing import Any, Callable, Hashable, Iterable

import trio

from lodestream.protocol.errors import ErrorCode, KafkaError

from lodestream.broker.clock import Clock
from lodestream.broker.coordinator_runtime import (
    LOADING,
    CoordinatorLog,
    CoordinatorRuntime,
    LogRecord,
    Write,
    partition_for,
)
from lodestream.broker.internal_topics import OFFSETS_TOPIC
from lodestream.broker.groups.offsets_log import (
    OffsetAndMetadata,
    decode_group_value,
    decode_key,
    group_key,
    group_value,
    offset_key,
)

log = logging.getLogger(__name__)

GROUP_TYPES: dict[str, type] = {}
"""group_type -> class with from_record(); filled by the group modules on import."""

_OPTIONAL_GROUP_MODULES = ("lodestream.broker.groups.classic", "lodestream.broker.groups.consumer")


class GroupCoordinator:
    def __init__(self, config: Callable[[str], Any], group_log: CoordinatorLog, clock: Clock | None = None) -> None:
        self.config = config
        self.log = group_log
        self.runtime = CoordinatorRuntime(OFFSETS_TOPIC, group_log, lambda: self.num_partitions, clock)
        self.runtime.bind(self)
        self.runtime.every(lambda: int(self.config("offsets.retention.check.interval.ms")) / 1000, self.expire_offsets)
        self.clock = self.runtime.clock
        self.groups: dict[str, Any] = {}
        self.offsets: dict[str, dict[tuple[str, int], OffsetAndMetadata]] = {}
        # The last durable record of each group: what a failed write goes back to.
        self._durable_groups: dict[str, bytes] = {}
        # TxnOffsetCommit: producer id -> group -> partition -> (offset, commit order) until the marker
        self.pending_txn_offsets: dict[int, dict[str, dict[tuple[str, int], tuple[OffsetAndMetadata, int]]]] = {}
        # commit order (log order) of the latest plain commit per (group, partition): a transactional
        # offset committed before it must not overwrite it when its transaction commits (as in Kafka)
        self._commit_order: dict[tuple[str, tuple[str, int]], int] = {}
        self._order = itertools.count()

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
        return partition_for(group_id, self.num_partitions)

    # -- loading (the runtime replays; these are the state's side) ----------------------------------
    @property
    def loaded(self) -> bool:
        """Every partition replayed (False while loading: COORDINATOR_LOAD_IN_PROGRESS)."""
        return self.runtime.loaded

    def load(self, partitions: Iterable[int] | None = None) -> None:
        """Replay __consumer_offsets (synchronous; before the listeners start)."""
        for module in _OPTIONAL_GROUP_MODULES:
            try:
                importlib.import_module(module)
            except ModuleNotFoundError as exc:
                if exc.name != module:
                    raise
        records = self.runtime.load(partitions)
        if records:
            log.info("loaded %d groups and offsets of %d groups from %d %s records",
                     len(self.groups), len(self.offsets), records, OFFSETS_TOPIC)

    def _replaying(self, record: LogRecord) -> bool:
        """True while the partition loads (records rebuild state), False for records just written here."""
        return self.runtime.partitions.get(record.partition) == LOADING

    def replay(self, record: LogRecord) -> None:
        """Apply one durable __consumer_offsets record (CoordinatorState)."""
        if record.marker is not None:
            self.complete_transaction(record.producer_id, record.marker)
            return
        if record.key is None:
            return
        if record.producer_id >= 0:
            self._apply_transactional(record)
        else:
            self._apply(record)

    def _apply(self, record: LogRecord) -> None:
        key, value = record.key, record.value
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
                if group_id not in self.groups and not self._replaying(record):
                    self._create_simple_group(group_id)
        elif kind == "group":
            if value is None:
                self._durable_groups.pop(group_id, None)
                if self._replaying(record):  # a tombstone written here: its writer already handled the live group
                    self.groups.pop(group_id, None)
                return
            self._durable_groups[group_id] = value
            if not self._replaying(record) and group_id in self.groups:
                return  # the live group wrote this record: it already holds (at least) this state
            group = self._group_from_record(group_id, value)
            if group is not None:
                self.groups[group_id] = group

    def _group_from_record(self, group_id: str, value: bytes):
        group_type, record = decode_group_value(value)
        cls = GROUP_TYPES.get(group_type)
        if cls is None:
            log.warning("group %s has unknown type %s; skipped", group_id, group_type)
            return None
        return cls.from_record(self, group_id, record)

    def write_failed(self, record: LogRecord) -> None:
        """A group record was not written: the group goes back to its last durable record, as a
        coordinator that reloads it would have it (waiters answered, timers restarted). Offsets and
        transactional offsets are applied only by replay: nothing to undo."""
        if record.key is None or record.producer_id >= 0:
            return
        decoded = decode_key(record.key)
        if decoded.get("k") != "group":
            return
        group_id = decoded["group"]
        live = self.groups.pop(group_id, None)
        if live is not None:
            _stop(live)
        durable = self._durable_groups.get(group_id)
        restored = self._group_from_record(group_id, durable) if durable is not None else None
        if restored is not None:
            self.groups[group_id] = restored
            _started(restored)
        log.warning("group %s: its record was not written; back to its last durable state", group_id)

    def partition_loaded(self, partition: int) -> None:
        for group_id in self.offsets:
            if group_id not in self.groups and self.partition_for(group_id) == partition:
                self._create_simple_group(group_id)
        loaded = [g for gid, g in self.groups.items() if self.partition_for(gid) == partition]

        async def start_sessions() -> None:  # from the runtime's task: timers start on its clock
            for group in loaded:
                _started(group)

        self.runtime.spawn(start_sessions)

    def partition_unloaded(self, partition: int) -> None:
        for group_id in [gid for gid in set(self.groups) | set(self.offsets) if self.partition_for(gid) == partition]:
            group = self.groups.pop(group_id, None)
            if group is not None:
                _stop(group)
            self.offsets.pop(group_id, None)
            self._durable_groups.pop(group_id, None)
            for by_group in self.pending_txn_offsets.values():
                by_group.pop(group_id, None)

    def _create_simple_group(self, group_id: str):
        cls = GROUP_TYPES["classic"]
        group = cls(self, group_id)
        self.groups[group_id] = group
        return group

    async def ensure_loaded(self, group_id: str | None = None) -> None:
        """Create __consumer_offsets on first use; COORDINATOR_LOAD_IN_PROGRESS while loading. With a group
        id, also NOT_COORDINATOR unless this broker coordinates that group now: a request sent on a stale
        FindCoordinator answer must not be answered from this broker's memory (no committed offsets)."""
        if not self.loaded:
            raise KafkaError(ErrorCode.coordinator_load_in_progress)
        await self.runtime.ensure_topic()
        if group_id is not None:
            self.runtime.check_active(self.partition_for(group_id))

    def coordination_error(self, group_id: str) -> ErrorCode:
        """ensure_loaded's ownership check alone, as an error code (NONE when this broker coordinates it)."""
        return self.runtime.coordination_error(self.partition_for(group_id))

    # -- groups -----------------------------------------------------------------------------------
    def get_group(self, group_id: str):
        return self.groups.get(group_id)

    def add_group(self, group):
        self.groups[group.group_id] = group
        return group

    async def persist_group(self, group) -> None:
        """Write the group's metadata record (a tombstone when Dead); returns once durable."""
        await self.ensure_loaded()

        def record() -> Write:
            if group.state_name == "Dead":
                return Write([(group_key(group.group_id), None)])
            if self.groups.get(group.group_id) is not group:  # reloaded or replaced while this waited
                raise KafkaError(ErrorCode.coordinator_not_available, f"group {group.group_id} was reloaded")
            return Write([(group_key(group.group_id), group_value(group.group_type, group.to_record()))])

        await self.runtime.write(self.partition_for(group.group_id), record)

    async def delete_group(self, group_id: str) -> ErrorCode:
        """DeleteGroups: only empty groups; writes tombstones for the group and its offsets."""
        await self.ensure_loaded()

        def tombstones() -> Write:
            group = self.groups.get(group_id)
            if group is None:
                if group_id not in self.offsets:
                    return Write(response=ErrorCode.group_id_not_found)
            else:
                error = validate_delete_group(group)
                if error != ErrorCode.none:
                    return Write(response=error)
                del self.groups[group_id]
                _stop(group)
            records = [(offset_key(group_id, t, p), None) for (t, p) in self.offsets.get(group_id, {})]
            records.append((group_key(group_id), None))
            return Write(records, ErrorCode.none)

        return await self.runtime.write(self.partition_for(group_id), tombstones)

    # -- offsets ------------------------------------------------------------------------------------
    def committed(self, group_id: str) -> dict[tuple[str, int], OffsetAndMetadata]:
        return self.offsets.get(group_id, {})

    def pending_transactional_offsets(self, group_id: str) -> set[tuple[str, int]]:
        """Partitions with transactional offset commits not yet completed (OffsetFetch require_stable)."""
        pending: set[tuple[str, int]] = set()
        for by_group in self.pending_txn_offsets.values():
            pending.update(by_group.get(group_id, ()))
        return pending

    def _offset_records(self, group_id: str, offsets: dict[tuple[str, int], tuple[int, int, str | None]]) -> Write:
        now = self.wall_ms()
        return Write([(offset_key(group_id, t, p), OffsetAndMetadata(int(o), int(e), m, now).to_value())
                      for (t, p), (o, e, m) in offsets.items()])

    async def commit_offsets(self, group_id: str, offsets: dict[tuple[str, int], tuple[int, int, str | None]]) -> None:
        """Write committed offsets; they are visible once durable (replayed)."""
        if not offsets:
            return
        await self.ensure_loaded()
        await self.runtime.write(self.partition_for(group_id), lambda: self._offset_records(group_id, offsets))

    async def reset_offsets(self, group_id: str, offsets: dict[tuple[str, int], int | None],
                            online: bool) -> list[str]:
        """An offset reset (broker/offset_snapshots.py): commit `offsets` for the group, which need not exist
        (a new group seeded from a snapshot); None removes a partition's committed offset. One write, so a
        reset is applied whole or not at all. A group with members is refused (NON_EMPTY_GROUP), as Kafka
        refuses it; with `online`, a consumer-protocol group's members are fenced first, under the group's
        lock, so none rejoins (and fetches its offsets) before the new ones are durable, and their commits
        from before the reset are refused. Returns the fenced member ids."""
        await self.ensure_loaded(group_id)

        def records() -> Write:
            write = self._offset_records(group_id, {key: (offset, -1, "") for key, offset in offsets.items()
                                                    if offset is not None})
            committed = self.offsets.get(group_id, {})
            write.records.extend((offset_key(group_id, t, p), None) for (t, p), offset in offsets.items()
                                 if offset is None and (t, p) in committed)
            return write

        group = self.groups.get(group_id)
        if group is None or group.state_name == "Dead" or group.is_empty():
            await self.runtime.write(self.partition_for(group_id), records)
            return []
        fence_all = getattr(group, "fence_all_members", None)
        if not online or fence_all is None:
            raise KafkaError(ErrorCode.non_empty_group,
                             f"group {group_id} has members: stop them first"
                             + ("" if fence_all is None else ", or reset it online"))
        async with group.lock:
            if self.groups.get(group_id) is not group:
                raise KafkaError(ErrorCode.coordinator_not_available, f"group {group_id} is changing; retry")
            fenced = fence_all()
            await self.persist_group(group)
            await self.runtime.write(self.partition_for(group_id), records)
        return fenced

    async def commit_transactional_offsets(self, group_id: str, producer_id: int, producer_epoch: int,
                                           offsets: dict[tuple[str, int], tuple[int, int, str | None]]) -> None:
        """TxnOffsetCommit: written in a transactional batch of the producer; pending once durable,
        visible when the commit marker is replayed (complete_transaction)."""
        if not offsets:
            return
        await self.ensure_loaded()
        await self.runtime.write(self.partition_for(group_id), lambda: self._offset_records(group_id, offsets),
                                 producer=(producer_id, producer_epoch))

    def _apply_transactional(self, record: LogRecord) -> None:
        decoded = decode_key(record.key)
        if decoded.get("k") != "offset" or record.value is None:
            return
        group_id = decoded["group"]
        tp = (decoded["topic"], int(decoded["partition"]))
        by_group = self.pending_txn_offsets.setdefault(record.producer_id, {}).setdefault(group_id, {})
        by_group[tp] = (OffsetAndMetadata.from_value(record.value), next(self._order))
        if group_id not in self.groups and not self._replaying(record):
            self._create_simple_group(group_id)

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

    async def delete_offsets(self, group_id: str, partitions: Iterable[tuple[str, int]]) -> None:
        wanted = list(partitions)
        if not any(tp in self.offsets.get(group_id, {}) for tp in wanted):
            return
        await self.ensure_loaded()

        def tombstones() -> Write:
            committed = self.offsets.get(group_id, {})
            return Write([(offset_key(group_id, t, p), None) for t, p in wanted if (t, p) in committed])

        await self.runtime.write(self.partition_for(group_id), tombstones)

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
            if self._abandoned(group_id) is not None:
                await self.runtime.write(self.partition_for(group_id), lambda gid=group_id: self._remove_abandoned(gid))

    def _abandoned(self, group_id: str):
        """The group, if it is empty, has no offsets and may be removed."""
        group = self.groups.get(group_id)
        if (group is None or not group.is_empty() or getattr(group, "pending_join", None)
                or group.state_name == "Dead" or self.offsets.get(group_id)):
            return None
        return group

    def _remove_abandoned(self, group_id: str) -> Write:
        group = self._abandoned(group_id)  # again: the state may have moved while the write lock was awaited
        if group is None:
            return Write()
        log.info("group %s is empty and has no offsets: removing it", group_id)
        del self.groups[group_id]
        _stop(group)
        return Write([(group_key(group_id), None)])

    # -- timers and background work (the runtime's) -----------------------------------------------------
    def schedule(self, key: Hashable, delay_ms: float, callback: Callable[[], Any]) -> None:
        self.runtime.schedule(key, delay_ms, callback)

    def cancel(self, key: Hashable) -> None:
        self.runtime.cancel(key)

    def spawn(self, async_fn: Callable[..., Any], *args: Any) -> None:
        self.runtime.spawn(async_fn, *args)

    async def run(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Background task: timers (joins, sessions, rebalances) and offset retention."""
        await self.runtime.run(task_status=task_status)


def _stop(group) -> None:
    """The group leaves this coordinator's memory: timers stopped, waiters answered."""
    hook = getattr(group, "on_deleted", None)
    if hook is not None:
        hook()


def _started(group) -> None:
    """A group rebuilt from its record: sessions start now."""
    hook = getattr(group, "on_loaded", None)
    if hook is not None:
        hook()


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
