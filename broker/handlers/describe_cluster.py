"""DescribeCluster (key 60): this broker, the cluster id and the controller.

Only the BROKERS endpoint type is served: as Kafka's brokers, CONTROLLERS is
answered with MISMATCHED_ENDPOINT_TYPE and any other type with
UNSUPPORTED_ENDPOINT_TYPE (an error response with the schema's defaults).
"""

from __future__ import annotations

import datetime

from kio.schema.describe_cluster.v2.request import DescribeClusterRequest
from kio.schema.describe_cluster.v2.response import DescribeClusterResponse
from lodestream.protocol.errors import ErrorCode
from lodestream.broker.authorizer import DENIED, Operation, ResourceType
from lodestream.broker.request_context import RequestContext

API_KEY = 60
VERSIONS = range(0, 3)

BROKERS_ENDPOINT = 1
CONTROLLERS_ENDPOINT = 2
_NO_OPS = -2147483648  # "authorized operations not requested"



async def handle(ctx: RequestContext, request: DescribeClusterRequest) -> DescribeClusterResponse:
    broker = ctx.broker
    build = ctx.build
    endpoint_type = int(getattr(request, "endpoint_type", BROKERS_ENDPOINT))
    if not ctx.authorize(Operation.DESCRIBE, ResourceType.CLUSTER):
        error, message = DENIED[ResourceType.CLUSTER], None
    elif endpoint_type != BROKERS_ENDPOINT:
        if endpoint_type == CONTROLLERS_ENDPOINT:
            error, message = ErrorCode.mismatched_endpoint_type, (
                "The request was sent to an endpoint of type BROKER, but we wanted an endpoint of type CONTROLLER")
        else:
            error, message = ErrorCode.unsupported_endpoint_type, f"Unsupported endpoint type {endpoint_type}"
    else:
        error, message = ErrorCode.none, None
    if error != ErrorCode.none:
        return build.DescribeClusterResponse(
            throttle_time=datetime.timedelta(0), error_code=error, error_message=message,
            endpoint_type=BROKERS_ENDPOINT, cluster_id="", controller_id=-1, brokers=(),
            cluster_authorized_operations=_NO_OPS)
    listener = broker.bound_listeners[0]
    brokers = (build.DescribeClusterBroker(
        broker_id=broker.node_id, host=listener.advertised_host, port=listener.advertised_port, rack=None,
        is_fenced=False),)
    operations = ctx.authorized_operations(ResourceType.CLUSTER) if request.include_cluster_authorized_operations else _NO_OPS
    return build.DescribeClusterResponse(
        throttle_time=datetime.timedelta(0), error_code=ErrorCode.none, error_message=None,
        endpoint_type=BROKERS_ENDPOINT, cluster_id=broker.cluster_id, controller_id=broker.node_id,
        brokers=brokers, cluster_authorized_operations=operations)
