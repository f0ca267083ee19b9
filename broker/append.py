"""The one produce path: validate record batches for a partition, queue them, wait for the write.

Shared by the Kafka Produce handler (broker/handlers/produce.py) and the REST
API's record endpoint, so both apply the same checks (CRC and header via
split_batches, max.message.bytes, message.timestamp.after.max.ms,
LogAppendTime) and go through the replica manager's group commit.
"""

from __future__ import annotations

import time

from consensus.image import TopicImage
from protocol.errors import ErrorCode, KafkaError
from protocol.record_batch import InvalidBatch, split_batches

from .replica_manager import AppendRequest


def validate_batches(broker, topic: TopicImage, partition_index: int, records, now_ms: int):
    """Return (partition, entries, append_time) or (None, error code, message)."""
    partition = broker.replicas.get(topic.topic_id, partition_index)
    if partition is None:
        return None, ErrorCode.unknown_topic_or_partition, f"partition {partition_index} does not exist"
    if records is None:
        return None, ErrorCode.corrupt_message, "null record set"
    try:
        batches = split_batches(records)
    except InvalidBatch as exc:
        return None, ErrorCode.corrupt_message, str(exc)
    config = broker.topic_config(topic)
    max_bytes = int(config["max.message.bytes"])
    after_max = int(config["message.timestamp.after.max.ms"])
    log_append = config["message.timestamp.type"] == "LogAppendTime"
    entries = []
    for header, view in batches:
        if header.size > max_bytes:
            return None, ErrorCode.message_too_large, (
                f"batch of {header.size} bytes is larger than max.message.bytes={max_bytes}")
        if not log_append and header.max_timestamp > now_ms + after_max:
            return None, ErrorCode.invalid_timestamp, (
                f"timestamp {header.max_timestamp} is more than {after_max} ms in the future")
        entries.append((header.last_offset_delta, now_ms if log_append else header.max_timestamp, header.size, view))
    return partition, entries, (now_ms if log_append else None)


def enqueue_batches(broker, topic: TopicImage, partition_index: int, records: bytes,
                    now_ms: int | None = None) -> AppendRequest:
    """Validate and queue (in call order); raises KafkaError. Await `.done`, then read
    `.error` / `.base_offset` / `.log_append_time_ms` from the returned request."""
    if now_ms is None:
        now_ms = int(time.time() * 1000)
    partition, entries, append_time = validate_batches(broker, topic, partition_index, records, now_ms)
    if partition is None:
        raise KafkaError(entries, append_time)
    append = AppendRequest(partition, entries, append_time)
    broker.replicas.enqueue(append)
    return append
