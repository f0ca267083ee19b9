"""ConsumerGroupHeartbeat (key 68): the KIP-848 consumer group protocol (join, heartbeat, leave)."""

from __future__ import annotations

import datetime

from kio.schema.consumer_group_heartbeat.v1.request import ConsumerGroupHeartbeatRequest
from kio.schema.consumer_group_heartbeat.v1.response import ConsumerGroupHeartbeatResponse
from lodestream.protocol.errors import ErrorCode

from lodestream.broker.groups import consumer
from lodestream.broker.authorizer import DENIED, Operation, ResourceType
from lodestream.broker.request_context import RequestContext

API_KEY = 68
VERSIONS = range(0, 2)


def _ms(value) -> int:
    if isinstance(value, datetime.timedelta):
        return round(value.total_seconds() * 1000)
    return int(value)


def _request(ctx, request) -> consumer.Heartbeat:
    owned = None
    if request.topic_partitions is not None:
        owned = {}
        for tp in request.topic_partitions:
            if tp.topic_id is not None:
                owned[tp.topic_id] = owned.get(tp.topic_id, frozenset()) | frozenset(int(p) for p in tp.partitions)
    names = request.subscribed_topic_names
    return consumer.Heartbeat(
        group_id=request.group_id,
        member_id=request.member_id or "",
        member_epoch=int(request.member_epoch),
        instance_id=request.instance_id,
        rack_id=request.rack_id,
        rebalance_timeout_ms=_ms(request.rebalance_timeout),
        subscribed_topic_names=None if names is None else tuple(str(n) for n in names),
        subscribed_topic_regex=getattr(request, "subscribed_topic_regex", None),
        server_assignor=request.server_assignor,
        owned=owned,
        client_id=ctx.client_id or "",
        client_host=ctx.session.described_host,
        api_version=ctx.api_version,
    )


def _denied(ctx: RequestContext, request: ConsumerGroupHeartbeatRequest) -> ErrorCode | None:
    """As Kafka: READ on the group, and DESCRIBE on every topic named in the subscription."""
    if not ctx.authorize(Operation.READ, ResourceType.GROUP, request.group_id):
        return DENIED[ResourceType.GROUP]
    names = request.subscribed_topic_names or ()
    if len(ctx.authorized(Operation.DESCRIBE, ResourceType.TOPIC, names)) < len(set(names)):
        return DENIED[ResourceType.TOPIC]
    return None


async def handle(ctx: RequestContext, request: ConsumerGroupHeartbeatRequest) -> ConsumerGroupHeartbeatResponse:
    build = ctx.build
    coordinator = getattr(ctx.broker, "groups", None)
    denied = _denied(ctx, request)
    if denied is not None:
        return build.ConsumerGroupHeartbeatResponse(
            throttle_time=datetime.timedelta(0), error_code=denied, error_message=None, member_id=None,
            member_epoch=-1, heartbeat_interval=datetime.timedelta(0), assignment=None)
    if request.group_id:  # consumer-group quotas: this client's fetches count against its group
        ctx.broker.quotas.note_group_member(ctx.usage.host, ctx.client_id or "", request.group_id)
    if coordinator is None:
        result = consumer.HeartbeatResult(error=ErrorCode.coordinator_not_available)
    else:
        result = await consumer.heartbeat(coordinator, ctx.broker.image, _request(ctx, request))
    assignment = None
    if result.error == ErrorCode.none and result.assignment is not None:
        assignment = build.Assignment(topic_partitions=tuple(
            build.TopicPartitions(topic_id=topic_id, partitions=tuple(sorted(partitions)))
            for topic_id, partitions in sorted(result.assignment.items(), key=lambda kv: str(kv[0]))
            if partitions
        ))
    return build.ConsumerGroupHeartbeatResponse(
        throttle_time=datetime.timedelta(0),
        error_code=result.error,
        error_message=result.message if result.error != ErrorCode.none else None,
        member_id=result.member_id if result.error == ErrorCode.none else None,
        member_epoch=result.member_epoch,
        heartbeat_interval=datetime.timedelta(milliseconds=result.heartbeat_interval_ms),
        assignment=assignment,
    )
