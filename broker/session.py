"""Who is at the other end of a connection: the session every request's context carries.

One Session per connection, made when it is accepted. Authentication (TLS client
certificates, SASL) will set the principal; until then every client is
`User:ANONYMOUS`, as on a Kafka PLAINTEXT listener.
"""

from __future__ import annotations

from dataclasses import dataclass


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

    @property
    def described_host(self) -> str:
        """The client address as Kafka describes group members: InetAddress.toString(), '/<ip>'."""
        return "/" + self.client_host

    @property
    def peer(self) -> str:
        return f"{self.client_host}:{self.client_port}"
