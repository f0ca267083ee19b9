"""ConsumerGroupHeartbeat (key 68): the KIP-848 consumer group protocol (join, heartbeat, leave)."""

from __future__ import annotations

import datetime

from lodestream.protocol.errors import ErrorCode

from lodestream.broker.groups import consumer

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
        client_host=_host(ctx.peer),
        api_version=ctx.api_version,
    )


def _host(peer: str) -> str:
    """Kafka reports the client address as InetAddress.toString(): '/<ip>'."""
    host = peer.rsplit(":", 1)[0] if ":" in peer else peer
    return "/" + host.strip("[]")


async def handle(ctx, request):
    build = ctx.build
    coordinator = getattr(ctx.broker, "groups", None)
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
