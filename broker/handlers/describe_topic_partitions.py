"""DescribeTopicPartitions (key 75, KIP-966): topics and their partitions, paginated, as Kafka 4 answers it.

The Java admin client's describeTopics (so kafka-topics --describe) asks this before Metadata. Topics go
in name order, from the request's cursor on, until response_partition_limit partitions (at most
max.request.partition.size.limit) are in the answer; next_cursor says where to go on. No topic named
means every topic the principal may describe; a named topic that does not exist or may not be described
gets its error. Eligible leader replicas are empty: replication arrives with issue 15.
"""

from __future__ import annotations

import datetime

from kio.schema.describe_topic_partitions.v0.request import DescribeTopicPartitionsRequest
from kio.schema.describe_topic_partitions.v0.response import DescribeTopicPartitionsResponse
from lodestream.protocol.errors import ErrorCode
from lodestream.broker.authorizer import DENIED, Operation, ResourceType
from lodestream.broker.internal_topics import INTERNAL_TOPICS
from lodestream.broker.request_context import RequestContext

API_KEY = 75
VERSIONS = range(0, 1)


def _topic_error(build, name: str, error: ErrorCode):
    return build.DescribeTopicPartitionsResponseTopic(error_code=error, name=name, topic_id=None, partitions=())


def _partition(build, partition, live: set[int]):
    return build.DescribeTopicPartitionsResponsePartition(
        error_code=ErrorCode.none, partition_index=partition.partition, leader_id=partition.leader,
        leader_epoch=partition.leader_epoch, replica_nodes=partition.replicas, isr_nodes=partition.isr,
        eligible_leader_replicas=partition.elr, last_known_elr=(),
        offline_replicas=tuple(r for r in partition.replicas if r not in live))


async def handle(ctx: RequestContext, request: DescribeTopicPartitionsRequest) -> DescribeTopicPartitionsResponse:
    build = ctx.build
    image = ctx.broker.image
    cursor = request.cursor
    requested = sorted({topic.name for topic in request.topics})
    if cursor is not None and requested and cursor.topic_name not in requested:
        return build.DescribeTopicPartitionsResponse(  # as Kafka: the request is invalid, every topic says so
            throttle_time=datetime.timedelta(0),
            topics=tuple(_topic_error(build, name, ErrorCode.invalid_request) for name in requested))
    names = requested or sorted(image.topics_by_name)
    if cursor is not None:
        names = [name for name in names if name >= cursor.topic_name]
    allowed = ctx.authorized(Operation.DESCRIBE, ResourceType.TOPIC, names)
    live = {b.broker_id for b in image.live_brokers()} or {ctx.broker.node_id}
    if not requested:  # listing every topic: only those this principal may describe, as Metadata does
        names = [name for name in names if name in allowed]
    limit = max(1, min(int(request.response_partition_limit),
                       int(ctx.broker.broker_config_value("max.request.partition.size.limit"))))
    topics, next_cursor = [], None
    for name in names:
        if name not in allowed:
            topics.append(_topic_error(build, name, DENIED[ResourceType.TOPIC]))
            continue
        topic = image.topic(name)
        if topic is None:
            topics.append(_topic_error(build, name, ErrorCode.unknown_topic_or_partition))
            continue
        start = cursor.partition_index if cursor is not None and name == cursor.topic_name else 0
        indexes = sorted(index for index in topic.partitions if index >= start)
        if limit == 0:  # the answer is full: the client asks again from here
            next_cursor = build.Cursor(topic_name=name, partition_index=indexes[0] if indexes else start)
            break
        taken = indexes[:limit]
        limit -= len(taken)
        topics.append(build.DescribeTopicPartitionsResponseTopic(
            error_code=ErrorCode.none, name=name, topic_id=topic.topic_id, is_internal=name in INTERNAL_TOPICS,
            partitions=tuple(_partition(build, topic.partitions[index], live) for index in taken),
            topic_authorized_operations=ctx.authorized_operations(ResourceType.TOPIC, name)))
        if len(taken) < len(indexes):
            next_cursor = build.Cursor(topic_name=name, partition_index=indexes[len(taken)])
            break
    return build.DescribeTopicPartitionsResponse(
        throttle_time=datetime.timedelta(0), topics=tuple(topics), next_cursor=next_cursor)
