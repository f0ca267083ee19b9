"""DeleteGroups (key 42): removes empty groups and their committed offsets."""

from __future__ import annotations

import datetime

from kio.schema.delete_groups.v2.request import DeleteGroupsRequest
from kio.schema.delete_groups.v2.response import DeleteGroupsResponse
from lodestream.protocol.errors import ErrorCode, KafkaError
from lodestream.broker.authorizer import DENIED, Operation, ResourceType
from lodestream.broker.request_context import RequestContext

API_KEY = 42
VERSIONS = range(0, 3)


async def handle(ctx: RequestContext, request: DeleteGroupsRequest) -> DeleteGroupsResponse:
    build = ctx.build
    coordinator = ctx.broker.groups
    results = []
    for group_id in request.groups_names:
        if not ctx.authorize(Operation.DELETE, ResourceType.GROUP, group_id):
            results.append(build.DeletableGroupResult(group_id=group_id, error_code=DENIED[ResourceType.GROUP]))
            continue
        try:
            if not group_id:
                raise KafkaError(ErrorCode.invalid_group_id)
            await coordinator.ensure_loaded(group_id)
            error = await coordinator.delete_group(group_id)
        except KafkaError as exc:
            error = exc.code
        results.append(build.DeletableGroupResult(group_id=group_id, error_code=error))
    return build.DeleteGroupsResponse(throttle_time=datetime.timedelta(0), results=tuple(results))
