"""The KRaft quorum's messages (consensus/kraft.py) as Kafka's requests and responses: Vote (v2, with
KIP-996's pre_vote), BeginQuorumEpoch (v1), EndQuorumEpoch (v1), Fetch (v17, the KRaft fields) and
FetchSnapshot (v1), always for partition 0 of `__cluster_metadata`.

`to_request` / `from_response` are the sending side (broker/quorum_peers.py); `from_request` /
`to_response` the answering side (the controller listener's handlers).
"""

from __future__ import annotations

import datetime

from kio.schema.begin_quorum_epoch.v1 import request as begin_request
from kio.schema.end_quorum_epoch.v1 import request as end_request
from kio.schema.fetch.v17 import request as fetch_request
from kio.schema.fetch_snapshot.v1 import request as snapshot_request
from kio.schema.vote.v2 import request as vote_request
from kio.static.primitive import i32, i64

from lodestream.consensus import kraft
from lodestream.protocol.errors import ErrorCode
from lodestream.protocol.record_batch import split_batches

from lodestream.broker.metadata_log import METADATA_TOPIC, METADATA_TOPIC_ID, decode_entry, encode_entry

_ERRORS = {
    None: ErrorCode.none,
    "FENCED_LEADER_EPOCH": ErrorCode.fenced_leader_epoch,
    "NOT_LEADER_OR_FOLLOWER": ErrorCode.not_leader_or_follower,
    "UNKNOWN_LEADER_EPOCH": ErrorCode.unknown_leader_epoch,
    "SNAPSHOT_NOT_FOUND": ErrorCode.snapshot_not_found,
}
_ERROR_NAMES = {code: name for name, code in _ERRORS.items()}


class QuorumWireError(Exception):
    """A quorum message that is not about partition 0 of __cluster_metadata, or has another cluster's id."""


def _error(code) -> str | None:
    return _ERROR_NAMES.get(ErrorCode(code), ErrorCode(code).name.upper())


def _one_partition(topics, name_of=lambda topic: topic.topic_name):
    if len(topics) != 1 or name_of(topics[0]) != METADATA_TOPIC or len(topics[0].partitions) != 1:
        raise QuorumWireError(f"expected one partition of {METADATA_TOPIC}")
    return topics[0].partitions[0]


# --- the sending side ------------------------------------------------------------------------------


def to_request(message: kraft.Message, cluster_id: str, self_id: int, to: int):
    match message:
        case kraft.VoteRequest():
            return vote_request.VoteRequest(cluster_id=cluster_id, voter_id=to, topics=(vote_request.TopicData(
                topic_name=METADATA_TOPIC, partitions=(vote_request.PartitionData(
                    partition_index=i32(0), replica_epoch=i32(message.epoch), replica_id=message.candidate,
                    replica_directory_id=None, voter_directory_id=None, last_offset_epoch=i32(message.last_epoch),
                    last_offset=i64(message.end_offset), pre_vote=message.pre_vote),)),))
        case kraft.BeginEpoch():
            return begin_request.BeginQuorumEpochRequest(
                cluster_id=cluster_id, voter_id=to, leader_endpoints=(), topics=(begin_request.TopicData(
                    topic_name=METADATA_TOPIC, partitions=(begin_request.PartitionData(
                        partition_index=i32(0), voter_directory_id=None, leader_id=message.leader,
                        leader_epoch=i32(message.epoch)),)),))
        case kraft.EndEpoch():
            return end_request.EndQuorumEpochRequest(
                cluster_id=cluster_id, leader_endpoints=(), topics=(end_request.TopicData(
                    topic_name=METADATA_TOPIC, partitions=(end_request.PartitionData(
                        partition_index=i32(0), leader_id=message.leader, leader_epoch=i32(message.epoch),
                        preferred_candidates=tuple(end_request.ReplicaInfo(candidate_id=c, candidate_directory_id=None)
                                                   for c in message.successors)),)),))
        case kraft.FetchRequest():
            return fetch_request.FetchRequest(
                cluster_id=cluster_id, replica_state=fetch_request.ReplicaState(replica_id=self_id, replica_epoch=i64(-1)),
                max_wait=datetime.timedelta(milliseconds=500), min_bytes=i32(0), session_id=i32(0),
                session_epoch=i32(-1), forgotten_topics_data=(), topics=(fetch_request.FetchTopic(
                    topic_id=METADATA_TOPIC_ID, partitions=(fetch_request.FetchPartition(
                        partition=i32(0), current_leader_epoch=i32(message.epoch),
                        fetch_offset=i64(message.fetch_offset), last_fetched_epoch=i32(message.last_fetched_epoch),
                        log_start_offset=i64(-1), partition_max_bytes=i32(8 << 20), replica_directory_id=None),)),))
        case kraft.FetchSnapshotRequest():
            end, epoch = message.snapshot
            return snapshot_request.FetchSnapshotRequest(
                cluster_id=cluster_id, replica_id=self_id, topics=(snapshot_request.TopicSnapshot(
                    name=METADATA_TOPIC, partitions=(snapshot_request.PartitionSnapshot(
                        partition=i32(0), current_leader_epoch=i32(message.epoch),
                        snapshot_id=snapshot_request.SnapshotId(end_offset=i64(end), epoch=i32(epoch)),
                        position=i64(0), replica_directory_id=None),)),))
    raise TypeError(f"not a request: {message!r}")


