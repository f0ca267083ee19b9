"""Authorization: every handler asks before it touches a topic, group, transactional id or the cluster.

The names and codes are Kafka's (AclOperation, ResourceType), so ACLs can later be
stored and described in Kafka's own terms. The broker's authorizer allows everything
until ACLs exist; handlers already ask and already answer Kafka's deny errors, so
adding ACLs (issue 17) changes this module and nothing in the handlers.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol, Sequence

from lodestream.protocol.errors import ErrorCode

from lodestream.broker.session import Session


class Operation(enum.IntEnum):
    """Kafka's AclOperation codes."""

    READ = 3
    WRITE = 4
    CREATE = 5
    DELETE = 6
    ALTER = 7
    DESCRIBE = 8
    CLUSTER_ACTION = 9
    DESCRIBE_CONFIGS = 10
    ALTER_CONFIGS = 11
    IDEMPOTENT_WRITE = 12
    CREATE_TOKENS = 13
    DESCRIBE_TOKENS = 14


class ResourceType(enum.IntEnum):
    """Kafka's ResourceType codes."""

    TOPIC = 2
    GROUP = 3
    CLUSTER = 4
    TRANSACTIONAL_ID = 5
    DELEGATION_TOKEN = 6
    USER = 7


CLUSTER_NAME = "kafka-cluster"  # the one cluster resource's name, as in Kafka

# What a request gets for a resource it may not touch.
DENIED: dict[ResourceType, ErrorCode] = {
    ResourceType.TOPIC: ErrorCode.topic_authorization_failed,
    ResourceType.GROUP: ErrorCode.group_authorization_failed,
    ResourceType.CLUSTER: ErrorCode.cluster_authorization_failed,
    ResourceType.TRANSACTIONAL_ID: ErrorCode.transactional_id_authorization_failed,
    ResourceType.DELEGATION_TOKEN: ErrorCode.delegation_token_authorization_failed,
}

# The operations an "authorized operations" bit field (Metadata, DescribeGroups, DescribeCluster) covers.
DESCRIBABLE_OPERATIONS: dict[ResourceType, tuple[Operation, ...]] = {
    ResourceType.TOPIC: (Operation.READ, Operation.WRITE, Operation.CREATE, Operation.DELETE, Operation.ALTER,
                         Operation.DESCRIBE, Operation.DESCRIBE_CONFIGS, Operation.ALTER_CONFIGS),
    ResourceType.GROUP: (Operation.READ, Operation.DELETE, Operation.DESCRIBE, Operation.DESCRIBE_CONFIGS,
                         Operation.ALTER_CONFIGS),
    ResourceType.CLUSTER: (Operation.CREATE, Operation.ALTER, Operation.DESCRIBE, Operation.CLUSTER_ACTION,
                           Operation.DESCRIBE_CONFIGS, Operation.ALTER_CONFIGS, Operation.IDEMPOTENT_WRITE,
                           Operation.CREATE_TOKENS, Operation.DESCRIBE_TOKENS),
}


@dataclass(frozen=True, slots=True)
class Action:
    operation: Operation
    resource_type: ResourceType
    name: str


class Authorizer(Protocol):
    def authorize(self, session: Session, actions: Sequence[Action]) -> list[bool]:
        """One answer per action, in order (Kafka's Authorizer.authorize)."""

    def authorize_any(self, session: Session, operation: Operation, resource_type: ResourceType) -> bool:
        """May the principal do `operation` on at least one resource of this type? (authorizeByResourceType)"""


class AllowAllAuthorizer:
    """Until ACLs exist: every principal may do everything (Kafka without an authorizer configured)."""

    def authorize(self, session: Session, actions: Sequence[Action]) -> list[bool]:
        return [True] * len(actions)

    def authorize_any(self, session: Session, operation: Operation, resource_type: ResourceType) -> bool:
        return True
