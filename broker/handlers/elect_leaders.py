"""ElectLeaders (key 43): preferred-leader election (the first replica leads again, when it is alive and in
the ISR) or unclean election (a leaderless partition takes any live replica), as kafka-leader-election and
the admin clients' electLeaders ask. ALTER on the cluster; carried out by the active controller (other
nodes forward it)."""

from __future__ import annotations

import datetime

from kio.schema.elect_leaders.v2.request import ElectLeadersRequest
from kio.schema.elect_leaders.v2.response import ElectLeadersResponse
from lodestream.protocol.errors import ErrorCode, KafkaError

from lodestream.broker.authorizer import DENIED, Operation, ResourceType
from lodestream.broker.request_context import RequestContext

API_KEY = 43
VERSIONS = range(0, 3)
LISTENERS = "both"
FORWARDED_TO_CONTROLLER = True

UNCLEAN = 1


async def handle(ctx: RequestContext, request: ElectLeadersRequest) -> ElectLeadersResponse:
    build = ctx.build
    wanted = None if request.topic_partitions is None else [
        (topic.topic, int(p)) for topic in request.topic_partitions for p in topic.partitions]

    def answer(error: ErrorCode, results: dict) -> ElectLeadersResponse:
        by_topic: dict[str, list] = {}
        for (name, index), (code, message) in sorted(results.items()):
            by_topic.setdefault(name, []).append(build.PartitionResult(partition_id=index, error_code=code,
                                                                        error_message=message))
        return build.ElectLeadersResponse(throttle_time=datetime.timedelta(0), error_code=error,
                                          replica_election_results=tuple(
                                              build.ReplicaElectionResult(topic=name, partition_result=tuple(results))
                                              for name, results in by_topic.items()))

    if not ctx.authorize(Operation.ALTER, ResourceType.CLUSTER):
        denied = {key: (DENIED[ResourceType.CLUSTER], None) for key in wanted or ()}
        return answer(DENIED[ResourceType.CLUSTER], denied)
    unclean = int(getattr(request, "election_type", 0)) == UNCLEAN
    try:
        results = await ctx.broker.controller.elect_leaders(unclean, wanted)
    except KafkaError as exc:
        return answer(exc.code, {key: (exc.code, exc.message) for key in wanted or ()})
    return answer(ErrorCode.none, results)
