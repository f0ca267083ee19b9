"""Namespaces (broker/namespaces.py, admin/namespaces.py, docs/security.md): a namespace's defaults apply to
the topics Kafka clients create in it, its ACLs are granted once for all its topics, Kafka clients see only
topic names, and the controller refuses what is not a namespace change."""

from __future__ import annotations

import datetime
import uuid


import httpx
import pytest
import trio
from confluent_kafka import KafkaError, Producer
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from inprocess_broker import start_broker
from lodestream.admin.rest import create_app
from lodestream.broker.authorizer import AUTHORIZER_CLASS_NAMES
from lodestream.consensus.records import TopicRecord, encode_records
from lodestream.protocol.errors import ErrorCode
from lodestream.protocol.lodestream_apis import UpdateAdminRecordsRequest
from lodestream.protocol.messages import request_builder
from record_batches import value_batch
from wire_client import WireClient

USERS = ('org.apache.kafka.common.security.plain.PlainLoginModule required user_alice="alice-secret";')
DEADLINE_S = 30


@pytest.fixture
async def namespaced(tmp_path):
    """PLAINTEXT for the operator (User:ANONYMOUS, a super user here), SASL_PLAINTEXT for alice; REST in-process."""
    async with trio.open_nursery() as nursery:
        running = await start_broker(nursery, tmp_path / "data", **{
            "listeners": "PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0,CONTROLLER://127.0.0.1:0",
            "sasl.enabled.mechanisms": "PLAIN", "sasl.jaas.config": USERS,
            "authorizer.class.name": AUTHORIZER_CLASS_NAMES[0], "super.users": "User:ANONYMOUS"})
        transport = httpx.ASGITransport(app=create_app(running.broker), client=("127.0.0.1", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://lodestream") as http:
            yield running, http, f"/v3/clusters/{running.broker.cluster_id}"
        nursery.cancel_scope.cancel()
    running.broker.close()


def ports(running) -> dict[str, int]:
    return {b.name: b.port for b in running.broker.bound_listeners}


def kafka_side(running) -> None:
    operator = AdminClient({"bootstrap.servers": f"127.0.0.1:{ports(running)['PLAINTEXT']}"})
    for future in operator.create_topics([NewTopic("payments.orders", -1), NewTopic("other", -1)]).values():
        future.result(DEADLINE_S)
    metadata = operator.list_topics(timeout=DEADLINE_S)
    assert len(metadata.topics["payments.orders"].partitions) == 3  # the namespace's num.partitions
    assert len(metadata.topics["other"].partitions) == 1
    resource = ConfigResource(ConfigResource.Type.TOPIC, "payments.orders")
    configs = operator.describe_configs([resource])[resource].result(DEADLINE_S)
    assert configs["retention.ms"].value == "3600000"
    explicit = NewTopic("payments.audit", 1, config={"retention.ms": "-1"})  # what the request gives wins
    operator.create_topics([explicit])["payments.audit"].result(DEADLINE_S)

    alice = {"bootstrap.servers": f"127.0.0.1:{ports(running)['SASL_PLAINTEXT']}", "security.protocol":
             "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN", "sasl.username": "alice", "sasl.password": "alice-secret"}
    assert set(AdminClient(alice).list_topics(timeout=DEADLINE_S).topics) == {"payments.orders", "payments.audit"}
    for topic, expected in (("payments.orders", None), ("other", KafkaError.TOPIC_AUTHORIZATION_FAILED)):
        reports = []
        producer = Producer({**alice, "message.timeout.ms": 10_000})
        producer.produce(topic, b"v", on_delivery=lambda error, _message: reports.append(error))
        producer.flush(DEADLINE_S)
        assert (reports[0].code() if reports[0] else None) == expected, (topic, reports)


async def test_a_namespace_gives_its_topics_defaults_and_acls(namespaced):
    running, http, cluster = namespaced
    created = await http.post(f"{cluster}/namespaces", json={
        "name": "payments", "defaults": {"retention.ms": "3600000", "num.partitions": "3"}})
    assert created.status_code == 201, created.text
    for bad in ({"name": "bad name"}, {"name": "x", "defaults": {"retention.ms": "soon"}},
                {"name": "y", "defaults": {"num.partitions": "0"}}, {"name": "payments"}):
        refused = await http.post(f"{cluster}/namespaces", json=bad)
        assert refused.status_code == 400, (bad, refused.text)
    granted = await http.post(f"{cluster}/namespaces/payments/acls", json={
        "principal": "User:alice", "operations": ["WRITE", "DESCRIBE"]})
    assert granted.status_code == 201, granted.text
    await trio.to_thread.run_sync(kafka_side, running)

    described = (await http.get(f"{cluster}/namespaces/payments")).json()
    assert described["topics"] == ["payments.audit", "payments.orders"]
    assert {(a["operation"], a["principal"]) for a in described["acls"]} == {("WRITE", "User:alice"),
                                                                             ("DESCRIBE", "User:alice")}
    assert (await http.delete(f"{cluster}/namespaces/payments")).status_code == 400  # it still has topics
    assert [n["name"] for n in (await http.get(f"{cluster}/namespaces")).json()["data"]] == ["payments"]
    assert len(running.broker.image.acls) == 2


async def test_the_controller_refuses_what_is_not_a_namespace_change(namespaced):
    running, _, _ = namespaced
    client = await WireClient.connect(running.broker.bound_controller_listeners[0].port)
    response = await client.request(UpdateAdminRecordsRequest(records=encode_records([TopicRecord("sneaky", uuid.uuid4())])))
    assert response.error_code == ErrorCode.invalid_request and "not a namespace change" in response.error_message
    assert running.broker.image.topic("sneaky") is None
    await client.aclose()


async def test_a_namespaces_byte_rates_throttle_all_its_clients_together(namespaced):
    """producer_byte_rate / consumer_byte_rate of a namespace: bytes per second into and out of all its topics,
    whoever sends them (two client ids here share it); topics outside it are not charged."""
    running, http, cluster = namespaced
    created = await http.post(f"{cluster}/namespaces", json={"name": "metered", "defaults": {
        "producer_byte_rate": "100000", "consumer_byte_rate": "100000"}})
    assert created.status_code == 201, created.text
    assert (await http.post(f"{cluster}/namespaces", json={"name": "x", "defaults": {
        "producer_byte_rate": "-1"}})).status_code == 400
    client = await WireClient.connect(ports(running)["PLAINTEXT"])
    b = request_builder(19, 7)
    await client.request(b.CreateTopicsRequest(topics=tuple(
        b.CreatableTopic(name=name, num_partitions=1, replication_factor=1, assignments=(), configs=())
        for name in ("metered.events", "free")), timeout=datetime.timedelta(seconds=30), validate_only=False))

    async def produce(topic: str, client_id: str, size: int):
        b = request_builder(0, 9)
        response = await client.request(b.ProduceRequest(
            transactional_id=None, acks=1, timeout=datetime.timedelta(seconds=30),
            topic_data=(b.TopicProduceData(name=topic, partition_data=(
                b.PartitionProduceData(index=0, records=value_batch([b"x" * size])),)),)), client_id=client_id)
        assert response.responses[0].partition_responses[0].error_code == ErrorCode.none
        return response.throttle_time

    assert await produce("free", "a", 300_000) == datetime.timedelta(0)  # outside the namespace: not charged
    assert await produce("metered.events", "a", 100_000) <= datetime.timedelta(milliseconds=10)  # the burst
    assert await produce("metered.events", "b", 50_000) > datetime.timedelta(milliseconds=250)  # another client
    b = request_builder(1, 12)
    fetched = await client.request(b.FetchRequest(
        replica_id=-1, max_wait=datetime.timedelta(0), min_bytes=1, max_bytes=10_000_000, isolation_level=0,
        session_id=0, session_epoch=-1, topics=(b.FetchTopic(topic="metered.events", partitions=(b.FetchPartition(
            partition=0, current_leader_epoch=-1, fetch_offset=0, last_fetched_epoch=-1, log_start_offset=-1,
            partition_max_bytes=10_000_000),)),), forgotten_topics_data=(), rack_id=""))
    assert fetched.throttle_time > datetime.timedelta(milliseconds=250)  # 150 KB out, 100 KB/s
    await client.aclose()
