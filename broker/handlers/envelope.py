"""Envelope (key 58, KIP-590): a client's request forwarded by a broker to the active controller, with the
client's principal and address, so the controller authorizes it as that client (not as the forwarding broker,
whose controller-listener connection the authorizer trusts).

Served on controller listeners only. The inner request must be one brokers forward (FORWARDED_TO_CONTROLLER);
its answer goes back inside the EnvelopeResponse. The principal travels as its text, `Type:name` (Lodestream's
brokers are the only senders; Kafka's serialises it with its principal builder).
"""

from __future__ import annotations

import dataclasses
import ipaddress

from kio.schema.envelope.v0.request import EnvelopeRequest
from kio.schema.envelope.v0.response import EnvelopeResponse
from lodestream.protocol.codec import DecodeError, decode_request, encode_response, peek_preamble
from lodestream.protocol.errors import ErrorCode

from lodestream.broker.authorizer import DENIED, Operation, ResourceType
from lodestream.broker.request_context import RequestContext
from lodestream.broker.session import KafkaPrincipal

API_KEY = 58
VERSIONS = range(0, 1)
LISTENERS = "controller"

# {api key: Handler}: set by the registry (broker/handlers/__init__.py), which imports this module.
REGISTRY: dict = {}


async def handle(ctx: RequestContext, request: EnvelopeRequest) -> EnvelopeResponse:
    build = ctx.build
    if not ctx.authorize(Operation.CLUSTER_ACTION, ResourceType.CLUSTER):
        return build.EnvelopeResponse(error_code=DENIED[ResourceType.CLUSTER])
    principal_type, sep, name = (request.request_principal or b"").decode("utf-8", "replace").partition(":")
    if not sep or not principal_type or not name:
        return build.EnvelopeResponse(error_code=ErrorCode.principal_deserialization_failure)
    try:
        host = str(ipaddress.ip_address(request.client_host_address))
        preamble = peek_preamble(request.request_data)
        handler = REGISTRY.get(preamble.api_key)
        if handler is None or not handler.forwarded or preamble.api_version not in handler.parseable:
            return build.EnvelopeResponse(error_code=ErrorCode.invalid_request)
        inner = decode_request(request.request_data)
    except (ValueError, DecodeError):
        return build.EnvelopeResponse(error_code=ErrorCode.invalid_request)
    session = dataclasses.replace(ctx.session, principal=KafkaPrincipal(principal_type, name), client_host=host,
                                  controller=False)  # authorized as the client, on the client's behalf
    inner_ctx = RequestContext(broker=ctx.broker, session=session, api_key=preamble.api_key,
                               api_version=preamble.api_version, correlation_id=preamble.correlation_id,
                               client_id=inner.header.client_id)
    response = await handler.handle(inner_ctx, inner.body)
    return build.EnvelopeResponse(error_code=ErrorCode.none,
                                  response_data=encode_response(preamble.correlation_id, response)[4:])
