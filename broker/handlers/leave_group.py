"""LeaveGroup (key 13): one member (v0-v2) or a batch of members (v3+, KIP-345)."""

from __future__ import annotations

import datetime

from kio.schema.leave_group.v5.request import LeaveGroupRequest
from kio.schema.leave_group.v5.response import LeaveGroupResponse
from lodestream.protocol.errors import ErrorCode

from lodestream.broker.groups.classic import leave_group
from lodestream.broker.authorizer import DENIED, Operation, ResourceType
from lodestream.broker.request_context import RequestContext

API_KEY = 13
VERSIONS = range(0, 6)


async def handle(ctx: RequestContext, request: LeaveGroupRequest) -> LeaveGroupResponse:
    build = ctx.build
    if not ctx.authorize(Operation.READ, ResourceType.GROUP, request.group_id):
        return build.LeaveGroupResponse(throttle_time=datetime.timedelta(0), error_code=DENIED[ResourceType.GROUP],
                                        members=())
    if ctx.api_version < 3:
        members = [(request.member_id, None, None)]
    else:
        members = [(m.member_id, m.group_instance_id, getattr(m, "reason", None)) for m in request.members]
    top, errors = await leave_group(ctx.broker.groups, request.group_id, members)
    if ctx.api_version < 3:
        # A single member: its error is the response's error (Kafka's LeaveGroupResponse does the same).
        if top == ErrorCode.none and errors:
            top = errors[0]
        return build.LeaveGroupResponse(throttle_time=datetime.timedelta(0), error_code=top)
    responses = tuple(
        build.MemberResponse(member_id=member_id, group_instance_id=instance_id, error_code=error)
        for (member_id, instance_id, _), error in zip(members, errors)
    )
    return build.LeaveGroupResponse(throttle_time=datetime.timedelta(0), error_code=top,
                                    members=responses if top == ErrorCode.none else ())
