"""Authorization: every handler asks before it touches a topic, group, transactional id or the cluster.

The names and codes are Kafka's (AclOperation, ResourceType, PatternType, AclPermissionType). Without
`authorizer.class.name` every principal may do everything (AllowAllAuthorizer, as Kafka without an
authorizer). With it, AclAuthorizer decides as Kafka's StandardAuthorizer does, from the ACLs in the metadata
image (AclRecords, written by CreateAcls and DeleteAcls):

- a super user (`super.users`) may do anything;
- the ACLs that apply to a resource are its LITERAL ones, the LITERAL `*` ones of its type, and the PREFIXED
  ones whose name starts its name; of those, the ones for the principal (or `User:*`), the client's host (or
  `*`) and the operation (or ALL) decide: any DENY denies; otherwise any ALLOW allows;
- an ALLOW of READ, WRITE, DELETE or ALTER also allows DESCRIBE, and one of ALTER_CONFIGS also
  DESCRIBE_CONFIGS (a DENY implies nothing);
- with no ACL on the resource at all, `allow.everyone.if.no.acl.found` decides (default: denied); with ACLs on
  it that do not match, denied.
Requests on a controller listener are the cluster's own and are not checked (docs/security.md).
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Protocol, Sequence

from lodestream.consensus.records import AclRecord
from lodestream.protocol.errors import ErrorCode

from lodestream.broker.session import Session


class Operation(enum.IntEnum):
    """Kafka's AclOperation codes."""

    ANY = 1  # in filters only
    ALL = 2
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

    ANY = 1  # in filters only
    TOPIC = 2
    GROUP = 3
    CLUSTER = 4
    TRANSACTIONAL_ID = 5
    DELEGATION_TOKEN = 6
    USER = 7


class PatternType(enum.IntEnum):
    ANY = 1  # filters: any pattern type, the name as given
    MATCH = 2  # filters: every ACL that applies to the named resource
    LITERAL = 3
    PREFIXED = 4


class Permission(enum.IntEnum):
    ANY = 1  # in filters only
    DENY = 2
    ALLOW = 3


CLUSTER_NAME = "kafka-cluster"  # the one cluster resource's name, as in Kafka
WILDCARD = "*"  # a LITERAL resource name, a principal name or a host that matches every one
# authorizer.class.name values that turn ACLs on: Kafka's KRaft authorizer, and its older ZooKeeper one.
AUTHORIZER_CLASS_NAMES = ("org.apache.kafka.metadata.authorizer.StandardAuthorizer",
                          "kafka.security.authorizer.AclAuthorizer")

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


def allowed_names(authorizer: Authorizer, session: Session, operation: Operation, resource_type: ResourceType,
                  names: Iterable[str]) -> set[str]:
    """The names among `names` the session may do `operation` on, asked in one call (listings show only those)."""
    unique = list(dict.fromkeys(names))
    answers = authorizer.authorize(session, [Action(operation, resource_type, name) for name in unique])
    return {name for name, allowed in zip(unique, answers) if allowed}


class AllowAllAuthorizer:
    """Until ACLs exist: every principal may do everything (Kafka without an authorizer configured)."""

    def authorize(self, session: Session, actions: Sequence[Action]) -> list[bool]:
        return [True] * len(actions)

    def authorize_any(self, session: Session, operation: Operation, resource_type: ResourceType) -> bool:
        return True


@dataclass(frozen=True, slots=True, order=True)
class Acl:
    """One ACL binding (Kafka's AclBinding): a resource pattern and an access control entry."""

    resource_type: int
    resource_name: str
    pattern_type: int
    principal: str
    host: str
    operation: int
    permission: int


def acl_of(record) -> Acl:
    """The binding of a metadata AclRecord (without its id)."""
    return Acl(record.resource_type, record.resource_name, record.pattern_type, record.principal, record.host,
               record.operation, record.permission)


def acl_record(acl: Acl) -> AclRecord:
    """A new metadata record storing `acl`, under a new id."""
    return AclRecord(uuid.uuid4(), acl.resource_type, acl.resource_name, acl.pattern_type, acl.principal, acl.host,
                     acl.operation, acl.permission)


# An ALLOW of one of these operations also allows DESCRIBE / DESCRIBE_CONFIGS (never so for a DENY).
_IMPLIES_DESCRIBE = frozenset({Operation.DESCRIBE, Operation.READ, Operation.WRITE, Operation.DELETE, Operation.ALTER})
_IMPLIES_DESCRIBE_CONFIGS = frozenset({Operation.DESCRIBE_CONFIGS, Operation.ALTER_CONFIGS})


