"""Offset snapshot and offset reset endpoints (broker/offset_snapshots.py, docs/replay.md): take, list,
describe and delete named snapshots of offsets, and reset a consumer group's offsets (dry run first) to a
snapshot, a timestamp, a duration ago, the earliest or latest offsets, or explicit ones. `lodestream groups
snapshot ...` and `lodestream groups reset-offsets --rest` are their client.

Snapshots are cluster metadata, written through the active controller (UpdateAdminRecords). Taking one and
resetting read the partitions and the group coordinator of this broker: in a cluster, ask the broker that
coordinates the group and leads its partitions (a one-node cluster is all of them); anything else is
refused with a message that says so, never answered from a partial view.
"""

from __future__ import annotations

import dataclasses
import datetime
import time

from fastapi import APIRouter, Path, Request, Response
from pydantic import BaseModel, Field

from lodestream.admin.auth import require
from lodestream.admin.errors import KAFKA_BAD_REQUEST, ApiError, commit_admin_records
from lodestream.broker.authorizer import Action, Operation, ResourceType
from lodestream.broker.handlers.list_offsets import lookup_offset
from lodestream.broker.offset_snapshots import (
    PlannedReset,
    ResetTarget,
    below_log_start,
    NO_OFFSET,
    check_name,
    clamp,
    snapshot_offsets,
)
from lodestream.consensus.records import OffsetSnapshotRecord, RemoveOffsetSnapshotRecord
from lodestream.protocol.errors import ErrorCode, KafkaError

SnapshotName = Path(description="Snapshot name")
GroupId = Path(description="Consumer group id")
NOT_HERE = 40003  # the group or a partition is coordinated / led by another broker


class SnapshotOffsetData(BaseModel):
    topic: str
    partition: int
    offset: int = Field(description="-1: the group had no committed offset there")
    log_start_offset: int | None = Field(description="None: another broker leads the partition")
    below_log_start: bool = Field(description="records from `offset` on are partly deleted already")


class OffsetSnapshotData(BaseModel):
    kind: str = "LodestreamOffsetSnapshot"
    name: str
    created_at: str
    group_id: str | None = Field(description="whose committed offsets; null: the topics' end offsets")
    partitions: int
    below_log_start: int = Field(description="partitions whose data from the snapshot's offset is partly gone")
    offsets: list[SnapshotOffsetData]


class OffsetSnapshotDataList(BaseModel):
    kind: str = "LodestreamOffsetSnapshotList"
    data: list[OffsetSnapshotData]


class CreateSnapshotRequest(BaseModel):
    name: str
    group_id: str | None = Field(default=None, description="snapshot this group's committed offsets")
    topics: list[str] | None = Field(default=None, description="or the current end offsets of these topics")


class ExplicitOffset(BaseModel):
    topic: str
    partition: int
    offset: int


class ResetRequest(BaseModel):
    to: str = Field(description="earliest, latest, current, offset, shift, snapshot, timestamp, duration or offsets")
    snapshot: str | None = None
    timestamp_ms: int | None = Field(default=None, description="epoch ms: the first offset at or after it")
    duration_ms: int | None = Field(default=None, description="that long ago")
    offsets: list[ExplicitOffset] | None = None
    offset: int | None = Field(default=None, description="`offset`: every partition in scope to this offset")
    shift_by: int | None = Field(default=None, description="`shift`: the committed offset plus this (may be "
                                 "negative)")
    topics: list[str] | None = Field(default=None, description="only these topics (default: every topic the "
                                     "target names, else every topic the group has committed offsets for)")
    dry_run: bool = Field(default=True, description="only print the plan")
    online: bool = Field(default=False, description="a consumer-protocol group with members: fence them and "
                         "reset while they run (they rejoin at the new offsets)")


class PlannedResetData(BaseModel):
    topic: str
    partition: int
    current_offset: int | None
    new_offset: int | None = Field(description="null: no committed offset (auto.offset.reset applies)")
    log_start_offset: int
    end_offset: int


class OffsetResetData(BaseModel):
    kind: str = "LodestreamOffsetReset"
    group_id: str
    applied: bool
    fenced_members: list[str]
    plan: list[PlannedResetData]


