"""Produce (key 0): validate batch headers and CRCs, append, answer after the write.

Advertised from v0 although v0-v2 are refused (the connection is closed, kio
has no schema for them): librdkafka stops compressing when Produce's minimum
is above 0 (KAFKA-18659), so Apache Kafka 4 advertises 0 as well.

Only a partition's leader takes its batches; elsewhere NOT_LEADER_OR_FOLLOWER names the current leader and
its endpoint (KIP-951) so the producer does not wait for a metadata refresh. acks=all answers once the
in-sync replicas have the batch (the high watermark passed it), within the request's timeout; it is
refused with NOT_ENOUGH_REPLICAS while the ISR is smaller than min.insync.replicas.

Idempotent batches are checked (sequence, epoch, duplicates) by the replica
manager's committer; transactional ones are first verified with the
transaction coordinator (KIP-890 part 1: the partition must be in the
producer's ongoing transaction).
"""

from __future__ import annotations

import dataclasses
import datetime
import time
from typing import Awaitable

import trio

from kio.schema.produce.v13.request import ProduceRequest
from kio.schema.produce.v13.response import ProduceResponse
from lodestream.protocol.errors import ErrorCode, KafkaError
from lodestream.protocol.record_batch import TRANSACTIONAL_BIT

from lodestream.broker.append import new_append, validate_batches
from lodestream.broker.replica_manager import AppendRequest
from lodestream.broker.authorizer import DENIED, Operation, ResourceType
from lodestream.broker.request_context import RequestContext

API_KEY = 0
VERSIONS = range(0, 14)


def _partition_response(build, index: int, error: ErrorCode, base_offset: int = -1, log_start: int = -1,
                        append_time_ms: int | None = None, message: str | None = None,
                        record_errors: tuple[tuple[int, str], ...] = ()):
    return build.PartitionProduceResponse(
        index=index,
        error_code=error,
        base_offset=base_offset,
        log_append_time=None if append_time_ms is None else datetime.datetime.fromtimestamp(append_time_ms / 1000, datetime.UTC),
        log_start_offset=log_start,
        record_errors=tuple(build.BatchIndexAndErrorMessage(batch_index=position, batch_index_error_message=why)
                            for position, why in record_errors) if build.has("BatchIndexAndErrorMessage") else (),
        error_message=message,
    )


async def _verify_transactional(broker, transactional_id, partition, producer) -> ErrorCode:
    """KIP-890 part 1: the first transactional batch of a transaction on a partition is checked with the
    transactional id's coordinator (wherever it is); later ones find the transaction open here."""
    if transactional_id is None:  # Kafka: transactional records need an (authorized) transactional id
        return ErrorCode.transactional_id_authorization_failed
    if broker.transactions is None or partition.in_transaction(producer.producer_id, producer.producer_epoch):
        return ErrorCode.none
    result = await broker.verify_in_transaction(transactional_id, producer.producer_id, producer.producer_epoch,
                                                partition.topic_name, partition.index)
    return broker.transactions.produce_error(result)


async def admit(ctx: RequestContext, request: ProduceRequest) -> Awaitable[ProduceResponse | None]:
    """Validate and queue every partition's batches now (arrival order), answer later. The connection's
    reader waits for this: a transaction verified with a coordinator on another broker holds the next
    request back, so a producer's batches still reach each partition in order."""
    broker = ctx.broker
    build = ctx.build
    image = broker.image
    now_ms = int(time.time() * 1000)
    acks = int(request.acks)
    uses_ids = ctx.api_version >= 13
    plan = []  # (topic key for response, [(index, AppendRequest | (error, message[, record errors]))])
    produced = 0  # request record bytes, charged to the producer_byte_rate quota
    produced_by_topic: dict[str, int] = {}  # and to their namespaces' (broker/namespaces.py)
    transactional_id = request.transactional_id
    # As Kafka: a transactional produce needs WRITE on its transactional id, or nothing is written.
    refused_txn = transactional_id is not None and not ctx.authorize(
        Operation.WRITE, ResourceType.TRANSACTIONAL_ID, transactional_id)
    for topic_data in request.topic_data:
        topic = image.topics_by_id.get(topic_data.topic_id) if uses_ids else image.topic(topic_data.name)
        may_write = topic is None or ctx.authorize(Operation.WRITE, ResourceType.TOPIC, topic.name)
        results = []
        for partition_data in topic_data.partition_data:
            index = int(partition_data.index)
            size = len(partition_data.records) if partition_data.records is not None else 0
            produced += size
            if topic is not None:
                produced_by_topic[topic.name] = produced_by_topic.get(topic.name, 0) + size
            if refused_txn:
                results.append((index, (DENIED[ResourceType.TRANSACTIONAL_ID], None)))
                continue
            if not may_write:
                results.append((index, (DENIED[ResourceType.TOPIC], None)))
                continue
            if acks not in (-1, 0, 1):
                results.append((index, (ErrorCode.invalid_required_acks, f"acks={acks} must be -1, 0 or 1")))
                continue
            if topic is None:
                error = ErrorCode.unknown_topic_id if uses_ids else ErrorCode.unknown_topic_or_partition
                results.append((index, (error, "unknown topic")))
                continue
            try:
                partition, entries, append_time, producer = validate_batches(broker, topic, index,
                                                                              partition_data.records, now_ms)
            except KafkaError as exc:
                results.append((index, (exc.code, exc.message, exc.record_errors)))
                continue
            if acks == -1:
                min_isr = int(broker.topic_config(topic)["min.insync.replicas"])
                if min_isr > len(partition.isr):  # as Kafka: acks=all needs min.insync.replicas in sync
                    results.append((index, (ErrorCode.not_enough_replicas,
                                            f"The size of the current ISR ({len(partition.isr)}) is insufficient to "
                                            f"satisfy the min.isr requirement of {min_isr} for partition "
                                            f"{topic.name}-{index}")))
                    continue
            if producer is not None and producer.attributes & TRANSACTIONAL_BIT:
                error = await _verify_transactional(broker, request.transactional_id, partition, producer)
                if error != ErrorCode.none:
                    results.append((index, (error, f"transactional batch refused: {error.name}")))
                    continue
            append = new_append(partition, entries, append_time, producer)
            broker.replicas.enqueue(append)
            results.append((index, append))
        plan.append((topic_data, results))
    if produced:
        ctx.throttle(broker.quotas.record_produce(ctx.usage, produced))
        ctx.throttle(broker.namespace_throttle_ms("producer_byte_rate", produced_by_topic))
    return _complete(ctx, build, plan, acks, uses_ids, request.timeout.total_seconds())


