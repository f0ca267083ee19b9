"""ListPartitionReassignments (key 46): the partitions being moved, with their replicas, the ones being
added (still catching up: not yet in the ISR) and the ones to be removed, as kafka-reassign-partitions
--verify and the admin clients list them. A finished move is no longer listed. DESCRIBE on the cluster."""

from __future__ import annotations

import datetime

from kio.schema.list_partition_reassignments.v0.request import ListPartitionReassignmentsRequest
from kio.schema.list_partition_reassignments.v0.response import ListPartitionReassignmentsResponse
from lodestream.protocol.errors import ErrorCode

from lodestream.broker.authorizer import DENIED, Operation, ResourceType
from lodestream.broker.request_context import RequestContext

API_KEY = 46
VERSIONS = range(0, 1)


async def handle(ctx: RequestContext, request: ListPartitionReassignmentsRequest) -> ListPartitionReassignmentsResponse:
    build = ctx.build
    if not ctx.authorize(Operation.DESCRIBE, ResourceType.CLUSTER):
        return build.ListPartitionReassignmentsResponse(throttle_time=datetime.timedelta(0),
                                                        error_code=DENIED[ResourceType.CLUSTER], error_message=None,
                                                        topics=())
    image = ctx.broker.image
    wanted = None if request.topics is None else {(t.name, int(p)) for t in request.topics for p in t.partition_indexes}
    topics = []
    for name in sorted(image.topics_by_name):
        ongoing = [p for index, p in sorted(image.topics_by_name[name].partitions.items())
                   if (p.adding or p.removing) and (wanted is None or (name, index) in wanted)]
        if ongoing:
            topics.append(build.OngoingTopicReassignment(name=name, partitions=tuple(
                build.OngoingPartitionReassignment(partition_index=p.partition, replicas=p.replicas,
                                                   adding_replicas=p.adding, removing_replicas=p.removing)
                for p in ongoing)))
    return build.ListPartitionReassignmentsResponse(throttle_time=datetime.timedelta(0), error_code=ErrorCode.none,
                                                    error_message=None, topics=tuple(topics))
