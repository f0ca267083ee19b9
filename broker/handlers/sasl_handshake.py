"""SaslHandshake (key 17): the client names the SASL mechanism it will authenticate with.

After v1 the SASL messages travel in SaslAuthenticate requests; after v0 (clients older than Kafka 1.0) as
bare length-prefixed tokens, answered the same way (broker/server.py). A mechanism the listener does not offer
gets UNSUPPORTED_SASL_MECHANISM with the ones it does, and the connection is closed, as Kafka does; so does
a handshake on a listener without SASL (ILLEGAL_SASL_STATE). A second handshake on an authenticated
connection starts a re-authentication (KIP-368).
"""

from __future__ import annotations

from kio.schema.sasl_handshake.v1.request import SaslHandshakeRequest
from kio.schema.sasl_handshake.v1.response import SaslHandshakeResponse
from lodestream.protocol.errors import ErrorCode

from lodestream.broker.request_context import RequestContext

API_KEY = 17
VERSIONS = range(0, 2)


async def handle(ctx: RequestContext, request: SaslHandshakeRequest) -> SaslHandshakeResponse:
    build = ctx.build
    session = ctx.session
    sasl = ctx.broker.sasl
    if sasl is None or not session.security_protocol.startswith("SASL_"):
        ctx.close_after_response = True
        return build.SaslHandshakeResponse(error_code=ErrorCode.illegal_sasl_state, mechanisms=())
    mechanisms = tuple(sasl.mechanisms)
    if session.sasl_exchange is not None or request.mechanism not in mechanisms:
        ctx.close_after_response = True
        error = ErrorCode.illegal_sasl_state if session.sasl_exchange is not None \
            else ErrorCode.unsupported_sasl_mechanism
        return build.SaslHandshakeResponse(error_code=error, mechanisms=mechanisms)
    session.sasl_mechanism = request.mechanism
    session.sasl_exchange = sasl.exchange(request.mechanism, session.listener_name)
    session.sasl_raw_tokens = ctx.api_version == 0 and not session.authenticated
    return build.SaslHandshakeResponse(error_code=ErrorCode.none, mechanisms=mechanisms)