async def _complete(ctx, build, plan, acks: int, uses_ids: bool, timeout_s: float):
    topics = []
    hints: set[int] = set()  # leaders named in NOT_LEADER_OR_FOLLOWER answers (node_endpoints)
    deadline = trio.current_time() + timeout_s
    image = ctx.broker.image
    for topic_data, results in plan:
        partitions = []
        topic = image.topics_by_id.get(topic_data.topic_id) if uses_ids else image.topic(topic_data.name)
        for index, outcome in results:
            if isinstance(outcome, AppendRequest):
                # acks=all answers once the high watermark passes the batches; acks=1 once they are durable here.
                await outcome.done.wait()
                if acks == -1 and outcome.error is None:
                    with trio.move_on_at(deadline):
                        await outcome.committed.wait()
                    if not outcome.committed.is_set():
                        partitions.append(_partition_response(
                            build, index, ErrorCode.request_timed_out,
                            message="the in-sync replicas did not all have the batch within the request's timeout"))
                        continue
                    if outcome.error is None and len(outcome.partition.maximal_isr) < outcome.partition.min_isr:
                        partitions.append(_partition_response(
                            build, index, ErrorCode.not_enough_replicas_after_append,
                            message=f"written, but the ISR shrank below min.insync.replicas="
                                    f"{outcome.partition.min_isr} before it was acknowledged"))
                        continue
                if isinstance(outcome.error, KafkaError):  # refused by the producer state
                    partitions.append(_partition_response(build, index, outcome.error.code, message=outcome.error.message))
                elif outcome.error is not None:
                    partitions.append(_partition_response(build, index, ErrorCode.kafka_storage_error, message=str(outcome.error)))
                else:
                    partitions.append(_partition_response(
                        build, index, ErrorCode.none, outcome.base_offset, outcome.partition.log_start_offset,
                        outcome.log_append_time_ms))
            else:
                error, message, *record_errors = outcome  # (error, message[, per-record errors])
                partitions.append(_partition_response(build, index, error, message=message,
                                                      record_errors=record_errors[0] if record_errors else ()))
            if partitions[-1].error_code == ErrorCode.not_leader_or_follower and topic is not None:
                leader, epoch = ctx.broker.leader_of(topic, index)
                partitions[-1] = dataclasses.replace(partitions[-1], current_leader=build.LeaderIdAndEpoch(
                    leader_id=leader, leader_epoch=epoch)) if build.has("LeaderIdAndEpoch") else partitions[-1]
                hints.add(leader)
        topics.append(build.TopicProduceResponse(
            name=None if uses_ids else topic_data.name,
            topic_id=topic_data.topic_id if uses_ids else None,
            partition_responses=tuple(partitions)))
    if acks == 0:
        return None  # acks=0: Kafka sends no response at all
    return build.ProduceResponse(responses=tuple(topics), throttle_time=datetime.timedelta(0),
                                 node_endpoints=ctx.broker.node_endpoints(build, ctx.session.listener_name, hints))


async def handle(ctx: RequestContext, request: ProduceRequest) -> ProduceResponse | None:
    return await (await admit(ctx, request))
