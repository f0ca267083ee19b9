"""SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677): stored credentials and the server's side of the exchange.

The broker stores only what RFC 5802 lets a server keep (salt, iteration count, StoredKey, ServerKey), never
a password; AlterUserScramCredentials sends the salted password, from which both keys are derived here.
The exchange checks what Kafka's ScramSaslServer checks, including the final message's nonce (the
CVE-2024-56128 class: a final message echoing another exchange's nonce is refused), and compares secrets in constant
time. An unknown user gets a made-up salt and fails only at the end, so the exchange does not tell whether a
user exists. Pure logic: no I/O.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Callable

from lodestream.consensus.records import ScramCredentialRecord

# Kafka's ScramMechanism codes (AlterUserScramCredentials / DescribeUserScramCredentials) -> hash.
MECHANISMS = {"SCRAM-SHA-256": (1, "sha256"), "SCRAM-SHA-512": (2, "sha512")}
MECHANISM_BY_CODE = {code: name for name, (code, _) in MECHANISMS.items()}
MIN_ITERATIONS = 4096  # Kafka's ScramMechanism.minIterations, as RFC 7677 recommends
MAX_ITERATIONS = 16384  # Kafka's maximum: more would let an admin make every login burn seconds of CPU


class ScramError(Exception):
    """The exchange failed; the message is for the broker's log, the client gets a generic one."""


@dataclass(frozen=True, slots=True)
class ScramCredential:
    salt: bytes
    stored_key: bytes
    server_key: bytes
    iterations: int


def credential_record(user: str, mechanism: str, credential: ScramCredential) -> ScramCredentialRecord:
    """The metadata record that stores a credential (its byte fields base64)."""
    return ScramCredentialRecord(user, mechanism, _b64(credential.salt), _b64(credential.stored_key),
                                 _b64(credential.server_key), credential.iterations)


def credential_of(record: ScramCredentialRecord) -> ScramCredential:
    return ScramCredential(base64.b64decode(record.salt), base64.b64decode(record.stored_key),
                           base64.b64decode(record.server_key), record.iterations)


def _hmac(algorithm: str, key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, algorithm).digest()


def credential_from_salted_password(mechanism: str, salt: bytes, salted_password: bytes,
                                    iterations: int) -> ScramCredential:
    algorithm = MECHANISMS[mechanism][1]
    client_key = _hmac(algorithm, salted_password, b"Client Key")
    return ScramCredential(salt, hashlib.new(algorithm, client_key).digest(),
                           _hmac(algorithm, salted_password, b"Server Key"), iterations)


def salted_password(mechanism: str, password: str, salt: bytes, iterations: int) -> bytes:
    """RFC 5802's Hi(): PBKDF2 with the mechanism's HMAC."""
    return hashlib.pbkdf2_hmac(MECHANISMS[mechanism][1], password.encode(), salt, iterations)


def make_credential(mechanism: str, password: str, iterations: int = 8192,
                    salt: bytes | None = None) -> ScramCredential:
    salt = salt if salt is not None else secrets.token_bytes(32)
    return credential_from_salted_password(mechanism, salt, salted_password(mechanism, password, salt, iterations),
                                           iterations)