def from_response(request: kraft.Message, response) -> kraft.Message | None:
    """The machine's message for a peer's answer to `request` (None: a top-level error, nothing to say)."""
    if response.error_code != ErrorCode.none and not getattr(response, "topics", ()):
        return None
    match request:
        case kraft.VoteRequest():
            p = _one_partition(response.topics)
            return kraft.VoteResponse(p.leader_epoch, p.leader_id, p.vote_granted, request.pre_vote, _error(p.error_code))
        case kraft.BeginEpoch():
            p = _one_partition(response.topics)
            return kraft.BeginEpochResponse(p.leader_epoch, p.leader_id)
        case kraft.EndEpoch():
            p = _one_partition(response.topics)
            return kraft.EndEpochResponse(p.leader_epoch, p.leader_id)
        case kraft.FetchRequest():
            if len(response.responses) != 1 or len(response.responses[0].partitions) != 1:
                return None
            p = response.responses[0].partitions[0]
            records = p.records or b""
            entries = tuple(decode_entry(bytes(batch)) for _, batch in split_batches(records)) if records else ()
            diverging = None if p.diverging_epoch.epoch < 0 else (p.diverging_epoch.epoch, p.diverging_epoch.end_offset)
            snapshot = None if p.snapshot_id.epoch < 0 else (p.snapshot_id.end_offset, p.snapshot_id.epoch)
            return kraft.FetchResponse(p.current_leader.leader_epoch, p.current_leader.leader_id, request.seq,
                                       request.fetch_offset, _error(p.error_code), entries, p.high_watermark,
                                       diverging, snapshot)
        case kraft.FetchSnapshotRequest():
            p = _one_partition(response.topics, lambda topic: topic.name)
            data = bytes(p.unaligned_records) if p.error_code == ErrorCode.none else None
            return kraft.FetchSnapshotResponse(p.current_leader.leader_epoch, p.current_leader.leader_id,
                                               request.snapshot, data, _error(p.error_code))
    raise TypeError(f"not a request: {request!r}")


# --- the answering side ----------------------------------------------------------------------------


def check_cluster(request, cluster_id: str) -> None:
    sent = getattr(request, "cluster_id", None)
    if sent is not None and sent != cluster_id:
        raise QuorumWireError(f"cluster id {sent!r} is not this cluster's ({cluster_id!r})")


def from_request(request) -> tuple[int, kraft.Message]:
    """(sender, the machine's message) for a peer's request."""
    match request:
        case vote_request.VoteRequest():
            p = _one_partition(request.topics)
            return p.replica_id, kraft.VoteRequest(p.replica_epoch, p.replica_id, p.last_offset_epoch, p.last_offset,
                                                   p.pre_vote)
        case begin_request.BeginQuorumEpochRequest():
            p = _one_partition(request.topics)
            return p.leader_id, kraft.BeginEpoch(p.leader_epoch, p.leader_id)
        case end_request.EndQuorumEpochRequest():
            p = _one_partition(request.topics)
            return p.leader_id, kraft.EndEpoch(p.leader_epoch, p.leader_id,
                                               tuple(c.candidate_id for c in p.preferred_candidates))
        case snapshot_request.FetchSnapshotRequest():
            p = _one_partition(request.topics, lambda topic: topic.name)
            return request.replica_id, kraft.FetchSnapshotRequest(
                p.current_leader_epoch, request.replica_id, (p.snapshot_id.end_offset, p.snapshot_id.epoch))
    raise TypeError(f"not a quorum request: {type(request).__name__}")


