"""REST API principals and authorization (docs/security.md).

Who: HTTP basic users of admin.auth.basic.users, or of the broker's SCRAM credentials (the users Kafka
clients log in as with SCRAM-SHA-*), `User:<name>`; a bearer JWT checked like an OAUTHBEARER token (the
broker's JWKS, issuer, audience, expiry), `User:<its principal claim>`; the static admin.auth.bearer.token,
`User:ANONYMOUS-BEARER`; on an https:// listener, a client certificate's principal (as on an SSL Kafka
listener: ssl.principal.mapping.rules), when no credentials are sent. With none of those the REST API is
unauthenticated (`User:ANONYMOUS`) and broker/config.py refuses non-loopback admin.listeners. /health and
/ready stay open for probes.

What: every /v3 operation is authorized by the broker's authorizer as its Kafka equivalent
(`rest_actions`: DESCRIBE a topic to read it, ALTER_CONFIGS to change its configs, WRITE to produce, ...);
listings leave out what the principal may not DESCRIBE, as Metadata does. Without ACLs everything is allowed.
"""

from __future__ import annotations

import base64
import binascii
import contextvars
import hashlib
import hmac
from typing import Callable

import trio
from fastapi import Depends, Request
from fastapi.security import HTTPBasic, HTTPBearer

from lodestream.admin.errors import KAFKA_AUTHENTICATION, KAFKA_AUTHORIZATION, ApiError
from lodestream.broker import tls
from lodestream.broker.authorizer import CLUSTER_NAME, Action, Operation, ResourceType, allowed_names
from lodestream.broker.scram import ScramCredential, verify_password
from lodestream.broker.session import ANONYMOUS, KafkaPrincipal, Session

SCRAM_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256")
# The client certificate of the https:// connection a request came on (set by admin/service.py at the handshake).
PEER_CERTIFICATE: contextvars.ContextVar[dict | None] = contextvars.ContextVar("lodestream_admin_peer_certificate",
                                                                               default=None)
_VERIFIED_CACHE_SIZE = 1024  # (user, key, password digest) of recent good SCRAM logins: PBKDF2 once per password


