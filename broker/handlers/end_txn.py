"""EndTxn (key 26): commit or abort. Answered once the markers and CompleteCommit/CompleteAbort
are written (at most 5 s after PrepareCommit/PrepareAbort; docs/transactions.md). v5 (KIP-890
part 2) bumps the epoch and returns it."""

from __future__ import annotations

import datetime

from lodestream.broker.transactions.coordinator import compatible_error

API_KEY = 26
VERSIONS = range(0, 6)


async def handle(ctx, request):
    error, producer_id, producer_epoch = await ctx.broker.transactions.end_transaction(
        request.transactional_id, int(request.producer_id), int(request.producer_epoch), bool(request.committed),
        tv2=ctx.api_version >= 5)
    return ctx.build.EndTxnResponse(throttle_time=datetime.timedelta(0),
                                    error_code=compatible_error(error, ctx.api_version, 2),
                                    producer_id=producer_id, producer_epoch=producer_epoch)
