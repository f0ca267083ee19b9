"""IncrementalAlterConfigs (key 44): SET / DELETE / APPEND / SUBTRACT per key.

APPEND and SUBTRACT work on LIST-type configs only (cleanup.policy,
log.cleanup.policy, ...) and start from the resource's explicit value, or the
config's default when none is set (Kafka's ConfigurationControlManager). All
of a resource's operations apply together or not at all.
GROUP (32): a consumer group's quota configs, SET / DELETE only (broker/quotas.py).
"""

from __future__ import annotations

import datetime

from kio.schema.incremental_alter_configs.v1.request import IncrementalAlterConfigsRequest
from kio.schema.incremental_alter_configs.v1.response import IncrementalAlterConfigsResponse
from lodestream.protocol.errors import ErrorCode, KafkaError

from lodestream.broker import audit
from lodestream.broker.config import BROKER_CONFIGS, TOPIC_CONFIGS
from lodestream.broker.quotas import GROUP_RESOURCE_TYPE, QuotaError, group_config_records

from lodestream.broker.handlers.alter_configs import apply_changes, broker_scope, check_keys, duplicate_resources, resource_response
from lodestream.broker.handlers.describe_configs import BROKER, BROKER_LOGGER, TOPIC, config_resource_denied
from lodestream.broker.authorizer import Operation
from lodestream.broker.request_context import RequestContext

API_KEY = 44
VERSIONS = range(0, 2)
LISTENERS = "both"  # served on the controller listener too: other nodes forward it there
FORWARDED_TO_CONTROLLER = True

SET, DELETE, APPEND, SUBTRACT = 0, 1, 2, 3
_OP_NAMES = {SET: "SET", DELETE: "DELETE", APPEND: "APPEND", SUBTRACT: "SUBTRACT"}


def _list_type(resource_type: int, key: str) -> bool:
    if resource_type == TOPIC:
        definition = TOPIC_CONFIGS.get(key)
    else:
        definition = BROKER_CONFIGS.get(key)
    return definition is not None and definition.kafka_type == "LIST"


def _current_and_default(ctx, resource_type: int, name: str, key: str) -> str | None:
    image = ctx.broker.image
    if resource_type == TOPIC:
        topic = image.topic(name)
        if topic is None:
            raise KafkaError(ErrorCode.unknown_topic_or_partition, f"Topic '{name}' does not exist.")
        current = topic.configs.get(key)
        return current if current is not None else TOPIC_CONFIGS[key].fallback
    current = image.broker_configs.get(broker_scope(ctx, name), {}).get(key)
    return current if current is not None else BROKER_CONFIGS[key].default


def _changes(ctx, resource_type: int, name: str, configs) -> dict[str, str | None]:
    changes: dict[str, str | None] = {}
    for config in configs:
        op = int(config.config_operation)
        key = config.name
        if op == SET:
            changes[key] = config.value
        elif op == DELETE:
            changes[key] = None
        elif op in (APPEND, SUBTRACT):
            if not _list_type(resource_type, key):
                raise KafkaError(ErrorCode.invalid_config,
                                 f"Can't {_OP_NAMES[op]} to key {key} because its type is not LIST.")
            current = _current_and_default(ctx, resource_type, name, key)
            parts = [p for p in (current or "").split(",") if p]
            for item in config.value.split(","):
                if op == APPEND and item not in parts:
                    parts.append(item)
                elif op == SUBTRACT and item in parts:
                    parts.remove(item)
            changes[key] = ",".join(parts)
        else:
            raise KafkaError(ErrorCode.invalid_request, f"Unknown operations type {op}")
    return changes


def _check_logger_changes(ctx, resource, validate_only: bool) -> None:
    """BROKER_LOGGER: we expose no loggers (DescribeConfigs lists none), so every name is unknown."""
    name = resource.resource_name
    if not name:
        raise KafkaError(ErrorCode.invalid_request, "Broker id must not be empty")
    broker_scope(ctx, name)
    for config in resource.configs:
        op = int(config.config_operation)
        if op not in (SET, DELETE):
            raise KafkaError(ErrorCode.invalid_request,
                             f"Operation {_OP_NAMES.get(op, op)} is not allowed for the BROKER_LOGGER resource")
        raise KafkaError(ErrorCode.invalid_config, f"Logger {config.name} does not exist!")


async def _alter_group_configs(ctx, resource, validate_only: bool) -> None:
    changes: dict[str, str | None] = {}
    for config in resource.configs:
        op = int(config.config_operation)
        if op not in (SET, DELETE):
            raise KafkaError(ErrorCode.invalid_config,
                             f"Can't {_OP_NAMES.get(op, op)} to key {config.name} because its type is not LIST.")
        changes[config.name] = config.value if op == SET else None
    try:
        records = group_config_records(resource.resource_name, changes)
    except QuotaError as exc:
        raise KafkaError(ErrorCode.invalid_config, str(exc)) from None
    if records and not validate_only:
        await ctx.broker.propose(records)
        audit.config_changed(ctx.session, f"group {resource.resource_name}", changes, {})


async def handle(ctx: RequestContext, request: IncrementalAlterConfigsRequest) -> IncrementalAlterConfigsResponse:
    duplicates = duplicate_resources(request.resources)
    validate_only = bool(request.validate_only)
    responses = []
    for position, resource in enumerate(request.resources):
        error, message = ErrorCode.none, None
        resource_type = int(resource.resource_type)
        try:
            if position in duplicates:
                raise KafkaError(ErrorCode.invalid_request, "Each resource must appear at most once.")
            denied = config_resource_denied(ctx, Operation.ALTER_CONFIGS, resource_type, resource.resource_name)
            if denied is not None:
                raise denied
            check_keys(resource.configs, null_allowed=lambda c: int(c.config_operation) == DELETE)
            if resource_type == BROKER_LOGGER:
                _check_logger_changes(ctx, resource, validate_only)
            elif resource_type == GROUP_RESOURCE_TYPE:
                await _alter_group_configs(ctx, resource, validate_only)
            elif resource_type in (TOPIC, BROKER):
                changes = _changes(ctx, resource_type, resource.resource_name, resource.configs)
                await apply_changes(ctx, resource_type, resource.resource_name, changes,
                                    replace_all=False, validate_only=validate_only)
            else:
                raise KafkaError(ErrorCode.invalid_request, f"Unknown resource type {resource_type}")
        except KafkaError as exc:
            error, message = exc.code, exc.message
        responses.append(resource_response(ctx, resource, error, message))
    return ctx.build.IncrementalAlterConfigsResponse(throttle_time=datetime.timedelta(0), responses=tuple(responses))
