"""ListGroups (key 16): every group, with state (v4+) and type (v5+) filters."""

from __future__ import annotations

import datetime

from kio.schema.list_groups.v5.request import ListGroupsRequest
from kio.schema.list_groups.v5.response import ListGroupsResponse
from lodestream.protocol.errors import ErrorCode, KafkaError
from lodestream.broker.authorizer import Operation, ResourceType
from lodestream.broker.request_context import RequestContext

API_KEY = 16
VERSIONS = range(0, 6)


async def handle(ctx: RequestContext, request: ListGroupsRequest) -> ListGroupsResponse:
    build = ctx.build
    coordinator = ctx.broker.groups
    try:
        await coordinator.ensure_loaded()
    except KafkaError as exc:
        return build.ListGroupsResponse(throttle_time=datetime.timedelta(0), error_code=exc.code, groups=())
    states = {s.lower() for s in getattr(request, "states_filter", ())}
    types = {t.lower() for t in getattr(request, "types_filter", ())}
    listed = []
    # As Kafka: DESCRIBE on the cluster lists every group, else only the groups this principal may describe.
    visible = None if ctx.authorize(Operation.DESCRIBE, ResourceType.CLUSTER) else ctx.authorized(
        Operation.DESCRIBE, ResourceType.GROUP, coordinator.groups)
    for group_id, group in sorted(coordinator.groups.items()):
        if visible is not None and group_id not in visible:
            continue
        if group.state_name == "Dead":
            continue
        if states and group.state_name.lower() not in states:
            continue
        if types and group.group_type.lower() not in types:
            continue
        listed.append(build.ListedGroup(group_id=group_id, protocol_type=group.protocol_type,
                                        group_state=group.state_name, group_type=group.group_type))
    return build.ListGroupsResponse(throttle_time=datetime.timedelta(0), error_code=ErrorCode.none,
                                    groups=tuple(listed))
