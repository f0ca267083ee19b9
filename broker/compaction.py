"""What one log-compaction pass keeps: Kafka's LogCleaner rules over a PartitionLog's batches.

A pass covers the closed segments of a CleanPlan (storage/leveldb_log.py) in
two sweeps, each in chunks so the caller can run them on a worker thread and
throttle between them (broker/log_cleaner.py); the record rules (RecordFilter)
run in a child process in the broker (CleanerProcess), so that parsing records
does not compete with the event loop for the GIL:

1. `map_chunk`: the dirty part's keys, key -> offset of its last record
   (records of aborted transactions and markers left out);
2. `clean_chunk`: every batch of the plan, in order; a record stays when its
   key is not in the map or its offset is the key's last. Then:
   - keyless records go (Kafka's cleaner drops them too);
   - a tombstone (null value) goes once its batch is below the plan's horizon
     (cleaned before and closed more than delete.retention.ms ago);
   - records of aborted transactions go;
   - a transaction marker stays while any batch of its transaction stays, and
     otherwise until the horizon passes it;
   - a batch left with no record is deleted, except the batches each producer's
     state retains (its last five, as Kafka's duplicate detection), kept empty
     so that its epoch and sequences survive a restart;
   - a rewritten batch keeps its base offset, last offset, timestamps, producer
     fields and compression codec (protocol/record_batch.rebuild_batch).

Offsets never change and order is kept: a consumer reading from the start sees
the last value of every key. Synchronous: worker threads and the cleaner process.
"""

from __future__ import annotations

import multiprocessing
import os
from dataclasses import dataclass
from typing import Mapping

from lodestream.protocol.record_batch import parse_header, raw_records, rebuild_batch
from lodestream.storage.leveldb_log import CleanPlan, PartitionLog

# Batch bytes per worker-thread call and throttle step. Small, because the broker's thread holds the GIL
# while it builds a chunk's bytes and pickles them to the cleaner process, and the event loop waits
# meanwhile (docs/benchmarks.md, "Log compaction: produce latency while the cleaner compacts 1 GB").
CHUNK_BYTES = 512 << 10


@dataclass(frozen=True, slots=True)
class CleanSettings:
    """A compacted topic's cleaner configs (Kafka's names, from the effective topic config)."""

    min_cleanable_dirty_ratio: float
    min_compaction_lag_ms: int
    max_compaction_lag_ms: int
    delete_retention_ms: int

    @classmethod
    def from_topic_config(cls, config: Mapping[str, str]) -> "CleanSettings":
        return cls(float(config["min.cleanable.dirty.ratio"]), int(config["min.compaction.lag.ms"]),
                   int(config["max.compaction.lag.ms"]), int(config["delete.retention.ms"]))


class RecordFilter:
    """The record rules of one pass, over batches handed to it in log order (Kafka's LogCleaner): the
    offset map from the dirty part's batches, then what stays of every batch. Pure; it runs in the
    cleaner process (CleanerProcess) or, for tests and tools, in the caller."""

    def __init__(self, horizon: int, keep_empty: frozenset[int], aborted: list[tuple[int, int, int]]) -> None:
        self.horizon = horizon
        self.keep_empty = keep_empty
        self.offset_map: dict[bytes, int] = {}
        self.transaction_kept: dict[int, bool] = {}  # producer id -> a batch of its current transaction stayed
        self.aborted: dict[int, list[tuple[int, int]]] = {}  # producer id -> (first offset, marker offset)
        self.deletes_kept = 0  # tombstones and markers kept for now: a later pass removes them
        for producer_id, first, last in aborted:
            self.aborted.setdefault(producer_id, []).append((first, last))

    def _is_aborted(self, producer_id: int, offset: int) -> bool:
        return any(first <= offset <= last for first, last in self.aborted.get(producer_id, ()))

    def map_batches(self, batches: list[tuple[int, bytes]]) -> None:
        """Add the keys of these dirty batches to the map (key -> offset of its last record)."""
        offset_map = self.offset_map
        for base, data in batches:
            header = parse_header(data)
            if header.is_control or (header.is_transactional and self._is_aborted(header.producer_id, base)):
                continue
            for offset, key, _value, _raw in raw_records(data):
                if key is not None:
                    offset_map[key] = offset

    def clean_batches(self, batches: list[tuple[int, bytes]]) -> list[tuple[int, bytes | None]]:
        """What changes of these batches: (base offset, new bytes, or None to delete the batch)."""
        offset_map = self.offset_map
        changes: list[tuple[int, bytes | None]] = []
        for base, data in batches:
            header = parse_header(data)
            below_horizon = header.last_offset < self.horizon
            if header.is_control:
                if self.transaction_kept.pop(header.producer_id, False) or not below_horizon:
                    self.deletes_kept += 1
                else:
                    changes.append((base, None))
                continue
            records = raw_records(data)
            kept = []
            if not (header.is_transactional and self._is_aborted(header.producer_id, base)):
                for offset, key, value, raw in records:
                    if key is None or offset_map.get(key, -1) > offset:
                        continue
                    if value is None:
                        if below_horizon:
                            continue
                        self.deletes_kept += 1
                    kept.append(raw)
            if not kept and base not in self.keep_empty:
                changes.append((base, None))
                continue
            if len(kept) != len(records):
                changes.append((base, rebuild_batch(data, kept)))
            if header.is_transactional:
                self.transaction_kept[header.producer_id] = True
        return changes


