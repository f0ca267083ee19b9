"""SyncGroup (key 14): the leader's assignment, handed to every member."""

from __future__ import annotations

import datetime

from kio.schema.sync_group.v5.request import SyncGroupRequest
from kio.schema.sync_group.v5.response import SyncGroupResponse
from lodestream.broker.groups.classic import sync_group
from lodestream.broker.authorizer import DENIED, Operation, ResourceType
from lodestream.broker.request_context import RequestContext

API_KEY = 14
VERSIONS = range(0, 6)


async def handle(ctx: RequestContext, request: SyncGroupRequest) -> SyncGroupResponse:
    if not ctx.authorize(Operation.READ, ResourceType.GROUP, request.group_id):
        return ctx.build.SyncGroupResponse(throttle_time=datetime.timedelta(0), error_code=DENIED[ResourceType.GROUP],
                                           protocol_type=None, protocol_name=None, assignment=b"")
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
