"""Heartbeat (key 12): keeps a classic member's session alive; reports rebalances."""

from __future__ import annotations

import datetime

from kio.schema.heartbeat.v4.request import HeartbeatRequest
from kio.schema.heartbeat.v4.response import HeartbeatResponse
from lodestream.broker.groups.classic import heartbeat
from lodestream.broker.authorizer import DENIED, Operation, ResourceType
from lodestream.broker.request_context import RequestContext

API_KEY = 12
VERSIONS = range(0, 5)


async def handle(ctx: RequestContext, request: HeartbeatRequest) -> HeartbeatResponse:
    if not ctx.authorize(Operation.READ, ResourceType.GROUP, request.group_id):
        return ctx.build.HeartbeatResponse(throttle_time=datetime.timedelta(0), error_code=DENIED[ResourceType.GROUP])
    error = await heartbeat(ctx.broker.groups, request.group_id, request.member_id, int(request.generation_id),
                            getattr(request, "group_instance_id", None))
    return ctx.build.HeartbeatResponse(throttle_time=datetime.timedelta(0), error_code=error)