def fetch_from_request(request, seq: int) -> tuple[int, kraft.FetchRequest]:
    """A KRaft Fetch (any version with the replica's state) as the machine's message, numbered `seq`."""
    replica = request.replica_state.replica_id if hasattr(request, "replica_state") else request.replica_id
    if len(request.topics) != 1 or len(request.topics[0].partitions) != 1:
        raise QuorumWireError(f"expected one partition of {METADATA_TOPIC}")
    p = request.topics[0].partitions[0]
    return replica, kraft.FetchRequest(p.current_leader_epoch, replica, p.fetch_offset, p.last_fetched_epoch, seq)


def to_response(build, message: kraft.Message):
    """A kio response (from the handler's `build`) for the machine's answer."""
    match message:
        case kraft.VoteResponse():
            return build.VoteResponse(error_code=ErrorCode.none, topics=(build.TopicData(
                topic_name=METADATA_TOPIC, partitions=(build.PartitionData(
                    partition_index=0, error_code=_ERRORS.get(message.error, ErrorCode.none), leader_id=message.leader,
                    leader_epoch=message.epoch, vote_granted=message.granted),)),))
        case kraft.BeginEpochResponse():
            return build.BeginQuorumEpochResponse(error_code=ErrorCode.none, topics=(build.TopicData(
                topic_name=METADATA_TOPIC, partitions=(build.PartitionData(
                    partition_index=0, error_code=ErrorCode.none, leader_id=message.leader,
                    leader_epoch=message.epoch),)),))
        case kraft.EndEpochResponse():
            return build.EndQuorumEpochResponse(error_code=ErrorCode.none, topics=(build.TopicData(
                topic_name=METADATA_TOPIC, partitions=(build.PartitionData(
                    partition_index=0, error_code=ErrorCode.none, leader_id=message.leader,
                    leader_epoch=message.epoch),)),))
        case kraft.FetchSnapshotResponse():
            end, epoch = message.snapshot
            data = message.data or b""
            return build.FetchSnapshotResponse(
                throttle_time=datetime.timedelta(0), error_code=ErrorCode.none, topics=(build.TopicSnapshot(
                    name=METADATA_TOPIC, partitions=(build.PartitionSnapshot(
                        index=0, error_code=_ERRORS.get(message.error, ErrorCode.unknown_server_error),
                        snapshot_id=build.SnapshotId(end_offset=end, epoch=epoch),
                        current_leader=build.LeaderIdAndEpoch(leader_id=message.leader, leader_epoch=message.epoch),
                        size=len(data), position=0, unaligned_records=data),)),))
    raise TypeError(f"not a response: {message!r}")


def fetch_partition(build, message: kraft.FetchResponse, log_start_offset: int):
    """The one partition of a KRaft Fetch response."""
    diverging = message.diverging or (-1, -1)
    snapshot = message.snapshot or (-1, -1)
    records = b"".join(encode_entry(entry) for entry in message.entries)
    return build.PartitionData(
        partition_index=0, error_code=_ERRORS.get(message.error, ErrorCode.unknown_server_error),
        high_watermark=message.hw, last_stable_offset=message.hw, log_start_offset=log_start_offset,
        diverging_epoch=build.EpochEndOffset(epoch=diverging[0], end_offset=diverging[1]),
        current_leader=build.LeaderIdAndEpoch(leader_id=message.leader, leader_epoch=message.epoch),
        snapshot_id=build.SnapshotId(end_offset=snapshot[0], epoch=snapshot[1]),
        aborted_transactions=(), preferred_read_replica=-1, records=records)


# --- the handlers' common path -----------------------------------------------------------------------

QUORUM_REQUEST_TIMEOUT_S = 5.0


async def serve_quorum_request(ctx, request, response_type: type, error_response):
    """Answer a peer's Vote / BeginQuorumEpoch / EndQuorumEpoch / FetchSnapshot through the machine.

    `error_response(code)` builds the handler's top-level error answer. CLUSTER_ACTION on the cluster is
    required, as Kafka requires it of its controllers' peers."""
    from lodestream.broker.authorizer import DENIED, Operation, ResourceType

    if not ctx.authorize(Operation.CLUSTER_ACTION, ResourceType.CLUSTER):
        return error_response(DENIED[ResourceType.CLUSTER])
    quorum = ctx.broker.quorum
    try:
        check_cluster(request, ctx.broker.cluster_id)
    except QuorumWireError:
        return error_response(ErrorCode.inconsistent_cluster_id)
    try:
        sender, message = from_request(request)
    except QuorumWireError:
        return error_response(ErrorCode.invalid_request)
    answer = await quorum.exchange(sender, message, response_type, QUORUM_REQUEST_TIMEOUT_S)
    if answer is None:
        return error_response(ErrorCode.request_timed_out)
    return to_response(ctx.build, answer)
