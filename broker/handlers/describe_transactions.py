"""DescribeTransactions (key 65): state, producer, timeout, start time and partitions of
transactional ids."""

from __future__ import annotations

import datetime

from lodestream.protocol.errors import ErrorCode

API_KEY = 65
VERSIONS = range(0, 1)

_EPOCH = datetime.datetime.fromtimestamp(0, datetime.timezone.utc)
_NO_START = _EPOCH - datetime.timedelta(milliseconds=1)  # -1 on the wire: no transaction (Kafka's default)


def _error(build, transactional_id: str, error: ErrorCode):
    return build.TransactionState(
        error_code=error, transactional_id=transactional_id, transaction_state="",
        transaction_timeout=datetime.timedelta(0), transaction_start_time=_NO_START, producer_id=-1,
        producer_epoch=-1, topics=())


def _describe(build, coordinator, transactional_id: str):
    md = coordinator.describe(transactional_id)
    if md is None:
        return _error(build, transactional_id, ErrorCode.transactional_id_not_found)
    by_topic: dict[str, list[int]] = {}
    for topic, partition in sorted(md.partitions):
        by_topic.setdefault(topic, []).append(partition)
    start = _EPOCH + datetime.timedelta(milliseconds=md.txn_start_ms)
    return build.TransactionState(
        error_code=ErrorCode.none, transactional_id=transactional_id, transaction_state=md.state.value,
        transaction_timeout=datetime.timedelta(milliseconds=md.timeout_ms), transaction_start_time=start,
        producer_id=md.producer_id, producer_epoch=md.producer_epoch,
        topics=tuple(build.TopicData(topic=t, partitions=tuple(ps)) for t, ps in by_topic.items()))


async def handle(ctx, request):
    build = ctx.build
    coordinator = ctx.broker.transactions
    states = []
    for transactional_id in request.transactional_ids:
        if coordinator.loading or not coordinator.loaded:
            states.append(_error(build, transactional_id, ErrorCode.coordinator_load_in_progress))
        else:
            states.append(_describe(build, coordinator, transactional_id))
    return build.DescribeTransactionsResponse(throttle_time=datetime.timedelta(0), transaction_states=tuple(states))
