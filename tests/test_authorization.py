"""Every handler asks the authorizer for what it touches and answers Kafka's deny errors.

Allow-all is the broker's authorizer until ACLs exist (issue 17); these tests swap in an
authorizer that records what was asked and refuses it, so a handler that forgets to ask
(or ignores the answer) fails here. Requests are generated from kio's schema for every
registered API, so a new handler is covered without a new test.
"""

from __future__ import annotations

import dataclasses
import datetime
import struct
import types
import typing
import uuid

import pytest
import trio

from lodestream.broker.authorizer import DENIED, Action, Operation, ResourceType
from lodestream.broker.handlers import REGISTRY
from lodestream.broker.session import ANONYMOUS, Session
from lodestream.protocol.codec import encode_request, request_type, schema_versions
from lodestream.protocol.errors import ErrorCode
from lodestream.protocol.messages import request_builder

from inprocess_broker import start_broker
from wire_client import WireClient

NAME = "probe"  # the topic, group and transactional id every generated request names
NOT_ASKED = {17, 18, 36}  # ApiVersions and SASL: answered before authentication, touch nothing (as in Kafka)


class RefusingAuthorizer:
    """Records every action asked; refuses those `refuse` matches (everything by default)."""

    def __init__(self, refuse=lambda action: True) -> None:
        self.asked: list[tuple[Session, Action]] = []
        self.refuse = refuse

    def authorize(self, session, actions):
        self.asked.extend((session, action) for action in actions)
        return [not self.refuse(action) for action in actions]

    def authorize_any(self, session, operation, resource_type):
        action = Action(operation, resource_type, "*")
        self.asked.append((session, action))
        return not self.refuse(action)


