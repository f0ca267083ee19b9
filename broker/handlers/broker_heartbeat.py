"""BrokerHeartbeat (key 63): a registered broker tells the active controller it is alive and how far it
has read the metadata log; the answer says whether it is caught up, fenced, and may shut down
(broker/cluster_controller.py). Served on the controller listener; CLUSTER_ACTION is required."""

from __future__ import annotations

import datetime

from kio.schema.broker_heartbeat.v1.request import BrokerHeartbeatRequest
from kio.schema.broker_heartbeat.v1.response import BrokerHeartbeatResponse
from lodestream.protocol.errors import ErrorCode, KafkaError

from lodestream.broker.authorizer import DENIED, Operation, ResourceType
from lodestream.broker.request_context import RequestContext

API_KEY = 63
VERSIONS = range(0, 2)
LISTENERS = "controller"


async def handle(ctx: RequestContext, request: BrokerHeartbeatRequest) -> BrokerHeartbeatResponse:
    build = ctx.build

    def answer(error: ErrorCode, caught_up=False, fenced=True, shut_down=False) -> BrokerHeartbeatResponse:
        return build.BrokerHeartbeatResponse(throttle_time=datetime.timedelta(0), error_code=error,
                                             is_caught_up=caught_up, is_fenced=fenced, should_shut_down=shut_down)

    if not ctx.authorize(Operation.CLUSTER_ACTION, ResourceType.CLUSTER):
        return answer(DENIED[ResourceType.CLUSTER])
    try:
        caught_up, fenced, shut_down = await ctx.broker.controller.heartbeat(
            request.broker_id, request.broker_epoch, request.current_metadata_offset, request.want_fence,
            request.want_shut_down)
    except KafkaError as exc:
        return answer(exc.code)
    return answer(ErrorCode.none, caught_up, fenced, shut_down)
