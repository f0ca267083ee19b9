"""Fetch (key 1): whole stored batches, long-polled until min_bytes or max_wait.

Sessionless: we always answer session_id 0, which every client treats as
"send full fetch requests" (KIP-227 allows a broker not to cache sessions).

READ_COMMITTED reads stop at the last stable offset and list the aborted
transactions overlapping the returned batches; consumers drop those records
(and every control batch) themselves.

A fetch with a replica id (ReplicaState, v15+) is a follower copying its leader's log (broker/replication.py):
it needs CLUSTER_ACTION, reads up to the leader's log end rather than the high watermark, reports the
follower's progress (the high watermark and the ISR follow it), and gets a diverging epoch instead of
records when its log's last epoch ends elsewhere on the leader (KIP-320), so it truncates. Only a
partition's leader serves fetches: elsewhere NOT_LEADER_OR_FOLLOWER names the current leader (KIP-951).

On the controller listener, Fetch is KRaft's replication of the metadata log: a voter or observer
fetches `__cluster_metadata` from the quorum's leader, which answers from its state machine
(consensus/kraft.py, broker/quorum_wire.py).
"""

from __future__ import annotations

import datetime

import trio

from kio.schema.fetch.v17.request import FetchRequest
from kio.schema.fetch.v17.response import FetchResponse
from lodestream.protocol.codec import RecordChunks
from lodestream.protocol.errors import ErrorCode, KafkaError
from lodestream.protocol.record_batch import parse_header

from lodestream.consensus import kraft

from lodestream.broker.partition import PlannedRead, read_planned
from lodestream.broker.authorizer import DENIED, Operation, ResourceType
from lodestream.broker.metadata_log import METADATA_TOPIC_ID
from lodestream.broker.quorum_wire import (
    QUORUM_REQUEST_TIMEOUT_S,
    QuorumWireError,
    check_cluster,
    fetch_from_request,
    fetch_partition as metadata_fetch_partition,
)
from lodestream.broker.request_context import RequestContext

API_KEY = 1
VERSIONS = range(4, 18)
LISTENERS = "both"

READ_COMMITTED = 1


def _topic_names(ctx: RequestContext, request: FetchRequest) -> list[str]:
    image = ctx.broker.image
    if ctx.api_version < 13:
        return [t.topic for t in request.topics]
    topics = (image.topics_by_id.get(t.topic_id) for t in request.topics)
    return [topic.name for topic in topics if topic is not None]


def replica_id(ctx: RequestContext, request: FetchRequest) -> int:
    """The follower broker sending this fetch, or -1 for a consumer."""
    if ctx.api_version >= 15:
        return int(request.replica_state.replica_id)
    return int(getattr(request, "replica_id", -1))


def _leader_epoch_error(partition, requested: int) -> ErrorCode:
    """The fetcher's current_leader_epoch against this leader's (KIP-320); -1 asks for no check."""
    if requested < 0 or requested == partition.leader_epoch:
        return ErrorCode.none
    return ErrorCode.fenced_leader_epoch if requested < partition.leader_epoch else ErrorCode.unknown_leader_epoch


