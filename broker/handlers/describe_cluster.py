"""DescribeCluster (key 60): the live brokers, the cluster id and the active controller.

On a client listener it describes the BROKERS endpoints; on a controller listener (admin clients given
bootstrap.controllers) the CONTROLLERS endpoints, the voters' controller listeners. Asking one for the
other is MISMATCHED_ENDPOINT_TYPE, and any other type UNSUPPORTED_ENDPOINT_TYPE, as in Kafka.
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
LISTENERS = "both"

BROKERS_ENDPOINT = 1
CONTROLLERS_ENDPOINT = 2
_NO_OPS = -2147483648  # "authorized operations not requested"



async def handle(ctx: RequestContext, request: DescribeClusterRequest) -> DescribeClusterResponse:
    broker = ctx.broker
    build = ctx.build
    endpoint_type = int(getattr(request, "endpoint_type", BROKERS_ENDPOINT))
    served = CONTROLLERS_ENDPOINT if ctx.session.controller else BROKERS_ENDPOINT
    if not ctx.authorize(Operation.DESCRIBE, ResourceType.CLUSTER):
        error, message = DENIED[ResourceType.CLUSTER], None
    elif endpoint_type not in (BROKERS_ENDPOINT, CONTROLLERS_ENDPOINT):
        error, message = ErrorCode.unsupported_endpoint_type, f"Unsupported endpoint type {endpoint_type}"
    elif endpoint_type != served:
        names = {BROKERS_ENDPOINT: "BROKER", CONTROLLERS_ENDPOINT: "CONTROLLER"}
        error, message = ErrorCode.mismatched_endpoint_type, (
            f"The request was sent to an endpoint of type {names[served]}, but we wanted an endpoint of type "
            f"{names[endpoint_type]}")
    else:
        error, message = ErrorCode.none, None
    if error != ErrorCode.none:
        return build.DescribeClusterResponse(
            throttle_time=datetime.timedelta(0), error_code=error, error_message=message,
            endpoint_type=served, cluster_id="", controller_id=-1, brokers=(),
            cluster_authorized_operations=_NO_OPS)
    if served == CONTROLLERS_ENDPOINT:  # the voters' controller listeners (admin clients with bootstrap.controllers)
        brokers = tuple(build.DescribeClusterBroker(broker_id=node, host=host, port=port, rack=None, is_fenced=False)
                        for node, (_, host, port) in sorted(broker.controller_endpoints().items()))
    else:
        include_fenced = bool(getattr(request, "include_fenced_brokers", False))
        brokers = tuple(build.DescribeClusterBroker(broker_id=node, host=host, port=port, rack=rack, is_fenced=fenced)
                        for node, host, port, rack, fenced in broker.broker_endpoints(ctx.session.listener_name,
                                                                                      include_fenced))
    operations = ctx.authorized_operations(ResourceType.CLUSTER) if request.include_cluster_authorized_operations else _NO_OPS
    return build.DescribeClusterResponse(
        throttle_time=datetime.timedelta(0), error_code=ErrorCode.none, error_message=None,
        endpoint_type=served, cluster_id=broker.cluster_id, controller_id=broker.active_controller_id(),
        brokers=brokers, cluster_authorized_operations=operations)