def acl_decides(acl: Acl, principals: tuple[str, str], host: str, operation: int) -> int | None:
    """What `acl` says about this principal on this host doing `operation` (its resource already applies):
    Permission.ALLOW, Permission.DENY, or None when it does not speak to them."""
    if acl.principal not in principals or acl.host not in (WILDCARD, host):
        return None
    if acl.operation != Operation.ALL:
        if acl.permission == Permission.ALLOW and operation == Operation.DESCRIBE:
            matches = acl.operation in _IMPLIES_DESCRIBE
        elif acl.permission == Permission.ALLOW and operation == Operation.DESCRIBE_CONFIGS:
            matches = acl.operation in _IMPLIES_DESCRIBE_CONFIGS
        else:
            matches = acl.operation == operation
        if not matches:
            return None
    return acl.permission


class AclIndex:
    """The image's ACLs, arranged for lookups: LITERAL by (type, name), PREFIXED by type."""

    def __init__(self, acls: Iterable[Acl]) -> None:
        self.literal: dict[tuple[int, str], list[Acl]] = {}
        self.prefixed: dict[int, list[Acl]] = {}
        self.by_type: dict[int, list[Acl]] = {}
        for acl in acls:
            if acl.pattern_type == PatternType.PREFIXED:
                self.prefixed.setdefault(acl.resource_type, []).append(acl)
            else:
                self.literal.setdefault((acl.resource_type, acl.resource_name), []).append(acl)
            self.by_type.setdefault(acl.resource_type, []).append(acl)

    def applying_to(self, resource_type: int, name: str) -> list[Acl]:
        """Every ACL whose pattern covers the resource."""
        acls = list(self.literal.get((resource_type, name), ()))
        if name != WILDCARD:
            acls += self.literal.get((resource_type, WILDCARD), ())
        acls += (acl for acl in self.prefixed.get(resource_type, ()) if name.startswith(acl.resource_name))
        return acls


class AclAuthorizer:
    """Kafka's StandardAuthorizer rules over the image's ACLs (rebuilt into an index when they change)."""

    def __init__(self, acls: Callable[[], Mapping[object, Acl]], super_users: frozenset[str],
                 allow_if_no_acl: bool) -> None:
        self._acls = acls  # the image's ACLs by id (the image's own mapping: replaced whole on a change)
        self.super_users = super_users
        self.allow_if_no_acl = allow_if_no_acl
        self._index_of: tuple[object, AclIndex] | None = None

    def _index(self) -> AclIndex:
        acls = self._acls()
        if self._index_of is None or self._index_of[0] is not acls:
            self._index_of = (acls, AclIndex(acls.values()))
        return self._index_of[1]

    def authorize(self, session: Session, actions: Sequence[Action]) -> list[bool]:
        principal = str(session.principal)
        if principal in self.super_users or session.controller:
            # Controller listeners carry the cluster's own traffic (PLAINTEXT, on a private network:
            # docs/security.md); what brokers forward there arrives in an Envelope with the client's principal.
            return [True] * len(actions)
        index = self._index()
        principals = (principal, f"{session.principal.principal_type}:{WILDCARD}")
        return [self._decide(index.applying_to(action.resource_type, action.name), principals, session.client_host,
                             action.operation) for action in actions]

    def _decide(self, acls: list[Acl], principals: tuple[str, str], host: str, operation: int) -> bool:
        allowed = False
        for acl in acls:
            verdict = acl_decides(acl, principals, host, operation)
            if verdict == Permission.DENY:
                return False
            allowed = allowed or verdict == Permission.ALLOW
        return allowed or (not acls and self.allow_if_no_acl)

    def authorize_any(self, session: Session, operation: Operation, resource_type: ResourceType) -> bool:
        """Kafka's Authorizer.authorizeByResourceType: allowed if some ALLOW (for this principal or `User:*`,
        host or `*`, this operation or ALL) names a resource that no DENY of the same kind covers."""
        # As Kafka: first a made-up resource name, which settles super users and allow.everyone.if.no.acl.found.
        if self.authorize(session, [Action(operation, resource_type, "hardcode")])[0]:
            return True
        principals = (str(session.principal), f"{session.principal.principal_type}:{WILDCARD}")
        deny_literal, deny_prefixed, allow_literal, allow_prefixed = set(), set(), set(), set()
        for acl in self._index().by_type.get(resource_type, ()):
            if acl.principal not in principals or acl.host not in (WILDCARD, session.client_host) \
                    or acl.operation not in (operation, Operation.ALL):
                continue
            prefixed = acl.pattern_type == PatternType.PREFIXED
            if acl.permission == Permission.DENY:
                (deny_prefixed if prefixed else deny_literal).add(acl.resource_name)
            else:
                (allow_prefixed if prefixed else allow_literal).add(acl.resource_name)
        if WILDCARD in deny_literal:
            return False
        if WILDCARD in allow_literal:
            return True

        def denied(name: str, prefixed: bool) -> bool:
            return (not prefixed and name in deny_literal) or any(name.startswith(p) for p in deny_prefixed)

        return any(not denied(name, True) for name in allow_prefixed) or \
            any(not denied(name, False) for name in allow_literal)