async def _read(ctx: RequestContext, request: FetchRequest):
    """One pass over the requested partitions: (topic responses, bytes, partitions read, any error, bytes per topic).

    Planned first from the partitions' indexes (offsets, errors, which batches fit in the byte budgets),
    then the batches of every partition are read together (broker/partition.read_planned)."""
    broker = ctx.broker
    build = ctx.build
    image = broker.image
    uses_ids = ctx.api_version >= 13
    remaining = int(request.max_bytes)
    first_batch_may_exceed = True
    had_error = False
    read_partitions = []
    read_committed = request.isolation_level == READ_COMMITTED
    follower = replica_id(ctx, request)
    hints: set[int] = set()  # leaders named in NOT_LEADER_OR_FOLLOWER answers (node_endpoints)
    # Per requested topic: (the request's topic, [(partition index, PartitionData fields, read)]), where read
    # is None for a partition not hosted here, else (fetch offset, the PlannedRead or None when nothing is read).
    planned_topics = []
    plans: list[PlannedRead] = []
    readable = ctx.authorized(Operation.READ, ResourceType.TOPIC, _topic_names(ctx, request)) if follower < 0 else set()
    for fetch_topic in request.topics:
        topic = image.topics_by_id.get(fetch_topic.topic_id) if uses_ids else image.topic(fetch_topic.topic)
        entries = []
        for fetch_partition in fetch_topic.partitions:
            index = int(fetch_partition.partition)
            partition = broker.replicas.get(topic.topic_id, index) if topic is not None else None
            # A replica fetch needs CLUSTER_ACTION (asked in handle), not READ on each topic.
            if follower < 0 and topic is not None and topic.name not in readable:
                entries.append((index, dict(error_code=DENIED[ResourceType.TOPIC], high_watermark=-1,
                                            last_stable_offset=-1, log_start_offset=-1), None))
                had_error = True
                continue
            if partition is None or not partition.is_leader:
                if topic is None:
                    error = ErrorCode.unknown_topic_id if uses_ids else ErrorCode.unknown_topic_or_partition
                else:
                    error = broker.not_leader_error(topic, index)
                fields = dict(error_code=error, high_watermark=-1, last_stable_offset=-1, log_start_offset=-1)
                if error == ErrorCode.not_leader_or_follower and build.has("LeaderIdAndEpoch"):  # v12+
                    leader, epoch = broker.leader_of(topic, index)
                    fields["current_leader"] = build.LeaderIdAndEpoch(leader_id=leader, leader_epoch=epoch)
                    hints.add(leader)
                entries.append((index, fields, None))
                had_error = True
                continue
            read_partitions.append(partition)
            high_watermark = partition.high_watermark
            stable = partition.last_stable_offset
            upper = partition.local_end_offset if follower >= 0 else stable if read_committed else high_watermark
            offset = int(fetch_partition.fetch_offset)
            # A follower replicates the local log (tiered storage: what is offloaded below it is not copied).
            start = partition.local_log_start_offset if follower >= 0 else partition.log_start_offset
            fields = dict(error_code=ErrorCode.none, high_watermark=high_watermark, last_stable_offset=stable,
                          log_start_offset=start)
            plan = None
            epoch_error = _leader_epoch_error(partition, int(getattr(fetch_partition, "current_leader_epoch", -1)))
            if epoch_error != ErrorCode.none:
                fields["error_code"] = epoch_error
                had_error = True
            elif follower >= 0 and _diverged(build, partition, fetch_partition, fields):
                # Before the range check: a follower ahead of this leader holds an uncommitted suffix of an
                # older epoch and must cut exactly that (KIP-101), not fall back to OFFSET_OUT_OF_RANGE's
                # reset to the high watermark, which a new leader's may trail the committed records.
                had_error = True
            elif offset < start or offset > partition.local_end_offset:
                fields["error_code"] = ErrorCode.offset_out_of_range
                had_error = True
            else:
                if follower >= 0:  # it holds everything below its fetch offset, read or not this time
                    broker.replicas.follower_fetched(partition, follower, offset)
                    fields["high_watermark"] = partition.high_watermark
                if offset < upper and (remaining > 0 or first_batch_may_exceed):
                    limit = min(int(fetch_partition.partition_max_bytes), remaining)
                    try:
                        plan = await partition.plan_read(offset, limit, upper,
                                                         first_may_exceed=first_batch_may_exceed)
                    except KafkaError as exc:  # an offloaded segment that cannot be read (KAFKA_STORAGE_ERROR)
                        fields["error_code"] = exc.code
                        had_error = True
                        entries.append((index, fields, None))
                        continue
                    if plan.bases:
                        plans.append(plan)
                        remaining -= plan.size
                        first_batch_may_exceed = False
            entries.append((index, fields, (offset, plan)))
        planned_topics.append((fetch_topic, entries))

    read = dict(zip(map(id, plans), await read_planned(plans)))
    total = 0
    per_topic: dict[str, int] = {}  # record bytes by topic name, for lodestream_topic_bytes_out
    topics = []
    for fetch_topic, entries in planned_topics:
        partitions = []
        for index, fields, planned in entries:
            batches: list[bytes] = []
            aborted = None
            if planned is not None and planned[1] is not None:
                offset, plan = planned
                batches = read.get(id(plan), [])
                if batches:
                    size = sum(map(len, batches))
                    per_topic[plan.partition.topic_name] = per_topic.get(plan.partition.topic_name, 0) + size
                    total += size
                    if read_committed and plan.partition.has_aborted_transactions:
                        aborted = tuple(
                            build.AbortedTransaction(producer_id=pid, first_offset=first)
                            for pid, first in plan.partition.aborted_transactions(
                                offset, parse_header(batches[-1]).last_offset + 1))
            known = planned is not None
            partitions.append(build.PartitionData(
                partition_index=index,
                **fields,
                aborted_transactions=((aborted or ()) if read_committed else None) if known else None,
                preferred_read_replica=-1,
                records=RecordChunks(batches) if known else b"",
            ))
        topics.append(build.FetchableTopicResponse(
            topic=None if uses_ids else fetch_topic.topic,
            topic_id=fetch_topic.topic_id if uses_ids else None,
            partitions=tuple(partitions)))
    return topics, total, read_partitions, had_error, per_topic, hints


