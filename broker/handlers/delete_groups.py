"""DeleteGroups (key 42): removes empty groups and their committed offsets."""

from __future__ import annotations

import datetime

from lodestream.protocol.errors import ErrorCode, KafkaError

API_KEY = 42
VERSIONS = range(0, 3)


async def handle(ctx, request):
    build = ctx.build
    coordinator = ctx.broker.groups
    results = []
    for group_id in request.groups_names:
        try:
            await coordinator.ensure_loaded()
            error = await coordinator.delete_group(group_id) if group_id else ErrorCode.invalid_group_id
        except KafkaError as exc:
            error = exc.code
        results.append(build.DeletableGroupResult(group_id=group_id, error_code=error))
    return build.DeleteGroupsResponse(throttle_time=datetime.timedelta(0), results=tuple(results))
