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


# KIP-405's states of a remote log segment, in the only order they may follow each other.
COPY_STARTED, COPY_FINISHED, DELETE_STARTED, DELETE_FINISHED = (
    "COPY_SEGMENT_STARTED", "COPY_SEGMENT_FINISHED", "DELETE_SEGMENT_STARTED", "DELETE_SEGMENT_FINISHED")
REMOTE_SEGMENT_NEXT_STATES = {
    None: (COPY_STARTED,),
    COPY_STARTED: (COPY_FINISHED, DELETE_STARTED),  # finished, or abandoned (its fragments are deleted)
    COPY_FINISHED: (COPY_FINISHED, DELETE_STARTED),  # COPY_FINISHED again: a repair moved fragments
    DELETE_STARTED: (DELETE_FINISHED,),
}


@dataclass(frozen=True, slots=True)
class RemoteSegmentRecord:
    """A sealed segment offloaded to the fragment stores as erasure-coded fragments (docs/tiered-storage.md):
    KIP-405's RemoteLogSegmentMetadata with its state. Each state change is a whole new record. The
    fragments are written before COPY_FINISHED is committed, so a finished segment never points at missing
    data; one left in COPY_STARTED (a crash) is deleted, not read. The segment's bytes are its batches in
    offset order followed by its batch index (index_position, index_length), all erasure-coded."""

    type_name: ClassVar[str] = "remote_segment"
    topic_id: uuid.UUID
    partition: int
    segment_id: uuid.UUID
    state: str
    base_offset: int = 0
    end_offset: int = 0  # the offset after its last record
    max_timestamp: int = -1
    leader_epochs: tuple[tuple[int, int], ...] = ()  # (leader epoch, first offset) of the epochs it holds
    size: int = 0  # bytes of batches and index
    index_position: int = 0
    scheme: str = ""  # rs:K+M
    stripe_bytes: int = 0
    piece_size: int = 0
    stores: tuple[str, ...] = ()  # the store of fragment i
    broker_id: int = -1  # the leader that offloaded it
    # (producer id, first offset, abort marker offset) of the aborted transactions overlapping it: Kafka's
    # transaction index of a remote segment, for read_committed fetches once the local log is gone.
    aborted: tuple[tuple[int, int, int], ...] = ()


@dataclass(frozen=True, slots=True)
class ScramCredentialRecord:
    """A user's SCRAM credential for one mechanism (Kafka's UserScramCredentialRecord): what RFC 5802 lets a
    server keep, base64; never the password. Replaces the user's earlier one of that mechanism."""

    type_name: ClassVar[str] = "scram_credential"
    user: str
    mechanism: str  # SCRAM-SHA-256 or SCRAM-SHA-512
    salt: str
    stored_key: str
    server_key: str
    iterations: int


@dataclass(frozen=True, slots=True)
class RemoveScramCredentialRecord:
    type_name: ClassVar[str] = "remove_scram_credential"
    user: str
    mechanism: str


@dataclass(frozen=True, slots=True)
class AclRecord:
    """One ACL (Kafka's AccessControlEntryRecord): codes as in Kafka's ResourceType, PatternType, AclOperation
    and AclPermissionType; the id names it for RemoveAclRecord."""

    type_name: ClassVar[str] = "acl"
    acl_id: uuid.UUID
    resource_type: int
    resource_name: str
    pattern_type: int  # 3 LITERAL, 4 PREFIXED
    principal: str  # e.g. User:alice, or User:* for everyone
    host: str  # an IP address, or * for any
    operation: int
    permission: int  # 2 DENY, 3 ALLOW


@dataclass(frozen=True, slots=True)
class RemoveAclRecord:
    type_name: ClassVar[str] = "remove_acl"
    acl_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class NamespaceRecord:
    """A namespace (docs/security.md): the topics named `<name>.*`, with defaults for the topics created in it
    (topic configs, and num.partitions). Replaces the namespace's earlier record."""

    type_name: ClassVar[str] = "namespace"
    name: str
    defaults: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class RemoveNamespaceRecord:
    type_name: ClassVar[str] = "remove_namespace"
    name: str


@dataclass(frozen=True, slots=True)
class OffsetSnapshotRecord:
    """A named snapshot of offsets (docs/replay.md): a consumer group's committed offsets, or the ends of some
    topics, when it was taken; a group can be reset to it, or a new group seeded from it. Replaces an earlier
    snapshot of that name."""

    type_name: ClassVar[str] = "offset_snapshot"
    name: str
    created_ms: int
    group_id: str | None  # whose committed offsets; None: the topics' end offsets
    # (topic, partition, offset); offset -1: the group had no committed offset there (it read from its
    # auto.offset.reset position), so a reset to the snapshot removes the group's committed offset
    offsets: tuple[tuple[str, int, int], ...]


@dataclass(frozen=True, slots=True)
class RemoveOffsetSnapshotRecord:
    type_name: ClassVar[str] = "remove_offset_snapshot"
    name: str


MetadataRecord = Union[TopicRecord, PartitionRecord, RemoveTopicRecord, ConfigRecord, QuotaRecord, ProducerIdsRecord,
                       RegisterBrokerRecord, BrokerFencingRecord, RemoteSegmentRecord, ScramCredentialRecord,
                       RemoveScramCredentialRecord, AclRecord, RemoveAclRecord, NamespaceRecord, RemoveNamespaceRecord,
                       OffsetSnapshotRecord, RemoveOffsetSnapshotRecord]
_RECORD_TYPES = {
    cls.type_name: cls
    for cls in (TopicRecord, PartitionRecord, RemoveTopicRecord, ConfigRecord, QuotaRecord, ProducerIdsRecord,
                RegisterBrokerRecord, BrokerFencingRecord, RemoteSegmentRecord, ScramCredentialRecord,
                RemoveScramCredentialRecord, AclRecord, RemoveAclRecord, NamespaceRecord, RemoveNamespaceRecord,
                OffsetSnapshotRecord, RemoveOffsetSnapshotRecord)
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
            if f.name in ("topic_id", "incarnation_id", "segment_id", "acl_id"):
                value = uuid.UUID(value)
            elif f.name in ("replicas", "isr", "elr", "adding", "removing", "stores"):
                value = None if value is None else tuple(value)
            elif f.name in ("leader_epochs", "aborted", "defaults", "offsets"):
                value = tuple(tuple(item) for item in value)
            elif f.name == "endpoints":
                value = tuple(tuple(endpoint) for endpoint in value)
            elif f.name == "entity":
                value = tuple((str(t), n) for t, n in value)
            kwargs[f.name] = value
        records.append(cls(**kwargs))
    return records
