"""Partition logs in one LevelDB database per broker.

Keys (all big-endian so LevelDB's byte order is offset order):
  b"d" + topic_id(16) + partition(4) + base_offset(8)  -> batch bytes, as produced
  b"i" + topic_id(16) + partition(4) + base_offset(8)  -> index entry (last offset,
                                                          max timestamp, size; for
                                                          batches with a producer id
                                                          also its id, epoch, base
                                                          sequence, attributes, marker
                                                          type, coordinator epoch)
  b"m" + topic_id(16) + partition(4)                   -> partition meta (log start offset,
                                                          cleaner checkpoint)
  b"s" + topic_id(16) + partition(4) + base_offset(8)  -> a segment starts here (value: its
                                                          creation time, epoch ms; once closed
                                                          also its summary: size, timestamps,
                                                          last offset, batch count)
  b"p" + topic_id(16) + partition(4) + offset(8)       -> producer-state snapshot: the state
                                                          after every batch below offset
  b"l" + topic_id(16) + partition(4)                   -> leader-epoch cache: (epoch, start offset)
                                                          pairs, as Kafka's leader-epoch-checkpoint

Segments: a partition's log is a run of segments, each starting at a batch's base
offset; the last one is active (appends go there) and rolls by `segment_bytes` /
`segment_ms`, as Kafka's segment.bytes / segment.ms, and when its in-memory index
is full (`segment_index_bytes`, as Kafka rolls when its offset index is full).
Retention drops whole segments (`retention_offset`), and `compact_below` asks
LevelDB to compact the deleted key ranges so the space is given back.

Memory does not grow with history: only the active segment has a per-batch index
in memory (BatchIndex, INDEX_ENTRY_BYTES per batch). A closed segment is known by
its summary, written in the same WriteBatch as the roll that closed it; reads and
timestamp lookups in closed segments find their batches by a LevelDB seek on the
index keys (`read_stored`, `scan_*`: blocking, callers run them on a worker
thread). Opening a log reads the segment keys, the active segment's index entries
and the latest producer-state snapshot (taken in each roll's write and at close),
and replays only the batches after it.

Log compaction (broker/compaction.py decides what a pass keeps) rewrites closed
segments in place: a cleaned batch keeps its key (base offset) and its last
offset, so offsets never change; a batch left with no record is deleted.
`clean_plan` says what a pass covers, `write_cleaned` / `complete_clean` apply a
chunk of it, `stage_finish_clean` / `complete_finish_clean` record the
checkpoint (the first offset not yet cleaned), store the cleaned segments'
summaries and merge small cleaned segments.

A batch and its index entry are written in the same WriteBatch, so after a
crash either both exist or neither does: a half-written batch is never seen.

Appends are split in three steps so the caller can group-commit many
partitions in one write and run the blocking part on a worker thread:
prepare_append (assign offsets, stamp bytes; caller's thread),
LogStore.write (one WriteBatch, optionally synced; any thread),
complete_append / abort_append (publish or roll back; caller's thread).
Everything here is synchronous and free of trio.
"""

from __future__ import annotations

import bisect
import logging
import struct
import time
import uuid
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, NamedTuple

import plyvel

from lodestream.storage.producer_state import ProducerStateManager, last_sequence

_PARTITION_KEY = struct.Struct(">16si")
_OFFSET = struct.Struct(">q")
_INDEX_VALUE = struct.Struct(">qqi")  # last_offset, max_timestamp, size
# Appended to the index value of batches with a producer id: producer_id, epoch,
# base_sequence, attributes, marker (-1 data, 0 abort, 1 commit), coordinator_epoch.
_PRODUCER_TAIL = struct.Struct(">qhihbi")
_TRANSACTIONAL_BIT = 0x10  # record batch attributes (protocol/record_batch.py; storage imports nothing of ours)
NO_MARKER = -1
DEFAULT_PRODUCER_ID_EXPIRATION_MS = 86_400_000
_META_VALUE = struct.Struct(">q")  # log_start_offset (written before compaction existed)
_META_VALUE_CLEANED = struct.Struct(">qq")  # log_start_offset, cleaner checkpoint
_SEGMENT_VALUE = struct.Struct(">q")  # created_ms: the active segment (or one closed before summaries existed)
# A closed segment: created_ms, size, first timestamp, max timestamp, last offset, batch count.
_SEGMENT_SUMMARY = struct.Struct(">qqqqqq")

DATA, INDEX, META, SEGMENT, SNAPSHOT, EPOCHS = b"d", b"i", b"m", b"s", b"p", b"l"
_EPOCH_ENTRY = struct.Struct(">iq")  # leader epoch, its first offset
_BATCH_EPOCH = struct.Struct(">i")  # a stored batch's partition leader epoch, at byte 12 of its header
DEFAULT_SEGMENT_BYTES = 1 << 30  # Kafka's log.segment.bytes
DEFAULT_SEGMENT_MS = 7 * 24 * 3600 * 1000  # Kafka's log.roll.hours=168
DEFAULT_SEGMENT_INDEX_BYTES = 10 << 20  # Kafka's log.index.size.max.bytes
INDEX_ENTRY_BYTES = 32  # one batch in a BatchIndex: four int64
END_OFFSET = (1 << 63) - 1  # above every offset (a key bound)
SNAPSHOTS_KEPT = 2  # producer-state snapshots per partition (the newest is the one read)
CLEANED_WRITE_BYTES = 256 << 10  # the log cleaner's writes (write_cleaned)


class StorageError(Exception):
    """The log could not be written (e.g. disk full); nothing was acknowledged."""


def producer_index_tail(producer_id: int, epoch: int, base_sequence: int, attributes: int,
                        marker: int = NO_MARKER, coordinator_epoch: int = -1) -> bytes:
    """What a batch with a producer id adds to its index entry (prepare_append's index_tail)."""
    return _PRODUCER_TAIL.pack(producer_id, epoch, base_sequence, attributes, marker, coordinator_epoch)


def partition_prefix(kind: bytes, topic_id: uuid.UUID, partition: int) -> bytes:
    return kind + _PARTITION_KEY.pack(topic_id.bytes, partition)


class Totals(NamedTuple):
    """What a segment holds: its summary once closed; the running figures of the active one."""

    size: int = 0
    first_timestamp: int = -1  # largest timestamp of its first batch (the cleaner's max.compaction.lag.ms)
    max_timestamp: int = -1
    last_offset: int = -1  # of its last batch; -1 when empty
    batch_count: int = 0

    def add(self, last_offset: int, max_timestamp: int, size: int) -> "Totals":
        return Totals(self.size + size, max_timestamp if self.batch_count == 0 else self.first_timestamp,
                      max(self.max_timestamp, max_timestamp), last_offset, self.batch_count + 1)

    def less(self, size: int, batches: int) -> "Totals":
        return self._replace(size=self.size - size, batch_count=self.batch_count - batches)


@dataclass(slots=True)
class Segment:
    base_offset: int
    created_ms: int
    totals: Totals = Totals()  # kept for closed segments; the active one's live in PartitionLog._active