@dataclass(slots=True)
class CleaningPass:
    """One pass over a plan: reads chunks of batches from the log and writes what the filter changed
    (worker threads); the filter decides (in the cleaner process, or here)."""

    plan: CleanPlan
    filter: "RecordFilter | CleanerProcess"
    bytes_read: int = 0
    bytes_reclaimed: int = 0  # added by the owner as it publishes each chunk (log.complete_clean)
    deletes_kept: int = 0  # the filter's count, once the pass is over

    def _read(self, log: PartitionLog, low: int, end: int) -> tuple[list[tuple[int, bytes]], int]:
        """About CHUNK_BYTES of batches from `low` below `end`, and where the next chunk starts."""
        batches, next_low = log.scan(low, end, CHUNK_BYTES)
        self.bytes_read += sum(len(data) for _, data in batches)
        return batches, next_low

    def map_chunk(self, log: PartitionLog, low: int, end: int) -> int:
        """Sweep 1: the keys of a chunk of dirty batches from `low`; returns where the next chunk starts."""
        batches, next_low = self._read(log, low, end)
        self.filter.map_batches(batches)
        return next_low

    def clean_chunk(self, log: PartitionLog, low: int, end: int) -> tuple[list[tuple[int, int, bytes | None]], int]:
        """Sweep 2: decide a chunk of batches from `low` and write the changed ones (log.write_cleaned);
        returns the changes, (base offset, stored size, new bytes or None when deleted), for
        log.complete_clean, and where the next chunk starts."""
        batches, next_low = self._read(log, low, end)
        sizes = {base: len(data) for base, data in batches}
        changes = [(base, sizes[base], data) for base, data in self.filter.clean_batches(batches)]
        log.write_cleaned(changes)
        return changes, next_low


class CleanerProcess:
    """A RecordFilter in a child process, so that record parsing does not hold the broker's GIL: a thread
    that holds it delays the event loop by a switch interval at each of its wake-ups, which at a few
    thousand requests per second is enough to queue them (docs/benchmarks.md, "Log compaction: produce
    latency while the cleaner compacts 1 GB"). Calls block (worker threads); one pass at a time; `close`
    stops the child."""

    def __init__(self) -> None:
        self._process = None
        self._connection = None

    def _call(self, *message):
        if self._process is None or not self._process.is_alive():
            self._start()
        try:
            self._connection.send(message)
            reply = self._connection.recv()
        except (EOFError, OSError) as exc:  # the child died: the pass fails, the next one starts a new child
            self._process.join(1)
            raise RuntimeError(f"the cleaner process exited (exit code {self._process.exitcode})") from exc
        if isinstance(reply, BaseException):
            raise reply
        return reply

    def _start(self) -> None:
        self.close()
        context = multiprocessing.get_context("spawn")  # never fork a process running trio and threads
        parent, child = context.Pipe()
        self._process = context.Process(target=_serve_filter, args=(child,), name="lodestream-cleaner", daemon=True)
        self._process.start()
        child.close()
        self._connection = parent

    def begin(self, plan: CleanPlan) -> "CleanerProcess":
        self._call("begin", plan.horizon, plan.keep_empty, plan.aborted)
        return self

    def map_batches(self, batches: list[tuple[int, bytes]]) -> None:
        self._call("map", batches)

    def clean_batches(self, batches: list[tuple[int, bytes]]) -> list[tuple[int, bytes | None]]:
        return self._call("clean", batches)

    @property
    def deletes_kept(self) -> int:
        return self._call("deletes_kept")

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        if self._process is not None:
            self._process.kill()
            self._process.join(10)
            self._process = None


def _serve_filter(connection) -> None:
    """The cleaner process: one RecordFilter per pass, answering the broker's calls until the pipe closes.
    It runs only on CPU time nothing else wants (SCHED_IDLE): cleaning is background work, requests come
    first. A nice value was not enough: at nice 10 the process still took enough CPU from the broker and
    its clients on a 2-core machine to raise produce p99 by about half during a pass, at any I/O budget
    (docs/benchmarks.md, "Log compaction: produce latency while the cleaner compacts 1 GB")."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):  # not Linux, or a sandbox refusing it: the lowest nice value instead
        os.nice(19)
    record_filter = None
    while True:
        try:
            message = connection.recv()
        except EOFError:
            return
        try:
            kind = message[0]
            if kind == "begin":
                record_filter = RecordFilter(*message[1:])
                reply = None
            elif kind == "map":
                reply = record_filter.map_batches(message[1])
            elif kind == "clean":
                reply = record_filter.clean_batches(message[1])
            else:
                reply = record_filter.deletes_kept
        except Exception as exc:  # a batch the cleaner cannot read: the pass fails and is retried
            reply = exc
        connection.send(reply)


def clean_log(log: PartitionLog, now_ms: int, settings: CleanSettings) -> CleaningPass | None:
    """One whole pass in one blocking call, on the owner's thread, with the filter in this process
    (tests, tools); None if nothing is cleanable. The broker runs the same steps in chunks on worker
    threads with the filter in its cleaner process (Partition.clean)."""
    plan = log.clean_plan(now_ms, settings.min_compaction_lag_ms, settings.delete_retention_ms)
    if plan is None:
        return None
    cleaning = CleaningPass(plan, RecordFilter(plan.horizon, plan.keep_empty, plan.aborted))
    low = plan.dirty_from
    while low < plan.end:
        low = cleaning.map_chunk(log, low, plan.end)
    low = plan.start
    while low < plan.end:
        changes, low = cleaning.clean_chunk(log, low, plan.end)
        cleaning.bytes_reclaimed += log.complete_clean(changes)
    staged, groups = log.stage_finish_clean(plan)
    staged.commit()
    log.complete_finish_clean(plan, groups)
    cleaning.deletes_kept = cleaning.filter.deletes_kept
    return cleaning
