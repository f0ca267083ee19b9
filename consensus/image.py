"""The immutable metadata image and the pure replay function that advances it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Mapping

from lodestream.consensus.records import (
    COPY_FINISHED,
    DELETE_FINISHED,
    AclRecord,
    NamespaceRecord,
    BrokerFencingRecord,
    OffsetSnapshotRecord,
    ConfigRecord,
    MetadataRecord,
    PartitionRecord,
    ProducerIdsRecord,
    QuotaRecord,
    REMOTE_SEGMENT_NEXT_STATES,
    RegisterBrokerRecord,
    RemoteSegmentRecord,
    RemoveAclRecord,
    RemoveNamespaceRecord,
    RemoveOffsetSnapshotRecord,
    RemoveScramCredentialRecord,
    RemoveTopicRecord,
    ScramCredentialRecord,
    TopicRecord,
)

_EMPTY: Mapping = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class PartitionImage:
    partition: int
    replicas: tuple[int, ...]
    leader: int  # -1: offline (no eligible replica is alive)
    leader_epoch: int
    isr: tuple[int, ...] = ()  # in-sync replicas: the leader and the followers caught up with it
    elr: tuple[int, ...] = ()  # eligible leader replicas (KIP-966): left the ISR while it was below min ISR
    partition_epoch: int = 0
    adding: tuple[int, ...] = ()  # an ongoing reassignment's new replicas
    removing: tuple[int, ...] = ()  # and its leaving ones

    def record(self, topic_id: uuid.UUID, **changes) -> PartitionRecord:
        """The PartitionRecord of this state with `changes` (leader, isr, ...); the partition epoch moves."""
        fields = dict(replicas=self.replicas, leader=self.leader, leader_epoch=self.leader_epoch, isr=self.isr,
                      elr=self.elr, adding=self.adding, removing=self.removing)
        fields.update(changes)
        return PartitionRecord(topic_id, self.partition, partition_epoch=self.partition_epoch + 1, **fields)


@dataclass(frozen=True, slots=True)
class TopicImage:
    name: str
    topic_id: uuid.UUID
    partitions: Mapping[int, PartitionImage] = field(default_factory=lambda: _EMPTY)
    configs: Mapping[str, str] = field(default_factory=lambda: _EMPTY)  # explicit overrides only


@dataclass(frozen=True, slots=True)
class BrokerImage:
    """A registered broker: where clients reach it, and whether the controller lets it lead."""

    broker_id: int
    incarnation_id: uuid.UUID
    broker_epoch: int
    endpoints: tuple[tuple[str, str, int, str], ...]  # (listener name, host, port, security protocol)
    rack: str | None
    fenced: bool = True

    def endpoint(self, listener: str) -> tuple[str, int] | None:
        """(host, port) of this broker's listener of that name (None if it has none)."""
        for name, host, port, _ in self.endpoints:
            if name == listener:
                return host, port
        return None


@dataclass(frozen=True, slots=True)
class MetadataImage:
    topics_by_name: Mapping[str, TopicImage] = field(default_factory=lambda: _EMPTY)
    topics_by_id: Mapping[uuid.UUID, TopicImage] = field(default_factory=lambda: _EMPTY)
    # broker id as string ("" = cluster-wide default) -> {config name: value}
    broker_configs: Mapping[str, Mapping[str, str]] = field(default_factory=lambda: _EMPTY)
    # quota entity (sorted ((type, name|None), ...)) -> {quota key: value}; see broker/quotas.py
    client_quotas: Mapping[tuple, Mapping[str, float]] = field(default_factory=lambda: _EMPTY)
    next_producer_id: int = 0  # producer ids below this are reserved (broker/producer_ids.py)
    brokers: Mapping[int, BrokerImage] = field(default_factory=lambda: _EMPTY)  # registered brokers by id
    # (topic id, partition) -> {segment id: its latest RemoteSegmentRecord}: offloaded segments, any state
    remote_segments: Mapping[tuple[uuid.UUID, int], Mapping[uuid.UUID, RemoteSegmentRecord]] = field(
        default_factory=lambda: _EMPTY)
    # (user, mechanism) -> its SCRAM credential (broker/scram.py)
    scram_credentials: Mapping[tuple[str, str], ScramCredentialRecord] = field(default_factory=lambda: _EMPTY)
    acls: Mapping[uuid.UUID, AclRecord] = field(default_factory=lambda: _EMPTY)  # by id (broker/authorizer.py)
    namespaces: Mapping[str, NamespaceRecord] = field(default_factory=lambda: _EMPTY)  # by name (broker/namespaces.py)
    # by name (broker/offset_snapshots.py)
    offset_snapshots: Mapping[str, OffsetSnapshotRecord] = field(default_factory=lambda: _EMPTY)

    def live_brokers(self) -> list[BrokerImage]:
        """Registered, unfenced brokers by id: the ones clients are told about and partitions go to."""
        return [broker for _, broker in sorted(self.brokers.items()) if not broker.fenced]

    def topic(self, name: str) -> TopicImage | None:
        return self.topics_by_name.get(name)

    def remote_log(self, topic_id: uuid.UUID, partition: int) -> list[RemoteSegmentRecord]:
        """The partition's readable offloaded segments (COPY_FINISHED), by base offset."""
        segments = self.remote_segments.get((topic_id, partition), _EMPTY).values()
        return sorted((s for s in segments if s.state == COPY_FINISHED), key=lambda s: s.base_offset)


def _with_topic(image: MetadataImage, topic: TopicImage) -> MetadataImage:
    by_name = dict(image.topics_by_name)
    by_id = dict(image.topics_by_id)
    by_name[topic.name] = topic
    by_id[topic.topic_id] = topic
    return replace(image, topics_by_name=MappingProxyType(by_name), topics_by_id=MappingProxyType(by_id))


