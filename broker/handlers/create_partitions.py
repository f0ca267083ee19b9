"""CreatePartitions (key 37): grow a topic's partition count, optionally with explicit assignments."""

from __future__ import annotations

import datetime

from kio.schema.create_partitions.v3.request import CreatePartitionsRequest
from kio.schema.create_partitions.v3.response import CreatePartitionsResponse
from lodestream.protocol.errors import ErrorCode, KafkaError
from lodestream.broker.authorizer import DENIED, Operation, ResourceType
from lodestream.broker.request_context import RequestContext

API_KEY = 37
VERSIONS = range(0, 4)
LISTENERS = "both"  # served on the controller listener too: other nodes forward it there
FORWARDED_TO_CONTROLLER = True


async def handle(ctx: RequestContext, request: CreatePartitionsRequest) -> CreatePartitionsResponse:
    broker = ctx.broker
    build = ctx.build
    names = [topic.name for topic in request.topics]
    duplicates = {name for name in names if names.count(name) > 1}
    results = []
    reported: set[str] = set()
    for topic in request.topics:
        name = topic.name
        if name in duplicates:
            if name not in reported:  # one result per duplicated name, as Kafka answers
                reported.add(name)
                results.append(build.CreatePartitionsTopicResult(
                    name=name, error_code=ErrorCode.invalid_request, error_message="Duplicate topic in request."))
            continue
        if not ctx.authorize(Operation.ALTER, ResourceType.TOPIC, name):
            results.append(build.CreatePartitionsTopicResult(
                name=name, error_code=DENIED[ResourceType.TOPIC], error_message=None))
            continue
        assignments = None
        if topic.assignments is not None:
            assignments = [[int(b) for b in a.broker_ids] for a in topic.assignments]
        try:
            await broker.create_partitions(name, int(topic.count), assignments, bool(request.validate_only))
        except KafkaError as exc:
            results.append(build.CreatePartitionsTopicResult(name=name, error_code=exc.code, error_message=exc.message))
            continue
        results.append(build.CreatePartitionsTopicResult(name=name, error_code=ErrorCode.none, error_message=None))
    return build.CreatePartitionsResponse(throttle_time=datetime.timedelta(0), results=tuple(results))
