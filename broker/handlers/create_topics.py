"""CreateTopics (key 19): validate_only, configs, explicit replica assignments."""

from __future__ import annotations

import datetime

from kio.schema.create_topics.v7.request import CreateTopicsRequest
from kio.schema.create_topics.v7.response import CreateTopicsResponse
from lodestream.protocol.errors import ErrorCode, KafkaError

from lodestream.broker.broker import TopicSpec
from lodestream.broker.config import CONFIG_SOURCE_IDS, describe_topic_config
from lodestream.broker.authorizer import DENIED, Operation, ResourceType
from lodestream.broker.request_context import RequestContext

API_KEY = 19
VERSIONS = range(2, 8)
LISTENERS = "both"  # served on the controller listener too: other nodes forward it there
FORWARDED_TO_CONTROLLER = True


def _spec(topic) -> TopicSpec:
    return TopicSpec(
        name=topic.name,
        num_partitions=int(topic.num_partitions),
        replication_factor=int(topic.replication_factor),
        assignments={int(a.partition_index): [int(b) for b in a.broker_ids] for a in topic.assignments},
        configs={c.name: c.value for c in topic.configs},
    )


def _result_configs(ctx, spec: TopicSpec):
    """The new topic's effective configs (v5+ only)."""
    broker = ctx.broker
    if not ctx.build.has("CreatableTopicConfigs"):
        return None
    overrides = {k: v for k, v in spec.configs.items() if v is not None}
    entries = []
    for key in sorted(overrides.keys() | _all_topic_keys()):
        view = describe_topic_config(key, overrides, broker.config, broker.image.broker_configs, broker.node_id)
        entries.append(ctx.build.CreatableTopicConfigs(
            name=key, value=view.value, read_only=False, config_source=CONFIG_SOURCE_IDS[view.source], is_sensitive=False))
    return tuple(entries)


def _all_topic_keys():
    from lodestream.broker.config import TOPIC_CONFIGS

    return set(TOPIC_CONFIGS)


async def handle(ctx: RequestContext, request: CreateTopicsRequest) -> CreateTopicsResponse:
    broker = ctx.broker
    build = ctx.build
    results = []
    names = [topic.name for topic in request.topics]
    duplicated = {name for name in names if names.count(name) > 1}
    # As Kafka: CREATE on the cluster covers every topic, else CREATE on each topic's name.
    creatable = set(names) if ctx.authorize(Operation.CREATE, ResourceType.CLUSTER) else ctx.authorized(
        Operation.CREATE, ResourceType.TOPIC, names)
    for topic in request.topics:
        spec = _spec(topic)
        if topic.name in duplicated:  # Kafka creates none of the entries with a repeated name
            results.append(build.CreatableTopicResult(
                name=topic.name, topic_id=None, error_code=ErrorCode.invalid_request,
                error_message=f"Create topics request from client `{ctx.client_id}` contains multiple entries for the topic `{topic.name}`.",
                topic_config_error_code=0, num_partitions=-1, replication_factor=-1, configs=None))
            continue
        if topic.name not in creatable:
            results.append(build.CreatableTopicResult(
                name=topic.name, topic_id=None, error_code=DENIED[ResourceType.TOPIC], error_message=None,
                topic_config_error_code=0, num_partitions=-1, replication_factor=-1, configs=None))
            continue
        try:
            created = await broker.create_topic(spec, validate_only=bool(request.validate_only))
        except KafkaError as exc:
            results.append(build.CreatableTopicResult(
                name=topic.name, topic_id=None, error_code=exc.code, error_message=exc.message,
                topic_config_error_code=0, num_partitions=-1, replication_factor=-1, configs=None))
            continue
        if created is not None:
            partitions = len(created.partitions)
            topic_id = created.topic_id
        else:  # validate_only
            partitions = len(spec.assignments) or (spec.num_partitions if spec.num_partitions != -1 else int(broker.broker_config_value("num.partitions")))
            topic_id = None
        # The new topic's configs only for those who may describe them (else topic_config_error_code says why).
        may_describe = ctx.authorize(Operation.DESCRIBE_CONFIGS, ResourceType.TOPIC, topic.name)
        results.append(build.CreatableTopicResult(
            name=topic.name, topic_id=topic_id, error_code=ErrorCode.none, error_message=None,
            topic_config_error_code=ErrorCode.none if may_describe else DENIED[ResourceType.TOPIC],
            num_partitions=partitions, replication_factor=1,
            configs=_result_configs(ctx, spec) if may_describe else None))
    return build.CreateTopicsResponse(throttle_time=datetime.timedelta(0), topics=tuple(results))
