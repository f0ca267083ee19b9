"""DescribeGroups (key 15): classic groups. As in Kafka 4, a consumer (KIP-848)
group is not described here (GROUP_ID_NOT_FOUND from v6; state Dead before):
clients use ConsumerGroupDescribe for those."""

from __future__ import annotations

import datetime

from kio.schema.describe_groups.v6.request import DescribeGroupsRequest
from kio.schema.describe_groups.v6.response import DescribeGroupsResponse
from lodestream.protocol.errors import ErrorCode, KafkaError

from lodestream.broker.groups.classic import STABLE
from lodestream.broker.authorizer import DENIED, Operation, ResourceType
from lodestream.broker.request_context import RequestContext

API_KEY = 15
VERSIONS = range(0, 7)

_NO_OPS = -2147483648


async def handle(ctx: RequestContext, request: DescribeGroupsRequest) -> DescribeGroupsResponse:
    build = ctx.build
    coordinator = ctx.broker.groups
    load_error = ErrorCode.none
    try:
        await coordinator.ensure_loaded()
    except KafkaError as exc:
        load_error = exc.code
    described = []
    include_operations = bool(getattr(request, "include_authorized_operations", False))
    for group_id in request.groups:
        group = coordinator.groups.get(group_id)
        if not ctx.authorize(Operation.DESCRIBE, ResourceType.GROUP, group_id):
            described.append(build.DescribedGroup(
                error_code=DENIED[ResourceType.GROUP], error_message=None, group_id=group_id, group_state="",
                protocol_type="", protocol_data="", members=(), authorized_operations=_NO_OPS))
            continue
        error = load_error if load_error != ErrorCode.none else coordinator.coordination_error(group_id)
        if error != ErrorCode.none:
            described.append(build.DescribedGroup(
                error_code=error, error_message=None, group_id=group_id, group_state="", protocol_type="",
                protocol_data="", members=(), authorized_operations=_NO_OPS))
            continue
        if group is None or group.group_type != "classic" or group.state_name == "Dead":
            if group is None or group.state_name == "Dead":
                message = f"Group {group_id} not found."
            else:
                message = f"Group {group_id} is not a classic group."
            error = ErrorCode.group_id_not_found if ctx.api_version >= 6 else ErrorCode.none
            described.append(build.DescribedGroup(
                error_code=error, error_message=message if ctx.api_version >= 6 else None, group_id=group_id,
                group_state="Dead", protocol_type="", protocol_data="", members=(),
                authorized_operations=_NO_OPS))
            continue
        stable = group.state == STABLE
        members = tuple(
            build.DescribedGroupMember(
                member_id=m.member_id, group_instance_id=m.group_instance_id, client_id=m.client_id,
                client_host=m.client_host,
                member_metadata=m.metadata(group.protocol_name) if stable else b"",
                member_assignment=m.assignment if stable else b"")
            for m in group.members.values()
        )
        described.append(build.DescribedGroup(
            error_code=ErrorCode.none, error_message=None, group_id=group_id, group_state=group.state_name,
            protocol_type=group.protocol_type, protocol_data=(group.protocol_name or "") if stable else "",
            members=members, authorized_operations=(ctx.authorized_operations(ResourceType.GROUP, group_id)
                                                    if include_operations else _NO_OPS)))
    return build.DescribeGroupsResponse(throttle_time=datetime.timedelta(0), groups=tuple(described))
