"""Records of the ``__consumer_offsets`` topic.

Kafka writes these keys and values in its own versioned binary schemas
(OffsetCommitKey, GroupMetadataKey, ...). Lodestream writes JSON instead
(a decision, see docs/groups.md): the topic is internal, only this broker
reads it, and JSON keeps the records self-describing and easy to evolve.

Every record is an ordinary record in an uncompressed magic-v2 batch built
with ``protocol.record_batch.build_batch``. Keys are canonical JSON
(sorted keys, no spaces) so that equal keys are equal bytes, which is what
log compaction needs. A ``None`` value is a tombstone.

  offset commit   key   {"k":"offset","group":G,"topic":T,"partition":P}
                  value {"offset":O,"leader_epoch":E,"metadata":M,"commit_timestamp":MS}
  group metadata  key   {"k":"group","group":G}
                  value {"group_type":"classic"|"consumer", ...the group's to_record()}
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


TOPIC_CONFIGS = {"cleanup.policy": "compact"}  # as Kafka creates __consumer_offsets (+ offsets.topic.segment.bytes)


def canonical_json(obj: Any) -> bytes:
    """Sorted keys, no spaces: equal records are equal bytes (what compaction matches on)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def offset_key(group_id: str, topic: str, partition: int) -> bytes:
    return canonical_json({"k": "offset", "group": group_id, "topic": topic, "partition": partition})


def group_key(group_id: str) -> bytes:
    return canonical_json({"k": "group", "group": group_id})


@dataclass(frozen=True, slots=True)
class OffsetAndMetadata:
    offset: int
    leader_epoch: int  # -1 when unknown
    metadata: str | None
    commit_timestamp: int  # wall-clock ms (as in Kafka)

    def to_value(self) -> bytes:
        return canonical_json({"offset": self.offset, "leader_epoch": self.leader_epoch, "metadata": self.metadata,
                       "commit_timestamp": self.commit_timestamp})

    @classmethod
    def from_value(cls, value: bytes) -> "OffsetAndMetadata":
        data = json.loads(value)
        return cls(int(data["offset"]), int(data.get("leader_epoch", -1)), data.get("metadata"),
                   int(data.get("commit_timestamp", 0)))


def offset_value(offset: OffsetAndMetadata) -> bytes:
    return offset.to_value()


def group_value(group_type: str, record: dict) -> bytes:
    return canonical_json({**record, "group_type": group_type})


def decode_key(key: bytes) -> dict:
    return json.loads(key)


def decode_group_value(value: bytes) -> tuple[str, dict]:
    data = json.loads(value)
    return data.pop("group_type"), data
