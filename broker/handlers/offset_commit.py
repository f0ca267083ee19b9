"""OffsetCommit (key 8): committed offsets, checked against the group's generation
(classic) or member epoch (consumer groups), persisted in __consumer_offsets."""

from __future__ import annotations

import datetime

from kio.schema.offset_commit.v9.request import OffsetCommitRequest
from kio.schema.offset_commit.v9.response import OffsetCommitResponse
from lodestream.protocol.errors import ErrorCode, KafkaError
from lodestream.broker.authorizer import DENIED, Operation, ResourceType
from lodestream.broker.request_context import RequestContext

API_KEY = 8
VERSIONS = range(2, 10)  # Kafka 4.1 advertises 2-9


def _group_error(ctx, coordinator, request) -> ErrorCode:
    group_id = request.group_id
    generation = int(request.generation_id_or_member_epoch)
    member_id = request.member_id or ""
    instance_id = getattr(request, "group_instance_id", None)
    group = coordinator.groups.get(group_id)
    if group is None:
        if generation < 0:
            return ErrorCode.none  # a "simple" group: manual assignment or the admin client
        # v9+ says so; older clients understand ILLEGAL_GENERATION.
        return ErrorCode.group_id_not_found if ctx.api_version >= 9 else ErrorCode.illegal_generation
    return group.validate_offset_commit(member_id, generation, instance_id, False)


def check_partitions(ctx: RequestContext, topics, error: ErrorCode):
    """Per-partition checks (also TxnOffsetCommit's): ({(topic, partition): error}, {(topic, partition):
    (offset, leader epoch, metadata)} to commit). A request-level error applies to every partition;
    committing an offset needs READ on its topic, as in Kafka."""
    broker = ctx.broker
    max_metadata = int(broker.broker_config_value("offset.metadata.max.bytes"))
    readable = ctx.authorized(Operation.READ, ResourceType.TOPIC, (topic.name for topic in topics))
    results: dict[tuple[str, int], ErrorCode] = {}
    to_commit = {}
    for topic in topics:
        image_topic = broker.image.topic(topic.name)
        for p in topic.partitions:
            key = (topic.name, int(p.partition_index))
            if error != ErrorCode.none:
                results[key] = error
            elif topic.name not in readable:
                results[key] = DENIED[ResourceType.TOPIC]
            elif image_topic is None or int(p.partition_index) not in image_topic.partitions:
                results[key] = ErrorCode.unknown_topic_or_partition
            elif p.committed_metadata is not None and len(p.committed_metadata.encode()) > max_metadata:
                results[key] = ErrorCode.offset_metadata_too_large
            else:
                results[key] = ErrorCode.none
                to_commit[key] = (int(p.committed_offset), int(getattr(p, "committed_leader_epoch", -1)),
                                  p.committed_metadata if p.committed_metadata is not None else "")
    return results, to_commit


async def handle(ctx: RequestContext, request: OffsetCommitRequest) -> OffsetCommitResponse:
    build = ctx.build
    broker = ctx.broker
    coordinator = broker.groups
    error = ErrorCode.none
    if not request.group_id:
        error = ErrorCode.invalid_group_id
    elif not ctx.authorize(Operation.READ, ResourceType.GROUP, request.group_id):
        error = DENIED[ResourceType.GROUP]
    else:
        ctx.throttle(broker.quotas.record_commit(request.group_id))  # consumer-group commit_request_rate
        try:
            await coordinator.ensure_loaded(request.group_id)
        except KafkaError as exc:
            error = exc.code
    if error == ErrorCode.none:
        error = _group_error(ctx, coordinator, request)
    results, to_commit = check_partitions(ctx, request.topics, error)
    if to_commit:
        try:
            await coordinator.commit_offsets(request.group_id, to_commit)
        except KafkaError as exc:
            for key in to_commit:
                results[key] = exc.code
    topics = []
    for topic in request.topics:
        partitions = tuple(
            build.OffsetCommitResponsePartition(partition_index=p.partition_index,
                                                error_code=results[(topic.name, int(p.partition_index))])
            for p in topic.partitions
        )
        topics.append(build.OffsetCommitResponseTopic(name=topic.name, partitions=partitions))
    return build.OffsetCommitResponse(throttle_time=datetime.timedelta(0), topics=tuple(topics))
