"""Offset snapshots and offset resets: replay from stored positions (docs/replay.md).

A snapshot is a named copy of offsets, taken from a consumer group's committed offsets or from the current
ends of some topics, stored as a metadata record (OffsetSnapshotRecord) with the time it was taken. A group
can be reset to it later (re-processing exactly the data it saw after that point), or a new group seeded from
it, so a re-processing job runs beside the live one.

A reset moves a group's committed offsets to a snapshot, a timestamp, a duration ago, the earliest or latest
offsets, or explicit ones, clamped to each partition's [log start, end] as kafka-consumer-groups does. Kafka
resets only groups without members; Lodestream also resets a consumer-protocol (KIP-848) group online: its
members are fenced (their next heartbeat makes them rejoin, their commits meanwhile are refused) and the new
offsets are committed before any of them can rejoin (broker/groups/coordinator.reset_offsets).

Retention warns (a metric, a log line, `lodestream groups snapshot list`) when a snapshot points below a
partition's log start, and a topic with `retention.keep.snapshots=true` keeps what its snapshots need.
Pure logic: the REST API (admin/offset_snapshots.py), the controller and retention call it.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

from lodestream.consensus.image import MetadataImage
from lodestream.consensus.records import OffsetSnapshotRecord, RemoveOffsetSnapshotRecord

log = logging.getLogger(__name__)

SNAPSHOT_RECORDS = (OffsetSnapshotRecord, RemoveOffsetSnapshotRecord)
KEEP_SNAPSHOT_DATA = "retention.keep.snapshots"  # topic config: retention keeps what snapshots need
NO_OFFSET = -1  # a group snapshot's partition where the group had no committed offset
_NAME = re.compile(r"[A-Za-z0-9._-]{1,200}")

Partition = tuple[str, int]


def check_name(name: str) -> None:
    if not _NAME.fullmatch(name):
        raise ValueError(f"snapshot name {name!r}: 1 to 200 ASCII letters, digits, '.', '_' and '-'")


def check_records(image: MetadataImage, records: Iterable) -> str | None:
    """Why the controller refuses a batch of snapshot records, or None."""
    names = set(image.offset_snapshots)
    for record in records:
        if isinstance(record, OffsetSnapshotRecord):
            try:
                check_name(record.name)
            except ValueError as exc:
                return str(exc)
            if any(offset < NO_OFFSET or partition < 0 for _, partition, offset in record.offsets):
                return f"snapshot {record.name!r}: partitions are not negative, offsets at least -1"
            names.add(record.name)
        elif isinstance(record, RemoveOffsetSnapshotRecord):
            if record.name not in names:
                return f"snapshot {record.name!r} does not exist"
            names.discard(record.name)
        else:
            return f"{type(record).__name__} is not an offset snapshot change"
    return None


def keeps_snapshot_data(topic_config: Mapping[str, str]) -> bool:
    return str(topic_config.get(KEEP_SNAPSHOT_DATA, "false")).strip().lower() == "true"


def retention_floors(image: MetadataImage) -> dict[Partition, int]:
    """The lowest offset any snapshot points at, per partition: what retention keeps on a topic with
    retention.keep.snapshots=true."""
    floors: dict[Partition, int] = {}
    for snapshot in image.offset_snapshots.values():
        for topic, partition, offset in snapshot.offsets:
            if offset != NO_OFFSET:
                key = (topic, partition)
                floors[key] = min(offset, floors.get(key, offset))
    return floors


def below_log_start(snapshot: OffsetSnapshotRecord,
                    log_start: Callable[[str, int], int | None]) -> list[tuple[str, int, int, int]]:
    """(topic, partition, snapshot offset, log start) of the partitions whose data from the snapshot's offset
    on is partly gone (log_start: None for a partition this broker cannot tell)."""
    lost = []
    for topic, partition, offset in snapshot.offsets:
        start = log_start(topic, partition)
        if start is not None and NO_OFFSET != offset < start:
            lost.append((topic, partition, offset, start))
    return lost


def warn_below_log_start(partition, pinned: Mapping[str, int]) -> None:
    """After retention moved a partition's log start: name the snapshots ({name: offset}) that now point
    below it."""
    lost = sorted(name for name, offset in pinned.items() if offset < partition.log_start_offset)
    if lost:
        log.warning("retention: %s-%d now starts at offset %d, past where offset snapshots %s point: a group reset "
                    "to them skips the deleted records (%s=true on the topic keeps them)", partition.topic_name,
                    partition.index, partition.log_start_offset, ", ".join(lost), KEEP_SNAPSHOT_DATA)


# -- resets ----------------------------------------------------------------------------------------------

TARGETS = ("earliest", "latest", "current", "offset", "shift", "snapshot", "timestamp", "duration", "offsets")


@dataclass(frozen=True, slots=True)
class ResetTarget:
    """Where a reset moves a group: one of TARGETS, with its argument."""

    to: str
    snapshot: str | None = None
    timestamp_ms: int | None = None  # "timestamp"; "duration" turns into one when the plan is made
    duration_ms: int | None = None
    offsets: Mapping[Partition, int] | None = None  # "offsets"
    offset: int | None = None  # "offset": every partition in scope to this offset
    shift_by: int | None = None  # "shift": the committed offset plus this

    def check(self) -> None:
        if self.to not in TARGETS:
            raise ValueError(f"reset target {self.to!r}: one of {', '.join(TARGETS)}")
        needed = {"snapshot": self.snapshot, "timestamp": self.timestamp_ms, "duration": self.duration_ms,
                  "offsets": self.offsets, "offset": self.offset, "shift": self.shift_by}.get(self.to, True)
        if needed is None:
            raise ValueError(f"a reset to {self.to} needs its {self.to}")
        if self.to == "duration" and self.duration_ms < 0:
            raise ValueError("a duration is not negative")


@dataclass(frozen=True, slots=True)
class PlannedReset:
    topic: str
    partition: int
    current_offset: int | None  # the group's committed offset before the reset
    new_offset: int | None  # None: no committed offset (the group's consumers use their auto.offset.reset)
    log_start_offset: int
    end_offset: int


def clamp(offset: int, log_start: int, end: int) -> int:
    """An offset moved into [log start, end], as kafka-consumer-groups does."""
    return max(log_start, min(offset, end))


def snapshot_offsets(snapshot: OffsetSnapshotRecord) -> dict[Partition, int | None]:
    return {(topic, partition): None if offset == NO_OFFSET else offset
            for topic, partition, offset in snapshot.offsets}