def _iso(ms: int) -> str:
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc).isoformat(timespec="milliseconds")


def add_routes(api: APIRouter, broker) -> None:
    def bad(message: str) -> ApiError:
        return ApiError(400, KAFKA_BAD_REQUEST, message)

    def topic_or_400(name: str):
        topic = broker.image.topic(name)
        if topic is None:
            raise bad(f"topic {name} does not exist")
        return topic

    def leader(topic_name: str, index: int):
        """This broker's copy of a partition it leads (400 if it does not exist or another broker leads it)."""
        topic = broker.image.topic(topic_name)
        if topic is None or index not in topic.partitions:
            raise bad(f"partition {topic_name}-{index} does not exist")
        partition = broker.replicas.get(topic.topic_id, index)
        if partition is None or not partition.is_leader:
            raise ApiError(400, NOT_HERE, f"partition {topic_name}-{index} is led by broker "
                                          f"{topic.partitions[index].leader}: ask that broker's REST API")
        return partition

    def coordinated_here(group_id: str):
        coordinator = broker.groups
        error = coordinator.coordination_error(group_id)
        if error != ErrorCode.none:
            raise ApiError(400, NOT_HERE, f"group {group_id} is not coordinated by this broker ({error.name}): "
                                          "ask its coordinator's REST API")
        return coordinator

    def snapshot_data(record: OffsetSnapshotRecord) -> dict:
        log_start = broker.log_start_offset
        lost = {(t, p) for t, p, _, _ in below_log_start(record, log_start)}
        offsets = []
        for topic, partition, offset in record.offsets:
            offsets.append({"topic": topic, "partition": partition, "offset": offset,
                            "log_start_offset": log_start(topic, partition),
                            "below_log_start": (topic, partition) in lost})
        return {"kind": "LodestreamOffsetSnapshot", "name": record.name, "created_at": _iso(record.created_ms),
                "group_id": record.group_id, "partitions": len(offsets), "below_log_start": len(lost),
                "offsets": offsets}

    def existing(name: str) -> OffsetSnapshotRecord:
        record = broker.image.offset_snapshots.get(name)
        if record is None:
            raise ApiError(404, 404, f"Offset snapshot {name} cannot be found.")
        return record

    @api.get("/offset-snapshots", response_model=OffsetSnapshotDataList, tags=["Offset snapshot"],
             summary="List offset snapshots")
    async def list_snapshots():
        return {"kind": "LodestreamOffsetSnapshotList",
                "data": [snapshot_data(r) for _, r in sorted(broker.image.offset_snapshots.items())]}

    @api.post("/offset-snapshots", response_model=OffsetSnapshotData, status_code=201, tags=["Offset snapshot"],
              summary="Snapshot a group's committed offsets, or the current end offsets of topics")
    async def create_snapshot(body: CreateSnapshotRequest):
        try:
            check_name(body.name)
        except ValueError as exc:
            raise bad(str(exc)) from None
        if (body.group_id is None) == (body.topics is None):
            raise bad("give either group_id or topics")
        if body.name in broker.image.offset_snapshots:
            raise bad(f"Offset snapshot {body.name} already exists.")
        if body.group_id is not None:
            coordinator = coordinated_here(body.group_id)
            await coordinator.ensure_loaded(body.group_id)
            committed = coordinator.committed(body.group_id)
            if not committed:
                raise bad(f"group {body.group_id} has no committed offsets")
            # Every partition of its topics: where it has no committed offset, the snapshot says so.
            topics = {t: broker.image.topic(t) for t, _ in committed}
            offsets = tuple(sorted((t, p, committed[(t, p)].offset if (t, p) in committed else NO_OFFSET)
                                   for t, topic in topics.items() if topic is not None for p in topic.partitions))
        else:
            offsets = tuple((name, p, leader(name, p).high_watermark)
                            for name in body.topics for p in sorted(topic_or_400(name).partitions))
        record = OffsetSnapshotRecord(body.name, int(time.time() * 1000), body.group_id, offsets)
        await commit_admin_records(broker, [record])
        return snapshot_data(record)

    @api.get("/offset-snapshots/{snapshot_name}", response_model=OffsetSnapshotData, tags=["Offset snapshot"],
             summary="An offset snapshot, with each partition's log start")
    async def get_snapshot(snapshot_name: str = SnapshotName):
        return snapshot_data(existing(snapshot_name))

    @api.delete("/offset-snapshots/{snapshot_name}", status_code=204, tags=["Offset snapshot"],
                summary="Delete an offset snapshot")
    async def delete_snapshot(snapshot_name: str = SnapshotName):
        existing(snapshot_name)
        await commit_admin_records(broker, [RemoveOffsetSnapshotRecord(snapshot_name)])
        return Response(status_code=204)

    async def plan(group_id: str, coordinator, target: ResetTarget, topics: list[str] | None) -> list[PlannedReset]:
        committed = coordinator.committed(group_id)
        explicit: dict[tuple[str, int], int] = {}
        if target.to == "snapshot":
            explicit = snapshot_offsets(existing(target.snapshot))
        elif target.to == "offsets":
            explicit = dict(target.offsets)
        if topics is not None:
            scope = {(name, p) for name in topics for p in topic_or_400(name).partitions}
            if explicit:
                scope &= set(explicit)
        else:
            scope = set(explicit or committed)
            if not scope:
                raise bad(f"group {group_id} has no committed offsets: name the topics to reset")
        timestamp = target.timestamp_ms
        if target.to == "duration":
            timestamp = int(time.time() * 1000) - target.duration_ms
        planned = []
        for topic, index in sorted(scope):
            partition = leader(topic, index)
            start, end = partition.log_start_offset, partition.high_watermark
            current = committed.get((topic, index))
            if target.to == "earliest":
                offset = start
            elif target.to == "latest":
                offset = end
            elif target.to == "current":  # the log end where nothing is committed, as Kafka
                offset = end if current is None else current.offset
            elif target.to == "offset":
                offset = target.offset
            elif target.to == "shift":
                if current is None:
                    raise bad(f"cannot shift {topic}-{index}: group {group_id} has no committed offset there")
                offset = current.offset + target.shift_by
            elif timestamp is not None:
                try:
                    found = (await lookup_offset(partition, timestamp))[1]
                except KafkaError as exc:
                    raise ApiError(500, 50002, f"{topic}-{index}: {exc.message or exc.code.name}") from None
                offset = end if found < 0 else found  # nothing that late: the end, as Kafka does
            else:
                offset = explicit[(topic, index)]
            planned.append(PlannedReset(topic, index, current.offset if current else None,
                                        None if offset is None else clamp(offset, start, end), start, end))
        return planned

    @api.post("/consumer-groups/{consumer_group_id}/offset-resets", response_model=OffsetResetData,
              tags=["Consumer Group"], summary="Reset a group's committed offsets (a dry run unless dry_run=false)")
    async def reset_offsets(request: Request, body: ResetRequest, consumer_group_id: str = GroupId):
        offsets = None if body.offsets is None else {(o.topic, o.partition): o.offset for o in body.offsets}
        target = ResetTarget(body.to, body.snapshot, body.timestamp_ms, body.duration_ms, offsets, body.offset,
                             body.shift_by)
        try:
            target.check()
        except ValueError as exc:
            raise bad(str(exc)) from None
        # As OffsetCommit: READ on the group, and READ on each topic whose offset moves.
        require(request, broker, Action(Operation.READ, ResourceType.GROUP, consumer_group_id))
        coordinator = coordinated_here(consumer_group_id)
        await coordinator.ensure_loaded(consumer_group_id)
        planned = await plan(consumer_group_id, coordinator, target, body.topics)
        for topic in sorted({row.topic for row in planned}):
            require(request, broker, Action(Operation.READ, ResourceType.TOPIC, topic))
        fenced: list[str] = []
        if not body.dry_run:
            try:
                fenced = await coordinator.reset_offsets(
                    consumer_group_id, {(row.topic, row.partition): row.new_offset for row in planned}, body.online)
            except KafkaError as exc:
                raise bad(exc.message or exc.code.name) from None
        return {"kind": "LodestreamOffsetReset", "group_id": consumer_group_id, "applied": not body.dry_run,
                "fenced_members": fenced,
                "plan": [dataclasses.asdict(row) for row in planned]}
