"""Metadata (key 3): brokers, topics, partitions; auto-creates topics when allowed."""

from __future__ import annotations

import datetime

from lodestream.protocol.errors import ErrorCode, KafkaError

from lodestream.broker.broker import validate_topic_name
from lodestream.broker.internal_topics import INTERNAL_TOPICS

API_KEY = 3
VERSIONS = range(0, 14)

_NO_OPS = -2147483648  # "authorized operations not requested"


def brokers(ctx) -> tuple:
    build = ctx.build
    listener = ctx.broker.bound_listeners[0]
    return (build.MetadataResponseBroker(node_id=ctx.broker.node_id, host=listener.advertised_host,
                                         port=listener.advertised_port, rack=None),)


def topic_response(ctx, topic, error: ErrorCode = ErrorCode.none):
    build = ctx.build
    partitions = tuple(
        build.MetadataResponsePartition(
            error_code=ErrorCode.none,
            partition_index=p.partition,
            leader_id=p.leader,
            leader_epoch=p.leader_epoch,
            replica_nodes=p.replicas,
            isr_nodes=p.replicas,
            offline_replicas=(),
        )
        for p in sorted(topic.partitions.values(), key=lambda p: p.partition)
    )
    return build.MetadataResponseTopic(
        error_code=error, name=topic.name, topic_id=topic.topic_id, is_internal=topic.name in INTERNAL_TOPICS,
        partitions=partitions, topic_authorized_operations=_NO_OPS,
    )


def error_topic(ctx, name, topic_id, error: ErrorCode):
    return ctx.build.MetadataResponseTopic(
        error_code=error, name=name, topic_id=topic_id, is_internal=False, partitions=(),
        topic_authorized_operations=_NO_OPS,
    )


async def handle(ctx, request):
    broker = ctx.broker
    build = ctx.build
    image = broker.image
    # v0: an empty list means all topics; v1+: null means all, empty means none.
    all_topics = request.topics is None or (ctx.api_version == 0 and not request.topics)
    if all_topics:
        topics = [topic_response(ctx, t) for t in sorted(image.topics_by_name.values(), key=lambda t: t.name)]
    else:
        # v0-v3 have no flag; they auto-create when the broker allows it.
        allow_create = getattr(request, "allow_auto_topic_creation", True) and bool(
            broker.broker_config_value("auto.create.topics.enable")
        )
        topics = []
        for requested in request.topics:
            name = requested.name
            topic_id = getattr(requested, "topic_id", None)
            if name is None and topic_id is not None:
                topic = image.topics_by_id.get(topic_id)
                if topic is None:
                    topics.append(error_topic(ctx, None, topic_id, ErrorCode.unknown_topic_id))
                else:
                    topics.append(topic_response(ctx, topic))
                continue
            topic = broker.image.topic(name)
            if topic is None:
                try:
                    validate_topic_name(name)
                except KafkaError as exc:
                    topics.append(error_topic(ctx, name, None, exc.code))
                    continue
            if topic is None and allow_create:
                try:
                    topic = await broker.auto_create_topic(name)
                except KafkaError as exc:
                    topics.append(error_topic(ctx, name, None, exc.code))
                    continue
            if topic is None:
                topics.append(error_topic(ctx, name, None, ErrorCode.unknown_topic_or_partition))
            else:
                topics.append(topic_response(ctx, topic))
    return build.MetadataResponse(
        throttle_time=datetime.timedelta(0),
        brokers=brokers(ctx),
        cluster_id=broker.cluster_id,
        controller_id=broker.node_id,
        topics=tuple(topics),
        cluster_authorized_operations=_NO_OPS,
        error_code=ErrorCode.none,
    )