class Authenticator:
    def __init__(self, bearer_token: str | None, basic_users: dict[str, str] | None, *,
                 scram: Callable[[str, str], ScramCredential | None] | None = None, jwt=None) -> None:
        self.bearer_token = bearer_token or None
        self.basic_users = dict(basic_users or {})
        self.scram = scram  # (user, mechanism) -> the broker's SCRAM credential: basic auth against it
        self.jwt = jwt  # the broker's OAUTHBEARER JwtValidator: bearer JWTs
        self._verified: dict[tuple, None] = {}
        self._limiter = trio.CapacityLimiter(2)  # PBKDF2 runs off the event loop, two at a time

    @classmethod
    def for_broker(cls, broker) -> "Authenticator":
        sasl = broker.sasl
        scram = broker.scram_credential if sasl is not None and set(sasl.mechanisms) & set(SCRAM_MECHANISMS) \
            else None
        return cls(broker.broker_config_value("admin.auth.bearer.token"),
                   broker.broker_config_value("admin.auth.basic.users"), scram=scram,
                   jwt=sasl.oauth if sasl is not None else None)

    @property
    def enabled(self) -> bool:
        return bool(self.bearer_token or self.basic_users or self.scram or self.jwt)

    def describe(self) -> str:
        schemes = []
        if self.bearer_token:
            schemes.append("bearer token")
        if self.jwt:
            schemes.append("bearer JWT (OAUTHBEARER's JWKS)")
        if self.basic_users:
            schemes.append(f"HTTP basic ({len(self.basic_users)} user(s))")
        if self.scram:
            schemes.append("HTTP basic (SCRAM users)")
        return " or ".join(schemes) or "none"

    async def principal(self, authorization: str | None) -> str | None:
        """`User:<name>` for valid credentials, None otherwise. Constant-time comparisons."""
        if not authorization:
            return None
        scheme, _, credentials = authorization.strip().partition(" ")
        scheme = scheme.lower()
        credentials = credentials.strip()
        if scheme == "bearer" and self.bearer_token \
                and hmac.compare_digest(credentials.encode(), self.bearer_token.encode()):
            return "User:ANONYMOUS-BEARER"
        if scheme == "bearer" and self.jwt is not None:
            try:
                return f"User:{self.jwt.validate(credentials)[0]}"
            except ValueError:
                return None
        if scheme != "basic" or not (self.scram or self.basic_users):
            return None
        try:
            user, sep, password = base64.b64decode(credentials, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return None
        if not sep:
            return None
        if self.scram is not None:
            verified = await self._scram_password_ok(user, password)
            if verified is not None:
                return f"User:{user}" if verified else None
        expected = self.basic_users.get(user)
        # compare against something even for an unknown user, so timing does not reveal user names
        if hmac.compare_digest(password.encode(), (expected if expected is not None else "\0" * 16).encode()) \
                and expected is not None:
            return f"User:{user}"
        return None

    async def _scram_password_ok(self, user: str, password: str) -> bool | None:
        """Whether `password` is the SCRAM user's (None: no such SCRAM user)."""
        for mechanism in SCRAM_MECHANISMS:
            credential = self.scram(user, mechanism)
            if credential is None:
                continue
            key = (user, credential.stored_key, hashlib.sha256(password.encode()).digest())
            if key not in self._verified:
                if not await trio.to_thread.run_sync(verify_password, mechanism, credential, password,
                                                     limiter=self._limiter):
                    return False
                if len(self._verified) >= _VERIFIED_CACHE_SIZE:
                    self._verified.pop(next(iter(self._verified)))
                self._verified[key] = None
            return True
        return None

    def challenge(self) -> dict[str, str]:
        schemes = []
        if self.bearer_token or self.jwt:
            schemes.append('Bearer realm="lodestream"')
        if self.basic_users or self.scram:
            schemes.append('Basic realm="lodestream"')
        return {"WWW-Authenticate": ", ".join(schemes)}

    def dependencies(self, broker) -> list:
        """FastAPI dependencies of the /v3 routers: who the caller is (when authentication is configured), then
        whether the broker's authorizer lets them do the operation (broker/authorizer.py). The OpenAPI document
        declares security schemes only when they are enforced."""
        declared = []
        if self.bearer_token or self.jwt:
            declared.append(Depends(HTTPBearer(auto_error=False, description="admin.auth.bearer.token or a JWT")))
        if self.basic_users or self.scram:
            declared.append(Depends(HTTPBasic(auto_error=False, description="admin.auth.basic.users or SCRAM users")))

        async def require(request: Request) -> None:
            principal = ANONYMOUS
            header, certificate = request.headers.get("authorization"), PEER_CERTIFICATE.get()
            if self.enabled and (header or certificate is None):
                name = await self.principal(header)
                if name is None:
                    raise ApiError(401, KAFKA_AUTHENTICATION, "Authentication failed: missing or invalid credentials",
                                   headers=self.challenge())
                principal = KafkaPrincipal(*name.split(":", 1))
            elif certificate is not None:  # mTLS on an https:// listener
                try:
                    principal = tls.principal_of(certificate, broker.ssl_rules)
                except tls.AuthenticationFailed as exc:
                    raise ApiError(401, KAFKA_AUTHENTICATION, f"Authentication failed: {exc}") from None
            client = request.client
            session = Session("REST", request.url.scheme.upper(), client.host if client else "",
                              client.port if client else 0, principal=principal)
            request.state.principal = str(principal)
            request.state.session = session
            route = request.scope.get("route")
            actions = rest_actions(request.method, getattr(route, "path", ""), request.path_params)
            if actions and not all(broker.authorizer.authorize(session, actions)):
                raise ApiError(403, KAFKA_AUTHORIZATION, f"{principal} is not authorized to "
                                                         f"{actions[0].operation.name} {actions[0].name}")

        return [*declared, Depends(require)]


# REST operations the route itself authorizes (a listing filters what it shows; creating a topic may be
# allowed on the cluster or on the topic named in the body): the dependency asks nothing for them.
ROUTE_DECIDES = {("GET", "/v3/clusters"), ("GET", "/v3/clusters/{cluster_id}/topics"),
                 ("POST", "/v3/clusters/{cluster_id}/topics"), ("GET", "/v3/clusters/{cluster_id}/consumer-groups"),
                 ("POST", "/v3/clusters/{cluster_id}/consumer-groups/{consumer_group_id}/offset-resets")}


def rest_actions(method: str, path: str, params: dict) -> list[Action]:
    """The Kafka action a REST operation amounts to: on the group, else the topic, else the cluster its path
    names; DESCRIBE_CONFIGS / ALTER_CONFIGS for configs, WRITE to produce, DESCRIBE to read, DELETE to delete
    a topic, ALTER for any other change (a scrub, a repair, a partition count)."""
    if (method, path) in ROUTE_DECIDES:
        return []
    if "consumer_group_id" in params:
        resource, name = ResourceType.GROUP, params["consumer_group_id"]
    elif "topic_name" in params:
        resource, name = ResourceType.TOPIC, params["topic_name"]
    else:
        resource, name = ResourceType.CLUSTER, CLUSTER_NAME
    reading = method in ("GET", "HEAD")
    if "/configs" in path or "-configs" in path:
        operation = Operation.DESCRIBE_CONFIGS if reading else Operation.ALTER_CONFIGS
    elif path.endswith("/records"):
        operation = Operation.WRITE
    elif reading:
        operation = Operation.DESCRIBE
    elif method == "DELETE" and path.endswith(("{topic_name}", "{consumer_group_id}")):
        operation = Operation.DELETE
    else:
        operation = Operation.ALTER
    return [Action(operation, resource, name)]


def authorized_names(request: Request, broker, operation: Operation, resource: ResourceType, names) -> set[str]:
    """The names among `names` the caller may do `operation` on (listings show only those)."""
    return allowed_names(broker.authorizer, request.state.session, operation, resource, names)


def require(request: Request, broker, *alternatives: Action) -> None:
    """403 unless the caller may do one of `alternatives`."""
    if not any(broker.authorizer.authorize(request.state.session, list(alternatives))):
        action = alternatives[-1]
        raise ApiError(403, KAFKA_AUTHORIZATION,
                       f"{request.state.principal} is not authorized to {action.operation.name} {action.name}")
