"""AlterConfigs (key 33): the legacy whole-set replace of a resource's configs.

Every key not named in the request is removed (Kafka's deprecated semantics).
Request checks follow Kafka's ConfigAdminManager.preprocess: duplicate
resources, duplicate keys and null values are INVALID_REQUEST; a broker
resource is "" (cluster default) or this node's id. As in Kafka (KAFKA-13609),
a broker config that fails validation is INVALID_REQUEST; a topic config is
INVALID_CONFIG.
"""

from __future__ import annotations

import datetime

from kio.schema.alter_configs.v2.request import AlterConfigsRequest
from kio.schema.alter_configs.v2.response import AlterConfigsResponse
from lodestream.protocol.errors import ErrorCode, KafkaError

from lodestream.broker.handlers.describe_configs import BROKER, TOPIC, config_resource_denied
from lodestream.broker.authorizer import Operation
from lodestream.broker.request_context import RequestContext

API_KEY = 33
VERSIONS = range(0, 3)
LISTENERS = "both"  # served on the controller listener too: other nodes forward it there
FORWARDED_TO_CONTROLLER = True


def duplicate_resources(resources) -> set[int]:
    """Positions of resources whose (type, name) appears more than once."""
    positions: dict[tuple[int, str], list[int]] = {}
    for position, resource in enumerate(resources):
        positions.setdefault((int(resource.resource_type), resource.resource_name), []).append(position)
    return {p for group in positions.values() if len(group) > 1 for p in group}


def check_keys(configs, null_allowed=lambda config: False) -> None:
    names = [c.name for c in configs]
    if len(set(names)) != len(names):
        raise KafkaError(ErrorCode.invalid_request, "Error due to duplicate config keys")
    nulls = [c.name for c in configs if c.value is None and not null_allowed(c)]
    if nulls:
        raise KafkaError(ErrorCode.invalid_request, "Null value not supported for : " + ", ".join(nulls))


def broker_scope(ctx, name: str) -> str:
    """"" for the cluster default, else this node's id (Kafka's validateResourceNameIsCurrentNodeId; on the
    controller listener, any registered broker's: the request was forwarded by that broker)."""
    if not name:
        return ""
    try:
        node = int(name)
    except ValueError:
        raise KafkaError(ErrorCode.invalid_request, f"Node id must be an integer, but it is: {name}") from None
    forwarded = ctx.session.controller and node in ctx.broker.broker_ids()  # checked by the broker that forwarded it
    if node != ctx.broker.node_id and not forwarded:
        raise KafkaError(ErrorCode.invalid_request,
                         f"Unexpected broker id, expected {ctx.broker.node_id}, but received {name}")
    return str(node)


async def apply_changes(ctx, resource_type: int, name: str, changes: dict[str, str | None], replace_all: bool,
                        validate_only: bool) -> None:
    broker = ctx.broker
    if resource_type == TOPIC:
        await broker.alter_topic_configs(name, changes, replace_all=replace_all, validate_only=validate_only,
                                         session=ctx.session)
    elif resource_type == BROKER:
        scope = broker_scope(ctx, name)
        try:
            await broker.alter_broker_configs(scope, changes, replace_all=replace_all, validate_only=validate_only,
                                              session=ctx.session)
        except KafkaError as exc:
            if exc.code == ErrorCode.invalid_config:  # Kafka wraps broker config validation errors (KAFKA-13609)
                raise KafkaError(ErrorCode.invalid_request, exc.message) from None
            raise
    else:
        raise KafkaError(ErrorCode.invalid_request, f"Unknown resource type {resource_type}")


def resource_response(ctx, resource, error: ErrorCode, message: str | None):
    return ctx.build.AlterConfigsResourceResponse(
        error_code=error, error_message=message, resource_type=resource.resource_type,
        resource_name=resource.resource_name)


async def handle(ctx: RequestContext, request: AlterConfigsRequest) -> AlterConfigsResponse:
    duplicates = duplicate_resources(request.resources)
    responses = []
    for position, resource in enumerate(request.resources):
        error, message = ErrorCode.none, None
        try:
            if position in duplicates:
                raise KafkaError(ErrorCode.invalid_request, "Each resource must appear at most once.")
            denied = config_resource_denied(ctx, Operation.ALTER_CONFIGS, int(resource.resource_type),
                                            resource.resource_name)
            if denied is not None:
                raise denied
            check_keys(resource.configs)
            changes = {c.name: c.value for c in resource.configs}
            await apply_changes(ctx, int(resource.resource_type), resource.resource_name, changes,
                                replace_all=True, validate_only=bool(request.validate_only))
        except KafkaError as exc:
            error, message = exc.code, exc.message
        responses.append(resource_response(ctx, resource, error, message))
    return ctx.build.AlterConfigsResponse(throttle_time=datetime.timedelta(0), responses=tuple(responses))
