"""InitProducerId (key 22): a producer id and epoch for an idempotent or transactional producer.

Without a transactional id Kafka always hands out a new id with epoch 0, also
when the client sends its current id and epoch (KIP-360's bump is for the
transactional path); with one, the transaction coordinator decides (fencing,
epoch bump, docs/transactions.md).
"""

from __future__ import annotations

import datetime

from lodestream.protocol.errors import ErrorCode

from lodestream.broker.transactions.coordinator import compatible_error

API_KEY = 22
VERSIONS = range(0, 6)


async def handle(ctx, request):
    broker = ctx.broker
    build = ctx.build
    transactional_id = request.transactional_id
    current_id = int(getattr(request, "producer_id", -1))  # v3+ (KIP-360)
    current_epoch = int(getattr(request, "producer_epoch", -1))
    if (current_id == -1) != (current_epoch == -1):  # Kafka: both or neither
        error, producer_id, producer_epoch = ErrorCode.invalid_request, -1, -1
    elif transactional_id is None:
        error, producer_id, producer_epoch = ErrorCode.none, await broker.producer_ids.allocate(), 0
    elif broker.transactions is None:
        error, producer_id, producer_epoch = ErrorCode.coordinator_not_available, -1, -1
    else:
        timeout_ms = int(request.transaction_timeout.total_seconds() * 1000)
        error, producer_id, producer_epoch = await broker.transactions.init_producer_id(
            transactional_id, timeout_ms, current_id, current_epoch)
        error = compatible_error(error, ctx.api_version, 4)
    return build.InitProducerIdResponse(throttle_time=datetime.timedelta(0), error_code=error,
                                        producer_id=producer_id, producer_epoch=producer_epoch)
