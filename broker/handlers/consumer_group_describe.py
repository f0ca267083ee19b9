"""ConsumerGroupDescribe (key 69): KIP-848 consumer groups with members, assignments and epochs."""

from __future__ import annotations

import datetime

from kio.schema.consumer_group_describe.v1.request import ConsumerGroupDescribeRequest
from kio.schema.consumer_group_describe.v1.response import ConsumerGroupDescribeResponse
from lodestream.protocol.errors import ErrorCode, KafkaError

from lodestream.broker.groups import consumer
from lodestream.broker.authorizer import DENIED, Operation, ResourceType
from lodestream.broker.request_context import RequestContext

API_KEY = 69
VERSIONS = range(0, 2)

_NOT_REQUESTED = -2147483648
_CONSUMER_MEMBER = 1  # member_type: +1 = consumer protocol member


async def handle(ctx: RequestContext, request: ConsumerGroupDescribeRequest) -> ConsumerGroupDescribeResponse:
    build = ctx.build
    coordinator = getattr(ctx.broker, "groups", None)
    load_error = ErrorCode.none
    if coordinator is None:
        load_error = ErrorCode.coordinator_not_available
    else:
        try:
            await coordinator.ensure_loaded()
        except KafkaError as exc:
            load_error = exc.code
    image = ctx.broker.image

    def assignment(items):
        return build.Assignment(topic_partitions=tuple(
            build.TopicPartitions(topic_id=topic_id, topic_name=name, partitions=tuple(partitions))
            for topic_id, name, partitions in items
        ))

    groups = []
    for group_id in request.group_ids:
        if not ctx.authorize(Operation.DESCRIBE, ResourceType.GROUP, group_id):
            error, message, described = DENIED[ResourceType.GROUP], None, None
        elif load_error != ErrorCode.none:
            error, message, described = load_error, None, None
        elif (error := coordinator.coordination_error(group_id)) != ErrorCode.none:
            message, described = None, None
        else:
            error, message, described = consumer.describe(coordinator, image, group_id)
        if described is None:
            groups.append(build.DescribedGroup(
                error_code=error, error_message=message, group_id=group_id, group_state="", group_epoch=0,
                assignment_epoch=0, assignor_name="", members=(), authorized_operations=_NOT_REQUESTED,
            ))
            continue
        members = tuple(
            build.Member(
                member_id=m["member_id"],
                instance_id=m["instance_id"],
                rack_id=m["rack_id"],
                member_epoch=m["member_epoch"],
                client_id=m["client_id"],
                client_host=m["client_host"],
                subscribed_topic_names=tuple(m["subscribed_topic_names"]),
                subscribed_topic_regex=m["subscribed_topic_regex"],
                assignment=assignment(m["assignment"]),
                target_assignment=assignment(m["target_assignment"]),
                member_type=_CONSUMER_MEMBER,
            )
            for m in described["members"]
        )
        groups.append(build.DescribedGroup(
            error_code=ErrorCode.none,
            error_message=None,
            group_id=group_id,
            group_state=described["group_state"],
            group_epoch=described["group_epoch"],
            assignment_epoch=described["assignment_epoch"],
            assignor_name=described["assignor_name"],
            members=members,
            authorized_operations=(ctx.authorized_operations(ResourceType.GROUP, group_id)
                                   if request.include_authorized_operations else _NOT_REQUESTED),
        ))
    return build.ConsumerGroupDescribeResponse(throttle_time=datetime.timedelta(0), groups=tuple(groups))
