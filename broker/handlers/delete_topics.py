"""DeleteTopics (key 20): by name (every version) or, v6+, by topic id.

Validation follows Kafka's ControllerApis.deleteTopics: a v6 entry must name
exactly one of name / id, and duplicates are rejected as INVALID_REQUEST.
"""

from __future__ import annotations

import datetime

from kio.schema.delete_topics.v6.request import DeleteTopicsRequest
from kio.schema.delete_topics.v6.response import DeleteTopicsResponse
from lodestream.protocol.errors import ErrorCode, KafkaError
from lodestream.broker.authorizer import DENIED, Operation, ResourceType
from lodestream.broker.request_context import RequestContext

API_KEY = 20
VERSIONS = range(1, 7)
LISTENERS = "both"  # served on the controller listener too: other nodes forward it there
FORWARDED_TO_CONTROLLER = True

# Kafka's default messages (ApiError(Errors.X) carries Errors.X.message()).
_UNKNOWN_TOPIC_ID = "This server does not host this topic ID."
_UNKNOWN_TOPIC = "This server does not host this topic-partition."


def _requested(ctx, request) -> list[tuple[str | None, object]]:
    """(name, topic_id) pairs in request order; v1-v5 only have names."""
    if ctx.api_version >= 6:
        return [(t.name, t.topic_id) for t in request.topics]
    return [(name, None) for name in request.topic_names]


async def handle(ctx: RequestContext, request: DeleteTopicsRequest) -> DeleteTopicsResponse:
    broker = ctx.broker
    build = ctx.build
    entries = _requested(ctx, request)
    results = []

    def result(name, topic_id, error: ErrorCode, message: str | None = None):
        results.append(build.DeletableTopicResult(name=name, topic_id=topic_id, error_code=error, error_message=message))

    names = [name for name, topic_id in entries if name is not None and topic_id is None]
    ids = [topic_id for name, topic_id in entries if name is None and topic_id is not None]
    duplicate_names = {n for n in names if names.count(n) > 1}
    duplicate_ids = {i for i in ids if ids.count(i) > 1}
    seen_duplicates: set = set()

    for name, topic_id in entries:
        if name is None and topic_id is None:
            result(None, None, ErrorCode.invalid_request, "Neither topic name nor id were specified.")
            continue
        if name is not None and topic_id is not None:
            result(name, topic_id, ErrorCode.invalid_request, "You may not specify both topic name and topic id.")
            continue
        if name in duplicate_names or topic_id in duplicate_ids:
            key = name if name is not None else topic_id
            if key not in seen_duplicates:  # one error result per duplicated name/id, as Kafka answers
                seen_duplicates.add(key)
                if name is not None:
                    result(name, None, ErrorCode.invalid_request, "Duplicate topic name.")
                else:
                    result(None, topic_id, ErrorCode.invalid_request, "Duplicate topic id.")
            continue
        image = broker.image
        if topic_id is not None:
            topic = image.topics_by_id.get(topic_id)
            if topic is None:
                result(None, topic_id, ErrorCode.unknown_topic_id, _UNKNOWN_TOPIC_ID)
                continue
        else:
            topic = image.topic(name)
            if topic is None:
                result(name, None, ErrorCode.unknown_topic_or_partition, _UNKNOWN_TOPIC)
                continue
        if not ctx.authorize(Operation.DELETE, ResourceType.TOPIC, topic.name):
            result(name, topic_id, DENIED[ResourceType.TOPIC])
            continue
        try:
            await broker.delete_topic(topic)
        except KafkaError as exc:
            code = exc.code
            if code == ErrorCode.topic_deletion_disabled and ctx.api_version < 3:
                code = ErrorCode.invalid_request  # TOPIC_DELETION_DISABLED exists from v3 on
            result(topic.name, topic.topic_id, code, exc.message)
            continue
        result(topic.name, topic.topic_id, ErrorCode.none)
    return build.DeleteTopicsResponse(throttle_time=datetime.timedelta(0), responses=tuple(results))
