"""DescribeConfigs (key 32): topic and broker configs with sources and synonyms.

Mirrors Kafka's ConfigHelper: a topic lists every topic config (synonym chain:
topic override, then the broker properties it falls back to); a broker
resource named with our node id lists every broker property; the empty name
is the cluster-wide dynamic default and lists only the keys set there.
configuration_keys null or empty = all keys; unknown keys are silently left out.
BROKER_LOGGER answers an empty logger list (Kafka lists its log4j loggers).
GROUP (32) lists a consumer group's quota configs (broker/quotas.py, docs/quotas.md).
"""

from __future__ import annotations

import datetime

from kio.schema.describe_configs.v4.request import DescribeConfigsRequest
from kio.schema.describe_configs.v4.response import DescribeConfigsResponse
from lodestream.protocol.errors import ErrorCode, KafkaError

from lodestream.broker.broker import validate_topic_name
from lodestream.broker.config import (
    BROKER_CONFIGS,
    CONFIG_SOURCE_IDS,
    CONFIG_TYPE_IDS,
    TOPIC_CONFIGS,
    broker_config_synonyms,
    describe_topic_config,
    effective_broker_value,
    listed_broker_config,
)
from lodestream.broker.quotas import GROUP_CONFIG_DOCS, GROUP_RESOURCE_TYPE, describe_group_configs
from lodestream.broker.authorizer import CLUSTER_NAME, DENIED, Operation, ResourceType
from lodestream.broker.request_context import RequestContext

API_KEY = 32
VERSIONS = range(1, 5)

# ConfigResource.Type ids
TOPIC = 2
BROKER = 4
BROKER_LOGGER = 8



def config_resource_denied(ctx: RequestContext, operation: Operation, resource_type: int, name: str) -> KafkaError | None:
    """The deny error when this request may not describe/alter the configs of a config resource (Kafka's
    mapping: a topic's configs are the topic's, broker and logger configs the cluster's, a group's the group's)."""
    if resource_type == TOPIC:
        target = (ResourceType.TOPIC, name)
    elif resource_type in (BROKER, BROKER_LOGGER):
        target = (ResourceType.CLUSTER, CLUSTER_NAME)
    elif resource_type == GROUP_RESOURCE_TYPE:
        target = (ResourceType.GROUP, name)
    else:
        return None  # an unknown type: the handler answers INVALID_REQUEST
    if ctx.authorize(operation, *target):
        return None
    return KafkaError(DENIED[target[0]], None)


def parse_broker_id(name: str) -> int:
    try:
        return int(name)
    except ValueError:
        raise KafkaError(ErrorCode.invalid_request, f"Broker id must be an integer, but it is: {name}") from None


def _wanted(resource, names):
    keys = resource.configuration_keys
    if not keys:  # null or empty: everything (ConfigHelperUtils.buildConfigEntries)
        return list(names)
    wanted = set(keys)
    return [n for n in names if n in wanted]


def _synonym_tuples(ctx, key: str, per_broker: bool) -> list[tuple[str, str | None, str]]:
    broker = ctx.broker
    return broker_config_synonyms(key, broker.config, broker.image.broker_configs, broker.node_id, per_broker)


def _entry(ctx, request, name, value, source, read_only, sensitive, kafka_type, doc, synonyms):
    build = ctx.build
    include_synonyms = bool(request.include_synonyms)
    include_docs = bool(getattr(request, "include_documentation", False))
    return build.DescribeConfigsResourceResult(
        name=name,
        value=None if sensitive else value,
        read_only=read_only,
        config_source=CONFIG_SOURCE_IDS[source],
        is_sensitive=sensitive,
        synonyms=tuple(
            build.DescribeConfigsSynonym(name=n, value=None if sensitive else v, source=CONFIG_SOURCE_IDS[s])
            for n, v, s in synonyms
        ) if include_synonyms else (),
        config_type=CONFIG_TYPE_IDS.get(kafka_type, 0),
        documentation=(doc or None) if include_docs else None,
    )


