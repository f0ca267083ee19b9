"""AllocateProducerIds (key 67): a broker asks the active controller for a block of producer ids nobody
had (broker/cluster_controller.py, broker/producer_ids.py). Served on the controller listener;
CLUSTER_ACTION on the cluster is required, as in Kafka."""

from __future__ import annotations

import datetime

from kio.schema.allocate_producer_ids.v0.request import AllocateProducerIdsRequest
from kio.schema.allocate_producer_ids.v0.response import AllocateProducerIdsResponse
from lodestream.protocol.errors import ErrorCode, KafkaError

from lodestream.broker.authorizer import DENIED, Operation, ResourceType
from lodestream.broker.request_context import RequestContext

API_KEY = 67
VERSIONS = range(0, 1)
LISTENERS = "controller"


async def handle(ctx: RequestContext, request: AllocateProducerIdsRequest) -> AllocateProducerIdsResponse:
    build = ctx.build

    def answer(error: ErrorCode, start: int = -1, length: int = 0) -> AllocateProducerIdsResponse:
        return build.AllocateProducerIdsResponse(throttle_time=datetime.timedelta(0), error_code=error,
                                                 producer_id_start=start, producer_id_len=length)

    if not ctx.authorize(Operation.CLUSTER_ACTION, ResourceType.CLUSTER):
        return answer(DENIED[ResourceType.CLUSTER])
    try:
        start, length = await ctx.broker.controller.allocate_producer_ids(request.broker_id, request.broker_epoch)
    except KafkaError as exc:
        return answer(exc.code)
    return answer(ErrorCode.none, start, length)
