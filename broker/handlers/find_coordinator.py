"""FindCoordinator (key 10): the coordinator of a group or transactional id is the leader of the
__consumer_offsets / __transaction_state partition the id hashes to (created on first use); v4+ batches
several keys."""

from __future__ import annotations

import datetime

from kio.schema.find_coordinator.v6.request import FindCoordinatorRequest
from kio.schema.find_coordinator.v6.response import FindCoordinatorResponse
from lodestream.protocol.errors import ErrorCode, KafkaError
from lodestream.broker.authorizer import DENIED, Operation, ResourceType
from lodestream.broker.coordinator_runtime import partition_for
from lodestream.broker.internal_topics import OFFSETS_TOPIC, TRANSACTION_STATE_TOPIC
from lodestream.broker.request_context import RequestContext

API_KEY = 10
VERSIONS = range(0, 7)

GROUP_KEY, TRANSACTION_KEY = 0, 1


async def _lookup(ctx: RequestContext, key: str, key_type: int) -> tuple[ErrorCode, str | None, tuple]:
    """(error, message, (node, host, port) of the coordinator)."""
    coordinators = {GROUP_KEY: ("Group id", ctx.broker.groups, ResourceType.GROUP, OFFSETS_TOPIC),
                    TRANSACTION_KEY: ("Transactional id", ctx.broker.transactions, ResourceType.TRANSACTIONAL_ID,
                                      TRANSACTION_STATE_TOPIC)}
    nowhere = (-1, "", -1)
    if key_type not in coordinators:
        return ErrorCode.invalid_request, f"Unknown coordinator key type {key_type}", nowhere
    what, coordinator, resource_type, topic_name = coordinators[key_type]
    if not ctx.authorize(Operation.DESCRIBE, resource_type, key):
        return DENIED[resource_type], None, nowhere
    if not key:
        return ErrorCode.invalid_request, f"{what} must not be empty.", nowhere
    try:
        await coordinator.ensure_loaded()  # creates __consumer_offsets / __transaction_state on first use
    except KafkaError as exc:
        return exc.code, exc.message, nowhere
    topic = ctx.broker.image.topic(topic_name)
    leader = topic.partitions[partition_for(key, len(topic.partitions))].leader if topic is not None else -1
    for node, host, port, _, _ in ctx.broker.broker_endpoints(ctx.session.listener_name):
        if node == leader:
            return ErrorCode.none, None, (node, host, port)
    return ErrorCode.coordinator_not_available, f"the leader of {what.lower()} {key}'s partition is offline", nowhere


async def handle(ctx: RequestContext, request: FindCoordinatorRequest) -> FindCoordinatorResponse:
    build = ctx.build
    key_type = int(getattr(request, "key_type", GROUP_KEY))
    if ctx.api_version < 4:
        error, message, (node, host, port) = await _lookup(ctx, request.key, key_type)
        ok = error == ErrorCode.none
        return build.FindCoordinatorResponse(
            throttle_time=datetime.timedelta(0), error_code=error,
            error_message=message if not ok else None,
            node_id=node if ok else -1, host=host if ok else "", port=port if ok else -1)
    coordinators = []
    for key in request.coordinator_keys:
        error, message, (node, host, port) = await _lookup(ctx, key, key_type)
        ok = error == ErrorCode.none
        coordinators.append(build.Coordinator(
            key=key, node_id=node if ok else -1, host=host if ok else "", port=port if ok else -1,
            error_code=error, error_message=message if not ok else None))
    return build.FindCoordinatorResponse(throttle_time=datetime.timedelta(0), coordinators=tuple(coordinators))
