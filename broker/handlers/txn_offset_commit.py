"""TxnOffsetCommit (key 28): offsets committed inside a transaction. Checked against the
transaction (the group's __consumer_offsets partition must be in it, via AddOffsetsToTxn; v5, the
KIP-890 part 2 version, adds it implicitly) and, v3+, the group's generation and member; written
to __consumer_offsets in a transactional batch and visible only once the transaction commits."""

from __future__ import annotations

import datetime

from kio.schema.txn_offset_commit.v5.request import TxnOffsetCommitRequest
from kio.schema.txn_offset_commit.v5.response import TxnOffsetCommitResponse
from lodestream.protocol.errors import ErrorCode, KafkaError

from lodestream.broker.internal_topics import OFFSETS_TOPIC
from lodestream.broker.handlers.offset_commit import check_partitions
from lodestream.broker.authorizer import DENIED, Operation, ResourceType
from lodestream.broker.request_context import RequestContext

API_KEY = 28
VERSIONS = range(0, 6)


async def _request_error(ctx, request) -> ErrorCode:
    broker = ctx.broker
    if not request.group_id:
        return ErrorCode.invalid_group_id
    if not ctx.authorize(Operation.WRITE, ResourceType.TRANSACTIONAL_ID, request.transactional_id):
        return DENIED[ResourceType.TRANSACTIONAL_ID]
    if not ctx.authorize(Operation.READ, ResourceType.GROUP, request.group_id):
        return DENIED[ResourceType.GROUP]
    try:
        await broker.groups.ensure_loaded(request.group_id)
    except KafkaError as exc:
        return exc.code
    transactions = broker.transactions
    group_partition = (OFFSETS_TOPIC, broker.groups.partition_for(request.group_id))
    producer_id, producer_epoch = int(request.producer_id), int(request.producer_epoch)
    if ctx.api_version >= 5:
        error = await transactions.add_partitions(request.transactional_id, producer_id, producer_epoch,
                                                  [group_partition])
    else:
        error = transactions.offset_commit_error(await broker.verify_in_transaction(
            request.transactional_id, producer_id, producer_epoch, *group_partition))
    if error != ErrorCode.none:  # TxnOffsetCommit has no PRODUCER_FENCED in any version
        return ErrorCode.invalid_producer_epoch if error == ErrorCode.producer_fenced else error
    generation = int(getattr(request, "generation_id", -1))
    member_id = getattr(request, "member_id", "") or ""
    instance_id = getattr(request, "group_instance_id", None)
    group = broker.groups.get_group(request.group_id)
    if group is None:
        return ErrorCode.none if generation < 0 else ErrorCode.illegal_generation
    return group.validate_offset_commit(member_id, generation, instance_id, True)


async def handle(ctx: RequestContext, request: TxnOffsetCommitRequest) -> TxnOffsetCommitResponse:
    build = ctx.build
    broker = ctx.broker
    error = await _request_error(ctx, request)
    results, to_commit = check_partitions(ctx, request.topics, error)
    if to_commit:
        try:
            await broker.groups.commit_transactional_offsets(request.group_id, int(request.producer_id),
                                                             int(request.producer_epoch), to_commit)
        except KafkaError as exc:
            for key in to_commit:
                results[key] = exc.code
    topics = tuple(
        build.TxnOffsetCommitResponseTopic(name=topic.name, partitions=tuple(
            build.TxnOffsetCommitResponsePartition(partition_index=p.partition_index,
                                                   error_code=results[(topic.name, int(p.partition_index))])
            for p in topic.partitions))
        for topic in request.topics)
    return build.TxnOffsetCommitResponse(throttle_time=datetime.timedelta(0), topics=topics)
