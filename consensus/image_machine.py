"""The metadata image as the KRaft quorum's state machine, and the image's snapshot encoding (KIP-630).

Each log entry's payload is one batch of metadata records (``encode_records``); applying it replays the
whole batch into a NEW image (all or nothing), so readers on any thread see a whole image. A batch that
does not replay is skipped on every node alike (replay is deterministic), so the quorum never stalls.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import uuid
from types import MappingProxyType
from typing import Callable

from lodestream.consensus.image import BrokerImage, MetadataImage, PartitionImage, TopicImage, replay_all
from lodestream.consensus.records import (
    COPY_STARTED,
    BrokerFencingRecord,
    ConfigRecord,
    MetadataRecord,
    PartitionRecord,
    ProducerIdsRecord,
    QuotaRecord,
    RegisterBrokerRecord,
    TopicRecord,
    decode_records,
    encode_records,
)

logger = logging.getLogger(__name__)

# (offset, epoch, image after the entry, error or None) -> None: proposers wait on this
AppliedListener = Callable[[int, int, MetadataImage, str | None], None]


class ImageStateMachine:
    """Holds the image at the applied offset. Pure: no I/O, no threads."""

    def __init__(self, on_applied: AppliedListener | None = None) -> None:
        self.image = MetadataImage()
        self.on_applied = on_applied

    def apply(self, offset: int, epoch: int, payload: bytes) -> None:
        error = None
        try:
            self.image = replay_all(self.image, decode_records(payload))
        except Exception as exc:  # noqa: BLE001 - a bad batch is skipped by every node alike
            logger.error("metadata batch at offset %d rejected, image unchanged: %r", offset, exc)
            error = f"{type(exc).__name__}: {exc}"
        if self.on_applied is not None:
            self.on_applied(offset, epoch, self.image, error)

    def snapshot(self) -> bytes:
        return image_to_snapshot(self.image)

    def restore(self, data: bytes, end_offset: int) -> None:
        self.image = image_from_snapshot(data)
        if self.on_applied is not None:
            self.on_applied(end_offset - 1, -1, self.image, None)


# --- the image as JSON -----------------------------------------------------------------------------


def _topic_to_json(topic: TopicImage) -> dict:
    return {
        "name": topic.name,
        "topic_id": str(topic.topic_id),
        "partitions": [
            [p.partition, list(p.replicas), p.leader, p.leader_epoch, list(p.isr), list(p.elr), p.partition_epoch,
             list(p.adding), list(p.removing)]
            for p in topic.partitions.values()
        ],
        "configs": dict(topic.configs),
    }


def _partition_from_json(partition: int, replicas: list, leader: int, epoch: int, isr: list | None = None,
                         elr: tuple = (), partition_epoch: int = 0, adding: tuple = (),
                         removing: tuple = ()) -> PartitionImage:
    """A partition of a snapshot; one taken before replication has no ISR (every replica), ELR or epoch."""
    return PartitionImage(partition=partition, replicas=tuple(replicas), leader=leader, leader_epoch=epoch,
                          isr=tuple(replicas if isr is None else isr), elr=tuple(elr), partition_epoch=partition_epoch,
                          adding=tuple(adding), removing=tuple(removing))


def _topic_from_json(data: dict) -> TopicImage:
    partitions = {
        fields[0]: _partition_from_json(*fields) for fields in data["partitions"]
    }
    return TopicImage(
        name=data["name"],
        topic_id=uuid.UUID(data["topic_id"]),
        partitions=MappingProxyType(partitions),
        configs=MappingProxyType(dict(data["configs"])),
    )


def image_to_snapshot(image: MetadataImage) -> bytes:
    """Encode the whole image exactly (both topic maps, in order), as JSON."""
    by_name = []
    for name, topic in image.topics_by_name.items():
        # Normally the same topic as in topics_by_id; store a reference then.
        same = image.topics_by_id.get(topic.topic_id) == topic
        by_name.append([name, str(topic.topic_id) if same else _topic_to_json(topic)])
    return json.dumps(
        {
            "format": 1,
            "topics_by_id": [_topic_to_json(t) for t in image.topics_by_id.values()],
            "topics_by_name": by_name,
            "broker_configs": [[k, dict(v)] for k, v in image.broker_configs.items()],
            "client_quotas": [[[list(pair) for pair in entity], dict(values)]
                              for entity, values in image.client_quotas.items()],
            "next_producer_id": image.next_producer_id,
            "brokers": [[b.broker_id, str(b.incarnation_id), b.broker_epoch, [list(e) for e in b.endpoints], b.rack,
                         b.fenced] for b in image.brokers.values()],
            "remote_segments": json.loads(encode_records(
                [record for segments in image.remote_segments.values() for record in segments.values()])),
            # SCRAM credentials, ACLs, namespaces and offset snapshots: as their records
            "records": json.loads(encode_records([*image.scram_credentials.values(), *image.acls.values(),
                                                  *image.namespaces.values(), *image.offset_snapshots.values()])),
        },
        separators=(",", ":"),
    ).encode()


def image_from_snapshot(data: bytes) -> MetadataImage:
    doc = json.loads(data)
    if doc.get("format") != 1:
        raise ValueError(f"unknown metadata snapshot format {doc.get('format')!r}")
    by_id = {}
    for item in doc["topics_by_id"]:
        topic = _topic_from_json(item)
        by_id[topic.topic_id] = topic
    by_name = {
        name: by_id[uuid.UUID(ref)] if isinstance(ref, str) else _topic_from_json(ref)
        for name, ref in doc["topics_by_name"]
    }
    image = MetadataImage(
        topics_by_name=MappingProxyType(by_name),
        topics_by_id=MappingProxyType(by_id),
        broker_configs=MappingProxyType(
            {k: MappingProxyType(dict(v)) for k, v in doc["broker_configs"]}
        ),
        client_quotas=MappingProxyType({
            tuple((str(t), n) for t, n in entity): MappingProxyType({k: float(x) for k, x in values.items()})
            for entity, values in doc.get("client_quotas", ())
        }),
        next_producer_id=int(doc.get("next_producer_id", 0)),
        brokers=MappingProxyType({
            broker_id: BrokerImage(broker_id, uuid.UUID(incarnation), epoch, tuple(tuple(e) for e in endpoints), rack,
                                   fenced)
            for broker_id, incarnation, epoch, endpoints, rack, fenced in doc.get("brokers", ())
        }),
        remote_segments=_remote_segments_from_json(doc.get("remote_segments", [])),
    )
    return replay_all(image, decode_records(json.dumps(doc.get("records", [])).encode()))


def _remote_segments_from_json(items: list) -> MappingProxyType:
    by_partition: dict = {}
    for record in decode_records(json.dumps(items).encode()):
        by_partition.setdefault((record.topic_id, record.partition), {})[record.segment_id] = record
    return MappingProxyType({key: MappingProxyType(segments) for key, segments in by_partition.items()})


def image_to_records(image: MetadataImage) -> list[MetadataRecord]:
    """Records whose replay onto an empty image rebuilds `image` (migrating an old data directory)."""
    records: list[MetadataRecord] = []
    for topic in image.topics_by_id.values():
        records.append(TopicRecord(name=topic.name, topic_id=topic.topic_id))
        for p in topic.partitions.values():
            records.append(PartitionRecord(topic.topic_id, p.partition, p.replicas, p.leader, p.leader_epoch, p.isr,
                                           p.elr, p.partition_epoch, p.adding, p.removing))
        records.extend(ConfigRecord("topic", topic.name, k, v) for k, v in topic.configs.items())
    for broker, configs in image.broker_configs.items():
        records.extend(ConfigRecord("broker", broker, k, v) for k, v in configs.items())
    for entity, values in image.client_quotas.items():
        records.extend(QuotaRecord(entity, k, v) for k, v in values.items())
    if image.next_producer_id:
        records.append(ProducerIdsRecord(-1, image.next_producer_id))
    for b in image.brokers.values():
        records.append(RegisterBrokerRecord(b.broker_id, b.incarnation_id, b.broker_epoch, b.endpoints, b.rack))
        if not b.fenced:
            records.append(BrokerFencingRecord(b.broker_id, b.broker_epoch, False))
    for segments in image.remote_segments.values():
        for record in segments.values():  # replayed through their states: COPY_STARTED first
            records.append(dataclasses.replace(record, state=COPY_STARTED))
            if record.state != COPY_STARTED:
                records.append(record)
    records.extend(image.scram_credentials.values())
    records.extend(image.acls.values())
    records.extend(image.namespaces.values())
    records.extend(image.offset_snapshots.values())
    return records
