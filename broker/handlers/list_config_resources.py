"""ListConfigResources (key 74; v0 was ListClientMetricsResources): the resources that configs can be
described for, by type, as Kafka 4.1 answers it (KIP-1142).

v0 asks for client-metrics resources only; v1 for the listed types (none listed = every type v1
knows): groups with a group config of their own, client-metrics subscriptions (none can be stored
here), this broker as BROKER and BROKER_LOGGER, and every topic. A type v1 does not know is answered
UNSUPPORTED_VERSION. kafka-configs lists groups this way before describing a group's configs.
"""

from __future__ import annotations

import datetime

from kio.schema.list_config_resources.v1.request import ListConfigResourcesRequest
from kio.schema.list_config_resources.v1.response import ListConfigResourcesResponse
from lodestream.protocol.errors import ErrorCode
from lodestream.broker.authorizer import DENIED, Operation, ResourceType
from lodestream.broker.handlers.describe_configs import BROKER, BROKER_LOGGER, TOPIC
from lodestream.broker.quotas import GROUP_RESOURCE_TYPE, groups_with_configs
from lodestream.broker.request_context import RequestContext

API_KEY = 74
VERSIONS = range(0, 2)

CLIENT_METRICS = 16
V1_TYPES = (GROUP_RESOURCE_TYPE, CLIENT_METRICS, BROKER_LOGGER, BROKER, TOPIC)


async def handle(ctx: RequestContext, request: ListConfigResourcesRequest) -> ListConfigResourcesResponse:
    build = ctx.build

    def answer(error: ErrorCode, resources=()) -> ListConfigResourcesResponse:
        return build.ListConfigResourcesResponse(throttle_time=datetime.timedelta(0), error_code=error,
                                                 config_resources=tuple(resources))

    if not ctx.authorize(Operation.DESCRIBE_CONFIGS, ResourceType.CLUSTER):
        return answer(DENIED[ResourceType.CLUSTER])
    if ctx.api_version == 0:
        wanted = {CLIENT_METRICS}
    else:
        wanted = {int(kind) for kind in request.resource_types} or set(V1_TYPES)
        if not wanted <= set(V1_TYPES):
            return answer(ErrorCode.unsupported_version)
    image = ctx.broker.image
    node = str(ctx.broker.node_id)
    names = {
        GROUP_RESOURCE_TYPE: lambda: groups_with_configs(image.client_quotas),
        CLIENT_METRICS: lambda: [],
        BROKER_LOGGER: lambda: [node],
        BROKER: lambda: [node],
        TOPIC: lambda: sorted(image.topics_by_name),
    }
    resources = [build.ConfigResource(resource_name=name, resource_type=kind)
                 for kind in V1_TYPES if kind in wanted for name in names[kind]()]
    return answer(ErrorCode.none, resources)