@dataclass(slots=True)
class SegmentInfo:
    """A segment as retention and metrics see it."""

    base_offset: int
    end_offset: int  # the next segment's base, or the log end for the active one
    size: int
    max_timestamp: int  # -1 when empty
    closed: bool


@dataclass(slots=True)
class Roll:
    """A segment an append opened, and the one it closed with that one's final totals."""

    opened: Segment
    closed: Segment | None
    closed_totals: Totals


@dataclass(slots=True)
class PendingAppend:
    """Batches with assigned offsets, not yet durable."""

    log: "PartitionLog"
    base_offset: int
    next_offset: int
    batches: list[bytes]  # emptied once staged into a WriteBatch
    index_entries: list[tuple[int, int, int, int]]  # base, last, max_ts, size
    index_tail: bytes = b""  # producer fields of the (single) batch, see producer_index_tail
    rolls: list[Roll] = field(default_factory=list)
    active_after: tuple[Segment | None, Totals] = (None, Totals())  # the active segment and its totals after them
    epochs_after: list[tuple[int, int]] | None = None  # the leader-epoch cache once written, if these start an epoch


@dataclass(slots=True)
class BatchLocation:
    base_offset: int
    last_offset: int
    max_timestamp: int
    size: int


class BatchIndex:
    """The active segment's batches in offset order: four int64 arrays, INDEX_ENTRY_BYTES per batch."""

    __slots__ = ("bases", "lasts", "max_timestamps", "sizes")

    def __init__(self) -> None:
        self.bases, self.lasts, self.max_timestamps, self.sizes = array("q"), array("q"), array("q"), array("q")

    def __len__(self) -> int:
        return len(self.bases)

    def append(self, base: int, last: int, max_timestamp: int, size: int) -> None:
        self.bases.append(base)
        self.lasts.append(last)
        self.max_timestamps.append(max_timestamp)
        self.sizes.append(size)

    def locate(self, offset: int) -> int:
        """Position of the batch containing `offset` (or the first after it)."""
        return bisect.bisect_right(self.lasts, offset - 1)

    def location(self, position: int) -> BatchLocation:
        return BatchLocation(self.bases[position], self.lasts[position], self.max_timestamps[position],
                             self.sizes[position])

    def drop_before(self, position: int) -> None:
        for column in (self.bases, self.lasts, self.max_timestamps, self.sizes):
            del column[:position]

    def totals(self) -> Totals:
        if not self.bases:
            return Totals()
        return Totals(sum(self.sizes), self.max_timestamps[0], max(self.max_timestamps), self.lasts[-1],
                      len(self.bases))


@dataclass(slots=True)
class CleanPlan:
    """What one cleaning pass of a compacted partition covers (Kafka's LogToClean), from the summaries.

    The pass cleans [start, end): `end` is the first uncleanable offset, the base of the first segment
    that is active, holds an open transaction's first offset or has records newer than
    min.compaction.lag.ms. Records from `dirty_from` on were never cleaned: their keys make the offset
    map. Tombstones and transaction markers in batches below `horizon` may go: their segments were
    cleaned before and closed more than delete.retention.ms ago."""

    start: int
    dirty_from: int
    end: int
    horizon: int
    clean_bytes: int
    dirty_bytes: int
    first_dirty_timestamp: int  # largest timestamp of the first dirty batch; -1 when nothing is dirty
    keep_empty: frozenset[int]  # base offsets of each producer's retained batches (its last 5): kept even when emptied
    aborted: list[tuple[int, int, int]]  # (producer id, first offset, marker offset) of aborted transactions

    @property
    def dirty_ratio(self) -> float:
        total = self.clean_bytes + self.dirty_bytes
        return self.dirty_bytes / total if total else 0.0


@dataclass(slots=True)
class HeadTruncation:
    """Advancing the log start offset (DeleteRecords, retention): staged on the owner's thread
    (stage_delete_before), written on a worker thread (commit: finds the batches wholly below the offset
    by a LevelDB scan and deletes them in one synced write), published on the owner's thread
    (complete_delete_before)."""

    log: "PartitionLog"
    offset: int
    dropped: list[Segment]  # closed segments wholly below the offset
    cut: Segment | None  # the closed segment the offset falls inside: its totals shrink
    segment_bases: list[int]  # every segment's base then, to attribute deleted batches
    deleted: dict[int, tuple[int, int]] = field(default_factory=dict)  # segment base -> (bytes, batches)

    def commit(self) -> None:
        log, offset = self.log, self.offset
        db = log.store.db
        batch = db.write_batch(sync=True)
        batch.put(log._meta_key, _META_VALUE_CLEANED.pack(offset, log.cleaner_checkpoint))
        prefix = log._index_prefix
        for key, value in db.iterator(start=prefix, stop=prefix + _OFFSET.pack(offset)):
            last, _, size = _INDEX_VALUE.unpack_from(value)
            if last >= offset:  # the batch holding the new log start stays
                break
            suffix = key[len(prefix):]
            batch.delete(log._data_prefix + suffix)
            batch.delete(key)
            base = _OFFSET.unpack(suffix)[0]
            owner = self.segment_bases[max(bisect.bisect_right(self.segment_bases, base) - 1, 0)]
            size_so_far, count = self.deleted.get(owner, (0, 0))
            self.deleted[owner] = (size_so_far + size, count + 1)
        for segment in self.dropped:
            batch.delete(log._segment_prefix + _OFFSET.pack(segment.base_offset))
        # The closed segment the new start falls in keeps its key with smaller totals (nothing else
        # writes a closed segment's summary meanwhile: the cleaner waits for truncations).
        cut = self.cut
        if cut is not None and cut.base_offset in self.deleted:
            batch.put(log._segment_prefix + _OFFSET.pack(cut.base_offset),
                      _pack_summary(cut.created_ms, cut.totals.less(*self.deleted[cut.base_offset])))
        StagedWrite(batch).commit()


def _pack_summary(created_ms: int, totals: Totals) -> bytes:
    return _SEGMENT_SUMMARY.pack(created_ms, *totals)


def _totals_of(entries: Iterable[tuple[int, int, int, int]]) -> Totals:
    totals = Totals()
    for _, last, max_ts, size in entries:
        totals = totals.add(last, max_ts, size)
    return totals


