"""SaslAuthenticate (key 36): one SASL message of the exchange SaslHandshake started, and the broker's answer.

When the exchange succeeds the connection's principal is set and every API is served; with
`connections.max.reauth.ms` (or a token that expires) the answer carries the session's lifetime
(v1+, KIP-368) and the connection is closed if it is used past it without re-authenticating. A
re-authentication must keep the principal. A failure is answered SASL_AUTHENTICATION_FAILED after
`connection.failed.authentication.delay.ms` (KIP-306), and the connection closed; why it failed goes to the
broker's log only.
"""

from __future__ import annotations

import datetime
import logging
import time

import trio
from kio.schema.sasl_authenticate.v2.request import SaslAuthenticateRequest
from kio.schema.sasl_authenticate.v2.response import SaslAuthenticateResponse
from lodestream.protocol.errors import ErrorCode

from lodestream.broker.request_context import RequestContext
from lodestream.broker.sasl import AuthenticationFailed

API_KEY = 36
VERSIONS = range(0, 3)

log = logging.getLogger(__name__)


async def handle(ctx: RequestContext, request: SaslAuthenticateRequest) -> SaslAuthenticateResponse:
    if ctx.session.sasl_exchange is None:  # no SaslHandshake before it
        await _failed(ctx, "SaslAuthenticate before SaslHandshake")
        return ctx.build.SaslAuthenticateResponse(
            error_code=ErrorCode.illegal_sasl_state, auth_bytes=b"",
            error_message="Unexpected SaslAuthenticate request: no SaslHandshake before it")
    try:
        answer, lifetime_ms = await step(ctx, request.auth_bytes)
    except AuthenticationFailed:
        return ctx.build.SaslAuthenticateResponse(
            error_code=ErrorCode.sasl_authentication_failed, auth_bytes=b"",
            error_message=f"Authentication failed during authentication due to invalid credentials with SASL "
                          f"mechanism {ctx.session.sasl_mechanism}")
    return ctx.build.SaslAuthenticateResponse(
        error_code=ErrorCode.none, error_message=None, auth_bytes=answer,
        **({"session_lifetime": datetime.timedelta(milliseconds=lifetime_ms)} if ctx.api_version >= 1 else {}))


async def step(ctx: RequestContext, token: bytes) -> tuple[bytes, int]:
    """One message of the connection's exchange: (the answer, the session lifetime in ms once authenticated, else
    0). Raises AuthenticationFailed after the delay, with the connection marked to close."""
    session = ctx.session
    try:
        answer, authenticated = session.sasl_exchange.step(token)
        if authenticated is not None and session.authenticated and authenticated.principal != session.principal:
            raise AuthenticationFailed(f"re-authentication as {authenticated.principal} on a connection of "
                                       f"{session.principal}: principals cannot change")
    except AuthenticationFailed as exc:
        ctx.broker.metrics.authentication(session.sasl_mechanism or "", False)
        await _failed(ctx, str(exc))
        raise
    lifetime_ms = 0
    if authenticated is not None:
        session.sasl_exchange = None
        session.sasl_raw_tokens = False
        session.principal = authenticated.principal
        session.authenticated = True
        ctx.broker.metrics.authentication(session.sasl_mechanism or "", True)
        lifetime_ms = _session_lifetime_ms(ctx, authenticated.expires_at_ms)
        session.session_expires_at = trio.current_time() + lifetime_ms / 1000 if lifetime_ms else None
        log.debug("%s authenticated as %s with %s", ctx.peer, session.principal, session.sasl_mechanism)
    return answer, lifetime_ms


def _session_lifetime_ms(ctx: RequestContext, expires_at_ms: int | None) -> int:
    """The shorter of connections.max.reauth.ms and what is left of the credential (a token's exp); 0: no limit."""
    limits = []
    max_reauth = int(ctx.broker.config.get("connections.max.reauth.ms"))
    if max_reauth > 0:
        limits.append(max_reauth)
    if expires_at_ms is not None:
        limits.append(max(expires_at_ms - int(time.time() * 1000), 1))
    return min(limits) if limits else 0


async def _failed(ctx: RequestContext, why: str) -> None:
    log.info("failed authentication with %s on %s (%s)", ctx.peer, ctx.session.listener_name, why)
    ctx.session.sasl_exchange = None
    ctx.close_after_response = True
    # KIP-306: the answer (and the close) come later, so a client cannot try passwords at full speed.
    await trio.sleep(int(ctx.broker.config.get("connection.failed.authentication.delay.ms")) / 1000)
