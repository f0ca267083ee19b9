"""Heartbeat (key 12): keeps a classic member's session alive; reports rebalances."""

from __future__ import annotations

import datetime

from lodestream.broker.groups.classic import heartbeat

API_KEY = 12
VERSIONS = range(0, 5)


async def handle(ctx, request):
    error = await heartbeat(ctx.broker.groups, request.group_id, request.member_id, int(request.generation_id),
                            getattr(request, "group_instance_id", None))
    return ctx.build.HeartbeatResponse(throttle_time=datetime.timedelta(0), error_code=error)