def _topic_configs(ctx, request, resource) -> tuple:
    broker = ctx.broker
    validate_topic_name(resource.resource_name)
    topic = broker.image.topic(resource.resource_name)
    if topic is None:
        raise KafkaError(ErrorCode.unknown_topic_or_partition, None)  # Kafka sends no message here
    entries = []
    for key in _wanted(resource, sorted(TOPIC_CONFIGS)):
        if TOPIC_CONFIGS[key].internal and key not in topic.configs:  # Kafka lists internal configs only when set
            continue
        view = describe_topic_config(key, topic.configs, broker.config, broker.image.broker_configs, broker.node_id)
        entries.append(_entry(ctx, request, key, view.value, view.source, view.read_only, view.sensitive,
                              view.kafka_type, view.doc, view.synonyms))
    return tuple(entries)


def _broker_configs(ctx, request, resource) -> tuple:
    broker = ctx.broker
    name = resource.resource_name
    entries = []
    if not name:  # cluster-wide dynamic defaults only
        defaults = broker.image.broker_configs.get("", {})
        for key in _wanted(resource, sorted(k for k in defaults if k in BROKER_CONFIGS)):
            definition = BROKER_CONFIGS[key]
            synonyms = _synonym_tuples(ctx, key, per_broker=False)
            source = synonyms[0][2] if synonyms else "DEFAULT_CONFIG"
            entries.append(_entry(ctx, request, key, defaults[key], source, definition.read_only,
                                  definition.sensitive, definition.kafka_type, definition.doc, synonyms))
        return tuple(entries)
    if parse_broker_id(name) != broker.node_id:
        raise KafkaError(ErrorCode.invalid_request,
                         f"Unexpected broker id, expected {broker.node_id} or empty string, but received {name}")
    for key in _wanted(resource, sorted(BROKER_CONFIGS)):
        definition = BROKER_CONFIGS[key]
        value, source = effective_broker_value(broker.config, broker.image.broker_configs, broker.node_id, key)
        if not listed_broker_config(key, value, source):
            continue
        synonyms = _synonym_tuples(ctx, key, per_broker=True)
        source = synonyms[0][2] if synonyms else "DEFAULT_CONFIG"
        entries.append(_entry(ctx, request, key, value, source, definition.read_only, definition.sensitive,
                              definition.kafka_type, definition.doc, synonyms))
    return tuple(entries)


def _logger_configs(ctx, request, resource) -> tuple:
    name = resource.resource_name
    if not name:
        raise KafkaError(ErrorCode.invalid_request, "Broker id must not be empty")
    if parse_broker_id(name) != ctx.broker.node_id:
        raise KafkaError(ErrorCode.invalid_request,
                         f"Unexpected broker id, expected {ctx.broker.node_id} but received {name}")
    return ()


def _group_configs(ctx, request, resource) -> tuple:
    if not resource.resource_name:
        raise KafkaError(ErrorCode.invalid_request, "Group id must not be empty")
    described = describe_group_configs(ctx.broker.image.client_quotas, resource.resource_name)
    wanted = set(_wanted(resource, [key for key, *_ in described]))
    return tuple(_entry(ctx, request, key, value, source, False, False, "DOUBLE", GROUP_CONFIG_DOCS[key], synonyms)
                 for key, value, source, synonyms in described if key in wanted)


async def handle(ctx: RequestContext, request: DescribeConfigsRequest) -> DescribeConfigsResponse:
    build = ctx.build
    results = []
    for resource in request.resources:
        resource_type = int(resource.resource_type)
        try:
            denied = config_resource_denied(ctx, Operation.DESCRIBE_CONFIGS, resource_type, resource.resource_name)
            if denied is not None:
                raise denied
            if resource_type == TOPIC:
                configs = _topic_configs(ctx, request, resource)
            elif resource_type == BROKER:
                configs = _broker_configs(ctx, request, resource)
            elif resource_type == BROKER_LOGGER:
                configs = _logger_configs(ctx, request, resource)
            elif resource_type == GROUP_RESOURCE_TYPE:
                configs = _group_configs(ctx, request, resource)
            else:
                raise KafkaError(ErrorCode.invalid_request, f"Unsupported resource type: {resource_type}")
            error, message = ErrorCode.none, None
        except KafkaError as exc:
            configs, error, message = (), exc.code, exc.message
        results.append(build.DescribeConfigsResult(
            error_code=error, error_message=message, resource_type=resource.resource_type,
            resource_name=resource.resource_name, configs=configs))
    return build.DescribeConfigsResponse(throttle_time=datetime.timedelta(0), results=tuple(results))
