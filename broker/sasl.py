"""SASL on SASL_PLAINTEXT and SASL_SSL listeners: which mechanisms a listener offers, and one exchange per
connection (SaslHandshake picks the mechanism, SaslAuthenticate carries its messages).

- PLAIN (RFC 4616): users and passwords from `sasl.jaas.config` (or the listener's
  `listener.name.<listener>.plain.sasl.jaas.config`), Kafka's PlainLoginModule syntax `user_<name>="<password>"`.
- SCRAM-SHA-256/512 (broker/scram.py): credentials from the metadata image (AlterUserScramCredentials).
- OAUTHBEARER (KIP-255, RFC 7628): a JWT checked by broker/oauth.py.

Every failure is an AuthenticationFailed whose message goes to the broker's log; the client is told only that
authentication failed. Pure logic: the connection (broker/server.py) and the handlers do the I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Mapping, Protocol

from lodestream.broker.config import BrokerConfig, ConfigError
from lodestream.broker.scram import MECHANISMS as SCRAM_MECHANISMS, ScramCredential, ScramError, ScramExchange
from lodestream.broker.session import KafkaPrincipal

if TYPE_CHECKING:
    from lodestream.broker.oauth import JwtValidator

SUPPORTED_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER")
PLAIN_LOGIN_MODULE = "org.apache.kafka.common.security.plain.PlainLoginModule"


class AuthenticationFailed(Exception):
    """The client's credentials were refused (or its messages were malformed): close after the delay."""


@dataclass(frozen=True, slots=True)
class Authenticated:
    principal: KafkaPrincipal
    expires_at_ms: int | None = None  # wall-clock ms when the credential expires (a token's exp), if it does


class Exchange(Protocol):
    def step(self, token: bytes) -> tuple[bytes, Authenticated | None]:
        """The answer to the client's next message, and who the client is once the exchange succeeded."""


def parse_jaas_users(text: str) -> dict[str, str]:
    """The users of a PlainLoginModule JAAS entry: `... required user_alice="secret" ...;` -> {alice: secret}."""
    if PLAIN_LOGIN_MODULE not in text:
        raise ValueError(f"expected {PLAIN_LOGIN_MODULE} (the PLAIN mechanism's login module)")
    options = dict(re.findall(r'([A-Za-z_][\w.-]*)\s*=\s*"((?:[^"\\]|\\.)*)"', text))
    return {key[len("user_"):]: value for key, value in options.items() if key.startswith("user_") and len(key) > 5}


class PlainExchange:
    """RFC 4616: one message, `authzid NUL authcid NUL password`."""

    def __init__(self, users: Mapping[str, str]) -> None:
        self.users = users

    def step(self, token: bytes) -> tuple[bytes, Authenticated | None]:
        parts = token.split(b"\0")
        if len(parts) != 3:
            raise AuthenticationFailed("PLAIN: expected authzid NUL user NUL password")
        try:
            authzid, user, password = (part.decode("utf-8") for part in parts)
        except UnicodeDecodeError:
            raise AuthenticationFailed("PLAIN: not UTF-8") from None
        if not user or not password:
            raise AuthenticationFailed("PLAIN: empty user name or password")
        if authzid and authzid != user:
            raise AuthenticationFailed(f"PLAIN: authorization id {authzid!r} is not the user {user!r}")
        expected = self.users.get(user)
        # Digests of equal length compared in constant time, also for an unknown user.
        given = hashlib.sha256(password.encode()).digest()
        matches = hmac.compare_digest(given, hashlib.sha256((expected or "\0unknown").encode()).digest())
        if expected is None or not matches:
            raise AuthenticationFailed(f"PLAIN: wrong user name or password for {user!r}")
        return b"", Authenticated(KafkaPrincipal("User", user))


class ScramAuthentication:
    """SCRAM-SHA-*: the exchange of broker/scram.py, its failures as AuthenticationFailed."""

    def __init__(self, exchange: ScramExchange) -> None:
        self.exchange = exchange

    def step(self, token: bytes) -> tuple[bytes, Authenticated | None]:
        try:
            answer, done = self.exchange.step(token)
        except ScramError as exc:
            raise AuthenticationFailed(f"{self.exchange.mechanism}: {exc}") from None
        assert self.exchange.user is not None
        return answer, Authenticated(KafkaPrincipal("User", self.exchange.user)) if done else None


