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
                                                          creation time, epoch ms)

Segments: a partition's log is a run of segments, each starting at a batch's base
offset; the last one is active (appends go there) and rolls by `segment_bytes` /
`segment_ms`, as Kafka's segment.bytes / segment.ms. Retention drops whole
segments (`retention_offset`), and `compact_below` asks LevelDB to compact the
deleted key ranges so the space is given back.

Log compaction (broker/compaction.py decides what a pass keeps) rewrites closed
segments in place: a cleaned batch keeps its key (base offset) and its last
offset, so offsets never change and the index stays ordered; a batch left with
no record is deleted. `clean_plan` says what a pass covers, `write_cleaned` /
`complete_clean` apply a chunk of it, `stage_finish_clean` /
`complete_finish_clean` record the checkpoint (the first offset not yet
cleaned) and merge small cleaned segments.

A batch and its index entry are written in the same WriteBatch, so after a
crash either both exist or neither does: a half-written batch is never seen.
Producer state (storage/producer_state.py) is rebuilt from the index entries
at load, so it always matches the log: no separate snapshot to lag behind.

Appends are split in three steps so the caller can group-commit many
partitions in one write and run the blocking part on a worker thread:
prepare_append (assign offsets, stamp bytes; caller's thread),
LogStore.write (one WriteBatch, optionally synced; any thread),
complete_append / abort_append (publish or roll back; caller's thread).
Everything here is synchronous and free of trio.
"""

from __future__ import annotations

import bisect
import struct
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

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
_SEGMENT_VALUE = struct.Struct(">q")  # created_ms

DATA, INDEX, META, SEGMENT = b"d", b"i", b"m", b"s"
DEFAULT_SEGMENT_BYTES = 1 << 30  # Kafka's log.segment.bytes
DEFAULT_SEGMENT_MS = 7 * 24 * 3600 * 1000  # Kafka's log.roll.hours=168
CLEANED_WRITE_BYTES = 256 << 10  # the log cleaner's writes (write_cleaned)


class StorageError(Exception):
    """The log could not be written (e.g. disk full); nothing was acknowledged."""


def producer_index_tail(producer_id: int, epoch: int, base_sequence: int, attributes: int,
                        marker: int = NO_MARKER, coordinator_epoch: int = -1) -> bytes:
    """What a batch with a producer id adds to its index entry (prepare_append's index_tail)."""
    return _PRODUCER_TAIL.pack(producer_id, epoch, base_sequence, attributes, marker, coordinator_epoch)


def partition_prefix(kind: bytes, topic_id: uuid.UUID, partition: int) -> bytes:
    return kind + _PARTITION_KEY.pack(topic_id.bytes, partition)


@dataclass(slots=True)
class Segment:
    base_offset: int
    created_ms: int


@dataclass(slots=True)
class SegmentInfo:
    """A segment as retention and metrics see it."""

    base_offset: int
    end_offset: int  # the next segment's base, or the log end for the active one
    size: int
    max_timestamp: int  # -1 when empty
    closed: bool


@dataclass(slots=True)
class PendingAppend:
    """Batches with assigned offsets, not yet durable."""

    log: "PartitionLog"
    base_offset: int
    next_offset: int
    batches: list[bytes]  # emptied once staged into a WriteBatch
    index_entries: list[tuple[int, int, int, int]]  # base, last, max_ts, size
    index_tail: bytes = b""  # producer fields of the (single) batch, see producer_index_tail
    new_segments: list[Segment] = field(default_factory=list)  # rolled by these batches
    active_after: tuple[Segment | None, int] = (None, 0)  # the active segment and its size after them


@dataclass(slots=True)
class BatchLocation:
    base_offset: int
    last_offset: int
    max_timestamp: int
    size: int


@dataclass(slots=True)
class CleanPlan:
    """What one cleaning pass of a compacted partition covers (Kafka's LogToClean), from the index.

    The pass cleans [start, end): `end` is the first uncleanable offset, the base of the first segment
    that is active, holds an open transaction's first offset or has records newer than
    min.compaction.lag.ms. Records from `dirty_from` on were never cleaned: their keys make the offset
    map. Tombstones and transaction markers in batches below `horizon` may go: their segments were
    cleaned before and closed more than delete.retention.ms ago."""

    start: int
    dirty_from: int
    end: int
    horizon: int
    batches: list[tuple[int, int, int]]  # (base offset, last offset, size) of the batches in [start, end)
    clean_bytes: int
    dirty_bytes: int
    first_dirty_timestamp: int  # largest timestamp of the first dirty batch; -1 when nothing is dirty
    keep_empty: frozenset[int]  # base offsets of each producer's retained batches (its last 5): kept even when emptied
    aborted: list[tuple[int, int, int]]  # (producer id, first offset, marker offset) of aborted transactions

    @property
    def dirty_ratio(self) -> float:
        total = self.clean_bytes + self.dirty_bytes
        return self.dirty_bytes / total if total else 0.0


class PartitionLog:
    """One partition's log: an in-memory batch index over LevelDB data.

    Not thread-safe: its in-memory state is touched only from the owner's
    thread; LevelDB itself may be written from a worker thread.
    """

    def __init__(self, store: "LogStore", topic_id: uuid.UUID, partition: int) -> None:
        self.store = store
        self.topic_id = topic_id
        self.partition = partition
        self._data_prefix = partition_prefix(DATA, topic_id, partition)
        self._index_prefix = partition_prefix(INDEX, topic_id, partition)
        self._meta_key = partition_prefix(META, topic_id, partition)
        self._segment_prefix = partition_prefix(SEGMENT, topic_id, partition)
        self.segments: list[Segment] = []  # published, by base offset; the last is active
        self.segment_bytes = DEFAULT_SEGMENT_BYTES  # roll policy, set by the broker from the topic's configs
        self.segment_ms = DEFAULT_SEGMENT_MS
        # The active segment and its size as durable appends left them, and as assigned appends see it.
        self._active: tuple[Segment | None, int] = (None, 0)
        self._assigning: tuple[Segment | None, int] = (None, 0)
        self._staged_segment_drop: list[Segment] = []
        # Parallel lists, ordered by base offset.
        self._base_offsets: list[int] = []
        self._last_offsets: list[int] = []
        self._max_timestamps: list[int] = []
        self._sizes: list[int] = []
        self.log_start_offset = 0
        self.cleaner_checkpoint = 0  # compaction: records below were cleaned (see CleanPlan)
        self.log_end_offset = 0  # next offset to be published (durable)
        self._next_offset = 0  # next offset to assign (includes in-flight appends)
        self.size_bytes = 0
        self.producers = ProducerStateManager()
        self.dropped = False  # its topic was deleted (LogStore.drop_partition)
        self._load()

    # -- recovery -------------------------------------------------------------
    def _load(self) -> None:
        db = self.store.db
        meta = db.get(self._meta_key)
        if meta is not None and len(meta) == _META_VALUE_CLEANED.size:
            self.log_start_offset, self.cleaner_checkpoint = _META_VALUE_CLEANED.unpack(meta)
        elif meta is not None:
            (self.log_start_offset,) = _META_VALUE.unpack(meta)
        producers = self.producers
        for key, value in db.iterator(prefix=self._index_prefix):
            (base,) = _OFFSET.unpack_from(key, len(self._index_prefix))
            last, max_ts, size = _INDEX_VALUE.unpack_from(value)
            if len(value) > _INDEX_VALUE.size:  # entries without producer fields are 20 bytes (also older logs)
                pid, epoch, base_seq, attributes, marker, coordinator_epoch = _PRODUCER_TAIL.unpack_from(
                    value, _INDEX_VALUE.size)
                if marker != NO_MARKER:
                    producers.append_marker(pid, epoch, coordinator_epoch, base, marker == 1, max_ts)
                else:
                    producers.append_data(pid, epoch, base_seq, last_sequence(base_seq, last - base), base, last,
                                          max_ts, bool(attributes & _TRANSACTIONAL_BIT))
            self._base_offsets.append(base)
            self._last_offsets.append(last)
            self._max_timestamps.append(max_ts)
            self._sizes.append(size)
            self.size_bytes += size
        end = self._last_offsets[-1] + 1 if self._last_offsets else 0
        self.log_end_offset = self._next_offset = max(end, self.log_start_offset)
        for key, value in db.iterator(prefix=self._segment_prefix):
            (base,) = _OFFSET.unpack_from(key, len(self._segment_prefix))
            self.segments.append(Segment(base, _SEGMENT_VALUE.unpack(value)[0]))
        if self._base_offsets and (not self.segments or self.segments[0].base_offset > self._base_offsets[0]):
            # Batches written before segments existed: one segment holds them (not stored; it is found again).
            self.segments.insert(0, Segment(self._base_offsets[0], int(time.time() * 1000)))
        if self.segments:
            active = self.segments[-1]
            self._active = self._assigning = (active, sum(self._sizes[self.locate(active.base_offset):]))
        producers.truncate_before(self.log_start_offset)
        producers.remove_expired(int(time.time() * 1000), self.store.producer_id_expiration_ms)

    # -- appends ----------------------------------------------------------------
    def prepare_append(
        self,
        batches: Iterable[tuple[int, int, int, memoryview]],
        stamp: Callable[[memoryview, int], bytes],
        index_tail: bytes = b"",
    ) -> PendingAppend:
        """Assign offsets to (last_offset_delta, max_timestamp, size, bytes) batches.

        `stamp(batch, base_offset)` returns the bytes to store (patched header).
        `index_tail` (producer_index_tail) is for a single batch with a producer id.
        """
        pending = PendingAppend(self, self._next_offset, self._next_offset, [], [], index_tail)
        active, active_size = self._assigning
        now_ms = int(time.time() * 1000)
        for last_delta, max_ts, size, batch in batches:
            base = pending.next_offset
            if active is None or (active_size > 0 and (active_size + size > self.segment_bytes
                                                       or now_ms - active.created_ms >= self.segment_ms)):
                active, active_size = Segment(base, now_ms), 0  # roll: this batch starts a segment
                pending.new_segments.append(active)
            active_size += size
            pending.batches.append(stamp(batch, base))
            pending.index_entries.append((base, base + last_delta, max_ts, size))
            pending.next_offset = base + last_delta + 1
        self._next_offset = pending.next_offset
        pending.active_after = self._assigning = (active, active_size)
        return pending

    def complete_append(self, pending: PendingAppend) -> None:
        for base, last, max_ts, size in pending.index_entries:
            self._base_offsets.append(base)
            self._last_offsets.append(last)
            self._max_timestamps.append(max_ts)
            self._sizes.append(size)
            self.size_bytes += size
        self.log_end_offset = pending.next_offset
        self.segments.extend(pending.new_segments)
        self._active = pending.active_after

    def abort_append(self, pending: PendingAppend) -> None:
        """Forget offsets assigned to a failed write (and everything after it)."""
        self._next_offset = min(self._next_offset, pending.base_offset)
        self._assigning = self._active

    # -- reads --------------------------------------------------------------------
    def locate(self, offset: int) -> int:
        """Index position of the batch containing `offset` (or the first after it)."""
        return bisect.bisect_right(self._last_offsets, offset - 1)

    def plan_read(self, fetch_offset: int, max_bytes: int, upper_offset: int,
                  first_may_exceed: bool = True) -> tuple[list[int], int]:
        """(base offsets, total size) of the whole batches to read, from the one containing fetch_offset,
        below upper_offset. From the in-memory index only (owner's thread); fetch() reads the data.

        Stops before max_bytes is exceeded, except that the first batch is
        returned even if larger when first_may_exceed (Kafka's rule, so a
        consumer can always make progress).
        """
        position = self.locate(fetch_offset)
        bases: list[int] = []
        total = 0
        while position < len(self._base_offsets):
            base = self._base_offsets[position]
            if base >= upper_offset:
                break
            size = self._sizes[position]
            if total + size > max_bytes and (bases or not first_may_exceed):
                break
            bases.append(base)
            total += size
            position += 1
        return bases, total

    def fetch(self, bases: list[int]) -> list[bytes]:
        """The stored batches at these base offsets, in order; LevelDB reads only, so any thread may call
        it. A batch deleted meanwhile (retention, DeleteRecords) is left out."""
        get, prefix = self.store.db.get, self._data_prefix
        found = (get(prefix + _OFFSET.pack(base)) for base in bases)
        return [data for data in found if data is not None]

    def read(self, fetch_offset: int, max_bytes: int, upper_offset: int, first_may_exceed: bool = True) -> list[bytes]:
        """plan_read + fetch in one blocking call (start-up replay, tests)."""
        return self.fetch(self.plan_read(fetch_offset, max_bytes, upper_offset, first_may_exceed)[0])

    def batch_locations(self) -> list[BatchLocation]:
        return [
            BatchLocation(b, l, t, s)
            for b, l, t, s in zip(self._base_offsets, self._last_offsets, self._max_timestamps, self._sizes)
        ]

    def first_batch_with_timestamp(self, timestamp: int) -> BatchLocation | None:
        """The first batch whose max timestamp is >= timestamp (records inside decide the exact offset)."""
        for position, max_ts in enumerate(self._max_timestamps):
            if max_ts >= timestamp:
                return BatchLocation(
                    self._base_offsets[position], self._last_offsets[position], max_ts, self._sizes[position]
                )
        return None

    def batch_with_max_timestamp(self) -> BatchLocation | None:
        if not self._max_timestamps:
            return None
        best = max(range(len(self._max_timestamps)), key=self._max_timestamps.__getitem__)
        return BatchLocation(
            self._base_offsets[best], self._last_offsets[best], self._max_timestamps[best], self._sizes[best]
        )

    def aborted_transactions(self, first_offset: int, upper_offset: int) -> list[tuple[int, int]]:
        """(producer id, first offset) of aborted transactions overlapping [first_offset, upper_offset)."""
        return self.producers.aborted_transactions(first_offset, upper_offset)

    def read_batch_at(self, base_offset: int) -> bytes | None:
        return self.store.db.get(self._data_prefix + _OFFSET.pack(base_offset))

    # -- segments and retention -------------------------------------------------------
    def segment_infos(self) -> list[SegmentInfo]:
        """Every segment with its end, size and largest timestamp (from the in-memory index)."""
        return list(self._segment_infos())

    def _segment_infos(self) -> Iterator[SegmentInfo]:
        """segment_infos one at a time, oldest first: a caller that stops early does not sum the rest."""
        for position, segment in enumerate(self.segments):
            last = position == len(self.segments) - 1
            end = self.log_end_offset if last else self.segments[position + 1].base_offset
            low, high = self.locate(max(segment.base_offset, self.log_start_offset)), self.locate(end)
            yield SegmentInfo(segment.base_offset, end, sum(self._sizes[low:high]),
                              max(self._max_timestamps[low:high], default=-1), not last)

    def retention_offset(self, now_ms: int, retention_ms: int, retention_bytes: int) -> int | None:
        """The log start offset retention asks for: the end of the last whole segment to delete, oldest
        first, while its largest timestamp is more than retention_ms old or the log minus it still holds
        retention_bytes (-1: no limit), as Kafka's retention. None when nothing is due.

        The active segment goes too when it is due (Kafka rolls first), unless an append is in flight."""
        total = self.size_bytes
        new_start = None
        for info in self._segment_infos():
            if not info.closed and (info.size == 0 or self._next_offset > self.log_end_offset):
                break
            due = (info.size == 0  # every batch already below the log start (DeleteRecords)
                   or (retention_ms >= 0 and now_ms - info.max_timestamp > retention_ms)
                   or (retention_bytes >= 0 and total - info.size >= retention_bytes))
            if not due:
                break
            total -= info.size
            new_start = info.end_offset
        if new_start is None or new_start <= self.log_start_offset:
            return None
        return new_start

    def size_below(self, offset: int) -> int:
        """Bytes of the batches wholly below `offset` (what advancing the log start there deletes)."""
        return sum(self._sizes[:self.locate(offset)])

    def compact_below(self, offset: int) -> None:
        """Ask LevelDB to compact the deleted ranges below `offset` now: deleted keys only give their space
        back when LevelDB compacts the files holding them (blocking; any thread)."""
        for prefix in (self._data_prefix, self._index_prefix):
            self.store.db.compact_range(start=prefix, stop=prefix + _OFFSET.pack(offset))

    # -- compaction --------------------------------------------------------------------
    def clean_plan(self, now_ms: int, min_compaction_lag_ms: int, delete_retention_ms: int,
                   with_batches: bool = True) -> CleanPlan | None:
        """What a cleaning pass would cover now (see CleanPlan); None when no closed segment is cleanable.
        Without batches (an empty list) it is only the figures, e.g. for deciding whether a pass is due."""
        first_unstable = self.producers.first_unstable_offset()
        start = self.log_start_offset
        end = start
        horizon = start
        horizon_open = True  # the horizon stops at the first segment that does not qualify
        for position, info in enumerate(self._segment_infos()):
            if (not info.closed or (first_unstable is not None and info.end_offset > first_unstable)
                    or (min_compaction_lag_ms > 0 and info.max_timestamp > now_ms - min_compaction_lag_ms)):
                break
            end = max(end, info.end_offset)
            closed_ms = self.segments[position + 1].created_ms  # a segment closes when the next one starts
            horizon_open = (horizon_open and info.end_offset <= self.cleaner_checkpoint
                            and closed_ms <= now_ms - delete_retention_ms)
            if horizon_open:
                horizon = max(horizon, info.end_offset)
        if end <= start:
            return None
        dirty_from = min(max(self.cleaner_checkpoint, start), end)
        low, middle, high = self.locate(start), self.locate(dirty_from), self.locate(end)
        keep_empty = frozenset(base for entry in self.producers.producers.values() for _, _, base, _ in entry.batches)
        return CleanPlan(
            start, dirty_from, end, horizon,
            list(zip(self._base_offsets[low:high], self._last_offsets[low:high], self._sizes[low:high]))
            if with_batches else [],
            sum(self._sizes[low:middle]), sum(self._sizes[middle:high]),
            self._max_timestamps[middle] if middle < high else -1, keep_empty, list(self.producers.aborted))

    def scan(self, start: int, end: int) -> Iterator[tuple[int, bytes]]:
        """(base offset, stored bytes) of the batches with base offsets in [start, end), in order, straight
        from LevelDB (the cleaner's reads: any thread)."""
        prefix = self._data_prefix
        for key, value in self.store.db.iterator(start=prefix + _OFFSET.pack(start), stop=prefix + _OFFSET.pack(end)):
            yield _OFFSET.unpack_from(key, len(prefix))[0], value

    def write_cleaned(self, changes: list[tuple[int, bytes | None]]) -> None:
        """Write a cleaned chunk: each (base offset, the batch's new bytes, or None to delete it), in synced
        WriteBatches of about CLEANED_WRITE_BYTES. LevelDB runs one write at a time, so the committer's
        appends wait for the one in progress: small ones keep that wait short, and syncing them here keeps
        their bytes out of the committer's next fsync. A crash between two leaves some batches cleaned
        and some not, which the next pass (from the unchanged checkpoint) finishes. Blocking, any thread;
        then complete_clean on the owner's thread."""
        db = self.store.db
        batch, pending = db.write_batch(sync=True), 0
        for base, data in changes:
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

    def complete_clean(self, changes: list[tuple[int, bytes | None]]) -> int:
        """Publish a written chunk in the in-memory index; returns the bytes it reclaimed."""
        if not changes:
            return 0
        new_sizes = {base: None if data is None else len(data) for base, data in changes}
        low = bisect.bisect_left(self._base_offsets, changes[0][0])
        high = bisect.bisect_right(self._base_offsets, changes[-1][0])
        kept: list[tuple[int, int, int, int]] = []
        reclaimed = 0
        for base, last, max_ts, size in zip(self._base_offsets[low:high], self._last_offsets[low:high],
                                            self._max_timestamps[low:high], self._sizes[low:high]):
            if base not in new_sizes:
                kept.append((base, last, max_ts, size))
                continue
            new_size = new_sizes[base]
            reclaimed += size - (new_size or 0)
            if new_size is not None:
                kept.append((base, last, max_ts, new_size))
        self._base_offsets[low:high] = [entry[0] for entry in kept]
        self._last_offsets[low:high] = [entry[1] for entry in kept]
        self._max_timestamps[low:high] = [entry[2] for entry in kept]
        self._sizes[low:high] = [entry[3] for entry in kept]
        self.size_bytes -= reclaimed
        return reclaimed

    def stage_finish_clean(self, plan: CleanPlan) -> tuple["StagedWrite", list[Segment]]:
        """After a whole pass: the checkpoint moves to plan.end, and runs of cleaned segments that together
        fit in segment.bytes become one (Kafka's groupSegmentsBySize), so a compacted log keeps few
        segments. Commit the write (any thread), then complete_finish_clean on the owner's thread."""
        merged: list[Segment] = []
        group_size = -1
        for position, info in enumerate(self._segment_infos()):
            if info.end_offset > plan.end or not info.closed:
                break
            if position > 0 and 0 <= group_size and group_size + info.size <= self.segment_bytes:
                merged.append(self.segments[position])
                group_size += info.size
            else:
                group_size = info.size
        batch = self.store.db.write_batch()
        batch.put(self._meta_key, _META_VALUE_CLEANED.pack(self.log_start_offset, plan.end))
        for segment in merged:
            batch.delete(self._segment_prefix + _OFFSET.pack(segment.base_offset))
        return StagedWrite(batch), merged

    def complete_finish_clean(self, plan: CleanPlan, merged: list[Segment]) -> None:
        self.cleaner_checkpoint = plan.end
        if merged:
            dropped = {id(segment) for segment in merged}
            self.segments = [segment for segment in self.segments if id(segment) not in dropped]

    # -- truncation -----------------------------------------------------------------
    def stage_delete_before(self, offset: int) -> "StagedWrite | None":
        """Stage advancing the log start offset and dropping batches wholly below it.

        The returned write is synced; commit it (any thread), then call
        complete_delete_before on the owner's thread. None if nothing changes.
        """
        if offset <= self.log_start_offset:
            return None
        batch = self.store.db.write_batch(sync=True)
        batch.put(self._meta_key, _META_VALUE_CLEANED.pack(offset, self.cleaner_checkpoint))
        for base in self._base_offsets[: self.locate(offset)]:
            suffix = _OFFSET.pack(base)
            batch.delete(self._data_prefix + suffix)
            batch.delete(self._index_prefix + suffix)
        self._staged_segment_drop = self._segments_below(offset)  # complete_delete_before drops the same ones
        for segment in self._staged_segment_drop:
            batch.delete(self._segment_prefix + _OFFSET.pack(segment.base_offset))
        return StagedWrite(batch)

    def _segments_below(self, offset: int) -> list[Segment]:
        """Closed segments wholly below `offset`. The active segment stays even when all its batches go
        (appends may be assigned to it already): it is then empty and rolls by the usual rules."""
        below = []
        for position, segment in enumerate(self.segments[:-1]):
            if self.segments[position + 1].base_offset > offset:
                break
            below.append(segment)
        return below

    def complete_delete_before(self, offset: int) -> None:
        if offset <= self.log_start_offset:
            return
        keep_from = self.locate(offset)
        active = self._active[0]
        if active is not None:  # bytes of the active segment that go too
            gone = sum(self._sizes[self.locate(active.base_offset):keep_from])
            self._active = (active, self._active[1] - gone)
            if self._assigning[0] is active:
                self._assigning = (active, self._assigning[1] - gone)
        self.size_bytes -= self.size_below(offset)
        del self._base_offsets[:keep_from]
        del self._last_offsets[:keep_from]
        del self._max_timestamps[:keep_from]
        del self._sizes[:keep_from]
        dropped, self._staged_segment_drop = self._staged_segment_drop, []
        self.segments = [segment for segment in self.segments if segment not in dropped]
        self.log_start_offset = offset
        self.producers.truncate_before(offset)
        if offset > self.log_end_offset:  # only reachable through direct calls; Kafka caps at the high watermark
            self.log_end_offset = offset
            self._next_offset = max(self._next_offset, offset)  # never reuse offsets of an in-flight append

    def delete_records_before(self, offset: int) -> None:
        """stage + commit + complete in one blocking call (tests, tools)."""
        staged = self.stage_delete_before(offset)
        if staged is not None:
            staged.commit()
            self.complete_delete_before(offset)


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
        for pending in pendings:
            log = pending.log
            tail = pending.index_tail
            for data, (base, last, max_ts, size) in zip(pending.batches, pending.index_entries):
                suffix = _OFFSET.pack(base)
                batch.put(log._data_prefix + suffix, data)
                value = _INDEX_VALUE.pack(last, max_ts, size)
                batch.put(log._index_prefix + suffix, value + tail if tail else value)
            for segment in pending.new_segments:
                batch.put(log._segment_prefix + _OFFSET.pack(segment.base_offset), _SEGMENT_VALUE.pack(segment.created_ms))
            pending.batches = []  # the WriteBatch holds the bytes now
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
            for kind in (DATA, INDEX, SEGMENT):
                for key in self.db.iterator(prefix=partition_prefix(kind, topic_id, partition), include_value=False):
                    batch.delete(key)
            batch.delete(partition_prefix(META, topic_id, partition))

    def close(self) -> None:
        if not self.db.closed:
            self.db.close()
