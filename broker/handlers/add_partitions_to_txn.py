"""AddPartitionsToTxn (key 24): partitions join the producer's transaction (persisted before the
answer). v4+ batches several transactions; `verify_only` (KIP-890 part 1) checks membership only."""

from __future__ import annotations

import datetime

from kio.schema.add_partitions_to_txn.v5.request import AddPartitionsToTxnRequest
from kio.schema.add_partitions_to_txn.v5.response import AddPartitionsToTxnResponse
from lodestream.protocol.errors import ErrorCode

from lodestream.broker.transactions.coordinator import compatible_error
from lodestream.broker.authorizer import DENIED, Operation, ResourceType
from lodestream.broker.request_context import RequestContext

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
    if not ctx.authorize(Operation.WRITE, ResourceType.TRANSACTIONAL_ID, transactional_id):
        return dict.fromkeys(requested, DENIED[ResourceType.TRANSACTIONAL_ID])
    writable = ctx.authorized(Operation.WRITE, ResourceType.TOPIC, (t.name for t in topics))
    if len(writable) < len({t.name for t in topics}):  # as Kafka: nothing added, the rest not attempted
        return {tp: DENIED[ResourceType.TOPIC] if tp[0] not in writable else ErrorCode.operation_not_attempted
                for tp in requested}
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


async def handle(ctx: RequestContext, request: AddPartitionsToTxnRequest) -> AddPartitionsToTxnResponse:
    build = ctx.build
    if ctx.api_version < 4:
        results = await _transaction(ctx, request.v3_and_below_transactional_id, request.v3_and_below_producer_id,
                                     request.v3_and_below_producer_epoch, request.v3_and_below_topics, False)
        return build.AddPartitionsToTxnResponse(throttle_time=datetime.timedelta(0),
                                                results_by_topic_v3_and_below=_topic_results(build, results))
    if not ctx.authorize(Operation.CLUSTER_ACTION, ResourceType.CLUSTER):  # v4+: sent by brokers, not clients
        return build.AddPartitionsToTxnResponse(throttle_time=datetime.timedelta(0),
                                                error_code=DENIED[ResourceType.CLUSTER], results_by_transaction=())
    transactions = []
    for txn in request.transactions:
        results = await _transaction(ctx, txn.transactional_id, txn.producer_id, txn.producer_epoch, txn.topics,
                                     bool(txn.verify_only))
        transactions.append(build.AddPartitionsToTxnResult(transactional_id=txn.transactional_id,
                                                           topic_results=_topic_results(build, results)))
    return build.AddPartitionsToTxnResponse(throttle_time=datetime.timedelta(0), error_code=ErrorCode.none,
                                            results_by_transaction=tuple(transactions))
