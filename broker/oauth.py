"""OAUTHBEARER tokens (KIP-255, KIP-768): a JWT is checked against the keys of a JWKS, as Kafka's
DefaultJwtValidator checks it: signature, `exp` (required), `nbf`, `iss` and `aud` when configured, with
`sasl.oauthbearer.clock.skew.seconds` of tolerance; the principal is the `sasl.oauthbearer.sub.claim.name`
claim. Anything that cannot be verified fails closed: no keys loaded yet, an unknown key id, an algorithm
that does not fit the key (never `none`, never an HMAC with a public key), a missing claim.

The JWKS comes from `sasl.oauthbearer.jwks.endpoint.url` (https://, http:// or file://), fetched at start-up
and every `sasl.oauthbearer.jwks.endpoint.refresh.ms` on a worker thread (JwksRefresher); validation itself
only reads the keys held in memory.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.request
from typing import Callable

import jwt
import trio

log = logging.getLogger(__name__)

# Algorithms a key of each type may sign with (RFC 7518); the key's own `alg`, when it has one, narrows it.
_ALGORITHMS_BY_KEY_TYPE = {
    "RSA": ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512"),
    "EC": ("ES256", "ES384", "ES512"),
    "OKP": ("EdDSA",),
}


def fetch_jwks(url: str, timeout_s: float = 10.0) -> dict[str, jwt.PyJWK]:
    """The keys of the JWKS at `url`, by key id (blocking: call it on a worker thread)."""
    if not url.startswith(("https://", "http://", "file://")):
        raise ValueError(f"sasl.oauthbearer.jwks.endpoint.url: expected https://, http:// or file://, got {url!r}")
    with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - scheme checked above
        document = json.loads(response.read(1 << 20))
    keys = {}
    for entry in document.get("keys", ()):
        if entry.get("use", "sig") != "sig" or entry.get("kty") not in _ALGORITHMS_BY_KEY_TYPE:
            continue
        try:
            keys[entry.get("kid", "")] = jwt.PyJWK(entry)
        except (jwt.exceptions.PyJWKError, jwt.exceptions.InvalidKeyError) as exc:
            log.warning("JWKS %s: key %r skipped: %s", url, entry.get("kid"), exc)
    return keys


class JwtValidator:
    def __init__(self, *, audiences: list[str], issuer: str | None, principal_claim: str, clock_skew_s: int,
                 clock: Callable[[], float] = time.time) -> None:
        self.audiences = audiences
        self.issuer = issuer
        self.principal_claim = principal_claim
        self.clock_skew_s = clock_skew_s
        self.clock = clock
        self.keys: dict[str, jwt.PyJWK] = {}  # replaced whole by the refresher

    def validate(self, token: str) -> tuple[str, int]:
        """(principal name, expiry in wall-clock ms). Raises ValueError saying why the token is refused."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.exceptions.DecodeError as exc:
            raise ValueError(f"malformed token: {exc}") from None
        keys = self.keys
        kid = header.get("kid")
        key = keys.get(kid) if kid is not None else (next(iter(keys.values())) if len(keys) == 1 else None)
        if key is None:
            raise ValueError(f"no key {kid!r} in the JWKS" if keys else "no JWKS keys loaded")
        allowed = _ALGORITHMS_BY_KEY_TYPE[key.key_type]
        if key.algorithm_name and key.algorithm_name in allowed:
            allowed = (key.algorithm_name,)
        if header.get("alg") not in allowed:
            raise ValueError(f"algorithm {header.get('alg')!r} does not fit key {kid!r} ({'/'.join(allowed)})")
        try:
            claims = jwt.decode(
                token, key.key, algorithms=list(allowed), audience=self.audiences or None, issuer=self.issuer,
                leeway=self.clock_skew_s,
                options={"require": ["exp", self.principal_claim], "verify_aud": bool(self.audiences),
                         "verify_iss": self.issuer is not None})
        except jwt.exceptions.InvalidTokenError as exc:
            raise ValueError(f"{type(exc).__name__}: {exc}") from None
        principal = claims.get(self.principal_claim)
        if not isinstance(principal, str) or not principal:
            raise ValueError(f"claim {self.principal_claim!r} is not a non-empty string")
        return principal, int(float(claims["exp"]) * 1000)


class JwksRefresher:
    """Keeps a validator's keys fresh: fetched on a worker thread now and every refresh interval; a failed
    fetch keeps the keys it had (and retries sooner)."""

    def __init__(self, validator: JwtValidator, url: str, refresh_s: float) -> None:
        self.validator, self.url, self.refresh_s = validator, url, refresh_s

    def refresh_now(self) -> bool:
        try:
            self.validator.keys = fetch_jwks(self.url)
        except (OSError, ValueError) as exc:
            log.error("OAUTHBEARER: JWKS %s not loaded (tokens are refused until it is): %s", self.url, exc)
            return False
        log.info("OAUTHBEARER: %d key(s) loaded from %s", len(self.validator.keys), self.url)
        return True

    async def run(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        loaded = await trio.to_thread.run_sync(self.refresh_now)
        task_status.started()
        while True:
            await trio.sleep(self.refresh_s if loaded else min(self.refresh_s, 10.0))
            loaded = await trio.to_thread.run_sync(self.refresh_now)
