"""DeleteRecords (key 21): advance partitions' log start offsets.

As Kafka's Partition.deleteRecordsOnLeader: offset -1 means the high
watermark; a negative offset or one above the high watermark is
OFFSET_OUT_OF_RANGE; a topic whose cleanup.policy lacks "delete" refuses with
POLICY_VIOLATION. The answer's low watermark is the resulting log start
offset (which may be above the requested offset if it already was).
"""

from __future__ import annotations

import datetime

from kio.schema.delete_records.v2.request import DeleteRecordsRequest
from kio.schema.delete_records.v2.response import DeleteRecordsResponse
from lodestream.protocol.errors import ErrorCode, KafkaError
from lodestream.broker.authorizer import DENIED, Operation, ResourceType
from lodestream.broker.config import cleanup_policy_includes
from lodestream.broker.request_context import RequestContext

API_KEY = 21
VERSIONS = range(0, 3)

HIGH_WATERMARK = -1


async def _delete(ctx, topic, index: int, requested: int) -> tuple[ErrorCode, int]:
    broker = ctx.broker
    partition = broker.replicas.get(topic.topic_id, index) if topic is not None else None
    if partition is None or not partition.is_leader:
        return (ErrorCode.unknown_topic_or_partition if topic is None else broker.not_leader_error(topic, index)), -1
    if not cleanup_policy_includes(broker.topic_config(topic), "delete"):
        return ErrorCode.policy_violation, -1
    high_watermark = partition.high_watermark
    offset = high_watermark if requested == HIGH_WATERMARK else requested
    if offset < 0 or offset > high_watermark:
        return ErrorCode.offset_out_of_range, -1
    if partition.remote_segments and broker.remote_log is not None:  # tiered storage: offloaded ones too
        try:
            await broker.remote_log.delete_records_before(partition, offset)
        except KafkaError as exc:
            return exc.code, -1
    await partition.delete_records_before(offset)
    return ErrorCode.none, partition.log_start_offset


async def handle(ctx: RequestContext, request: DeleteRecordsRequest) -> DeleteRecordsResponse:
    build = ctx.build
    image = ctx.broker.image
    topics = []
    for requested_topic in request.topics:
        topic = image.topic(requested_topic.name)
        may_delete = ctx.authorize(Operation.DELETE, ResourceType.TOPIC, requested_topic.name)
        partitions = []
        for requested_partition in requested_topic.partitions:
            index = int(requested_partition.partition_index)
            if may_delete:
                error, low_watermark = await _delete(ctx, topic, index, int(requested_partition.offset))
            else:
                error, low_watermark = DENIED[ResourceType.TOPIC], -1
            partitions.append(build.DeleteRecordsPartitionResult(
                partition_index=index, low_watermark=low_watermark, error_code=error))
        topics.append(build.DeleteRecordsTopicResult(name=requested_topic.name, partitions=tuple(partitions)))
    return build.DeleteRecordsResponse(throttle_time=datetime.timedelta(0), topics=tuple(topics))
