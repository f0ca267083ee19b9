"""BrokerRegistration (key 62): a broker joins the cluster with the active controller
(broker/cluster_controller.py); it gets a broker epoch and stays fenced until it has caught up.
Served on the controller listener; CLUSTER_ACTION on the cluster is required, as in Kafka."""

from __future__ import annotations

import datetime

from kio.schema.broker_registration.v4.request import BrokerRegistrationRequest
from kio.schema.broker_registration.v4.response import BrokerRegistrationResponse
from lodestream.protocol.errors import ErrorCode, KafkaError

from lodestream.broker.authorizer import DENIED, Operation, ResourceType
from lodestream.broker.cluster_controller import SECURITY_PROTOCOL_NAMES
from lodestream.broker.request_context import RequestContext

API_KEY = 62
VERSIONS = range(0, 5)
LISTENERS = "controller"


async def handle(ctx: RequestContext, request: BrokerRegistrationRequest) -> BrokerRegistrationResponse:
    build = ctx.build

    def answer(error: ErrorCode, epoch: int = -1) -> BrokerRegistrationResponse:
        return build.BrokerRegistrationResponse(throttle_time=datetime.timedelta(0), error_code=error,
                                                broker_epoch=epoch)

    if not ctx.authorize(Operation.CLUSTER_ACTION, ResourceType.CLUSTER):
        return answer(DENIED[ResourceType.CLUSTER])
    endpoints = tuple((listener.name, listener.host, int(listener.port),
                       SECURITY_PROTOCOL_NAMES.get(int(listener.security_protocol), "PLAINTEXT"))
                      for listener in request.listeners)
    try:
        epoch = await ctx.broker.controller.register(request.broker_id, request.cluster_id, request.incarnation_id,
                                                     endpoints, request.rack)
    except KafkaError as exc:
        return answer(exc.code)
    return answer(ErrorCode.none, epoch)