def _sample(annotation, field_name: str, topic_id: uuid.UUID):
    """A value of a kio field's type that names the probe resources."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        (annotation,) = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    if typing.get_origin(annotation) is tuple:
        return (_sample(typing.get_args(annotation)[0], field_name, topic_id),)
    if dataclasses.is_dataclass(annotation):
        return _entity(annotation, topic_id)
    if annotation is bool:
        return False
    if isinstance(annotation, type) and issubclass(annotation, str):
        return annotation(NAME)
    if isinstance(annotation, type) and issubclass(annotation, bytes):
        return b""
    if annotation is uuid.UUID:
        return topic_id
    if isinstance(annotation, type) and issubclass(annotation, datetime.timedelta):
        return datetime.timedelta(seconds=1)
    if isinstance(annotation, type) and issubclass(annotation, datetime.datetime):
        return datetime.datetime.now(datetime.UTC)
    if isinstance(annotation, type) and issubclass(annotation, float):
        return annotation(1.0)
    if isinstance(annotation, type) and issubclass(annotation, int):
        # 1 is acks=1 for Produce, resource type "topic"-free ints elsewhere; -1 where Kafka means "none"
        return annotation(-1) if field_name in ("producer_id", "producer_epoch") else annotation(1)
    raise TypeError(f"no sample for {field_name}: {annotation!r}")


def _entity(cls, topic_id: uuid.UUID):
    hints = typing.get_type_hints(cls)
    return cls(**{f.name: _sample(hints[f.name], f.name, topic_id) for f in dataclasses.fields(cls)})


# Fields whose generated value would be refused by validation that Kafka (and we) do before
# authorization: set to what a client would send.
_OVERRIDES = {
    20: lambda b, topic_id: dict(topics=(b.DeleteTopicState(name=NAME, topic_id=uuid.UUID(int=0)),)),  # name xor id
    32: lambda b, topic_id: dict(resources=(b.DescribeConfigsResource(resource_type=2, resource_name=NAME,
                                                                      configuration_keys=None),)),
    33: lambda b, topic_id: dict(resources=(b.AlterConfigsResource(resource_type=2, resource_name=NAME, configs=()),)),
    44: lambda b, topic_id: dict(resources=(b.AlterConfigsResource(resource_type=2, resource_name=NAME, configs=()),)),
    10: lambda b, topic_id: dict(key_type=0, coordinator_keys=(NAME,)),
    3: lambda b, topic_id: dict(topics=(b.MetadataRequestTopic(topic_id=None, name=NAME),)),
    60: lambda b, topic_id: dict(endpoint_type=1),
    66: lambda b, topic_id: dict(state_filters=(), producer_id_filters=(), duration_filter=-1,
                                 transactional_id_pattern=None),
}


def _request(api_key: int, version: int, topic_id: uuid.UUID):
    request = _entity(request_type(api_key, version), topic_id)
    override = _OVERRIDES.get(api_key)
    if override is not None:
        request = dataclasses.replace(request, **override(request_builder(api_key, version), topic_id))
    return request


def _error_codes(entity) -> set[ErrorCode]:
    found = set()
    if isinstance(entity, tuple):
        for item in entity:
            found |= _error_codes(item)
    elif dataclasses.is_dataclass(entity):
        for f in dataclasses.fields(entity):
            value = getattr(entity, f.name)
            if isinstance(value, ErrorCode):
                found.add(value)
            else:
                found |= _error_codes(value)
    return found


def _newest(api_key: int) -> int:
    handler = REGISTRY[api_key]
    return min(handler.versions.stop, schema_versions(api_key).stop) - 1


async def _first_describe_transactions_error(client, request) -> ErrorCode:
    await client.send_raw(encode_request(99, request, "test"))
    frame = await client.read_frame()
    # correlation id, header tags, throttle time, compact array length (one state), then its error code
    assert struct.unpack(">i", frame[:4])[0] == 99 and frame[4] == 0 and frame[9] == 2
    return ErrorCode(struct.unpack(">h", frame[10:12])[0])


@pytest.fixture
async def probe_broker(tmp_path):
    async with trio.open_nursery() as nursery:
        running = await start_broker(nursery, tmp_path / "data", **{
            "offsets.topic.num.partitions": "1", "transaction.state.log.num.partitions": "1",
            "listeners": "PLAINTEXT://127.0.0.1:0,CONTROLLER://127.0.0.1:0"})
        client = await running.client()
        b = request_builder(19, 7)
        created = await client.request(b.CreateTopicsRequest(
            topics=(b.CreatableTopic(name=NAME, num_partitions=1, replication_factor=1, assignments=(), configs=()),),
            timeout=datetime.timedelta(seconds=30), validate_only=False))
        assert created.topics[0].error_code == ErrorCode.none
        b = request_builder(22, 5)  # a transactional id, so ListTransactions has something to filter
        initialized = await client.request(b.InitProducerIdRequest(
            transactional_id=NAME, transaction_timeout=datetime.timedelta(seconds=60), producer_id=-1,
            producer_epoch=-1))
        assert initialized.error_code == ErrorCode.none
        yield running, client, created.topics[0].topic_id
        await client.aclose()
        nursery.cancel_scope.cancel()
    running.broker.close()


@pytest.mark.parametrize("api_key", sorted(set(REGISTRY) - NOT_ASKED))
async def test_every_handler_asks_and_answers_the_deny_error(probe_broker, api_key):
    running, client, topic_id = probe_broker
    authorizer = RefusingAuthorizer()
    running.broker.authorizer = authorizer
    request = _request(api_key, _newest(api_key), topic_id)
    listener = "CONTROLLER" if REGISTRY[api_key].listeners == "controller" else "PLAINTEXT"
    if listener == "CONTROLLER":  # the metadata quorum's peers' APIs are served on the controller listener only
        controller_client = await WireClient.connect(running.broker.bound_controller_listeners[0].port)
        codes = _error_codes(await controller_client.request(request))
        await controller_client.aclose()
    elif api_key == 65:  # DescribeTransactions: kio cannot decode the -1 start time Kafka sends with an error
        codes = {await _first_describe_transactions_error(client, request)}
    else:
        codes = _error_codes(await client.request(request))
    assert authorizer.asked, f"api key {api_key}: the handler never asked the authorizer"
    session = authorizer.asked[0][0]
    assert session.principal == ANONYMOUS and session.listener_name == listener
    assert session.security_protocol == "PLAINTEXT"
    asked_types = {action.resource_type for _, action in authorizer.asked}
    denied = {DENIED[t] for t in asked_types if t in DENIED}
    # Filtering APIs (ListGroups, ListTransactions, Metadata for all topics) answer by leaving things out;
    # the rest answer the deny error of something they asked about.
    assert codes & denied or not (codes - {ErrorCode.none}), (api_key, codes, asked_types)
    if not codes & denied:
        assert api_key in (16, 66), f"api key {api_key} asked, was refused, and answered {codes}"


async def test_refusals_are_per_resource(probe_broker):
    """Only the refused topic is refused: the broker keeps answering for the others."""
    running, client, _ = probe_broker
    b = request_builder(19, 7)
    await client.request(b.CreateTopicsRequest(
        topics=(b.CreatableTopic(name="open", num_partitions=1, replication_factor=1, assignments=(), configs=()),),
        timeout=datetime.timedelta(seconds=30), validate_only=False))
    running.broker.authorizer = RefusingAuthorizer(
        refuse=lambda action: action.resource_type == ResourceType.TOPIC and action.name == NAME)
    b = request_builder(3, 12)
    response = await client.request(b.MetadataRequest(
        topics=None, allow_auto_topic_creation=False, include_topic_authorized_operations=True))
    listed = {t.name: t for t in response.topics}
    assert NAME not in listed and "open" in listed  # all topics: the refused one is left out
    assert listed["open"].topic_authorized_operations == sum(
        1 << op for op in (Operation.READ, Operation.WRITE, Operation.CREATE, Operation.DELETE, Operation.ALTER,
                           Operation.DESCRIBE, Operation.DESCRIBE_CONFIGS, Operation.ALTER_CONFIGS))
    response = await client.request(b.MetadataRequest(
        topics=(b.MetadataRequestTopic(topic_id=None, name=NAME), b.MetadataRequestTopic(topic_id=None, name="open")),
        allow_auto_topic_creation=False, include_topic_authorized_operations=False))
    assert [(t.name, t.error_code) for t in response.topics] == [
        (NAME, ErrorCode.topic_authorization_failed), ("open", ErrorCode.none)]


async def test_session_carries_the_client_software_and_quotas_use_its_principal(probe_broker):
    running, client, _ = probe_broker
    b = request_builder(18, 3)
    await client.request(b.ApiVersionsRequest(client_software_name="probe-client", client_software_version="1.2.3"))
    (connection,) = running.broker.connections
    session = connection.session
    assert (session.client_software_name, session.client_software_version) == ("probe-client", "1.2.3")
    assert session.client_host == "127.0.0.1" and session.client_port > 0
    # A user quota for the session's principal throttles this connection's produce.
    b = request_builder(49, 1)
    response = await client.request(b.AlterClientQuotasRequest(
        entries=(b.EntryData(entity=(b.EntityData(entity_type="user", entity_name=ANONYMOUS.name),),
                             ops=(b.OpData(key="request_percentage", value=0.01, remove=False),)),),
        validate_only=False))
    assert response.entries[0].error_code == ErrorCode.none
    b = request_builder(3, 12)
    throttled = 0
    for _ in range(20):
        response = await client.request(b.MetadataRequest(
            topics=(), allow_auto_topic_creation=False, include_topic_authorized_operations=False))
        throttled = max(throttled, int(response.throttle_time.total_seconds() * 1000))
        if throttled:
            break
    assert throttled > 0
