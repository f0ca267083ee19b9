"""DescribeQuorum (key 55): the metadata quorum's leader, epoch, high watermark, and each voter's and
observer's log end offset and last fetch (what `kafka-metadata-quorum describe --status / --replication`
prints).

Only the leader knows its followers' progress. Another node forwards the request to it, as Kafka's
brokers forward DescribeQuorum to the active controller; with no leader known it answers
NOT_LEADER_OR_FOLLOWER for the partition.
"""

from __future__ import annotations

from kio.schema.describe_quorum.v2.request import DescribeQuorumRequest
from kio.schema.describe_quorum.v2.response import DescribeQuorumResponse
from lodestream.protocol.errors import ErrorCode, KafkaError

from lodestream.broker.authorizer import DENIED, Operation, ResourceType
from lodestream.broker.metadata_log import METADATA_TOPIC
from lodestream.broker.request_context import RequestContext

API_KEY = 55
VERSIONS = range(0, 3)
LISTENERS = "both"


def _error(build, code: ErrorCode, message: str | None = None) -> DescribeQuorumResponse:
    return build.DescribeQuorumResponse(error_code=code, error_message=message, topics=(), nodes=())


async def handle(ctx: RequestContext, request: DescribeQuorumRequest) -> DescribeQuorumResponse:
    build = ctx.build
    if not ctx.authorize(Operation.DESCRIBE, ResourceType.CLUSTER):
        return _error(build, DENIED[ResourceType.CLUSTER])
    asked = [(t.topic_name, p.partition_index) for t in request.topics for p in t.partitions]
    if asked != [(METADATA_TOPIC, 0)]:
        return _error(build, ErrorCode.invalid_request, f"DescribeQuorum describes {METADATA_TOPIC}-0 only")
    quorum = ctx.broker.quorum
    if not quorum.is_leader:
        if quorum.leader >= 0 and ctx.broker.forwards_to_controller:
            try:
                return await ctx.broker.controller_client.forward(request)
            except KafkaError:
                pass  # the leader cannot be reached: answered here, as a node that is not the leader
        partition = build.PartitionData(
            partition_index=0, error_code=ErrorCode.not_leader_or_follower, error_message=None,
            leader_id=quorum.leader, leader_epoch=quorum.epoch, high_watermark=-1, current_voters=(), observers=())
        return build.DescribeQuorumResponse(error_code=ErrorCode.none, error_message=None, topics=(
            build.TopicData(topic_name=METADATA_TOPIC, partitions=(partition,)),), nodes=())
    voters = set(quorum.voters)
    rows = {replica: (end, fetched, caught_up) for replica, end, fetched, caught_up in quorum.replica_states()}

    def state(replica: int):
        end, fetched, caught_up = rows.get(replica, (-1, None, None))
        return build.ReplicaState(replica_id=replica, replica_directory_id=None, log_end_offset=end,
                                  last_fetch_timestamp=quorum.wall_clock_ms(fetched),
                                  last_caught_up_timestamp=quorum.wall_clock_ms(caught_up))

    partition = build.PartitionData(
        partition_index=0, error_code=ErrorCode.none, error_message=None, leader_id=quorum.leader,
        leader_epoch=quorum.epoch, high_watermark=quorum.high_watermark,
        current_voters=tuple(state(v) for v in sorted(voters)),
        observers=tuple(state(r) for r in sorted(rows) if r not in voters))
    nodes = tuple(build.Node(node_id=node, listeners=(build.Listener(name=name, host=host, port=port),))
                  for node, (name, host, port) in sorted(ctx.broker.controller_endpoints().items()))
    return build.DescribeQuorumResponse(error_code=ErrorCode.none, error_message=None, topics=(
        build.TopicData(topic_name=METADATA_TOPIC, partitions=(partition,)),), nodes=nodes)
