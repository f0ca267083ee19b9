"""DescribeTransactions (key 65): state, producer, timeout, start time and partitions of
transactional ids."""

from __future__ import annotations

import datetime

from kio.schema.describe_transactions.v0.request import DescribeTransactionsRequest
from kio.schema.describe_transactions.v0.response import DescribeTransactionsResponse
from lodestream.protocol.errors import ErrorCode
from lodestream.broker.authorizer import DENIED, Operation, ResourceType
from lodestream.broker.request_context import RequestContext

API_KEY = 65
VERSIONS = range(0, 1)

_EPOCH = datetime.datetime.fromtimestamp(0, datetime.timezone.utc)
_NO_START = _EPOCH - datetime.timedelta(milliseconds=1)  # -1 on the wire: no transaction (Kafka's default)


def _error(build, transactional_id: str, error: ErrorCode):
    return build.TransactionState(
        error_code=error, transactional_id=transactional_id, transaction_state="",
        transaction_timeout=datetime.timedelta(0), transaction_start_time=_NO_START, producer_id=-1,
        producer_epoch=-1, topics=())


def _describe(ctx: RequestContext, coordinator, transactional_id: str):
    build = ctx.build
    md = coordinator.describe(transactional_id)
    if md is None:
        return _error(build, transactional_id, ErrorCode.transactional_id_not_found)
    by_topic: dict[str, list[int]] = {}
    visible = ctx.authorized(Operation.DESCRIBE, ResourceType.TOPIC, (topic for topic, _ in md.partitions))
    for topic, partition in sorted(md.partitions):
        if topic in visible:  # as Kafka: topics the principal may not describe are left out
            by_topic.setdefault(topic, []).append(partition)
    start = _EPOCH + datetime.timedelta(milliseconds=md.txn_start_ms)
    return build.TransactionState(
        error_code=ErrorCode.none, transactional_id=transactional_id, transaction_state=md.state.value,
        transaction_timeout=datetime.timedelta(milliseconds=md.timeout_ms), transaction_start_time=start,
        producer_id=md.producer_id, producer_epoch=md.producer_epoch,
        topics=tuple(build.TopicData(topic=t, partitions=tuple(ps)) for t, ps in by_topic.items()))


async def handle(ctx: RequestContext, request: DescribeTransactionsRequest) -> DescribeTransactionsResponse:
    build = ctx.build
    coordinator = ctx.broker.transactions
    states = []
    for transactional_id in request.transactional_ids:
        if not ctx.authorize(Operation.DESCRIBE, ResourceType.TRANSACTIONAL_ID, transactional_id):
            states.append(_error(build, transactional_id, DENIED[ResourceType.TRANSACTIONAL_ID]))
        elif not coordinator.loaded:
            states.append(_error(build, transactional_id, ErrorCode.coordinator_load_in_progress))
        else:
            states.append(_describe(ctx, coordinator, transactional_id))
    return build.DescribeTransactionsResponse(throttle_time=datetime.timedelta(0), transaction_states=tuple(states))
