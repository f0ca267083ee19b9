"""The context every handler receives with its request (broker/handlers)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable

from lodestream.protocol.messages import MessageBuilder, response_builder

from lodestream.broker.authorizer import (CLUSTER_NAME, DESCRIBABLE_OPERATIONS, Action, Operation, ResourceType,
                                          allowed_names)
from lodestream.broker.clock import Clock
from lodestream.broker.quotas import Usage
from lodestream.broker.session import Session

if TYPE_CHECKING:
    from lodestream.broker.broker import Broker


@dataclass(slots=True)
class RequestContext:
    """What a handler knows about the request beyond its body: who sent it, on which listener,
    the broker's services, the clock, and whether the sender may touch what it names."""

    broker: "Broker"  # the broker's services: image, replicas, coordinators, quotas, config
    session: Session  # the connection's listener, security protocol, principal, client software
    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None
    throttle_ms: int = 0  # quota throttle: set in the response's throttle_time, then reading pauses (KIP-219)
    close_after_response: bool = False  # the connection is closed once this response is written (failed SASL)

    @property
    def clock(self) -> Clock:
        return self.broker.clock

    @property
    def peer(self) -> str:
        return self.session.peer

    def authorize(self, operation: Operation, resource_type: ResourceType, name: str = CLUSTER_NAME) -> bool:
        """May this request's principal do `operation` on the named resource? (The cluster when unnamed.)"""
        return self.broker.authorizer.authorize(self.session, [Action(operation, resource_type, name)])[0]

    def authorize_any(self, operation: Operation, resource_type: ResourceType) -> bool:
        """May this request's principal do `operation` on some resource of this type?"""
        return self.broker.authorizer.authorize_any(self.session, operation, resource_type)

    def authorized(self, operation: Operation, resource_type: ResourceType, names: Iterable[str]) -> set[str]:
        """The names among `names` this request may do `operation` on, asked in one call."""
        return allowed_names(self.broker.authorizer, self.session, operation, resource_type, names)

    def authorized_operations(self, resource_type: ResourceType, name: str = CLUSTER_NAME) -> int:
        """Kafka's authorized-operations bit field for a resource (bit n set: operation code n allowed)."""
        operations = DESCRIBABLE_OPERATIONS[resource_type]
        answers = self.broker.authorizer.authorize(
            self.session, [Action(operation, resource_type, name) for operation in operations])
        return sum(1 << operation for operation, allowed in zip(operations, answers) if allowed)

    def throttle(self, ms: int) -> None:
        self.throttle_ms = max(self.throttle_ms, ms)

    @property
    def usage(self) -> Usage:
        return Usage(client_id=self.client_id or "", host=self.session.client_host, user=self.session.principal.name)

    @property
    def build(self) -> MessageBuilder:
        return response_builder(self.api_key, self.api_version)
