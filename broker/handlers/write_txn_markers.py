"""WriteTxnMarkers (key 27): COMMIT / ABORT markers written on request, as Kafka's brokers accept them.

Lodestream's transaction coordinator writes its markers in-process (Broker.write_markers); what
arrives here comes from an admin client, chiefly `kafka-transactions abort`, which ends a hanging
transaction on one partition by writing an ABORT marker with the producer id, epoch and coordinator
epoch that DescribeProducers reported. It needs CLUSTER_ACTION on the cluster, as in Kafka. Each
partition answers on its own: the partition layer's epoch checks (INVALID_PRODUCER_EPOCH,
TRANSACTION_COORDINATOR_FENCED), UNKNOWN_TOPIC_OR_PARTITION, or KAFKA_STORAGE_ERROR if the write failed.
"""

from __future__ import annotations

from kio.schema.write_txn_markers.v1.request import WriteTxnMarkersRequest
from kio.schema.write_txn_markers.v1.response import WriteTxnMarkersResponse
from lodestream.protocol.errors import ErrorCode
from lodestream.broker.authorizer import DENIED, Operation, ResourceType
from lodestream.broker.request_context import RequestContext
from lodestream.broker.replica_manager import StorageError  # the partition layer's write failure

API_KEY = 27
VERSIONS = range(1, 2)  # Kafka 4 removed v0


async def handle(ctx: RequestContext, request: WriteTxnMarkersRequest) -> WriteTxnMarkersResponse:
    build = ctx.build
    broker = ctx.broker
    allowed = ctx.authorize(Operation.CLUSTER_ACTION, ResourceType.CLUSTER)
    results = []
    for marker in request.markers:
        errors: dict[tuple[str, int], ErrorCode] = {}
        targets = []
        for requested in marker.topics:
            topic = broker.image.topic(requested.name)
            for index in requested.partition_indexes:
                key = (requested.name, int(index))
                partition = broker.replicas.get(topic.topic_id, int(index)) if topic is not None else None
                if not allowed:
                    errors[key] = DENIED[ResourceType.CLUSTER]
                elif partition is None or not partition.is_leader:
                    errors[key] = ErrorCode.unknown_topic_or_partition if topic is None \
                        else broker.not_leader_error(topic, int(index))
                else:
                    errors[key] = ErrorCode.none
                    targets.append(partition)
        if targets:
            try:
                refused = await broker.replicas.write_markers(
                    targets, int(marker.producer_id), int(marker.producer_epoch), bool(marker.transaction_result),
                    int(marker.coordinator_epoch))
            except StorageError:
                refused = {partition: ErrorCode.kafka_storage_error for partition in targets}
            for partition, error in refused.items():
                errors[(partition.topic_name, partition.index)] = error
        results.append(build.WritableTxnMarkerResult(producer_id=marker.producer_id, topics=tuple(
            build.WritableTxnMarkerTopicResult(name=requested.name, partitions=tuple(
                build.WritableTxnMarkerPartitionResult(partition_index=index,
                                                       error_code=errors[(requested.name, int(index))])
                for index in requested.partition_indexes))
            for requested in marker.topics)))
    return build.WriteTxnMarkersResponse(markers=tuple(results))
