"""ACLs (broker/authorizer.py, docs/security.md).

The authorizer is checked against an independent model of Kafka's rules (the StandardAuthorizer's, written
here from its documentation: patterns, DENY precedence, implied DESCRIBE, hosts, `User:*`, super users and
allow.everyone.if.no.acl.found) over 10,000 generated ACL sets and questions; a planted bug is caught by the
same property. CreateAcls, DescribeAcls and DeleteAcls are then used by a real admin client, and what they
write is enforced on a real client's requests.
"""

from __future__ import annotations

import uuid
from types import MappingProxyType

import pytest
import trio
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType as CkResourceType,
)
from hypothesis import HealthCheck, given, settings, strategies as st

from inprocess_broker import start_broker
from kafka_reads import read_values
from lodestream.broker.authorizer import (
    AUTHORIZER_CLASS_NAMES,
    Acl,
    AclAuthorizer,
    Action,
    Operation,
    PatternType,
    Permission,
    ResourceType,
)
from lodestream.broker.session import KafkaPrincipal, Session

NAMES = ("a", "ab", "abc", "b", "ba", "*")
PRINCIPALS = ("User:alice", "User:bob", "User:*")
HOSTS = ("*", "10.0.0.1", "10.0.0.2")
OPERATIONS = [op for op in Operation if op != Operation.ANY]
TYPES = (ResourceType.TOPIC, ResourceType.GROUP)


def model_allows(acls, super_users, allow_if_none, principal, host, operation, resource_type, name) -> bool:
    """Kafka's documented rules, one by one."""
    if principal in super_users:
        return True
    on_resource = [acl for acl in acls if acl.resource_type == resource_type and (
        (acl.pattern_type == PatternType.LITERAL and acl.resource_name in (name, "*"))
        or (acl.pattern_type == PatternType.PREFIXED and name.startswith(acl.resource_name)))]
    if not on_resource:
        return allow_if_none
    who = [acl for acl in on_resource if acl.principal in (principal, "User:*") and acl.host in ("*", host)]
    implied = {Operation.DESCRIBE: {Operation.READ, Operation.WRITE, Operation.DELETE, Operation.ALTER},
               Operation.DESCRIBE_CONFIGS: {Operation.ALTER_CONFIGS}}.get(operation, set())
    if any(acl.permission == Permission.DENY and acl.operation in (Operation.ALL, operation) for acl in who):
        return False
    return any(acl.permission == Permission.ALLOW and acl.operation in {Operation.ALL, operation, *implied}
               for acl in who)


# Every ACL over small alphabets (so that patterns overlap), drawn whole: one draw per ACL keeps 10,000 examples fast.
ALL_ACLS = [Acl(resource_type, name, pattern, principal, host, operation, permission)
            for resource_type in TYPES for name in NAMES for pattern in (PatternType.LITERAL, PatternType.PREFIXED)
            for principal in PRINCIPALS for host in HOSTS for operation in OPERATIONS
            for permission in (Permission.ALLOW, Permission.DENY)
            if not (pattern == PatternType.PREFIXED and name == "*")]
acl_strategy = st.sampled_from(ALL_ACLS)

# Every question, drawn whole too: (principal, host, operation, resource type, name).
ALL_QUESTIONS = [(principal, host, operation, resource_type, name)
                 for principal in ("User:alice", "User:bob") for host in ("10.0.0.1", "10.0.0.2")
                 for operation in OPERATIONS for resource_type in TYPES for name in NAMES[:-1]]
question = st.sampled_from(ALL_QUESTIONS)


def check_against_model(authorizer_class, acls, super_users, allow_if_none, questions) -> None:
    image_acls = MappingProxyType({uuid.UUID(int=index): acl for index, acl in enumerate(acls)})
    authorizer = authorizer_class(lambda: image_acls, frozenset(super_users), allow_if_none)
    for principal, host, operation, resource_type, name in questions:
        session = Session("SASL_SSL", "SASL_SSL", host, 5000, principal=KafkaPrincipal(*principal.split(":")))
        got = authorizer.authorize(session, [Action(operation, resource_type, name)])[0]
        expected = model_allows(acls, super_users, allow_if_none, principal, host, operation, resource_type, name)
        assert got == expected, (acls, super_users, allow_if_none, principal, host, operation, resource_type, name)