def parse_super_users(value: str) -> frozenset[str]:
    """super.users: `User:alice;User:bob` (semicolons, as in Kafka)."""
    users = frozenset(item.strip() for item in value.split(";") if item.strip())
    for user in users:
        if ":" not in user:
            raise ValueError(f"{user!r} is not Type:name (e.g. User:admin)")
    return users


@dataclass(frozen=True, slots=True)
class AclFilter:
    """Kafka's AclBindingFilter: None (or ANY) fields match everything; PatternType.MATCH matches the ACLs
    that apply to the named resource."""

    resource_type: int
    resource_name: str | None
    pattern_type: int
    principal: str | None
    host: str | None
    operation: int
    permission: int

    def matches(self, acl: Acl) -> bool:
        if self.resource_type != ResourceType.ANY and acl.resource_type != self.resource_type:
            return False
        if self.pattern_type == PatternType.MATCH:
            if self.resource_name is not None and not (
                    (acl.pattern_type == PatternType.LITERAL and acl.resource_name in (self.resource_name, WILDCARD))
                    or (acl.pattern_type == PatternType.PREFIXED and self.resource_name.startswith(acl.resource_name))):
                return False
        else:
            if self.pattern_type != PatternType.ANY and acl.pattern_type != self.pattern_type:
                return False
            if self.resource_name is not None and acl.resource_name != self.resource_name:
                return False
        return ((self.principal is None or acl.principal == self.principal)
                and (self.host is None or acl.host == self.host)
                and (self.operation == Operation.ANY or acl.operation == self.operation)
                and (self.permission == Permission.ANY or acl.permission == self.permission))

    def problem(self) -> str | None:
        """Why Kafka refuses this filter, or None."""
        for value, enum_type, what in ((self.resource_type, ResourceType, "resource type"),
                                       (self.pattern_type, PatternType, "pattern type"),
                                       (self.operation, Operation, "operation"),
                                       (self.permission, Permission, "permission type")):
            if value not in enum_type._value2member_map_:
                return f"Unknown {what} {value}"
        return None


def acl_problem(acl: Acl) -> str | None:
    """Why Kafka's CreateAcls refuses this ACL (INVALID_REQUEST), or None."""
    if acl.resource_type not in ResourceType._value2member_map_ or acl.resource_type == ResourceType.ANY:
        return f"Invalid resource type {acl.resource_type}"
    if acl.pattern_type not in (PatternType.LITERAL, PatternType.PREFIXED):
        return f"Invalid pattern type {acl.pattern_type}: LITERAL or PREFIXED"
    if acl.operation not in Operation._value2member_map_ or acl.operation == Operation.ANY:
        return f"Invalid operation {acl.operation}"
    if acl.permission not in (Permission.ALLOW, Permission.DENY):
        return f"Invalid permission type {acl.permission}"
    if not acl.resource_name:
        return "Resource name must not be empty"
    if acl.resource_type == ResourceType.CLUSTER and acl.resource_name != CLUSTER_NAME:
        return f"The only valid name for the CLUSTER resource is {CLUSTER_NAME}"
    principal_type, sep, name = acl.principal.partition(":")
    if not sep or not principal_type or not name:
        return f"Could not parse principal from `{acl.principal}` (no colon is present separating the principal " \
               "type from the principal name)"
    if not acl.host:
        return "Host must not be empty (use * for any host)"
    return None
