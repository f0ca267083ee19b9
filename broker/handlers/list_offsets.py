"""ListOffsets (key 2): earliest, latest, max timestamp, and offset by timestamp."""

from __future__ import annotations

import datetime

from kio.schema.list_offsets.v10.request import ListOffsetsRequest
from kio.schema.list_offsets.v10.response import ListOffsetsResponse
from lodestream.protocol.errors import ErrorCode, KafkaError
from lodestream.protocol.record_batch import record_timestamps
from lodestream.broker.authorizer import DENIED, Operation, ResourceType
from lodestream.broker.request_context import RequestContext

API_KEY = 2
VERSIONS = range(1, 11)

LATEST = -1
EARLIEST = -2
MAX_TIMESTAMP = -3
EARLIEST_LOCAL = -4  # KIP-1005: the local log's start (tiered storage keeps older records offloaded)
LATEST_TIERED = -5


READ_COMMITTED = 1


async def lookup_offset(partition, timestamp: int, read_committed: bool = False) -> tuple[int, int]:
    """(timestamp, offset) as Kafka answers; (-1, -1) when nothing matches.

    READ_COMMITTED bounds everything by the last stable offset instead of the high watermark."""
    high_watermark = partition.last_stable_offset if read_committed else partition.high_watermark
    if timestamp == LATEST:
        return -1, high_watermark
    if timestamp == EARLIEST:
        return -1, partition.log_start_offset
    if timestamp == EARLIEST_LOCAL:
        return -1, partition.local_log_start_offset
    if timestamp == LATEST_TIERED:  # KIP-1005: the last offloaded offset
        return -1, partition.remote_end_offset - 1 if partition.remote_end_offset > 0 else -1
    if timestamp == MAX_TIMESTAMP:
        location = await partition.batch_with_max_timestamp()
        if location is None:
            return -1, -1
        batch = await partition.read_batch_at(location.base_offset)
        if batch is None:
            return -1, -1
        # The first record carrying the batch's max timestamp (KIP-734).
        best_offset, best_ts = max(record_timestamps(batch), key=lambda pair: (pair[1], -pair[0]))
        return best_ts, best_offset
    if timestamp < 0:
        raise ValueError(timestamp)
    # Batches whose max timestamp reaches the target, in offset order; the records inside decide.
    position = partition.log_start_offset
    while (location := await partition.first_batch_with_timestamp(timestamp, position)) is not None:
        if location.base_offset >= high_watermark:
            break
        batch = await partition.read_batch_at(location.base_offset)
        if batch is not None:
            for offset, record_ts in record_timestamps(batch):
                if record_ts >= timestamp and offset >= partition.log_start_offset:
                    return record_ts, offset
        position = location.last_offset + 1
    return -1, -1


async def handle(ctx: RequestContext, request: ListOffsetsRequest) -> ListOffsetsResponse:
    broker = ctx.broker
    build = ctx.build
    image = broker.image
    topics = []
    read_committed = getattr(request, "isolation_level", 0) == READ_COMMITTED  # v2+
    for requested_topic in request.topics:
        topic = image.topic(requested_topic.name)
        may_describe = ctx.authorize(Operation.DESCRIBE, ResourceType.TOPIC, requested_topic.name)
        partitions = []
        for requested in requested_topic.partitions:
            index = int(requested.partition_index)
            partition = broker.replicas.get(topic.topic_id, index) if topic is not None else None
            requested_epoch = int(getattr(requested, "current_leader_epoch", -1))
            if not may_describe or partition is None or not partition.is_leader:
                error = DENIED[ResourceType.TOPIC] if not may_describe else ErrorCode.unknown_topic_or_partition \
                    if topic is None else broker.not_leader_error(topic, index)
                partitions.append(build.ListOffsetsPartitionResponse(
                    partition_index=index, error_code=error, timestamp=-1, offset=-1, leader_epoch=-1))
                continue
            if 0 <= requested_epoch != partition.leader_epoch:  # KIP-320, as Fetch checks it
                error = ErrorCode.fenced_leader_epoch if requested_epoch < partition.leader_epoch \
                    else ErrorCode.unknown_leader_epoch
                partitions.append(build.ListOffsetsPartitionResponse(
                    partition_index=index, error_code=error, timestamp=-1, offset=-1, leader_epoch=-1))
                continue
            try:
                timestamp, offset = await lookup_offset(partition, int(requested.timestamp), read_committed)
                error = ErrorCode.none
            except ValueError:
                timestamp, offset, error = -1, -1, ErrorCode.invalid_request
            except KafkaError as exc:  # an offloaded segment that cannot be read (KAFKA_STORAGE_ERROR)
                timestamp, offset, error = -1, -1, exc.code
            partitions.append(build.ListOffsetsPartitionResponse(
                partition_index=index, error_code=error, timestamp=timestamp, offset=offset,
                leader_epoch=partition.leader_epoch if offset >= 0 else -1))
        topics.append(build.ListOffsetsTopicResponse(name=requested_topic.name, partitions=tuple(partitions)))
    return build.ListOffsetsResponse(throttle_time=datetime.timedelta(0), topics=tuple(topics))
