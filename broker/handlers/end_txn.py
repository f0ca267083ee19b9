"""EndTxn (key 26): commit or abort. Answered once the markers and CompleteCommit/CompleteAbort
are written (at most 5 s after PrepareCommit/PrepareAbort; docs/transactions.md). v5 (KIP-890
part 2) bumps the epoch and returns it."""

from __future__ import annotations

import datetime

from kio.schema.end_txn.v5.request import EndTxnRequest
from kio.schema.end_txn.v5.response import EndTxnResponse
from lodestream.broker.transactions.coordinator import compatible_error
from lodestream.broker.authorizer import DENIED, Operation, ResourceType
from lodestream.broker.request_context import RequestContext

API_KEY = 26
VERSIONS = range(0, 6)


async def handle(ctx: RequestContext, request: EndTxnRequest) -> EndTxnResponse:
    if not ctx.authorize(Operation.WRITE, ResourceType.TRANSACTIONAL_ID, request.transactional_id):
        return ctx.build.EndTxnResponse(throttle_time=datetime.timedelta(0),
                                        error_code=DENIED[ResourceType.TRANSACTIONAL_ID], producer_id=-1,
                                        producer_epoch=-1)
    error, producer_id, producer_epoch = await ctx.broker.transactions.end_transaction(
        request.transactional_id, int(request.producer_id), int(request.producer_epoch), bool(request.committed),
        tv2=ctx.api_version >= 5)
    return ctx.build.EndTxnResponse(throttle_time=datetime.timedelta(0),
                                    error_code=compatible_error(error, ctx.api_version, 2),
                                    producer_id=producer_id, producer_epoch=producer_epoch)