def _diverged(build, partition, fetch_partition, fields: dict) -> bool:
    """A follower whose last batch's epoch ends earlier here (or is unknown) gets the epoch and end offset
    to truncate to (KIP-320's diverging epoch) instead of records."""
    last_epoch = int(getattr(fetch_partition, "last_fetched_epoch", -1))
    if last_epoch < 0:
        return False
    epoch, end = partition.end_offset_for_epoch(last_epoch)
    if epoch == last_epoch and end >= int(fetch_partition.fetch_offset):
        return False
    fields["diverging_epoch"] = build.EpochEndOffset(epoch=epoch, end_offset=end)
    return True


async def _fetch_metadata_log(ctx: RequestContext, request: FetchRequest) -> FetchResponse:
    build = ctx.build
    quorum = ctx.broker.quorum

    def answer(error: ErrorCode, partition=None) -> FetchResponse:
        if partition is None:
            partition = build.PartitionData(partition_index=0, error_code=error, high_watermark=-1,
                                            aborted_transactions=(), records=None)
        return build.FetchResponse(throttle_time=datetime.timedelta(0), error_code=ErrorCode.none, session_id=0,
                                   responses=(build.FetchableTopicResponse(topic_id=METADATA_TOPIC_ID,
                                                                           partitions=(partition,)),))

    if not ctx.authorize(Operation.CLUSTER_ACTION, ResourceType.CLUSTER):
        return answer(DENIED[ResourceType.CLUSTER])
    try:
        check_cluster(request, ctx.broker.cluster_id)
        quorum.fetch_seq += 1
        sender, message = fetch_from_request(request, quorum.fetch_seq)
    except QuorumWireError:
        return build.FetchResponse(throttle_time=datetime.timedelta(0), error_code=ErrorCode.inconsistent_cluster_id,
                                   session_id=0, responses=())
    reply = await quorum.exchange(sender, message, kraft.FetchResponse, QUORUM_REQUEST_TIMEOUT_S)
    if reply is None:
        return answer(ErrorCode.request_timed_out)
    return answer(ErrorCode.none, metadata_fetch_partition(build, reply, quorum.log_start_offset))


async def handle(ctx: RequestContext, request: FetchRequest) -> FetchResponse:
    build = ctx.build
    if ctx.session.controller:
        if ctx.api_version < 13 or len(request.topics) != 1 or request.topics[0].topic_id != METADATA_TOPIC_ID:
            return build.FetchResponse(throttle_time=datetime.timedelta(0), error_code=ErrorCode.invalid_request,
                                       session_id=0, responses=())
        return await _fetch_metadata_log(ctx, request)
    if replica_id(ctx, request) >= 0 and not ctx.authorize(Operation.CLUSTER_ACTION, ResourceType.CLUSTER):
        return build.FetchResponse(throttle_time=datetime.timedelta(0), error_code=DENIED[ResourceType.CLUSTER],
                                   session_id=0, responses=())
    deadline = trio.current_time() + request.max_wait.total_seconds()
    min_bytes = int(request.min_bytes)
    while True:
        topics, total, partitions, had_error, per_topic, hints = await _read(ctx, request)
        if total >= min_bytes or had_error or not partitions or trio.current_time() >= deadline:
            break
        arrived = trio.Event()
        for partition in partitions:
            partition.waiters.add(arrived)
        try:
            with trio.move_on_at(deadline):
                await arrived.wait()
        finally:
            for partition in partitions:
                partition.waiters.discard(arrived)
    if per_topic:
        ctx.broker.metrics.fetched(per_topic)
    if total and replica_id(ctx, request) < 0:  # over quota: answered in full, throttle_time set, then the
        ctx.throttle(ctx.broker.quotas.record_fetch(ctx.usage, total))  # connection pauses (KIP-219)
        ctx.throttle(ctx.broker.namespace_throttle_ms("consumer_byte_rate", per_topic))
    return build.FetchResponse(
        throttle_time=datetime.timedelta(0),
        error_code=ErrorCode.none,
        session_id=0,
        responses=tuple(topics),
        node_endpoints=ctx.broker.node_endpoints(build, ctx.session.listener_name, hints),
    )
