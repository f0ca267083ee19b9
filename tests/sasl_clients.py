"""The client side of SASL mechanisms, for tests that speak the exchange themselves (the real clients are
tested too: tests/test_sasl.py)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from lodestream.broker.scram import MECHANISMS, _attributes, _b64, _hmac, salted_password


class ScramClient:
    """The client's side, for tests and the CLI: the exact messages a Kafka client sends."""

    def __init__(self, mechanism: str, user: str, password: str, nonce: str | None = None) -> None:
        self.mechanism, self.user, self.password = mechanism, user, password
        self.algorithm = MECHANISMS[mechanism][1]
        self.nonce = nonce or secrets.token_urlsafe(18)
        self.client_first_bare = f"n={user.replace('=', '=3D').replace(',', '=2C')},r={self.nonce}"
        self.auth_message = b""
        self.server_key = b""

    def first(self) -> bytes:
        return f"n,,{self.client_first_bare}".encode()

    def final(self, server_first: bytes) -> bytes:
        attributes = dict(_attributes(server_first.decode(), "server-first message"))
        salt, iterations = base64.b64decode(attributes["s"]), int(attributes["i"])
        salted = salted_password(self.mechanism, self.password, salt, iterations)
        client_key = _hmac(self.algorithm, salted, b"Client Key")
        stored_key = hashlib.new(self.algorithm, client_key).digest()
        self.server_key = _hmac(self.algorithm, salted, b"Server Key")
        without_proof = f"c={_b64(b'n,,')},r={attributes['r']}"
        self.auth_message = f"{self.client_first_bare},{server_first.decode()},{without_proof}".encode()
        signature = _hmac(self.algorithm, stored_key, self.auth_message)
        return f"{without_proof},p={_b64(bytes(a ^ b for a, b in zip(client_key, signature)))}".encode()

    def verify(self, server_final: bytes) -> bool:
        expected = "v=" + _b64(_hmac(self.algorithm, self.server_key, self.auth_message))
        return hmac.compare_digest(server_final, expected.encode())
