"""Who is at the other end of a connection: the session every request's context carries.

One Session per connection, made when it is accepted. A client certificate (SSL listeners) or a SASL
exchange (SASL_* listeners, broker/sasl.py) sets the principal; otherwise the client is `User:ANONYMOUS`,
as on a Kafka PLAINTEXT listener.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class KafkaPrincipal:
    principal_type: str
    name: str

    def __str__(self) -> str:
        return f"{self.principal_type}:{self.name}"


ANONYMOUS = KafkaPrincipal("User", "ANONYMOUS")


@dataclass(slots=True)
class Session:
    listener_name: str  # e.g. PLAINTEXT, or the name given in `listeners`
    security_protocol: str  # from listener.security.protocol.map
    client_host: str
    client_port: int
    principal: KafkaPrincipal = ANONYMOUS
    controller: bool = False  # a controller listener: the metadata quorum's APIs (broker/handlers/__init__.py)
    # Sent by clients in ApiVersions v3+ (KIP-511); "unknown" as Kafka reports it before that.
    client_software_name: str = "unknown"
    client_software_version: str = "unknown"
    # SASL listeners: nothing but ApiVersions, SaslHandshake and SaslAuthenticate until this is True.
    authenticated: bool = True
    sasl_mechanism: str | None = None  # chosen by SaslHandshake
    sasl_exchange: Any = None  # the mechanism's exchange in progress (broker/sasl.py), between the two APIs
    sasl_raw_tokens: bool = False  # after a SaslHandshake v0: the exchange's messages come as bare frames
    session_expires_at: float | None = None  # trio time the SASL session ends (connections.max.reauth.ms, token exp)

    @property
    def described_host(self) -> str:
        """The client address as Kafka describes group members: InetAddress.toString(), '/<ip>'."""
        return "/" + self.client_host

    @property
    def peer(self) -> str:
        return f"{self.client_host}:{self.client_port}"
