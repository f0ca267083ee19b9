"""OffsetFetch (key 9): committed offsets of one group (v1-v7) or several (v8+);
a null topic list means every partition the group has committed."""

from __future__ import annotations

import datetime

from kio.schema.offset_fetch.v9.request import OffsetFetchRequest
from kio.schema.offset_fetch.v9.response import OffsetFetchResponse
from lodestream.protocol.errors import ErrorCode, KafkaError
from lodestream.broker.authorizer import DENIED, Operation, ResourceType
from lodestream.broker.request_context import RequestContext

API_KEY = 9
VERSIONS = range(1, 10)  # Kafka 4.1 advertises 1-9


def _fetch(ctx: RequestContext, group_id: str, topics, member_id, member_epoch, require_stable: bool):
    """(group error, [(topic, [(partition, offset, epoch, metadata, error)])]).

    As Kafka: the group needs DESCRIBE; offsets of topics without DESCRIBE are left out of an
    all-topics fetch and answered TOPIC_AUTHORIZATION_FAILED when named."""
    if not ctx.authorize(Operation.DESCRIBE, ResourceType.GROUP, group_id):
        return DENIED[ResourceType.GROUP], []
    coordinator = ctx.broker.groups
    error = coordinator.coordination_error(group_id)
    if error != ErrorCode.none:  # another broker coordinates it: "no committed offsets" would be a lie
        return error, []
    group = coordinator.groups.get(group_id)
    if group is not None:
        error = group.validate_offset_fetch(member_id, member_epoch)
        if error != ErrorCode.none:
            return error, []
    committed = coordinator.committed(group_id)
    unstable = coordinator.pending_transactional_offsets(group_id) if require_stable else set()
    result = []
    if topics is None:
        by_topic: dict[str, list] = {}
        visible = ctx.authorized(Operation.DESCRIBE, ResourceType.TOPIC, (topic for topic, _ in committed))
        for (topic, partition), value in sorted(committed.items()):
            if topic in visible:
                by_topic.setdefault(topic, []).append((partition, value))
        for topic, entries in by_topic.items():
            result.append((topic, [(p, -1, -1, "", ErrorCode.unstable_offset_commit) if (topic, p) in unstable
                                   else (p, v.offset, v.leader_epoch, v.metadata if v.metadata is not None else "",
                                         ErrorCode.none) for p, v in entries]))
        return ErrorCode.none, result
    visible = ctx.authorized(Operation.DESCRIBE, ResourceType.TOPIC, (topic.name for topic in topics))
    for topic in topics:
        partitions = []
        for index in topic.partition_indexes:
            index = int(index)
            if topic.name not in visible:
                partitions.append((index, -1, -1, "", DENIED[ResourceType.TOPIC]))
                continue
            if (topic.name, index) in unstable:
                partitions.append((index, -1, -1, "", ErrorCode.unstable_offset_commit))
                continue
            value = committed.get((topic.name, index))
            if value is None:
                partitions.append((index, -1, -1, "", ErrorCode.none))
            else:
                partitions.append((index, value.offset, value.leader_epoch,
                                   value.metadata if value.metadata is not None else "", ErrorCode.none))
        result.append((topic.name, partitions))
    return ErrorCode.none, result


def _topics(ctx, entries, topic_class: str, partition_class: str):
    build = ctx.build
    return tuple(
        getattr(build, topic_class)(name=name, partitions=tuple(
            getattr(build, partition_class)(partition_index=p, committed_offset=o, committed_leader_epoch=e,
                                            metadata=m, error_code=err)
            for p, o, e, m, err in partitions))
        for name, partitions in entries
    )


async def handle(ctx: RequestContext, request: OffsetFetchRequest) -> OffsetFetchResponse:
    build = ctx.build
    load_error = ErrorCode.none
    try:
        await ctx.broker.groups.ensure_loaded()
    except KafkaError as exc:
        load_error = exc.code
    require_stable = bool(getattr(request, "require_stable", False))
    if ctx.api_version >= 8:
        groups = []
        for group in request.groups:
            if load_error != ErrorCode.none:
                error, entries = load_error, []
            else:
                error, entries = _fetch(ctx, group.group_id, group.topics, getattr(group, "member_id", None),
                                        getattr(group, "member_epoch", None), require_stable)
            groups.append(build.OffsetFetchResponseGroup(
                group_id=group.group_id, error_code=error,
                topics=_topics(ctx, entries, "OffsetFetchResponseTopics", "OffsetFetchResponsePartitions")))
        return build.OffsetFetchResponse(throttle_time=datetime.timedelta(0), groups=tuple(groups))
    if load_error != ErrorCode.none:
        error, entries = load_error, []
    else:
        error, entries = _fetch(ctx, request.group_id, request.topics, None, None, require_stable)
    if error != ErrorCode.none and ctx.api_version < 2:
        # v1 has no top-level error: report it on every requested partition.
        entries = [(t.name, [(int(i), -1, -1, "", error) for i in t.partition_indexes]) for t in request.topics or ()]
    return build.OffsetFetchResponse(
        throttle_time=datetime.timedelta(0), error_code=error,
        topics=_topics(ctx, entries, "OffsetFetchResponseTopic", "OffsetFetchResponsePartition"))
