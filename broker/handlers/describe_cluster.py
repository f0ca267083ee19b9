"""DescribeCluster (key 60): this broker, the cluster id and the controller.

Only the BROKERS endpoint type is served: as Kafka's brokers, CONTROLLERS is
answered with MISMATCHED_ENDPOINT_TYPE and any other type with
UNSUPPORTED_ENDPOINT_TYPE (an error response with the schema's defaults).
"""

from __future__ import annotations

import datetime

from lodestream.protocol.errors import ErrorCode

API_KEY = 60
VERSIONS = range(0, 3)

BROKERS_ENDPOINT = 1
CONTROLLERS_ENDPOINT = 2
_NO_OPS = -2147483648  # "authorized operations not requested"

# AclOperation codes Kafka supports on the CLUSTER resource; with no authorizer
# every supported operation is authorized (AuthHelper.authorizedOperations).
_CLUSTER_OPERATIONS = (5, 7, 8, 9, 10, 11, 12)  # CREATE, ALTER, DESCRIBE, CLUSTER_ACTION, DESCRIBE_CONFIGS, ALTER_CONFIGS, IDEMPOTENT_WRITE
CLUSTER_AUTHORIZED_OPERATIONS = sum(1 << op for op in _CLUSTER_OPERATIONS)


async def handle(ctx, request):
    broker = ctx.broker
    build = ctx.build
    endpoint_type = int(getattr(request, "endpoint_type", BROKERS_ENDPOINT))
    if endpoint_type != BROKERS_ENDPOINT:
        if endpoint_type == CONTROLLERS_ENDPOINT:
            error, message = ErrorCode.mismatched_endpoint_type, (
                "The request was sent to an endpoint of type BROKER, but we wanted an endpoint of type CONTROLLER")
        else:
            error, message = ErrorCode.unsupported_endpoint_type, f"Unsupported endpoint type {endpoint_type}"
        return build.DescribeClusterResponse(
            throttle_time=datetime.timedelta(0), error_code=error, error_message=message,
            endpoint_type=BROKERS_ENDPOINT, cluster_id="", controller_id=-1, brokers=(),
            cluster_authorized_operations=_NO_OPS)
    listener = broker.bound_listeners[0]
    brokers = (build.DescribeClusterBroker(
        broker_id=broker.node_id, host=listener.advertised_host, port=listener.advertised_port, rack=None,
        is_fenced=False),)
    operations = CLUSTER_AUTHORIZED_OPERATIONS if request.include_cluster_authorized_operations else _NO_OPS
    return build.DescribeClusterResponse(
        throttle_time=datetime.timedelta(0), error_code=ErrorCode.none, error_message=None,
        endpoint_type=BROKERS_ENDPOINT, cluster_id=broker.cluster_id, controller_id=broker.node_id,
        brokers=brokers, cluster_authorized_operations=operations)
