"""UpdateRemoteSegments (Lodestream's key 10000, protocol/lodestream_apis.py): a partition leader asks the
active controller to commit state changes of its offloaded segments' manifests (docs/tiered-storage.md).
Served on the controller listener; CLUSTER_ACTION on the cluster is required, as for the other requests
brokers make of the controller."""

from __future__ import annotations

import datetime

from lodestream.consensus.records import decode_records
from lodestream.protocol.errors import ErrorCode, KafkaError
from lodestream.protocol.lodestream_apis import UPDATE_REMOTE_SEGMENTS, UpdateRemoteSegmentsRequest, \
    UpdateRemoteSegmentsResponse

from lodestream.broker.authorizer import DENIED, Operation, ResourceType
from lodestream.broker.request_context import RequestContext

API_KEY = UPDATE_REMOTE_SEGMENTS
VERSIONS = range(0, 1)
LISTENERS = "controller"


async def handle(ctx: RequestContext, request: UpdateRemoteSegmentsRequest) -> UpdateRemoteSegmentsResponse:
    def answer(error: ErrorCode, message: str | None = None) -> UpdateRemoteSegmentsResponse:
        return UpdateRemoteSegmentsResponse(throttle_time=datetime.timedelta(0), error_code=error,
                                            error_message=message)

    if not ctx.authorize(Operation.CLUSTER_ACTION, ResourceType.CLUSTER):
        return answer(DENIED[ResourceType.CLUSTER])
    try:
        records = decode_records(request.records)
    except (ValueError, KeyError, TypeError) as exc:
        return answer(ErrorCode.invalid_request, f"unreadable manifests: {exc}")
    try:
        await ctx.broker.controller.update_remote_segments(request.broker_id, request.broker_epoch, records)
    except KafkaError as exc:
        return answer(exc.code, exc.message)
    return answer(ErrorCode.none)