ACL_SETS = dict(acls=st.lists(acl_strategy, max_size=8),
                super_users=st.sampled_from((frozenset(), frozenset({"User:alice"}))),
                allow_if_none=st.booleans(), questions=st.lists(question, min_size=1, max_size=6))


@settings(max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(**ACL_SETS)
def test_the_authorizer_decides_as_the_model_of_kafkas_rules(acls, super_users, allow_if_none, questions):
    check_against_model(AclAuthorizer, acls, super_users, allow_if_none, questions)


class AllowWinsAuthorizer(AclAuthorizer):
    """A planted bug: an ALLOW outranks a DENY."""

    def _decide(self, acls, principals, host, operation):
        allowed = super()._decide([acl for acl in acls if acl.permission == Permission.ALLOW], principals, host,
                                  operation)
        return allowed or super()._decide(acls, principals, host, operation)


def test_the_model_test_catches_a_planted_bug():
    @settings(max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
    @given(**ACL_SETS)
    def against_the_bug(acls, super_users, allow_if_none, questions):
        check_against_model(AllowWinsAuthorizer, acls, super_users, allow_if_none, questions)

    with pytest.raises(AssertionError):
        against_the_bug()


def test_authorize_any_as_kafkas_authorize_by_resource_type():
    def allowed(*acls: Acl, super_users=frozenset()) -> bool:
        image_acls = MappingProxyType({uuid.UUID(int=index): acl for index, acl in enumerate(acls)})
        session = Session("SASL_SSL", "SASL_SSL", "10.0.0.1", 5000, principal=KafkaPrincipal("User", "alice"))
        return AclAuthorizer(lambda: image_acls, super_users, False).authorize_any(
            session, Operation.WRITE, ResourceType.TOPIC)

    def acl(name, pattern=PatternType.LITERAL, permission=Permission.ALLOW, principal="User:alice"):
        return Acl(ResourceType.TOPIC, name, pattern, principal, "*", Operation.WRITE, permission)

    assert not allowed()
    assert allowed(super_users=frozenset({"User:alice"}))
    assert allowed(acl("orders"))
    assert not allowed(acl("orders"), acl("orders", permission=Permission.DENY))
    assert not allowed(acl("orders"), acl("ord", PatternType.PREFIXED, Permission.DENY))
    assert allowed(acl("orders", PatternType.PREFIXED), acl("orders", permission=Permission.DENY))
    assert not allowed(acl("orders", PatternType.PREFIXED), acl("or", PatternType.PREFIXED, Permission.DENY))
    assert not allowed(acl("orders"), acl("*", permission=Permission.DENY))
    assert allowed(acl("*", principal="User:*"))
    assert not allowed(acl("orders", principal="User:bob"))


# -- the ACL APIs and their enforcement, with real clients ------------------------------------------------

USERS_JAAS = ('org.apache.kafka.common.security.plain.PlainLoginModule required user_admin="admin-secret" '
              'user_alice="alice-secret" user_bob="bob-secret";')
DEADLINE_S = 30


@pytest.fixture
async def acl_broker(tmp_path):
    async with trio.open_nursery() as nursery:
        running = await start_broker(nursery, tmp_path / "data", **{
            "listeners": "SASL_PLAINTEXT://127.0.0.1:0", "sasl.enabled.mechanisms": "PLAIN",
            "sasl.jaas.config": USERS_JAAS, "authorizer.class.name": AUTHORIZER_CLASS_NAMES[0],
            "super.users": "User:admin", "offsets.topic.num.partitions": "1"})
        yield running
        nursery.cancel_scope.cancel()
    running.broker.close()


def as_user(running, user: str) -> dict:
    return {"bootstrap.servers": f"127.0.0.1:{running.port}", "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "PLAIN", "sasl.username": user, "sasl.password": f"{user}-secret"}


def produce_error(settings: dict, topic: str):
    """None when the record was written, else the delivery error's code."""
    reports = []
    producer = Producer({**settings, "message.timeout.ms": 10_000})
    producer.produce(topic, b"value", on_delivery=lambda error, _message: reports.append(error))
    producer.flush(DEADLINE_S)
    assert reports, "no delivery report"
    return None if reports[0] is None else reports[0].code()


def acl_session(running) -> None:
    admin = AdminClient(as_user(running, "admin"))
    for future in admin.create_topics([NewTopic(name, 1, 1) for name in ("orders", "secret")]).values():
        future.result(DEADLINE_S)
    grants = [
        AclBinding(CkResourceType.TOPIC, "orders", ResourcePatternType.LITERAL, "User:alice", "*",
                   AclOperation.WRITE, AclPermissionType.ALLOW),
        AclBinding(CkResourceType.TOPIC, "orders", ResourcePatternType.LITERAL, "User:alice", "*",
                   AclOperation.READ, AclPermissionType.ALLOW),
        AclBinding(CkResourceType.GROUP, "alice-", ResourcePatternType.PREFIXED, "User:alice", "*",
                   AclOperation.READ, AclPermissionType.ALLOW),
    ]
    for future in admin.create_acls(grants).values():
        future.result(DEADLINE_S)
    listed = admin.describe_acls(AclBindingFilter(CkResourceType.ANY, None, ResourcePatternType.ANY, None, None,
                                                  AclOperation.ANY, AclPermissionType.ANY)).result(DEADLINE_S)
    assert sorted(map(str, listed)) == sorted(map(str, grants))

    alice, bob = as_user(running, "alice"), as_user(running, "bob")
    assert produce_error(alice, "orders") is None
    assert produce_error(alice, "secret") == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert read_values({**alice, "group.id": "alice-readers"}, "orders", 1) == [b"value"]
    assert set(AdminClient(alice).list_topics(timeout=DEADLINE_S).topics) == {"orders"}  # the rest is hidden
    assert set(AdminClient(bob).list_topics(timeout=DEADLINE_S).topics) == set()
    assert produce_error(bob, "orders") == KafkaError.TOPIC_AUTHORIZATION_FAILED
    with pytest.raises(KafkaException) as refused:  # only super users (or CLUSTER ALTER) may change ACLs
        alice_admin = AdminClient(alice)
        alice_admin.create_acls(grants[:1])[grants[0]].result(DEADLINE_S)
    assert refused.value.args[0].code() == KafkaError.CLUSTER_AUTHORIZATION_FAILED

    deleted = admin.delete_acls([AclBindingFilter(CkResourceType.TOPIC, "orders", ResourcePatternType.MATCH,
                                                  "User:alice", None, AclOperation.WRITE,
                                                  AclPermissionType.ANY)])
    assert [str(acl) for future in deleted.values() for acl in future.result(DEADLINE_S)] == [str(grants[0])]
    assert produce_error(alice, "orders") == KafkaError.TOPIC_AUTHORIZATION_FAILED
    with pytest.raises(KafkaException) as invalid:
        bad = AclBinding(CkResourceType.TOPIC, "x", ResourcePatternType.LITERAL, "alice", "*",
                         AclOperation.READ, AclPermissionType.ALLOW)
        admin.create_acls([bad])[bad].result(DEADLINE_S)
    assert invalid.value.args[0].code() == KafkaError.INVALID_REQUEST


async def test_acls_created_described_deleted_and_enforced_with_confluent_kafka(acl_broker):
    await trio.to_thread.run_sync(acl_session, acl_broker)
    assert len(acl_broker.broker.image.acls) == 2

