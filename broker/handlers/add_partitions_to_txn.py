"""AddPartitionsToTxn (key 24): partitions join the producer's transaction (persisted before the
answer). v4+ batches several transactions; `verify_only` (KIP-890 part 1) checks membership only."""

from __future__ import annotations

import datetime

from lodestream.protocol.errors import ErrorCode

from lodestream.broker.transactions.coordinator import compatible_error

API_KEY = 24
VERSIONS = range(0, 6)


def _unknown_partitions(broker, topics) -> set[tuple[str, int]]:
    unknown = set()
    for topic in topics:
        image_topic = broker.image.topic(topic.name)
        for index in topic.partitions:
            if image_topic is None or int(index) not in image_topic.partitions:
                unknown.add((topic.name, int(index)))
    return unknown


async def _transaction(ctx, transactional_id, producer_id, producer_epoch, topics, verify_only):
    """{(topic, partition): error} for one transaction."""
    coordinator = ctx.broker.transactions
    requested = [(t.name, int(p)) for t in topics for p in t.partitions]
    if verify_only:
        result = coordinator.verify_partitions(transactional_id, int(producer_id), int(producer_epoch), requested)
        return result if isinstance(result, dict) else dict.fromkeys(requested, result)
    unknown = _unknown_partitions(ctx.broker, topics)
    if unknown:  # as Kafka: nothing is added, the known partitions are OPERATION_NOT_ATTEMPTED
        return {tp: ErrorCode.unknown_topic_or_partition if tp in unknown else ErrorCode.operation_not_attempted
                for tp in requested}
    error = await coordinator.add_partitions(transactional_id, int(producer_id), int(producer_epoch), requested)
    return dict.fromkeys(requested, compatible_error(error, ctx.api_version, 2))


def _topic_results(build, results):
    by_topic: dict[str, list] = {}
    for (topic, partition), error in results.items():
        by_topic.setdefault(topic, []).append(
            build.AddPartitionsToTxnPartitionResult(partition_index=partition, partition_error_code=error))
    return tuple(build.AddPartitionsToTxnTopicResult(name=name, results_by_partition=tuple(partitions))
                 for name, partitions in by_topic.items())


async def handle(ctx, request):
    build = ctx.build
    if ctx.api_version < 4:
        results = await _transaction(ctx, request.v3_and_below_transactional_id, request.v3_and_below_producer_id,
                                     request.v3_and_below_producer_epoch, request.v3_and_below_topics, False)
        return build.AddPartitionsToTxnResponse(throttle_time=datetime.timedelta(0),
                                                results_by_topic_v3_and_below=_topic_results(build, results))
    transactions = []
    for txn in request.transactions:
        results = await _transaction(ctx, txn.transactional_id, txn.producer_id, txn.producer_epoch, txn.topics,
                                     bool(txn.verify_only))
        transactions.append(build.AddPartitionsToTxnResult(transactional_id=txn.transactional_id,
                                                           topic_results=_topic_results(build, results)))
    return build.AddPartitionsToTxnResponse(throttle_time=datetime.timedelta(0), error_code=ErrorCode.none,
                                            results_by_transaction=tuple(transactions))
