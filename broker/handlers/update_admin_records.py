"""UpdateAdminRecords (Lodestream's key 10001, protocol/lodestream_apis.py): a broker asks the active controller
to commit namespace or offset snapshot changes made through its REST API (broker/namespaces.py,
broker/offset_snapshots.py). Served on the controller listener; CLUSTER_ACTION on the cluster is required, as
for the other requests brokers make of the controller (the REST API authorized its caller before sending it)."""

from __future__ import annotations

import datetime

from lodestream.consensus.records import decode_records
from lodestream.protocol.errors import ErrorCode, KafkaError
from lodestream.protocol.lodestream_apis import (
    UPDATE_ADMIN_RECORDS,
    UpdateAdminRecordsRequest,
    UpdateAdminRecordsResponse,
)

from lodestream.broker.authorizer import DENIED, Operation, ResourceType
from lodestream.broker.request_context import RequestContext

API_KEY = UPDATE_ADMIN_RECORDS
VERSIONS = range(0, 1)
LISTENERS = "controller"


async def handle(ctx: RequestContext, request: UpdateAdminRecordsRequest) -> UpdateAdminRecordsResponse:
    def answer(error: ErrorCode, message: str | None = None) -> UpdateAdminRecordsResponse:
        return UpdateAdminRecordsResponse(throttle_time=datetime.timedelta(0), error_code=error, error_message=message)

    if not ctx.authorize(Operation.CLUSTER_ACTION, ResourceType.CLUSTER):
        return answer(DENIED[ResourceType.CLUSTER])
    try:
        records = decode_records(request.records)
    except (ValueError, KeyError, TypeError) as exc:
        return answer(ErrorCode.invalid_request, f"unreadable records: {exc}")
    try:
        await ctx.broker.controller.update_admin_records(records)
    except KafkaError as exc:
        return answer(exc.code, exc.message)
    return answer(ErrorCode.none)
