"""AlterPartition (key 56): a partition leader asks the active controller to change its ISR (a follower
fell behind for replica.lag.time.max.ms, or caught up again). The controller checks the leader epoch, the
partition epoch and each new member's broker epoch (broker/cluster_controller.py); the answer carries the
partition's state after the change. Served on the controller listener; CLUSTER_ACTION is required."""

from __future__ import annotations

import datetime

from kio.schema.alter_partition.v3.request import AlterPartitionRequest
from kio.schema.alter_partition.v3.response import AlterPartitionResponse
from lodestream.protocol.errors import ErrorCode, KafkaError

from lodestream.broker.authorizer import DENIED, Operation, ResourceType
from lodestream.broker.request_context import RequestContext

API_KEY = 56
VERSIONS = range(2, 4)
LISTENERS = "controller"


async def handle(ctx: RequestContext, request: AlterPartitionRequest) -> AlterPartitionResponse:
    build = ctx.build
    if not ctx.authorize(Operation.CLUSTER_ACTION, ResourceType.CLUSTER):
        return build.AlterPartitionResponse(throttle_time=datetime.timedelta(0),
                                            error_code=DENIED[ResourceType.CLUSTER], topics=())
    topics = []
    for topic in request.topics:
        partitions = []
        for wanted in topic.partitions:
            try:
                p = await ctx.broker.controller.alter_partition(
                    request.broker_id, request.broker_epoch, topic.topic_id, wanted.partition_index,
                    wanted.leader_epoch, wanted.partition_epoch,
                    [(member.broker_id, member.broker_epoch) for member in wanted.new_isr_with_epochs])
            except KafkaError as exc:
                if exc.code in (ErrorCode.not_controller, ErrorCode.stale_broker_epoch):
                    return build.AlterPartitionResponse(throttle_time=datetime.timedelta(0), error_code=exc.code,
                                                        topics=())
                partitions.append(build.PartitionData(partition_index=wanted.partition_index, error_code=exc.code,
                                                      leader_id=-1, leader_epoch=-1, partition_epoch=-1))
                continue
            partitions.append(build.PartitionData(partition_index=wanted.partition_index, error_code=ErrorCode.none,
                                                  leader_id=p.leader, leader_epoch=p.leader_epoch, isr=p.isr,
                                                  partition_epoch=p.partition_epoch))
        topics.append(build.TopicData(topic_id=topic.topic_id, partitions=tuple(partitions)))
    return build.AlterPartitionResponse(throttle_time=datetime.timedelta(0), error_code=ErrorCode.none,
                                        topics=tuple(topics))
