"""ListTransactions (key 66): transactional ids with state and producer-id filters, v1 a minimum
duration (KIP-994), v2 a transactional-id regular expression (KIP-1152)."""

from __future__ import annotations

import datetime
import re

from lodestream.protocol.errors import ErrorCode

API_KEY = 66
VERSIONS = range(0, 3)


async def handle(ctx, request):
    build = ctx.build
    coordinator = ctx.broker.transactions
    if coordinator.loading or not coordinator.loaded:
        return build.ListTransactionsResponse(throttle_time=datetime.timedelta(0),
                                              error_code=ErrorCode.coordinator_load_in_progress,
                                              unknown_state_filters=(), transaction_states=())
    pattern = getattr(request, "transactional_id_pattern", None)
    if pattern:
        try:
            re.compile(pattern)
        except re.error:
            return build.ListTransactionsResponse(throttle_time=datetime.timedelta(0),
                                                  error_code=ErrorCode.invalid_regular_expression,
                                                  unknown_state_filters=(), transaction_states=())
    listed, unknown = coordinator.list_transactions(
        request.state_filters, [int(p) for p in request.producer_id_filters],
        int(getattr(request, "duration_filter", -1)), pattern)
    return build.ListTransactionsResponse(
        throttle_time=datetime.timedelta(0), error_code=ErrorCode.none, unknown_state_filters=tuple(unknown),
        transaction_states=tuple(build.TransactionState(transactional_id=md.transactional_id,
                                                        producer_id=md.producer_id,
                                                        transaction_state=md.state.value) for md in listed))
