"""AlterPartitionReassignments (key 45): move partitions to other replicas (kafka-reassign-partitions
--execute), or cancel a move (null replicas). The new replicas join as followers; once they are all in the
ISR the leaving ones are dropped (and a leaving leader hands over), which ListPartitionReassignments
follows. ALTER on the cluster; carried out by the active controller (other nodes forward it)."""

from __future__ import annotations

import datetime

from kio.schema.alter_partition_reassignments.v1.request import AlterPartitionReassignmentsRequest
from kio.schema.alter_partition_reassignments.v1.response import AlterPartitionReassignmentsResponse
from lodestream.protocol.errors import ErrorCode, KafkaError

from lodestream.broker.authorizer import DENIED, Operation, ResourceType
from lodestream.broker.request_context import RequestContext

API_KEY = 45
VERSIONS = range(0, 2)
LISTENERS = "both"
FORWARDED_TO_CONTROLLER = True


async def handle(ctx: RequestContext, request: AlterPartitionReassignmentsRequest) -> AlterPartitionReassignmentsResponse:
    build = ctx.build
    moves = [(topic.name, int(p.partition_index), None if p.replicas is None else tuple(int(r) for r in p.replicas))
             for topic in request.topics for p in topic.partitions]
    error, message = ErrorCode.none, None
    if not ctx.authorize(Operation.ALTER, ResourceType.CLUSTER):
        error = DENIED[ResourceType.CLUSTER]
        results = {(name, index): (error, None) for name, index, _ in moves}
    else:
        try:
            results = await ctx.broker.controller.reassign(moves)
        except KafkaError as exc:
            error, message = exc.code, exc.message
            results = {(name, index): (exc.code, exc.message) for name, index, _ in moves}
    by_topic: dict[str, list] = {}
    for (name, index), (code, why) in results.items():
        by_topic.setdefault(name, []).append(build.ReassignablePartitionResponse(partition_index=index, error_code=code,
                                                                                 error_message=why))
    return build.AlterPartitionReassignmentsResponse(
        throttle_time=datetime.timedelta(0), error_code=error, error_message=message,
        responses=tuple(build.ReassignableTopicResponse(name=name, partitions=tuple(partitions))
                        for name, partitions in by_topic.items()))
