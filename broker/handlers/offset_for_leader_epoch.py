"""OffsetForLeaderEpoch (key 23): where a leader epoch ends in this leader's log (KIP-101 / KIP-279),
from the partition's leader-epoch cache: the largest epoch at or below the one asked for, and the offset
after its last batch (the log end for the current epoch). Consumers ask it after a leader change to find
out whether their position survived (KIP-320); a follower asks it with its replica id (CLUSTER_ACTION).
Only the partition's leader answers; the current leader epoch is checked as Fetch checks it."""

from __future__ import annotations

import datetime

from kio.schema.offset_for_leader_epoch.v4.request import OffsetForLeaderEpochRequest
from kio.schema.offset_for_leader_epoch.v4.response import OffsetForLeaderEpochResponse
from lodestream.protocol.errors import ErrorCode

from lodestream.broker.authorizer import DENIED, Operation, ResourceType
from lodestream.broker.request_context import RequestContext

API_KEY = 23
VERSIONS = range(2, 5)


def _answer(broker, topic, requested) -> tuple[ErrorCode, int, int]:
    index = int(requested.partition)
    partition = broker.replicas.get(topic.topic_id, index) if topic is not None else None
    if partition is None or not partition.is_leader:
        return (ErrorCode.unknown_topic_or_partition if topic is None else broker.not_leader_error(topic, index)), -1, -1
    current = int(requested.current_leader_epoch)
    if 0 <= current != partition.leader_epoch:
        return (ErrorCode.fenced_leader_epoch if current < partition.leader_epoch
                else ErrorCode.unknown_leader_epoch), -1, -1
    epoch, end = partition.end_offset_for_epoch(int(requested.leader_epoch))
    return ErrorCode.none, epoch, end


async def handle(ctx: RequestContext, request: OffsetForLeaderEpochRequest) -> OffsetForLeaderEpochResponse:
    build = ctx.build
    broker = ctx.broker
    from_follower = int(getattr(request, "replica_id", -1)) >= 0
    cluster_ok = from_follower and ctx.authorize(Operation.CLUSTER_ACTION, ResourceType.CLUSTER)
    topics = []
    for requested_topic in request.topics:
        allowed = cluster_ok if from_follower else ctx.authorize(Operation.DESCRIBE, ResourceType.TOPIC,
                                                                 requested_topic.topic)
        topic = broker.image.topic(requested_topic.topic)
        partitions = []
        for requested in requested_topic.partitions:
            if not allowed:
                error, epoch, end = (DENIED[ResourceType.CLUSTER] if from_follower else DENIED[ResourceType.TOPIC]), -1, -1
            else:
                error, epoch, end = _answer(broker, topic, requested)
            partitions.append(build.EpochEndOffset(error_code=error, partition=requested.partition, leader_epoch=epoch,
                                                   end_offset=end))
        topics.append(build.OffsetForLeaderTopicResult(topic=requested_topic.topic, partitions=tuple(partitions)))
    return build.OffsetForLeaderEpochResponse(throttle_time=datetime.timedelta(0), topics=tuple(topics))
