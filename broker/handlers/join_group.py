"""JoinGroup (key 11): classic group membership (broker/groups/classic.py)."""

from __future__ import annotations

import datetime

from kio.schema.join_group.v9.request import JoinGroupRequest
from kio.schema.join_group.v9.response import JoinGroupResponse
from lodestream.broker.groups.classic import JoinRequest, join_group
from lodestream.broker.authorizer import DENIED, Operation, ResourceType
from lodestream.broker.request_context import RequestContext

API_KEY = 11
VERSIONS = range(0, 10)


def millis(value) -> int:
    if isinstance(value, datetime.timedelta):
        return int(value / datetime.timedelta(milliseconds=1))
    return int(value)


async def handle(ctx: RequestContext, request: JoinGroupRequest) -> JoinGroupResponse:
    build = ctx.build
    if not ctx.authorize(Operation.READ, ResourceType.GROUP, request.group_id):
        return build.JoinGroupResponse(
            throttle_time=datetime.timedelta(0), error_code=DENIED[ResourceType.GROUP], generation_id=-1,
            protocol_type=None, protocol_name=None if ctx.api_version >= 7 else "", leader="", skip_assignment=False,
            member_id="", members=())
    session = millis(request.session_timeout)
    rebalance = millis(getattr(request, "rebalance_timeout", session))
    if rebalance < 0 or ctx.api_version == 0:
        rebalance = session
    # consumer-group quotas: this client's fetches count against its group (broker/quotas.py)
    ctx.broker.quotas.note_group_member(ctx.usage.host, ctx.client_id or "", request.group_id)
    result = await join_group(ctx.broker.groups, JoinRequest(
        group_id=request.group_id,
        member_id=request.member_id,
        group_instance_id=getattr(request, "group_instance_id", None),
        protocol_type=request.protocol_type,
        protocols=[(p.name, bytes(p.metadata)) for p in request.protocols],
        session_timeout_ms=session,
        rebalance_timeout_ms=rebalance,
        client_id=ctx.client_id or "",
        client_host=ctx.session.described_host,
        api_version=ctx.api_version,
        reason=getattr(request, "reason", None),
    ))
    members = tuple(
        build.JoinGroupResponseMember(member_id=member_id, group_instance_id=instance_id, metadata=metadata)
        for member_id, instance_id, metadata in result.members
    )
    return build.JoinGroupResponse(
        throttle_time=datetime.timedelta(0),
        error_code=result.error,
        generation_id=result.generation_id,
        protocol_type=result.protocol_type,
        # v0-v6 have a non-nullable protocol name: "" when there is none.
        protocol_name=result.protocol_name if (result.protocol_name is not None or ctx.api_version >= 7) else "",
        leader=result.leader,
        skip_assignment=result.skip_assignment,
        member_id=result.member_id,
        members=members,
    )