class PartitionLog:
    """One partition's log: segment summaries and the active segment's batch index over LevelDB data.

    Not thread-safe: its in-memory state is touched only from the owner's thread; LevelDB itself may be
    read and written from worker threads (the blocking methods say so).
    """

    def __init__(self, store: "LogStore", topic_id: uuid.UUID, partition: int) -> None:
        self.store = store
        self.topic_id = topic_id
        self.partition = partition
        self._data_prefix = partition_prefix(DATA, topic_id, partition)
        self._index_prefix = partition_prefix(INDEX, topic_id, partition)
        self._meta_key = partition_prefix(META, topic_id, partition)
        self._segment_prefix = partition_prefix(SEGMENT, topic_id, partition)
        self._snapshot_prefix = partition_prefix(SNAPSHOT, topic_id, partition)
        self._epochs_key = partition_prefix(EPOCHS, topic_id, partition)
        self.segment_bytes = DEFAULT_SEGMENT_BYTES  # roll policy, set by the broker from the topic's configs
        self.segment_ms = DEFAULT_SEGMENT_MS
        self.segment_index_bytes = DEFAULT_SEGMENT_INDEX_BYTES
        self.dropped = False  # its topic was deleted (LogStore.drop_partition)
        self._reset()
        self._load()

    def _reset(self) -> None:
        """The in-memory state of an empty, unloaded log."""
        self.segments: list[Segment] = []  # published, by base offset; the last is active
        # The active segment and its totals as durable appends left them, and as assigned appends see it.
        self._active: tuple[Segment | None, Totals] = (None, Totals())
        self._assigning: tuple[Segment | None, Totals] = (None, Totals())
        self._index = BatchIndex()  # the active segment's batches from the log start on
        self.log_start_offset = 0
        self.cleaner_checkpoint = 0  # compaction: records below were cleaned (see CleanPlan)
        self.log_end_offset = 0  # next offset to be published (durable)
        self._next_offset = 0  # next offset to assign (includes in-flight appends)
        self.size_bytes = 0
        self.producers = ProducerStateManager()
        self._snapshots: list[int] = []  # offsets of the stored producer-state snapshots, oldest first
        self.replayed_batches = 0  # index entries replayed into producer state when the log was opened
        # Leader epochs and the offset each started at, oldest first (replication: a follower finds where
        # its log diverged from its leader's by these, KIP-101 / KIP-279).
        self.epochs: list[tuple[int, int]] = []

    # -- recovery -------------------------------------------------------------
    def _load(self) -> None:
        db = self.store.db
        meta = db.get(self._meta_key)
        if meta is not None and len(meta) == _META_VALUE_CLEANED.size:
            self.log_start_offset, self.cleaner_checkpoint = _META_VALUE_CLEANED.unpack(meta)
        elif meta is not None:
            (self.log_start_offset,) = _META_VALUE.unpack(meta)
        unsummarized: list[int] = []  # positions of closed segments written before summaries existed
        for key, value in db.iterator(prefix=self._segment_prefix):
            (base,) = _OFFSET.unpack_from(key, len(self._segment_prefix))
            if len(value) == _SEGMENT_SUMMARY.size:
                created_ms, *totals = _SEGMENT_SUMMARY.unpack(value)
                self.segments.append(Segment(base, created_ms, Totals(*totals)))
            else:
                unsummarized.append(len(self.segments))
                self.segments.append(Segment(base, _SEGMENT_VALUE.unpack(value)[0]))
        first = next(db.iterator(prefix=self._index_prefix, include_value=False), None)
        if first is not None:
            (first_base,) = _OFFSET.unpack_from(first, len(self._index_prefix))
            if not self.segments or self.segments[0].base_offset > first_base:
                # Batches written before segments existed: one segment holds them (not stored; found again).
                self.segments.insert(0, Segment(first_base, int(time.time() * 1000)))
                unsummarized = [0] + [position + 1 for position in unsummarized]
        for position in unsummarized:
            if position < len(self.segments) - 1:  # summed once from its index entries, then stored
                segment = self.segments[position]
                high = self.segments[position + 1].base_offset
                segment.totals = _totals_of(self._index_entries(segment.base_offset, high))
                db.put(self._segment_prefix + _OFFSET.pack(segment.base_offset),
                       _pack_summary(segment.created_ms, segment.totals))
        last = next(db.iterator(prefix=self._index_prefix, reverse=True), None)
        end = _INDEX_VALUE.unpack_from(last[1])[0] + 1 if last is not None else 0
        self.log_end_offset = self._next_offset = max(end, self.log_start_offset)
        self._load_producers()
        for segment in self.segments[:-1]:
            self.size_bytes += segment.totals.size
        if self.segments:
            active = self.segments[-1]
            self._active = self._assigning = (active, self._index.totals())
            self.size_bytes += self._active[1].size
        self._load_epochs()

    def _load_epochs(self) -> None:
        stored = self.store.db.get(self._epochs_key)
        if stored is not None:
            self.epochs = [_EPOCH_ENTRY.unpack_from(stored, at) for at in range(0, len(stored), _EPOCH_ENTRY.size)]
        elif self.log_end_offset > self.log_start_offset and self._index.bases:
            # Written before the cache existed: the last batch's epoch, from the log start on.
            last = self.read_batch_at(self._index.bases[-1])
            if last is not None:
                self.epochs = [(_BATCH_EPOCH.unpack_from(last, 12)[0], self.log_start_offset)]

    def _epochs_value(self, epochs: list[tuple[int, int]]) -> bytes:
        return b"".join(_EPOCH_ENTRY.pack(epoch, start) for epoch, start in epochs)

    @property
    def last_epoch(self) -> int:
        """The leader epoch of the log's last batch (-1: none known)."""
        return self.epochs[-1][0] if self.epochs else -1

    def end_offset_for_epoch(self, epoch: int) -> tuple[int, int]:
        """(the largest epoch <= `epoch` in this log, the offset after its last batch): OffsetForLeaderEpoch's
        answer. (-1, -1) when the log has no epoch that old."""
        found = -1
        for position, (known, _) in enumerate(self.epochs):
            if known > epoch:
                break
            found = position
        if found < 0:
            return -1, -1
        end = self.epochs[found + 1][1] if found + 1 < len(self.epochs) else self.log_end_offset
        return self.epochs[found][0], end

    def _load_producers(self) -> None:
        """Producer state from the newest snapshot plus the batches after it; fills the active index."""
        db = self.store.db
        self._snapshots = [_OFFSET.unpack_from(key, len(self._snapshot_prefix))[0]
                           for key in db.iterator(prefix=self._snapshot_prefix, include_value=False)]
        # Batches wholly below the log start are deleted; the one holding it stays and is read as before.
        replay_from = 0
        if self._snapshots:
            self.producers = ProducerStateManager.restore(
                db.get(self._snapshot_prefix + _OFFSET.pack(self._snapshots[-1])))
            replay_from = self._snapshots[-1]
        active_base = self.segments[-1].base_offset if self.segments else 0
        prefix, skip, has_tail = self._index_prefix, len(self._index_prefix), _INDEX_VALUE.size
        if replay_from < active_base:  # closed segments after the snapshot: replayed, not kept
            for key, value in db.iterator(start=prefix + _OFFSET.pack(replay_from), stop=prefix + _OFFSET.pack(active_base)):
                if len(value) > has_tail:
                    self._replay(_OFFSET.unpack_from(key, skip)[0], value)
        index = self._index
        bases, lasts, max_timestamps, sizes = index.bases, index.lasts, index.max_timestamps, index.sizes
        unpack_key, unpack_value = _OFFSET.unpack_from, _INDEX_VALUE.unpack_from
        for key, value in db.iterator(start=prefix + _OFFSET.pack(active_base), stop=prefix + _OFFSET.pack(END_OFFSET)):
            (base,) = unpack_key(key, skip)
            last, max_ts, size = unpack_value(value)
            bases.append(base)
            lasts.append(last)
            max_timestamps.append(max_ts)
            sizes.append(size)
            if len(value) > has_tail and base >= replay_from:
                self._replay(base, value)
        producers = self.producers
        producers.truncate_before(self.log_start_offset)
        producers.forget_below(self.log_start_offset)
        producers.remove_expired(int(time.time() * 1000), self.store.producer_id_expiration_ms)
        if replay_from < active_base:
            # No snapshot covered the closed segments (a log from before snapshots, or a lost one): store one
            # now so the next open replays nothing.
            self._put_snapshot(self.log_end_offset)

    def _replay(self, base: int, index_value: bytes) -> None:
        """Apply one index entry with producer fields to the producer state."""
        last, max_ts, _ = _INDEX_VALUE.unpack_from(index_value)
        pid, epoch, base_seq, attributes, marker, coordinator_epoch = _PRODUCER_TAIL.unpack_from(
            index_value, _INDEX_VALUE.size)
        self.replayed_batches += 1
        if marker != NO_MARKER:
            self.producers.append_marker(pid, epoch, coordinator_epoch, base, marker == 1, max_ts)
        else:
            self.producers.append_data(pid, epoch, base_seq, last_sequence(base_seq, last - base), base, last,
                                       max_ts, bool(attributes & _TRANSACTIONAL_BIT))

    def _index_entries(self, low: int, high: int) -> Iterator[tuple[int, int, int, int]]:
        """(base, last, max timestamp, size) of the batches with bases in [low, high), from LevelDB (blocking;
        any thread)."""
        prefix = self._index_prefix
        for key, value in self.store.db.iterator(start=prefix + _OFFSET.pack(low), stop=prefix + _OFFSET.pack(high)):
            yield (_OFFSET.unpack_from(key, len(prefix))[0], *_INDEX_VALUE.unpack_from(value))

    # -- producer-state snapshots -------------------------------------------------------
    def snapshot_writes(self, offset: int) -> list[tuple[bytes, bytes | None]]:
        """The puts (and deletes: None) that store the producer state as of `offset` (every batch below it
        applied) and drop snapshots beyond SNAPSHOTS_KEPT. The caller writes them, with the batches they
        cover when there are any (LogStore.stage does at each roll)."""
        if self._snapshots and self._snapshots[-1] == offset:
            return []
        writes: list[tuple[bytes, bytes | None]] = [(self._snapshot_prefix + _OFFSET.pack(offset), self.producers.snapshot())]
        self._snapshots.append(offset)
        while len(self._snapshots) > SNAPSHOTS_KEPT:
            writes.append((self._snapshot_prefix + _OFFSET.pack(self._snapshots.pop(0)), None))
        return writes

    def _put_snapshot(self, offset: int) -> None:
        with self.store.db.write_batch() as batch:
            for key, value in self.snapshot_writes(offset):
                batch.delete(key) if value is None else batch.put(key, value)

    @property
    def quiescent(self) -> bool:
        """No append is assigned but unwritten and no producer-state journal is open."""
        return self._next_offset == self.log_end_offset and not self.producers.in_journal

    # -- appends ----------------------------------------------------------------
    def prepare_append(
        self,
        batches: Iterable[tuple[int, int, int, memoryview]],
        stamp: Callable[[memoryview, int], bytes],
        index_tail: bytes = b"",
        epoch: int = -1,
        keep_offsets: bool = False,
    ) -> PendingAppend:
        """Assign offsets to (last_offset_delta, max_timestamp, size, bytes) batches.

        `stamp(batch, base_offset)` returns the bytes to store (patched header).
        `index_tail` (producer_index_tail) is for a single batch with a producer id.
        `epoch`: the leader epoch the batches are written in (a new one enters the leader-epoch cache).
        `keep_offsets`: the batches carry their offsets already (a follower copying its leader's log, where
        compaction may have left gaps); each must start at or after the next offset.
        """
        pending = PendingAppend(self, self._next_offset, self._next_offset, [], [], index_tail)
        active, totals = self._assigning
        now_ms = int(time.time() * 1000)
        index_capacity = max(1, self.segment_index_bytes // INDEX_ENTRY_BYTES)
        for last_delta, max_ts, size, batch in batches:
            base = pending.next_offset
            if keep_offsets:
                (base,) = _OFFSET.unpack_from(batch, 0)
                if base < pending.next_offset:
                    raise StorageError(f"batch at offset {base} overlaps the log, which ends at {pending.next_offset}")
                if not pending.index_entries:
                    pending.base_offset = base
            if active is None or (totals.batch_count > 0 and (totals.size + size > self.segment_bytes
                                                              or totals.batch_count >= index_capacity
                                                              or now_ms - active.created_ms >= self.segment_ms)):
                opened = Segment(base, now_ms)  # roll: this batch starts a segment
                pending.rolls.append(Roll(opened, active, totals))
                active, totals = opened, Totals()
            totals = totals.add(base + last_delta, max_ts, size)
            pending.batches.append(stamp(batch, base))
            pending.index_entries.append((base, base + last_delta, max_ts, size))
            pending.next_offset = base + last_delta + 1
        self._next_offset = pending.next_offset
        pending.active_after = self._assigning = (active, totals)
        if epoch > self.last_epoch and pending.index_entries:
            pending.epochs_after = self.epochs + [(epoch, pending.base_offset)]
        return pending

    def complete_append(self, pending: PendingAppend) -> None:
        rolls = iter(pending.rolls)
        roll = next(rolls, None)
        index = self._index
        for base, last, max_ts, size in pending.index_entries:
            if roll is not None and base == roll.opened.base_offset:
                if roll.closed is not None:
                    roll.closed.totals = roll.closed_totals
                self.segments.append(roll.opened)
                index = self._index = BatchIndex()
                roll = next(rolls, None)
            index.append(base, last, max_ts, size)
            self.size_bytes += size
        self.log_end_offset = pending.next_offset
        self._active = pending.active_after
        if pending.epochs_after is not None and pending.epochs_after[-1][0] > self.last_epoch:
            self.epochs = pending.epochs_after

    def abort_append(self, pending: PendingAppend) -> None:
        """Forget offsets assigned to a failed write (and everything after it)."""
        self._next_offset = min(self._next_offset, pending.base_offset)
        self._assigning = self._active

    # -- reads --------------------------------------------------------------------
    def plan_read(self, fetch_offset: int, max_bytes: int, upper_offset: int,
                  first_may_exceed: bool = True) -> tuple[list[int], int] | None:
        """(base offsets, total size) of the whole batches to read, from the one containing fetch_offset,
        below upper_offset, from the active segment's index (owner's thread, no I/O); fetch() reads them.
        None when fetch_offset is in a closed segment: read_stored finds those batches.

        Stops before max_bytes is exceeded, except that the first batch is
        returned even if larger when first_may_exceed (Kafka's rule, so a
        consumer can always make progress).
        """
        if self.segments and fetch_offset < self.segments[-1].base_offset:
            return None
        index = self._index
        position = index.locate(fetch_offset)
        bases: list[int] = []
        total = 0
        while position < len(index):
            base = index.bases[position]
            if base >= upper_offset:
                break
            size = index.sizes[position]
            if total + size > max_bytes and (bases or not first_may_exceed):
                break
            bases.append(base)
            total += size
            position += 1
        return bases, total

    def read_stored(self, fetch_offset: int, max_bytes: int, upper_offset: int,
                    first_may_exceed: bool = True) -> tuple[list[int], int, list[bytes]]:
        """plan_read's answer and the batches, found by a LevelDB seek on the index keys: reads that start
        in a closed segment (blocking; any thread). A batch deleted meanwhile is left out."""
        db, prefix = self.store.db, self._index_prefix
        start = fetch_offset
        for key, value in db.iterator(start=prefix, stop=prefix + _OFFSET.pack(fetch_offset + 1), reverse=True):
            if _INDEX_VALUE.unpack_from(value)[0] >= fetch_offset:  # the batch holding fetch_offset
                (start,) = _OFFSET.unpack_from(key, len(prefix))
            break
        bases: list[int] = []
        total = 0
        for key, value in db.iterator(start=prefix + _OFFSET.pack(start), stop=prefix + _OFFSET.pack(upper_offset)):
            size = _INDEX_VALUE.unpack_from(value)[2]
            if total + size > max_bytes and (bases or not first_may_exceed):
                break
            bases.append(_OFFSET.unpack_from(key, len(prefix))[0])
            total += size
        if not bases:
            return [], 0, []
        data_prefix = self._data_prefix
        batches = [value for _, value in db.iterator(start=data_prefix + _OFFSET.pack(bases[0]),
                                                      stop=data_prefix + _OFFSET.pack(bases[-1] + 1))]
        return bases, total, batches

    def fetch(self, bases: list[int]) -> list[bytes]:
        """The stored batches at these base offsets, in order; LevelDB reads only, so any thread may call
        it. A batch deleted meanwhile (retention, DeleteRecords) is left out."""
        get, prefix = self.store.db.get, self._data_prefix
        found = (get(prefix + _OFFSET.pack(base)) for base in bases)
        return [data for data in found if data is not None]

    def read(self, fetch_offset: int, max_bytes: int, upper_offset: int, first_may_exceed: bool = True) -> list[bytes]:
        """plan_read + fetch (or read_stored) in one blocking call (start-up replay, tests)."""
        planned = self.plan_read(fetch_offset, max_bytes, upper_offset, first_may_exceed)
        if planned is None:
            return self.read_stored(fetch_offset, max_bytes, upper_offset, first_may_exceed)[2]
        return self.fetch(planned[0])

    def read_batch_at(self, base_offset: int) -> bytes | None:
        return self.store.db.get(self._data_prefix + _OFFSET.pack(base_offset))

    def batch_locations(self) -> list[BatchLocation]:
        """Every batch's index entry, from LevelDB (blocking: tests and tools)."""
        return [BatchLocation(*entry) for entry in self._index_entries(0, END_OFFSET)]

    # -- timestamps (ListOffsets) ---------------------------------------------------------
    def closed_ranges_reaching(self, timestamp: int, from_offset: int) -> list[tuple[int, int]]:
        """[base, end) of the closed segments holding offsets from `from_offset` on whose largest timestamp
        reaches `timestamp`, in order: where scan_first_with_timestamp may find it."""
        ranges = []
        for position, segment in enumerate(self.segments[:-1]):
            high = self.segments[position + 1].base_offset
            if high > from_offset and segment.totals.max_timestamp >= timestamp:
                ranges.append((segment.base_offset, high))
        return ranges

    def scan_first_with_timestamp(self, low: int, high: int, timestamp: int, from_offset: int = 0
                                  ) -> BatchLocation | None:
        """The first batch with its base in [low, high), holding offsets from `from_offset` on, whose max
        timestamp is >= timestamp (blocking; any thread)."""
        first = max(from_offset, self.log_start_offset)
        for entry in self._index_entries(low, high):
            if entry[2] >= timestamp and entry[1] >= first:
                return BatchLocation(*entry)
        return None

    def active_first_with_timestamp(self, timestamp: int, from_offset: int) -> BatchLocation | None:
        index = self._index
        for position in range(index.locate(from_offset), len(index)):
            if index.max_timestamps[position] >= timestamp:
                return index.location(position)
        return None

    def max_timestamp_range(self) -> tuple[int, int] | None:
        """[low, high) of the first closed segment holding the log's largest timestamp; None when the active
        segment holds it (active_batch_with_max_timestamp) or the log is empty."""
        best, best_ts = None, max(self._index.max_timestamps, default=-1)
        for position, segment in enumerate(self.segments[:-1]):
            if segment.totals.batch_count and segment.totals.max_timestamp >= best_ts:
                if best is None or segment.totals.max_timestamp > best_ts:
                    best, best_ts = position, segment.totals.max_timestamp
        if best is None:
            return None
        return max(self.segments[best].base_offset, self.log_start_offset), self.segments[best + 1].base_offset

    def scan_max_timestamp(self, low: int, high: int) -> BatchLocation | None:
        """The first batch in [low, high) with the largest max timestamp (blocking; any thread)."""
        best = None
        for entry in self._index_entries(low, high):
            if best is None or entry[2] > best[2]:
                best = entry
        return None if best is None else BatchLocation(*best)

    def active_batch_with_max_timestamp(self) -> BatchLocation | None:
        index = self._index
        if not len(index):
            return None
        return index.location(max(range(len(index)), key=index.max_timestamps.__getitem__))

    def aborted_transactions(self, first_offset: int, upper_offset: int) -> list[tuple[int, int]]:
        """(producer id, first offset) of aborted transactions overlapping [first_offset, upper_offset)."""
        return self.producers.aborted_transactions(first_offset, upper_offset)

    # -- segments and retention -------------------------------------------------------
    def segment_infos(self) -> list[SegmentInfo]:
        """Every segment with its end, size and largest timestamp (from the summaries)."""
        return list(self._segment_infos())

    def _segment_infos(self) -> Iterator[SegmentInfo]:
        """segment_infos one at a time, oldest first."""
        last = len(self.segments) - 1
        for position, segment in enumerate(self.segments):
            if position < last:
                totals = segment.totals
                yield SegmentInfo(segment.base_offset, self.segments[position + 1].base_offset, totals.size,
                                  totals.max_timestamp, True)
            else:
                totals = self._active[1]
                yield SegmentInfo(segment.base_offset, self.log_end_offset, totals.size, totals.max_timestamp, False)

    def retention_offset(self, now_ms: int, retention_ms: int, retention_bytes: int,
                         keep_from: int | None = None) -> int | None:
        """The log start offset retention asks for: the end of the last whole segment to delete, oldest
        first, while its largest timestamp is more than retention_ms old or the log minus it still holds
        retention_bytes (-1: no limit), as Kafka's retention; never past `keep_from` (a segment holding it
        stays). None when nothing is due.

        The active segment goes too when it is due (Kafka rolls first), unless an append is in flight."""
        total = self.size_bytes
        new_start = None
        for info in self._segment_infos():
            if not info.closed and (info.size == 0 or self._next_offset > self.log_end_offset):
                break
            due = (info.size == 0  # every batch already below the log start (DeleteRecords)
                   or (retention_ms >= 0 and now_ms - info.max_timestamp > retention_ms)
                   or (retention_bytes >= 0 and total - info.size >= retention_bytes))
            if not due or (keep_from is not None and info.end_offset > keep_from):
                break
            total -= info.size
            new_start = info.end_offset
        if new_start is None or new_start <= self.log_start_offset:
            return None
        return new_start

    def size_below(self, offset: int) -> int:
        """Bytes of the batches wholly below `offset`, a segment boundary or an offset in the active segment
        (what advancing the log start there deletes)."""
        total = 0
        for info in self._segment_infos():
            if info.end_offset <= offset:
                total += info.size
            elif not info.closed:
                index = self._index
                total += sum(index.sizes[:index.locate(offset)])
        return total

    def compact_below(self, offset: int) -> None:
        """Ask LevelDB to compact the deleted ranges below `offset` now: deleted keys only give their space
        back when LevelDB compacts the files holding them (blocking; any thread)."""
        for prefix in (self._data_prefix, self._index_prefix):
            self.store.db.compact_range(start=prefix, stop=prefix + _OFFSET.pack(offset))

    # -- compaction --------------------------------------------------------------------
    def clean_plan(self, now_ms: int, min_compaction_lag_ms: int, delete_retention_ms: int) -> CleanPlan | None:
        """What a cleaning pass would cover now (see CleanPlan); None when no closed segment is cleanable."""
        first_unstable = self.producers.first_unstable_offset()
        start = self.log_start_offset
        end = start
        horizon = start
        horizon_open = True  # the horizon stops at the first segment that does not qualify
        cleanable: list[SegmentInfo] = []
        for position, info in enumerate(self._segment_infos()):
            if (not info.closed or (first_unstable is not None and info.end_offset > first_unstable)
                    or (min_compaction_lag_ms > 0 and info.max_timestamp > now_ms - min_compaction_lag_ms)):
                break
            cleanable.append(info)
            end = max(end, info.end_offset)
            closed_ms = self.segments[position + 1].created_ms  # a segment closes when the next one starts
            horizon_open = (horizon_open and info.end_offset <= self.cleaner_checkpoint
                            and closed_ms <= now_ms - delete_retention_ms)
            if horizon_open:
                horizon = max(horizon, info.end_offset)
        if end <= start:
            return None
        dirty_from = min(max(self.cleaner_checkpoint, start), end)
        clean_bytes = dirty_bytes = 0
        first_dirty_timestamp = -1
        for position, info in enumerate(cleanable):
            if info.end_offset <= dirty_from:
                clean_bytes += info.size
                continue
            if dirty_bytes == 0 and first_dirty_timestamp < 0:
                first_dirty_timestamp = self.segments[position].totals.first_timestamp
            dirty_bytes += info.size
        keep_empty = frozenset(base for entry in self.producers.producers.values() for _, _, base, _ in entry.batches)
        return CleanPlan(start, dirty_from, end, horizon, clean_bytes, dirty_bytes, first_dirty_timestamp,
                         keep_empty, list(self.producers.aborted))

    def scan(self, start: int, end: int, max_bytes: int = 1 << 62) -> tuple[list[tuple[int, bytes]], int]:
        """(base offset, stored bytes) of the batches with base offsets from `start`, below `end`, in order,
        straight from LevelDB (the cleaner's reads: any thread), stopping once max_bytes are read; and the
        offset to scan from next (`end` when the range is done)."""
        prefix = self._data_prefix
        batches: list[tuple[int, bytes]] = []
        total = 0
        for key, value in self.store.db.iterator(start=prefix + _OFFSET.pack(start), stop=prefix + _OFFSET.pack(end)):
            (base,) = _OFFSET.unpack_from(key, len(prefix))
            batches.append((base, value))
            total += len(value)
            if total >= max_bytes:
                return batches, base + 1
        return batches, end

    def write_cleaned(self, changes: list[tuple[int, int, bytes | None]]) -> None:
        """Write a cleaned chunk: each (base offset, its stored size, the batch's new bytes or None to delete
        it), in synced WriteBatches of about CLEANED_WRITE_BYTES. LevelDB runs one write at a time, so the
        committer's appends wait for the one in progress: small ones keep that wait short, and syncing them
        here keeps their bytes out of the committer's next fsync. A crash between two leaves some batches
        cleaned and some not, which the next pass (from the unchanged checkpoint) finishes. Blocking, any
        thread; then complete_clean on the owner's thread."""
        db = self.store.db
        batch, pending = db.write_batch(sync=True), 0
        for base, _, data in changes:
            suffix = _OFFSET.pack(base)
            if data is None:
                batch.delete(self._data_prefix + suffix)
                batch.delete(self._index_prefix + suffix)
            else:
                index_value = db.get(self._index_prefix + suffix)
                if index_value is None:  # gone meanwhile (the caller holds off deletes: not expected)
                    continue
                patched = bytearray(index_value)
                struct.pack_into(">i", patched, 16, len(data))  # the size field of _INDEX_VALUE
                batch.put(self._data_prefix + suffix, data)
                batch.put(self._index_prefix + suffix, bytes(patched))
                pending += len(data)
            pending += 64
            if pending >= CLEANED_WRITE_BYTES:
                StagedWrite(batch).commit()
                pending = 0
        if pending:
            StagedWrite(batch).commit()

    def complete_clean(self, changes: list[tuple[int, int, bytes | None]]) -> int:
        """Publish a written chunk in the segments' totals; returns the bytes it reclaimed. Their summaries
        are stored at the end of the pass (stage_finish_clean)."""
        bases = [segment.base_offset for segment in self.segments]
        reclaimed = 0
        for base, old_size, data in changes:
            segment = self.segments[bisect.bisect_right(bases, base) - 1]
            gone = old_size - (0 if data is None else len(data))
            segment.totals = segment.totals.less(gone, 1 if data is None else 0)
            reclaimed += gone
        self.size_bytes -= reclaimed
        return reclaimed

    def stage_finish_clean(self, plan: CleanPlan) -> tuple["StagedWrite", list[list[Segment]]]:
        """After a whole pass: the checkpoint moves to plan.end, the cleaned segments' summaries are stored,
        and runs of cleaned segments that together fit in segment.bytes become one (Kafka's
        groupSegmentsBySize), so a compacted log keeps few segments. Commit the write (any thread), then
        complete_finish_clean on the owner's thread with the groups returned."""
        groups: list[list[Segment]] = []
        group_size = 0
        for position, info in enumerate(self._segment_infos()):
            if info.end_offset > plan.end or not info.closed:
                break
            segment = self.segments[position]
            if groups and group_size + info.size <= self.segment_bytes:
                groups[-1].append(segment)
                group_size += info.size
            else:
                groups.append([segment])
                group_size = info.size
        batch = self.store.db.write_batch()
        batch.put(self._meta_key, _META_VALUE_CLEANED.pack(self.log_start_offset, plan.end))
        for group in groups:
            batch.put(self._segment_prefix + _OFFSET.pack(group[0].base_offset),
                      _pack_summary(group[0].created_ms, _merged(group)))
            for segment in group[1:]:
                batch.delete(self._segment_prefix + _OFFSET.pack(segment.base_offset))
        return StagedWrite(batch), groups

    def complete_finish_clean(self, plan: CleanPlan, groups: list[list[Segment]]) -> None:
        self.cleaner_checkpoint = plan.end
        merged = set()
        for group in groups:
            group[0].totals = _merged(group)
            merged.update(id(segment) for segment in group[1:])
        if merged:
            self.segments = [segment for segment in self.segments if id(segment) not in merged]

    # -- truncation -----------------------------------------------------------------
    def stage_delete_before(self, offset: int) -> HeadTruncation | None:
        """Stage advancing the log start offset and dropping the batches wholly below it. Commit the
        returned truncation (a synced write; any thread), then complete_delete_before with it on the owner's
        thread. None if nothing changes."""
        if offset <= self.log_start_offset:
            return None
        dropped = self._segments_below(offset)
        cut = None
        for position, segment in enumerate(self.segments[:-1]):
            if segment.base_offset < offset < self.segments[position + 1].base_offset:
                cut = segment
        return HeadTruncation(self, offset, dropped, cut, [segment.base_offset for segment in self.segments])

    def _segments_below(self, offset: int) -> list[Segment]:
        """Closed segments wholly below `offset`. The active segment stays even when all its batches go
        (appends may be assigned to it already): it is then empty and rolls by the usual rules."""
        below = []
        for position, segment in enumerate(self.segments[:-1]):
            if self.segments[position + 1].base_offset > offset:
                break
            below.append(segment)
        return below

    def complete_delete_before(self, truncation: HeadTruncation) -> None:
        offset = truncation.offset
        if offset <= self.log_start_offset:
            return
        dropped = {id(segment) for segment in truncation.dropped}
        self.segments = [segment for segment in self.segments if id(segment) not in dropped]
        active = self._active[0]
        for segment in self.segments:
            gone = truncation.deleted.get(segment.base_offset)
            if gone is None:
                continue
            if segment is not active:
                segment.totals = segment.totals.less(*gone)
                continue
            # The active segment's index and totals (and those of appends assigned to it) lose the batches.
            index = self._index
            index.drop_before(index.locate(offset))
            totals = index.totals()
            if self._assigning[0] is active:
                assigning = self._assigning[1].less(*gone)
                self._assigning = (active, assigning._replace(first_timestamp=totals.first_timestamp)
                                   if len(index) else assigning)
            self._active = (active, totals)
        self.size_bytes -= sum(size for size, _ in truncation.deleted.values())
        self.log_start_offset = offset
        self.producers.truncate_before(offset)
        if offset > self.log_end_offset:  # only reachable through direct calls; Kafka caps at the high watermark
            self.log_end_offset = offset
            self._next_offset = max(self._next_offset, offset)  # never reuse offsets of an in-flight append

    def truncate_from(self, offset: int) -> None:
        """Drop every batch at or above `offset` (a follower cutting a suffix that diverged from its
        leader); blocking, written without sync (the caller's next sync makes it durable). Only the active
        segment can be cut: a log whose closed segments would lose batches raises StorageError."""
        if offset >= self.log_end_offset:
            return
        if not self.quiescent or (self.segments and offset < self.segments[-1].base_offset):
            raise StorageError(f"cannot truncate {self.topic_id}-{self.partition} to {offset}: only the active "
                               "segment of a quiescent log can be cut")
        index = self._index
        position = index.locate(offset)
        if position < len(index) and index.bases[position] < offset:
            raise StorageError(f"cannot truncate {self.topic_id}-{self.partition} inside the batch at "
                               f"{index.bases[position]}")
        cut = sum(index.sizes[position:])
        with self.store.db.write_batch() as batch:
            for base in index.bases[position:]:
                batch.delete(self._data_prefix + _OFFSET.pack(base))
                batch.delete(self._index_prefix + _OFFSET.pack(base))
        for column in (index.bases, index.lasts, index.max_timestamps, index.sizes):
            del column[position:]
        self.size_bytes -= cut
        active = self._active[0]
        self._active = self._assigning = (active, index.totals())
        self.log_end_offset = self._next_offset = max(offset, self.log_start_offset)

    def truncate_to(self, offset: int, sync: bool = True) -> None:
        """Drop every batch at or above `offset`, in any segment, and reload the log from LevelDB, so the
        index, segment totals and producer state are those of the shorter log (a follower cutting the suffix
        that diverged from its leader: rare and short). A batch straddling `offset` goes too. The log must
        be quiescent; blocking."""
        if offset >= self.log_end_offset:
            return
        if not self.quiescent:
            raise StorageError(f"cannot truncate {self.topic_id}-{self.partition} while appends are in flight")
        db = self.store.db
        offset = max(offset, self.log_start_offset)
        cut_from = offset
        for key, value in db.iterator(start=self._index_prefix, stop=self._index_prefix + _OFFSET.pack(offset),
                                      reverse=True):
            base = _OFFSET.unpack_from(key, len(self._index_prefix))[0]
            if _INDEX_VALUE.unpack_from(value)[0] >= offset:
                cut_from = base  # the batch holding `offset`
            break
        with db.write_batch(sync=sync) as batch:
            for kind in (DATA, INDEX):
                prefix = partition_prefix(kind, self.topic_id, self.partition)
                for key in db.iterator(start=prefix + _OFFSET.pack(cut_from), stop=prefix + _OFFSET.pack(END_OFFSET),
                                       include_value=False):
                    batch.delete(key)
            for key in db.iterator(start=self._segment_prefix + _OFFSET.pack(cut_from),
                                   stop=self._segment_prefix + _OFFSET.pack(END_OFFSET), include_value=False):
                batch.delete(key)
            kept = [segment for segment in self.segments if segment.base_offset < cut_from]
            if kept:  # the last segment kept becomes the active one again
                batch.put(self._segment_prefix + _OFFSET.pack(kept[-1].base_offset),
                          _SEGMENT_VALUE.pack(kept[-1].created_ms))
            for snapshot in self._snapshots:
                if snapshot > cut_from:
                    batch.delete(self._snapshot_prefix + _OFFSET.pack(snapshot))
            epochs = [(epoch, start) for epoch, start in self.epochs if start < cut_from]
            batch.put(self._epochs_key, self._epochs_value(epochs))
        self._reset()
        self._load()

    def delete_records_before(self, offset: int) -> None:
        """stage + commit + complete in one blocking call (tests, tools)."""
        staged = self.stage_delete_before(offset)
        if staged is not None:
            staged.commit()
            self.complete_delete_before(staged)


def _merged(group: list[Segment]) -> Totals:
    """The totals of segments merged into one."""
    kept = [segment.totals for segment in group if segment.totals.batch_count]
    if not kept:
        return Totals()
    return Totals(sum(t.size for t in kept), kept[0].first_timestamp, max(t.max_timestamp for t in kept),
                  kept[-1].last_offset, sum(t.batch_count for t in kept))


class StagedWrite:
    """A WriteBatch ready to be written with one (optionally synced) LevelDB write."""

    def __init__(self, batch) -> None:
        self._batch = batch

    def commit(self) -> None:
        try:
            self._batch.write()
        except (plyvel.Error, OSError) as exc:
            raise StorageError(str(exc)) from exc
        finally:
            self._batch.clear()


class LogStore:
    """The broker's LevelDB database holding every partition log."""

    def __init__(self, path: Path, sync_writes: bool = True,
                 producer_id_expiration_ms: int = DEFAULT_PRODUCER_ID_EXPIRATION_MS) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.sync_writes = sync_writes
        self.producer_id_expiration_ms = producer_id_expiration_ms  # idle producers are forgotten at load
        self.db = self._open()
        self._logs: dict[tuple[uuid.UUID, int], PartitionLog] = {}
        self._write_batches: dict[bool, "plyvel.WriteBatch"] = {}

    def _open(self) -> "plyvel.DB":
        # Up to two memtables of write_buffer_size live at once, outside the request pool: 8 MiB
        # (LevelDB's default is 4) keeps a burst within the broker's memory bound (docs/limits.md).
        return plyvel.DB(str(self.path), create_if_missing=True, write_buffer_size=8 << 20)

    def reopen(self) -> None:
        """Close the database and open it again. After one failed write (e.g. a full disk) LevelDB refuses
        every later write (its background error stays set); reopening is how writes resume once space is
        back. Nothing else may use `db` meanwhile (the broker's StoreGate); raises StorageError if the
        database cannot be opened yet."""
        self._write_batches.clear()
        if not self.db.closed:
            self.db.close()
        try:
            self.db = self._open()
        except (plyvel.Error, OSError) as exc:
            raise StorageError(f"reopening the log database failed: {exc}") from exc

    def partition(self, topic_id: uuid.UUID, partition: int) -> PartitionLog:
        key = (topic_id, partition)
        log = self._logs.get(key)
        if log is None:
            log = self._logs[key] = PartitionLog(self, topic_id, partition)
        return log

    def existing_partitions(self) -> set[tuple[uuid.UUID, int]]:
        """Partitions that have any stored key (for dropping orphans at start-up)."""
        found = set()
        for kind in (DATA, META):
            for key in self.db.iterator(prefix=kind, include_value=False):
                topic_bytes, partition = _PARTITION_KEY.unpack_from(key, 1)
                found.add((uuid.UUID(bytes=topic_bytes), partition))
        return found

    def stage(self, pendings: list[PendingAppend], sync: bool | None = None) -> "StagedWrite":
        """Copy several partitions' appends into one WriteBatch (cheap, needs the GIL).

        One staged write at a time: commit it before staging the next.

        The returned StagedWrite's commit() does the I/O and releases the GIL,
        so only that part needs a worker thread.
        """
        sync = self.sync_writes if sync is None else sync
        # Reuse one WriteBatch per sync mode: its buffer keeps its capacity, so
        # staging megabytes is a memcpy, not a fresh allocation that page-faults.
        batch = self._write_batches.get(sync)
        if batch is None:
            batch = self._write_batches[sync] = self.db.write_batch(sync=sync)
        rolled: set[PartitionLog] = set()
        for pending in pendings:
            log = pending.log
            tail = pending.index_tail
            for data, (base, last, max_ts, size) in zip(pending.batches, pending.index_entries):
                suffix = _OFFSET.pack(base)
                batch.put(log._data_prefix + suffix, data)
                value = _INDEX_VALUE.pack(last, max_ts, size)
                batch.put(log._index_prefix + suffix, value + tail if tail else value)
            if pending.epochs_after is not None:
                batch.put(log._epochs_key, log._epochs_value(pending.epochs_after))
            for roll in pending.rolls:
                if roll.closed is not None:
                    batch.put(log._segment_prefix + _OFFSET.pack(roll.closed.base_offset),
                              _pack_summary(roll.closed.created_ms, roll.closed_totals))
                batch.put(log._segment_prefix + _OFFSET.pack(roll.opened.base_offset),
                          _SEGMENT_VALUE.pack(roll.opened.created_ms))
                rolled.add(log)
            pending.batches = []  # the WriteBatch holds the bytes now
        # A producer-state snapshot in each roll's own write: the state now covers exactly the offsets
        # assigned so far (this write's included), so it is durable exactly when they are.
        for log in rolled:
            for key, value in log.snapshot_writes(log._next_offset):
                batch.delete(key) if value is None else batch.put(key, value)
        return StagedWrite(batch)

    def write(self, pendings: list[PendingAppend], sync: bool | None = None) -> None:
        """stage() + commit() in one blocking call. Not for use while another staged write is pending."""
        self.stage(pendings, sync).commit()

    def sync(self) -> None:
        """Force everything written so far to disk (an empty synced write flushes the WAL)."""
        self.db.write_batch(sync=True).write()

    def drop_partition(self, topic_id: uuid.UUID, partition: int) -> None:
        dropped = self._logs.pop((topic_id, partition), None)
        if dropped is not None:
            dropped.dropped = True  # a cleaning pass in progress stops at its next chunk
        with self.db.write_batch(sync=self.sync_writes) as batch:
            for kind in (DATA, INDEX, SEGMENT, SNAPSHOT):
                for key in self.db.iterator(prefix=partition_prefix(kind, topic_id, partition), include_value=False):
                    batch.delete(key)
            batch.delete(partition_prefix(META, topic_id, partition))
            batch.delete(partition_prefix(EPOCHS, topic_id, partition))

    def close(self) -> None:
        """Close the database, first storing each quiet log's producer state at its end (as Kafka snapshots
        at a clean shutdown), so the next open replays nothing."""
        if self.db.closed:
            return
        try:
            for log in self._logs.values():
                if log.quiescent and log.log_end_offset > 0:
                    log._put_snapshot(log.log_end_offset)
        except (plyvel.Error, OSError) as exc:  # e.g. a full disk: the next open replays more, nothing is lost
            logging.getLogger(__name__).warning("producer-state snapshots not stored at close: %s", exc)
        self.db.close()
