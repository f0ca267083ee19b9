"""FindCoordinator (key 10): this broker coordinates every group and transactional id (it leads
every __consumer_offsets and __transaction_state partition); v4+ batches several keys."""

from __future__ import annotations

import datetime

from kio.schema.find_coordinator.v6.request import FindCoordinatorRequest
from kio.schema.find_coordinator.v6.response import FindCoordinatorResponse
from lodestream.protocol.errors import ErrorCode, KafkaError
from lodestream.broker.authorizer import DENIED, Operation, ResourceType
from lodestream.broker.request_context import RequestContext

API_KEY = 10
VERSIONS = range(0, 7)

GROUP_KEY, TRANSACTION_KEY = 0, 1


async def _lookup(ctx: RequestContext, key: str, key_type: int) -> tuple[ErrorCode, str | None]:
    coordinators = {GROUP_KEY: ("Group id", ctx.broker.groups, ResourceType.GROUP),
                    TRANSACTION_KEY: ("Transactional id", ctx.broker.transactions, ResourceType.TRANSACTIONAL_ID)}
    if key_type not in coordinators:
        return ErrorCode.invalid_request, f"Unknown coordinator key type {key_type}"
    what, coordinator, resource_type = coordinators[key_type]
    if not ctx.authorize(Operation.DESCRIBE, resource_type, key):
        return DENIED[resource_type], None
    if not key:
        return ErrorCode.invalid_request, f"{what} must not be empty."
    try:
        await coordinator.ensure_loaded()  # creates __consumer_offsets / __transaction_state on first use
    except KafkaError as exc:
        return exc.code, exc.message
    return ErrorCode.none, None


async def handle(ctx: RequestContext, request: FindCoordinatorRequest) -> FindCoordinatorResponse:
    build = ctx.build
    listener = ctx.broker.bound_listeners[0]
    node, host, port = ctx.broker.node_id, listener.advertised_host, listener.advertised_port
    key_type = int(getattr(request, "key_type", GROUP_KEY))
    if ctx.api_version < 4:
        error, message = await _lookup(ctx, request.key, key_type)
        ok = error == ErrorCode.none
        return build.FindCoordinatorResponse(
            throttle_time=datetime.timedelta(0), error_code=error,
            error_message=message if not ok else None,
            node_id=node if ok else -1, host=host if ok else "", port=port if ok else -1)
    coordinators = []
    for key in request.coordinator_keys:
        error, message = await _lookup(ctx, key, key_type)
        ok = error == ErrorCode.none
        coordinators.append(build.Coordinator(
            key=key, node_id=node if ok else -1, host=host if ok else "", port=port if ok else -1,
            error_code=error, error_message=message if not ok else None))
    return build.FindCoordinatorResponse(throttle_time=datetime.timedelta(0), coordinators=tuple(coordinators))
