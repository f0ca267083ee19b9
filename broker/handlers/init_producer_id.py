"""InitProducerId (key 22): a producer id and epoch for an idempotent or transactional producer.

Without a transactional id Kafka always hands out a new id with epoch 0, also
when the client sends its current id and epoch (KIP-360's bump is for the
transactional path); with one, the transaction coordinator decides (fencing,
epoch bump, docs/transactions.md).
"""

from __future__ import annotations

import datetime

from kio.schema.init_producer_id.v5.request import InitProducerIdRequest
from kio.schema.init_producer_id.v5.response import InitProducerIdResponse
from lodestream.protocol.errors import ErrorCode

from lodestream.broker.transactions.coordinator import compatible_error
from lodestream.broker.authorizer import DENIED, Operation, ResourceType
from lodestream.broker.request_context import RequestContext

API_KEY = 22
VERSIONS = range(0, 6)


async def handle(ctx: RequestContext, request: InitProducerIdRequest) -> InitProducerIdResponse:
    broker = ctx.broker
    build = ctx.build
    transactional_id = request.transactional_id
    current_id = int(getattr(request, "producer_id", -1))  # v3+ (KIP-360)
    current_epoch = int(getattr(request, "producer_epoch", -1))
    if transactional_id is not None and not ctx.authorize(Operation.WRITE, ResourceType.TRANSACTIONAL_ID,
                                                          transactional_id):
        error, producer_id, producer_epoch = DENIED[ResourceType.TRANSACTIONAL_ID], -1, -1
    elif transactional_id is None and not (ctx.authorize(Operation.IDEMPOTENT_WRITE, ResourceType.CLUSTER)
                                           or ctx.authorize_any(Operation.WRITE, ResourceType.TOPIC)):
        # As Kafka (KIP-679): an idempotent producer needs IDEMPOTENT_WRITE, or WRITE on some topic.
        error, producer_id, producer_epoch = DENIED[ResourceType.CLUSTER], -1, -1
    elif (current_id == -1) != (current_epoch == -1):  # Kafka: both or neither
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
