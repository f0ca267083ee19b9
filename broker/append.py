"""The one produce path: validate record batches for a partition, queue them, wait for the write.

Shared by the Kafka Produce handler (broker/handlers/produce.py) and the REST
API's record endpoint, so both apply the same checks (CRC and header via
split_batches, max.message.bytes, message.timestamp.{after,before}.max.ms,
LogAppendTime, a key on every record of a compacted topic) and go through the replica manager's group commit.

A batch with a producer id (idempotent / transactional) must come alone, with
a sequence, and never as a control batch (only the broker writes markers);
its header fields ride on the AppendRequest for the committer's checks.
"""

from __future__ import annotations

import time

from lodestream.consensus.image import TopicImage
from lodestream.protocol.errors import ErrorCode, KafkaError
from lodestream.protocol.record_batch import CONTROL_BIT, TRANSACTIONAL_BIT, InvalidBatch, keyless_records, split_batches

from lodestream.broker.config import cleanup_policy_includes
from lodestream.broker.internal_topics import INTERNAL_TOPICS
from lodestream.broker.replica_manager import AppendRequest


def validate_batches(broker, topic: TopicImage, partition_index: int, records, now_ms: int):
    """(partition, entries, append_time, producer batch header or None); raises KafkaError for a refused request."""
    if topic.name in INTERNAL_TOPICS:  # only the coordinators write them (Kafka refuses clients the same way)
        raise KafkaError(ErrorCode.invalid_topic_exception, f"Cannot append to internal topic {topic.name}")
    partition = broker.replicas.get(topic.topic_id, partition_index)
    if partition is None or not partition.is_leader:
        error = broker.not_leader_error(topic, partition_index)
        raise KafkaError(error, f"partition {partition_index} does not exist" if error == ErrorCode.unknown_topic_or_partition
                         else f"this broker does not lead {topic.name}-{partition_index}")
    if records is None:
        raise KafkaError(ErrorCode.corrupt_message, "null record set")
    try:
        batches = split_batches(records)
    except InvalidBatch as exc:
        raise KafkaError(ErrorCode.corrupt_message, str(exc)) from None
    config = broker.topic_config(topic)
    max_bytes = int(config["max.message.bytes"])
    after_max = int(config["message.timestamp.after.max.ms"])
    before_max = int(config["message.timestamp.before.max.ms"])
    log_append = config["message.timestamp.type"] == "LogAppendTime"
    compacted = cleanup_policy_includes(config, "compact")
    entries = []
    producer = None
    for header, view in batches:
        if header.size > max_bytes:
            raise KafkaError(ErrorCode.message_too_large, (
                f"batch of {header.size} bytes is larger than max.message.bytes={max_bytes}"))
        if not log_append and header.max_timestamp > now_ms + after_max:
            raise KafkaError(ErrorCode.invalid_timestamp, (
                f"timestamp {header.max_timestamp} is more than {after_max} ms in the future"))
        if not log_append and header.base_timestamp < now_ms - before_max:
            raise KafkaError(ErrorCode.invalid_timestamp, (
                f"timestamp {header.base_timestamp} is more than {before_max} ms in the past"))
        if header.attributes & CONTROL_BIT:
            raise KafkaError(ErrorCode.invalid_record, "clients may not write control batches")
        if header.producer_id >= 0:
            if len(batches) > 1:
                raise KafkaError(ErrorCode.invalid_record, "a batch with a producer id must be alone in its partition")
            if header.base_sequence < 0:
                raise KafkaError(ErrorCode.invalid_record, f"invalid sequence {header.base_sequence} of an idempotent batch")
            producer = header
        if compacted:  # Kafka: a compacted topic's records need a key (the only per-record check here)
            try:
                keyless = keyless_records(view)
            except Exception as exc:  # records that do not parse inside a batch whose CRC matched
                raise KafkaError(ErrorCode.corrupt_message, f"unreadable records: {exc}") from None
            if keyless:
                message = (f"Compacted topic cannot accept message without key in topic partition "
                           f"{topic.name}-{partition_index}.")
                raise KafkaError(ErrorCode.invalid_record, message, tuple((i, message) for i in keyless))
        entries.append((header.last_offset_delta, now_ms if log_append else header.max_timestamp, header.size, view))
    return partition, entries, (now_ms if log_append else None), producer


def new_append(partition, entries, append_time, producer) -> AppendRequest:
    append = AppendRequest(partition, entries, append_time)
    if producer is not None:
        append.set_producer(producer.producer_id, producer.producer_epoch, producer.base_sequence, producer.attributes)
    return append


def enqueue_batches(broker, topic: TopicImage, partition_index: int, records: bytes,
                    now_ms: int | None = None) -> AppendRequest:
    """Validate and queue (in call order); raises KafkaError. Await `.done`, then read
    `.error` / `.base_offset` / `.log_append_time_ms` from the returned request."""
    if now_ms is None:
        now_ms = int(time.time() * 1000)
    partition, entries, append_time, producer = validate_batches(broker, topic, partition_index, records, now_ms)
    if producer is not None and producer.attributes & TRANSACTIONAL_BIT:
        raise KafkaError(ErrorCode.transactional_id_authorization_failed, "transactional batches need a transactional id")
    append = new_append(partition, entries, append_time, producer)
    broker.replicas.enqueue(append)
    return append
