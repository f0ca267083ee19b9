"""DescribeProducers (key 61): the active producers of partitions this broker leads (KIP-664)."""

from __future__ import annotations

import datetime

from kio.schema.describe_producers.v0.request import DescribeProducersRequest
from kio.schema.describe_producers.v0.response import DescribeProducersResponse
from lodestream.protocol.errors import ErrorCode
from lodestream.broker.authorizer import DENIED, Operation, ResourceType
from lodestream.broker.request_context import RequestContext

API_KEY = 61
VERSIONS = range(0, 1)


def _partition(build, partition, index: int):
    if partition is None:
        return build.PartitionResponse(partition_index=index, error_code=ErrorCode.unknown_topic_or_partition,
                                       error_message=None, active_producers=())
    producers = tuple(
        build.ProducerState(
            producer_id=entry.producer_id, producer_epoch=entry.epoch, last_sequence=entry.last_seq,
            last_timestamp=entry.last_timestamp, coordinator_epoch=entry.coordinator_epoch,
            current_txn_start_offset=-1 if entry.txn_first_offset is None else entry.txn_first_offset)
        for entry in partition.active_producers())
    return build.PartitionResponse(partition_index=index, error_code=ErrorCode.none, error_message=None,
                                   active_producers=producers)


async def handle(ctx: RequestContext, request: DescribeProducersRequest) -> DescribeProducersResponse:
    broker = ctx.broker
    build = ctx.build
    topics = []
    for requested in request.topics:
        topic = broker.image.topic(requested.name)
        may_read = ctx.authorize(Operation.READ, ResourceType.TOPIC, requested.name)
        partitions = []
        for index in requested.partition_indexes:
            index = int(index)
            if not may_read:
                partitions.append(build.PartitionResponse(partition_index=index, error_code=DENIED[ResourceType.TOPIC],
                                                          error_message=None, active_producers=()))
                continue
            partition = broker.replicas.get(topic.topic_id, index) if topic is not None else None
            partitions.append(_partition(build, partition, index))
        topics.append(build.TopicResponse(name=requested.name, partitions=tuple(partitions)))
    return build.DescribeProducersResponse(throttle_time=datetime.timedelta(0), topics=tuple(topics))
