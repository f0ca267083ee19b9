"""OffsetDelete (key 47): removes committed offsets of partitions the group no
longer consumes (GROUP_SUBSCRIBED_TO_TOPIC while it still does)."""

from __future__ import annotations

import datetime

from kio.schema.offset_delete.v0.request import OffsetDeleteRequest
from kio.schema.offset_delete.v0.response import OffsetDeleteResponse
from lodestream.protocol.errors import ErrorCode, KafkaError

from lodestream.broker.groups.coordinator import is_subscribed_to_topic, validate_offset_delete
from lodestream.broker.authorizer import DENIED, Operation, ResourceType
from lodestream.broker.request_context import RequestContext

API_KEY = 47
VERSIONS = range(0, 1)


async def handle(ctx: RequestContext, request: OffsetDeleteRequest) -> OffsetDeleteResponse:
    build = ctx.build
    broker = ctx.broker
    coordinator = broker.groups

    def response(error: ErrorCode, topics=()):
        return build.OffsetDeleteResponse(error_code=error, throttle_time=datetime.timedelta(0), topics=tuple(topics))

    if not request.group_id:
        return response(ErrorCode.invalid_group_id)
    if not ctx.authorize(Operation.DELETE, ResourceType.GROUP, request.group_id):
        return response(DENIED[ResourceType.GROUP])
    try:
        await coordinator.ensure_loaded(request.group_id)
    except KafkaError as exc:
        return response(exc.code)
    group = coordinator.groups.get(request.group_id)
    if group is None:
        return response(ErrorCode.group_id_not_found)
    error = validate_offset_delete(group)
    if error != ErrorCode.none:
        return response(error)
    results: dict[tuple[str, int], ErrorCode] = {}
    doomed = []
    readable = ctx.authorized(Operation.READ, ResourceType.TOPIC, (topic.name for topic in request.topics))
    for topic in request.topics:
        subscribed = not group.is_empty() and is_subscribed_to_topic(group, topic.name)
        image_topic = broker.image.topic(topic.name)
        for p in topic.partitions:
            key = (topic.name, int(p.partition_index))
            if topic.name not in readable:
                results[key] = DENIED[ResourceType.TOPIC]
            elif image_topic is None or key[1] not in image_topic.partitions:
                results[key] = ErrorCode.unknown_topic_or_partition
            elif subscribed:
                results[key] = ErrorCode.group_subscribed_to_topic
            else:
                results[key] = ErrorCode.none
                doomed.append(key)
    try:
        await coordinator.delete_offsets(request.group_id, doomed)
    except KafkaError as exc:
        return response(exc.code)
    topics = [
        build.OffsetDeleteResponseTopic(name=topic.name, partitions=tuple(
            build.OffsetDeleteResponsePartition(partition_index=p.partition_index,
                                                error_code=results[(topic.name, int(p.partition_index))])
            for p in topic.partitions))
        for topic in request.topics
    ]
    return response(ErrorCode.none, topics)
