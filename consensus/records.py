"""Metadata records: the only way cluster metadata changes.

Each record is a small frozen dataclass. On the Raft log they travel as JSON
(a stable, inspectable encoding; pickle would tie the journal to class layout).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass, fields
from typing import ClassVar, Union


@dataclass(frozen=True, slots=True)
class TopicRecord:
    type_name: ClassVar[str] = "topic"
    name: str
    topic_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class PartitionRecord:
    """A partition's whole state after a change: replicas, leader, ISR and ELR (Kafka's PartitionRecord and
    PartitionChangeRecord in one). `isr` None (records written before replication) means every replica.
    The leader epoch moves with each leader change, the partition epoch with every change (AlterPartition
    checks it, as Kafka does)."""

    type_name: ClassVar[str] = "partition"
    topic_id: uuid.UUID
    partition: int
    replicas: tuple[int, ...]
    leader: int
    leader_epoch: int = 0
    isr: tuple[int, ...] | None = None
    elr: tuple[int, ...] = ()  # eligible leader replicas (KIP-966)
    partition_epoch: int = 0
    adding: tuple[int, ...] = ()  # a reassignment's new replicas, catching up (in `replicas` already)
    removing: tuple[int, ...] = ()  # a reassignment's leaving replicas (in `replicas` until it completes)


@dataclass(frozen=True, slots=True)
class RemoveTopicRecord:
    type_name: ClassVar[str] = "remove_topic"
    topic_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class ConfigRecord:
    """Set (value is a string) or delete (value is None) one config key."""

    type_name: ClassVar[str] = "config"
    resource_type: str  # "topic" or "broker"
    resource_name: str  # topic name, or broker id ("" = cluster-wide default)
    name: str
    value: str | None


@dataclass(frozen=True, slots=True)
class QuotaRecord:
    """Set (value is a float) or delete (value is None) one client quota key.

    entity: sorted ((entity type, name), ...) pairs, e.g. (("client-id", "app"),)
    or (("client-id", None), ("user", "alice")); a None name is the type's default.
    """

    type_name: ClassVar[str] = "quota"
    entity: tuple[tuple[str, str | None], ...]
    key: str
    value: float | None


@dataclass(frozen=True, slots=True)
class ProducerIdsRecord:
    """A broker reserved producer ids below next_producer_id (Kafka's ProducerIdsRecord)."""

    type_name: ClassVar[str] = "producer_ids"
    broker_id: int
    next_producer_id: int


@dataclass(frozen=True, slots=True)
class RegisterBrokerRecord:
    """A broker registered with the active controller (BrokerRegistration). It starts fenced; its epoch is
    the offset of this record in the metadata log, so a restarted broker always gets a higher one."""

    type_name: ClassVar[str] = "register_broker"
    broker_id: int
    incarnation_id: uuid.UUID
    broker_epoch: int
    endpoints: tuple[tuple[str, str, int, str], ...]  # (listener name, host, port, security protocol)
    rack: str | None


@dataclass(frozen=True, slots=True)
class BrokerFencingRecord:
    """The controller fenced (heartbeats stopped, or controlled shutdown) or unfenced (caught up) a broker."""

    type_name: ClassVar[str] = "broker_fencing"
    broker_id: int
    broker_epoch: int
    fenced: bool


MetadataRecord = Union[TopicRecord, PartitionRecord, RemoveTopicRecord, ConfigRecord, QuotaRecord, ProducerIdsRecord,
                       RegisterBrokerRecord, BrokerFencingRecord]
_RECORD_TYPES = {
    cls.type_name: cls
    for cls in (TopicRecord, PartitionRecord, RemoveTopicRecord, ConfigRecord, QuotaRecord, ProducerIdsRecord,
                RegisterBrokerRecord, BrokerFencingRecord)
}


def _to_json_value(value):
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, tuple):
        return [_to_json_value(v) for v in value]
    return value


def encode_records(records: list[MetadataRecord]) -> bytes:
    return json.dumps(
        [
            {"type": r.type_name, **{k: _to_json_value(v) for k, v in asdict(r).items()}}
            for r in records
        ],
        separators=(",", ":"),
    ).encode()


def decode_records(data: bytes) -> list[MetadataRecord]:
    records = []
    for item in json.loads(data):
        cls = _RECORD_TYPES[item.pop("type")]
        kwargs = {}
        for f in fields(cls):
            if f.name not in item:  # a field added later: its default
                continue
            value = item[f.name]
            if f.name in ("topic_id", "incarnation_id"):
                value = uuid.UUID(value)
            elif f.name in ("replicas", "isr", "elr", "adding", "removing"):
                value = None if value is None else tuple(value)
            elif f.name == "endpoints":
                value = tuple(tuple(endpoint) for endpoint in value)
            elif f.name == "entity":
                value = tuple((str(t), n) for t, n in value)
            kwargs[f.name] = value
        records.append(cls(**kwargs))
    return records