def _with_entry(mapping: Mapping, key, value) -> Mapping:
    updated = dict(mapping)
    if value is None:
        updated.pop(key, None)
    else:
        updated[key] = value
    return MappingProxyType(updated)


def replay(image: MetadataImage, record: MetadataRecord) -> MetadataImage:
    """Apply one record. Pure: returns a new image, never mutates the old one.

    Records that refer to something already gone are ignored, so replaying a
    journal that raced with a deletion is harmless.
    """
    match record:
        case TopicRecord(name=name, topic_id=topic_id):
            previous = image.topics_by_name.get(name)
            if previous is not None and previous.topic_id != topic_id:  # a re-created name replaces the old id
                image = replay(image, RemoveTopicRecord(previous.topic_id))
            return _with_topic(image, TopicImage(name=name, topic_id=topic_id))
        case PartitionRecord():
            topic = image.topics_by_id.get(record.topic_id)
            if topic is None:
                return image
            partition = PartitionImage(
                partition=record.partition,
                replicas=record.replicas,
                leader=record.leader,
                leader_epoch=record.leader_epoch,
                isr=record.replicas if record.isr is None else record.isr,
                elr=record.elr,
                partition_epoch=record.partition_epoch,
                adding=record.adding,
                removing=record.removing,
            )
            return _with_topic(
                image, replace(topic, partitions=_with_entry(topic.partitions, record.partition, partition))
            )
        case RemoveTopicRecord(topic_id=topic_id):
            topic = image.topics_by_id.get(topic_id)
            if topic is None:
                return image
            by_name = dict(image.topics_by_name)
            by_id = dict(image.topics_by_id)
            if by_name.get(topic.name) is topic:
                del by_name[topic.name]
            del by_id[topic_id]
            # Its offloaded segments go too: their fragments are orphans the stores' collector deletes.
            remote = {key: value for key, value in image.remote_segments.items() if key[0] != topic_id}
            return replace(image, topics_by_name=MappingProxyType(by_name), topics_by_id=MappingProxyType(by_id),
                           remote_segments=MappingProxyType(remote))
        case ConfigRecord(resource_type="topic"):
            topic = image.topics_by_name.get(record.resource_name)
            if topic is None:
                return image
            return _with_topic(image, replace(topic, configs=_with_entry(topic.configs, record.name, record.value)))
        case ConfigRecord(resource_type="broker"):
            current = image.broker_configs.get(record.resource_name, _EMPTY)
            updated = _with_entry(current, record.name, record.value)
            return replace(
                image, broker_configs=_with_entry(image.broker_configs, record.resource_name, updated)
            )
        case QuotaRecord(entity=entity, key=key, value=value):
            current = image.client_quotas.get(entity, _EMPTY)
            updated = _with_entry(current, key, None if value is None else float(value))
            return replace(
                image, client_quotas=_with_entry(image.client_quotas, entity, updated if updated else None)
            )
        case RegisterBrokerRecord():
            broker = BrokerImage(record.broker_id, record.incarnation_id, record.broker_epoch, record.endpoints,
                                 record.rack, fenced=True)
            return replace(image, brokers=_with_entry(image.brokers, record.broker_id, broker))
        case BrokerFencingRecord(broker_id=broker_id, broker_epoch=epoch, fenced=fenced):
            broker = image.brokers.get(broker_id)
            if broker is None or broker.broker_epoch != epoch:  # about an earlier registration: ignored
                return image
            return replace(image, brokers=_with_entry(image.brokers, broker_id, replace(broker, fenced=fenced)))
        case RemoteSegmentRecord():
            topic = image.topics_by_id.get(record.topic_id)
            if topic is None or record.partition not in topic.partitions:
                return image
            key = (record.topic_id, record.partition)
            segments = image.remote_segments.get(key, _EMPTY)
            current = segments.get(record.segment_id)
            if record.state not in REMOTE_SEGMENT_NEXT_STATES.get(current.state if current else None, ()):
                return image  # an out-of-order state change (the controller checks them): ignored
            updated = _with_entry(segments, record.segment_id, None if record.state == DELETE_FINISHED else record)
            return replace(image, remote_segments=_with_entry(image.remote_segments, key, updated or None))
        case ScramCredentialRecord(user=user, mechanism=mechanism):
            return replace(image, scram_credentials=_with_entry(image.scram_credentials, (user, mechanism), record))
        case RemoveScramCredentialRecord(user=user, mechanism=mechanism):
            return replace(image, scram_credentials=_with_entry(image.scram_credentials, (user, mechanism), None))
        case AclRecord(acl_id=acl_id):
            return replace(image, acls=_with_entry(image.acls, acl_id, record))
        case RemoveAclRecord(acl_id=acl_id):
            return replace(image, acls=_with_entry(image.acls, acl_id, None))
        case NamespaceRecord(name=name):
            return replace(image, namespaces=_with_entry(image.namespaces, name, record))
        case RemoveNamespaceRecord(name=name):
            return replace(image, namespaces=_with_entry(image.namespaces, name, None))
        case OffsetSnapshotRecord(name=name):
            return replace(image, offset_snapshots=_with_entry(image.offset_snapshots, name, record))
        case RemoveOffsetSnapshotRecord(name=name):
            return replace(image, offset_snapshots=_with_entry(image.offset_snapshots, name, None))
        case ProducerIdsRecord(next_producer_id=next_id):
            # Never moves back, so a replayed or reordered reservation cannot hand out an id twice.
            return replace(image, next_producer_id=max(image.next_producer_id, next_id))
    raise ValueError(f"unknown metadata record {record!r}")


def replay_all(image: MetadataImage, records) -> MetadataImage:
    for record in records:
        image = replay(image, record)
    return image
