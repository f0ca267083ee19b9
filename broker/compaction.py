"""What one log-compaction pass keeps: Kafka's LogCleaner rules over a PartitionLog's batches.

A pass covers the closed segments of a CleanPlan (storage/leveldb_log.py) in
two sweeps, each in chunks so the caller can run them on a worker thread and
throttle between them (broker/log_cleaner.py):

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
   - a batch left with no record is deleted, except the last data batch of each
     producer, kept empty so its epoch and sequence survive a restart;
   - a rewritten batch keeps its base offset, last offset, timestamps, producer
     fields and compression codec (protocol/record_batch.rebuild_batch).

Offsets never change and order is kept: a consumer reading from the start sees
the last value of every key. Pure and synchronous (runs on worker threads).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from lodestream.protocol.record_batch import parse_header, raw_records, rebuild_batch
from lodestream.storage.leveldb_log import CleanPlan, PartitionLog

CHUNK_BYTES = 4 << 20  # batch bytes per worker-thread call: one throttle step, one write


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


@dataclass(slots=True)
class CleaningPass:
    """One pass over a plan; its state carries from chunk to chunk."""

    plan: CleanPlan
    offset_map: dict[bytes, int] = field(default_factory=dict)
    transaction_kept: dict[int, bool] = field(default_factory=dict)  # producer id -> a batch of its txn stayed
    aborted: dict[int, list[tuple[int, int]]] = field(default_factory=dict)  # producer id -> (first, marker)
    bytes_read: int = 0
    bytes_reclaimed: int = 0  # added by the owner as it publishes each chunk (log.complete_clean)
    deletes_kept: int = 0  # tombstones and markers kept for now: a later pass removes them

    def __post_init__(self) -> None:
        for producer_id, first, last in self.plan.aborted:
            self.aborted.setdefault(producer_id, []).append((first, last))

    def chunks(self, start: int, end: int) -> list[tuple[int, int]]:
        """[low, high) base-offset ranges of about CHUNK_BYTES covering the plan's batches that hold
        offsets in [start, end)."""
        ranges: list[tuple[int, int]] = []
        low, size = None, 0
        for base, last, batch_size in self.plan.batches:
            if last < start or base >= end:
                continue
            if low is None:
                low = base
            elif size + batch_size > CHUNK_BYTES:
                ranges.append((low, base))
                low, size = base, 0
            size += batch_size
        if low is not None:
            ranges.append((low, end))
        return ranges

    def _is_aborted(self, producer_id: int, offset: int) -> bool:
        return any(first <= offset <= last for first, last in self.aborted.get(producer_id, ()))

    # -- sweep 1: the offset map -----------------------------------------------------------------
    def map_chunk(self, log: PartitionLog, low: int, high: int) -> int:
        """Add the keys of the batches in [low, high) to the map; returns the bytes read."""
        read = 0
        offset_map = self.offset_map
        for base, data in log.scan(low, high):
            read += len(data)
            header = parse_header(data)
            if header.is_control or (header.is_transactional and self._is_aborted(header.producer_id, base)):
                continue
            for offset, key, _value, _raw in raw_records(data):
                if key is not None:
                    offset_map[key] = offset
        self.bytes_read += read
        return read

    # -- sweep 2: rewrite ----------------------------------------------------------------------------
    def clean_chunk(self, log: PartitionLog, low: int, high: int) -> list[tuple[int, bytes | None]]:
        """Decide every batch in [low, high) and write the changed ones (log.write_cleaned); returns the
        changes, (base offset, new bytes or None when deleted), for log.complete_clean."""
        plan, offset_map = self.plan, self.offset_map
        changes: list[tuple[int, bytes | None]] = []
        read = 0
        for base, data in log.scan(low, high):
            read += len(data)
            header = parse_header(data)
            below_horizon = header.last_offset < plan.horizon
            if header.is_control:
                if self.transaction_kept.pop(header.producer_id, False) or not below_horizon:
                    self.deletes_kept += 1
                    continue
                changes.append((base, None))
                continue
            records = raw_records(data)
            if header.is_transactional and self._is_aborted(header.producer_id, base):
                kept = []
            else:
                kept = []
                for offset, key, value, raw in records:
                    if key is None or offset_map.get(key, -1) > offset:
                        continue
                    if value is None:
                        if below_horizon:
                            continue
                        self.deletes_kept += 1
                    kept.append(raw)
            if not kept and base not in plan.keep_empty:
                changes.append((base, None))
                continue
            if len(kept) != len(records):
                changes.append((base, rebuild_batch(data, kept)))
            if header.is_transactional:
                self.transaction_kept[header.producer_id] = True
        self.bytes_read += read
        log.write_cleaned(changes)
        return changes


def clean_log(log: PartitionLog, now_ms: int, settings: CleanSettings) -> CleaningPass | None:
    """One whole pass in one blocking call, on the owner's thread (tests, tools); None if nothing is
    cleanable. The broker runs the same steps in chunks on worker threads (Partition.clean)."""
    plan = log.clean_plan(now_ms, settings.min_compaction_lag_ms, settings.delete_retention_ms)
    if plan is None:
        return None
    cleaning = CleaningPass(plan)
    for low, high in cleaning.chunks(plan.dirty_from, plan.end):
        cleaning.map_chunk(log, low, high)
    for low, high in cleaning.chunks(plan.start, plan.end):
        cleaning.bytes_reclaimed += log.complete_clean(cleaning.clean_chunk(log, low, high))
    staged, merged = log.stage_finish_clean(plan)
    staged.commit()
    log.complete_finish_clean(plan, merged)
    return cleaning
