"""AddOffsetsToTxn (key 25): the group's __consumer_offsets partition joins the transaction, so
that TxnOffsetCommit can write there and the markers reach it."""

from __future__ import annotations

import datetime

from kio.schema.add_offsets_to_txn.v4.request import AddOffsetsToTxnRequest
from kio.schema.add_offsets_to_txn.v4.response import AddOffsetsToTxnResponse
from lodestream.protocol.errors import ErrorCode, KafkaError

from lodestream.broker.internal_topics import OFFSETS_TOPIC
from lodestream.broker.transactions.coordinator import compatible_error
from lodestream.broker.authorizer import DENIED, Operation, ResourceType
from lodestream.broker.request_context import RequestContext

API_KEY = 25
VERSIONS = range(0, 5)


async def handle(ctx: RequestContext, request: AddOffsetsToTxnRequest) -> AddOffsetsToTxnResponse:
    broker = ctx.broker
    error = ErrorCode.none
    if not request.group_id:
        error = ErrorCode.invalid_group_id
    elif not ctx.authorize(Operation.WRITE, ResourceType.TRANSACTIONAL_ID, request.transactional_id):
        error = DENIED[ResourceType.TRANSACTIONAL_ID]
    elif not ctx.authorize(Operation.READ, ResourceType.GROUP, request.group_id):
        error = DENIED[ResourceType.GROUP]
    else:
        try:
            await broker.groups.ensure_loaded()  # creates __consumer_offsets on first use
        except KafkaError as exc:
            error = exc.code
    if error == ErrorCode.none:
        partition = (OFFSETS_TOPIC, broker.groups.partition_for(request.group_id))
        error = await broker.transactions.add_partitions(request.transactional_id, int(request.producer_id),
                                                         int(request.producer_epoch), [partition])
    return ctx.build.AddOffsetsToTxnResponse(throttle_time=datetime.timedelta(0),
                                             error_code=compatible_error(error, ctx.api_version, 2))