class OAuthBearerExchange:
    """RFC 7628's client response `gs2-header ^A auth=Bearer <jwt> ^A [key=value ^A]* ^A`, the JWT checked by
    the validator. One message: a token that does not verify fails the exchange."""

    def __init__(self, validator: "JwtValidator | None") -> None:
        self.validator = validator

    def step(self, token: bytes) -> tuple[bytes, Authenticated | None]:
        try:
            text = token.decode("utf-8")
        except UnicodeDecodeError:
            raise AuthenticationFailed("OAUTHBEARER: not UTF-8") from None
        header, sep, rest = text.partition("\x01")
        if not sep or not rest.endswith("\x01\x01") or not header.startswith(("n,", "y,")):
            raise AuthenticationFailed("OAUTHBEARER: malformed client response")
        pairs = {}
        for item in rest[:-2].split("\x01"):
            key, eq, value = item.partition("=")
            if not eq:
                raise AuthenticationFailed("OAUTHBEARER: malformed key/value pair")
            pairs[key] = value
        scheme, _, jwt_text = pairs.get("auth", "").partition(" ")
        if scheme.lower() != "bearer" or not jwt_text:
            raise AuthenticationFailed("OAUTHBEARER: no 'auth=Bearer <token>'")
        if self.validator is None:
            raise AuthenticationFailed("OAUTHBEARER: no sasl.oauthbearer.jwks.endpoint.url configured")
        try:
            principal, expires_at_ms = self.validator.validate(jwt_text)
        except ValueError as exc:
            raise AuthenticationFailed(f"OAUTHBEARER: {exc}") from None
        authzid = header.split(",")[1]
        if authzid and authzid != f"a={principal}":
            raise AuthenticationFailed(f"OAUTHBEARER: authorization id {authzid[2:]!r} is not the token's {principal!r}")
        return b"", Authenticated(KafkaPrincipal("User", principal), expires_at_ms)


class SaslServer:
    """The broker's SASL settings, and a new exchange for each SaslHandshake."""

    def __init__(self, mechanisms: list[str], plain_users: Callable[[str], Mapping[str, str]],
                 scram_credential: Callable[[str, str], ScramCredential | None],
                 oauth: "JwtValidator | None") -> None:
        self.mechanisms = mechanisms
        self.plain_users = plain_users  # listener name -> its PLAIN users
        self.scram_credential = scram_credential  # (user, mechanism) -> stored credential
        self.oauth = oauth
        self._fake_key = secrets.token_bytes(32)  # unknown users' made-up SCRAM salts (broker/scram.py)

    def exchange(self, mechanism: str, listener: str) -> Exchange:
        if mechanism == "PLAIN":
            return PlainExchange(self.plain_users(listener))
        if mechanism in SCRAM_MECHANISMS:
            return ScramAuthentication(ScramExchange(
                mechanism, lambda user: self.scram_credential(user, mechanism), self._fake_key))
        if mechanism == "OAUTHBEARER":
            return OAuthBearerExchange(self.oauth)
        raise ValueError(mechanism)


def listener_plain_users(config: BrokerConfig, listeners: list[str]) -> dict[str, dict[str, str]]:
    """Each SASL listener's PLAIN users: `listener.name.<listener>.plain.sasl.jaas.config`, else `sasl.jaas.config`."""
    users = {}
    for listener in listeners:
        text = config.listener_jaas.get(listener) or config.get("sasl.jaas.config")
        key = f"listener.name.{listener.lower()}.plain.sasl.jaas.config" if listener in config.listener_jaas \
            else "sasl.jaas.config"
        if not text:
            raise ConfigError(f"sasl.enabled.mechanisms has PLAIN, and SASL listener {listener} has no users: set "
                              f"{key} to {PLAIN_LOGIN_MODULE} required user_<name>=\"<password>\" ...;")
        try:
            users[listener] = parse_jaas_users(text)
        except ValueError as exc:
            raise ConfigError(f"{key}: {exc}") from None
        if not users[listener]:
            raise ConfigError(f"{key}: no user_<name>=\"<password>\" entries")
    return users


def check_mechanisms(mechanisms: list[str], config: BrokerConfig) -> None:
    unknown = [m for m in mechanisms if m not in SUPPORTED_MECHANISMS]
    if unknown or not mechanisms:
        raise ConfigError(
            f"sasl.enabled.mechanisms={','.join(mechanisms)}: Lodestream implements {', '.join(SUPPORTED_MECHANISMS)}"
            + (" (GSSAPI, Kafka's default, is not implemented)" if "GSSAPI" in unknown else ""))
    if "OAUTHBEARER" in mechanisms and not config.get("sasl.oauthbearer.jwks.endpoint.url"):
        raise ConfigError("sasl.enabled.mechanisms has OAUTHBEARER: set sasl.oauthbearer.jwks.endpoint.url "
                          "(the JWKS tokens are checked against)")