def verify_password(mechanism: str, credential: ScramCredential, password: str) -> bool:
    """Whether `password` is the one this credential was made from (HTTP basic auth on the REST API)."""
    derived = credential_from_salted_password(
        mechanism, credential.salt, salted_password(mechanism, password, credential.salt, credential.iterations),
        credential.iterations)
    return hmac.compare_digest(derived.stored_key, credential.stored_key)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _b64decode(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise ScramError(f"{what} is not base64") from None


def _decode_saslname(name: str) -> str:
    """RFC 5802 saslname: ',' is sent as '=2C' and '=' as '=3D'; any other '=' is malformed."""
    if "=" in name.replace("=2C", "").replace("=3D", ""):
        raise ScramError("malformed user name (bad '=' escape)")
    return name.replace("=2C", ",").replace("=3D", "=")


def _attributes(message: str, what: str) -> list[tuple[str, str]]:
    pairs = []
    for part in message.split(","):
        key, sep, value = part.partition("=")
        if not sep or len(key) != 1 or not key.isalpha():
            raise ScramError(f"malformed {what}: {part[:40]!r}")
        pairs.append((key, value))
    return pairs


class ScramExchange:
    """One client's SCRAM exchange: client-first -> server-first, client-final -> server-final.

    `lookup(user)` gives the stored credential of this mechanism, or None. `fake_key` makes an unknown
    user's salt stable (a retry sees the same one), so it cannot be told from a real user's."""

    def __init__(self, mechanism: str, lookup: Callable[[str], ScramCredential | None], fake_key: bytes) -> None:
        self.mechanism = mechanism
        self.algorithm = MECHANISMS[mechanism][1]
        self.lookup = lookup
        self.fake_key = fake_key
        self.user: str | None = None
        self._state = "first"
        self._gs2_header = ""
        self._client_first_bare = ""
        self._server_first = ""
        self._nonce = ""
        self._client_nonce = ""
        self._credential: ScramCredential | None = None

    def step(self, token: bytes) -> tuple[bytes, bool]:
        """The answer to the client's next message, and whether the exchange succeeded with it.
        Raises ScramError when it failed."""
        try:
            message = token.decode("utf-8")
        except UnicodeDecodeError:
            raise ScramError("message is not UTF-8") from None
        if self._state == "first":
            self._state = "final"
            return self._client_first(message).encode(), False
        if self._state == "final":
            self._state = "done"
            return self._client_final(message).encode(), True
        raise ScramError("message after the exchange completed")

    def _client_first(self, message: str) -> str:
        flag, sep1, rest = message.partition(",")
        authzid, sep2, bare = rest.partition(",")
        if not (sep1 and sep2):
            raise ScramError("malformed client-first message")
        if flag not in ("n", "y"):
            raise ScramError("channel binding is not supported")  # 'p=...' asks for it
        if authzid and not authzid.startswith("a="):
            raise ScramError("malformed authorization id")
        attributes = _attributes(bare, "client-first message")
        if len(attributes) < 2 or attributes[0][0] != "n" or attributes[1][0] != "r":
            raise ScramError("client-first message must start with n= and r=")
        user = _decode_saslname(attributes[0][1])
        nonce = attributes[1][1]
        if not user or not nonce or not all(0x21 <= ord(c) <= 0x7E for c in nonce):
            raise ScramError("empty user name, or a nonce that is not printable ASCII")
        if authzid and _decode_saslname(authzid[2:]) != user:
            raise ScramError(f"authorization id {authzid[2:]!r} is not the user {user!r}")
        extensions = dict(attributes[2:])
        if "m" in extensions:
            raise ScramError("mandatory extensions are not supported")
        self.user = user
        self._gs2_header = f"{flag},{authzid},"
        self._client_first_bare = bare
        self._client_nonce = nonce
        self._nonce = nonce + secrets.token_urlsafe(24)  # RFC 5802: the client's nonce, then ours
        self._credential = self.lookup(user)
        if self._credential is None:  # made up, stable per user: the exchange fails at the end, as for a bad password
            salt = _hmac("sha256", self.fake_key, user.encode())
            salt_and_iterations = _b64(salt), MIN_ITERATIONS
        else:
            salt_and_iterations = _b64(self._credential.salt), self._credential.iterations
        self._server_first = f"r={self._nonce},s={salt_and_iterations[0]},i={salt_and_iterations[1]}"
        return self._server_first

    def _client_final(self, message: str) -> str:
        without_proof, sep, proof_text = message.rpartition(",p=")
        if not sep:
            raise ScramError("client-final message has no proof")
        attributes = _attributes(without_proof, "client-final message")
        if len(attributes) < 2 or attributes[0][0] != "c" or attributes[1][0] != "r":
            raise ScramError("client-final message must start with c= and r=")
        if _b64decode(attributes[0][1], "channel binding") != self._gs2_header.encode():
            raise ScramError("channel binding data does not match the client-first message's header")
        # RFC 5802: the nonce this exchange made (client's + ours). librdkafka before 2.6.1 sends the client's
        # nonce once more in front of it; Kafka accepts that too (its CVE-2024-56128 fix checks endsWith).
        echoed = attributes[1][1].encode()
        if not (hmac.compare_digest(echoed, self._nonce.encode())
                or hmac.compare_digest(echoed, (self._client_nonce + self._nonce).encode())):
            raise ScramError("the final message's nonce is not the one this exchange made")
        proof = _b64decode(proof_text, "client proof")
        auth_message = f"{self._client_first_bare},{self._server_first},{without_proof}".encode()
        credential = self._credential
        if credential is None:
            raise ScramError(f"unknown user {self.user!r}")
        client_signature = _hmac(self.algorithm, credential.stored_key, auth_message)
        if len(proof) != len(client_signature):
            raise ScramError("client proof has the wrong length")
        client_key = bytes(a ^ b for a, b in zip(proof, client_signature))
        if not hmac.compare_digest(hashlib.new(self.algorithm, client_key).digest(), credential.stored_key):
            raise ScramError(f"wrong password for user {self.user!r}")
        return "v=" + _b64(_hmac(self.algorithm, credential.server_key, auth_message))
