"""ListTransactions (key 66): transactional ids with state and producer-id filters, v1 a minimum
duration (KIP-994), v2 a transactional-id regular expression (KIP-1152)."""

from __future__ import annotations

import datetime
import re

from kio.schema.list_transactions.v2.request import ListTransactionsRequest
from kio.schema.list_transactions.v2.response import ListTransactionsResponse
from lodestream.protocol.errors import ErrorCode
from lodestream.broker.authorizer import Operation, ResourceType
from lodestream.broker.request_context import RequestContext

API_KEY = 66
VERSIONS = range(0, 3)


async def handle(ctx: RequestContext, request: ListTransactionsRequest) -> ListTransactionsResponse:
    build = ctx.build
    coordinator = ctx.broker.transactions
    if not coordinator.loaded:
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
    # As Kafka: only the transactional ids this principal may describe.
    visible = ctx.authorized(Operation.DESCRIBE, ResourceType.TRANSACTIONAL_ID, (md.transactional_id for md in listed))
    listed = [md for md in listed if md.transactional_id in visible]
    return build.ListTransactionsResponse(
        throttle_time=datetime.timedelta(0), error_code=ErrorCode.none, unknown_state_filters=tuple(unknown),
        transaction_states=tuple(build.TransactionState(transactional_id=md.transactional_id,
                                                        producer_id=md.producer_id,
                                                        transaction_state=md.state.value) for md in listed))
