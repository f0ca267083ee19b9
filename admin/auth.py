"""REST API authentication hook: a static bearer token and/or HTTP basic users.

Configured with admin.auth.bearer.token and admin.auth.basic.users (both
sensitive broker configs). With neither, the REST API is unauthenticated and
broker/config.py refuses non-loopback admin.listeners. /health and /ready stay
open for probes; everything under /v3 needs credentials once any are set.
Full SASL/ACL integration (principals, authorization) comes with the security work:
`Authenticator.principal` is where a principal would be handed on.
"""

from __future__ import annotations

import base64
import binascii
import hmac

from fastapi import Depends, Request
from fastapi.security import HTTPBasic, HTTPBearer

from lodestream.admin.errors import KAFKA_AUTHENTICATION, ApiError


class Authenticator:
    def __init__(self, bearer_token: str | None, basic_users: dict[str, str] | None) -> None:
        self.bearer_token = bearer_token or None
        self.basic_users = dict(basic_users or {})

    @property
    def enabled(self) -> bool:
        return bool(self.bearer_token or self.basic_users)

    def describe(self) -> str:
        schemes = []
        if self.bearer_token:
            schemes.append("bearer token")
        if self.basic_users:
            schemes.append(f"HTTP basic ({len(self.basic_users)} user(s))")
        return " or ".join(schemes) or "none"

    def principal(self, authorization: str | None) -> str | None:
        """`User:<name>` for valid credentials, None otherwise. Constant-time comparisons."""
        if not authorization:
            return None
        scheme, _, credentials = authorization.strip().partition(" ")
        scheme = scheme.lower()
        credentials = credentials.strip()
        if scheme == "bearer" and self.bearer_token:
            if hmac.compare_digest(credentials.encode(), self.bearer_token.encode()):
                return "User:ANONYMOUS-BEARER"
            return None
        if scheme == "basic" and self.basic_users:
            try:
                user, sep, password = base64.b64decode(credentials, validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError, ValueError):
                return None
            if not sep:
                return None
            expected = self.basic_users.get(user)
            # compare against something even for an unknown user, so timing does not reveal user names
            if hmac.compare_digest(password.encode(), (expected if expected is not None else "\0" * 16).encode()) \
                    and expected is not None:
                return f"User:{user}"
        return None

    def challenge(self) -> dict[str, str]:
        schemes = []
        if self.bearer_token:
            schemes.append('Bearer realm="lodestream"')
        if self.basic_users:
            schemes.append('Basic realm="lodestream"')
        return {"WWW-Authenticate": ", ".join(schemes)}

    def dependencies(self) -> list:
        """FastAPI dependencies for the protected routers (empty when auth is off, so the OpenAPI
        document declares security schemes only when they are enforced)."""
        if not self.enabled:
            return []
        declared = []
        if self.bearer_token:
            declared.append(Depends(HTTPBearer(auto_error=False, description="admin.auth.bearer.token")))
        if self.basic_users:
            declared.append(Depends(HTTPBasic(auto_error=False, description="admin.auth.basic.users")))

        async def require(request: Request) -> None:
            principal = self.principal(request.headers.get("authorization"))
            if principal is None:
                raise ApiError(401, KAFKA_AUTHENTICATION, "Authentication failed: missing or invalid credentials",
                               headers=self.challenge())
            request.state.principal = principal

        return [*declared, Depends(require)]
