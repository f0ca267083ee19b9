"""DescribeLogDirs (key 35): the one data directory and the size of each local partition."""

from __future__ import annotations

import datetime
import shutil

import trio

from kio.schema.describe_log_dirs.v4.request import DescribeLogDirsRequest
from kio.schema.describe_log_dirs.v4.response import DescribeLogDirsResponse
from lodestream.protocol.errors import ErrorCode
from lodestream.broker.authorizer import DENIED, Operation, ResourceType
from lodestream.broker.request_context import RequestContext

API_KEY = 35
VERSIONS = range(1, 5)


def _wanted(image, request) -> list[tuple[object, list[int] | None]]:
    """(topic image, partition indexes or None for all) for each requested topic that exists."""
    if request.topics is None:
        return [(t, None) for t in sorted(image.topics_by_name.values(), key=lambda t: t.name)]
    wanted = []
    for requested in request.topics:
        topic = image.topic(requested.topic)
        if topic is not None:
            wanted.append((topic, [int(p) for p in requested.partitions]))
    return wanted


async def handle(ctx: RequestContext, request: DescribeLogDirsRequest) -> DescribeLogDirsResponse:
    broker = ctx.broker
    build = ctx.build
    log_dir = broker.data_dir.resolve() / "log"
    if not ctx.authorize(Operation.DESCRIBE, ResourceType.CLUSTER):  # as Kafka: the whole answer is refused
        return build.DescribeLogDirsResponse(
            throttle_time=datetime.timedelta(0), error_code=DENIED[ResourceType.CLUSTER], results=())
    topics = []
    for topic, indexes in _wanted(broker.image, request):
        partitions = []
        for index in (sorted(topic.partitions) if indexes is None else indexes):
            partition = broker.replicas.get(topic.topic_id, index)
            if partition is None:  # not hosted here: Kafka leaves it out
                continue
            partitions.append(build.DescribeLogDirsPartition(
                partition_index=index, partition_size=partition.size_bytes, offset_lag=0, is_future_key=False))
        if partitions:
            topics.append(build.DescribeLogDirsTopic(name=topic.name, partitions=tuple(partitions)))
    total_bytes = usable_bytes = -1
    if ctx.api_version >= 4:
        usage = await trio.to_thread.run_sync(shutil.disk_usage, log_dir)
        total_bytes, usable_bytes = usage.total, usage.free
    result = build.DescribeLogDirsResult(
        error_code=ErrorCode.none, log_dir=str(log_dir), topics=tuple(topics),
        total_bytes=total_bytes, usable_bytes=usable_bytes)
    return build.DescribeLogDirsResponse(
        throttle_time=datetime.timedelta(0), error_code=ErrorCode.none, results=(result,))
