"""SyncGroup (key 14): the leader's assignment, handed to every member."""

from __future__ import annotations

import datetime

from lodestream.broker.groups.classic import sync_group

API_KEY = 14
VERSIONS = range(0, 6)


async def handle(ctx, request):
    result = await sync_group(
        ctx.broker.groups,
        request.group_id,
        request.member_id,
        int(request.generation_id),
        getattr(request, "group_instance_id", None),
        getattr(request, "protocol_type", None),
        getattr(request, "protocol_name", None),
        {a.member_id: bytes(a.assignment) for a in request.assignments},
    )
    return ctx.build.SyncGroupResponse(
        throttle_time=datetime.timedelta(0),
        error_code=result.error,
        protocol_type=result.protocol_type,
        protocol_name=result.protocol_name,
        assignment=result.assignment,
    )
