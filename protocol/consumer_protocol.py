"""The consumer protocol's embedded bytes (classic groups with protocol type "consumer").

A JoinGroup member's metadata is a ConsumerProtocolSubscription and a
SyncGroup assignment a ConsumerProtocolAssignment, both versioned structs
that clients encode. Every version starts with the same prefix (an int16
version, then the topic list), so reading that prefix serves all versions.
"""

from __future__ import annotations

import struct


def _topic_name(data: bytes, position: int) -> tuple[str, int]:
    (length,) = struct.unpack_from(">h", data, position)
    position += 2
    if length < 0 or position + length > len(data):
        raise ValueError("bad topic string")
    return bytes(data[position:position + length]).decode(), position + length


def subscription_topics(data: bytes) -> set[str]:
    """Topics of a ConsumerProtocolSubscription. Raises ValueError (or struct.error) on bad bytes."""
    if len(data) < 6:
        raise ValueError("short subscription")
    (count,) = struct.unpack_from(">i", data, 2)
    position, topics = 6, set()
    for _ in range(max(count, 0)):
        topic, position = _topic_name(data, position)
        topics.add(topic)
    return topics


def assignment_partitions(data: bytes | None) -> list[tuple[str, int]]:
    """(topic, partition) pairs of a ConsumerProtocolAssignment; [] when empty or unreadable."""
    if not data or len(data) < 6:
        return []
    try:
        (topics,) = struct.unpack_from(">i", data, 2)
        position, pairs = 6, []
        for _ in range(max(topics, 0)):
            topic, position = _topic_name(data, position)
            (count,) = struct.unpack_from(">i", data, position)
            position += 4
            for _ in range(max(count, 0)):
                pairs.append((topic, struct.unpack_from(">i", data, position)[0]))
                position += 4
        return pairs
    except (struct.error, UnicodeDecodeError, ValueError):
        return []
