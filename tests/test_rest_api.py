"""The REST API (admin/) against a real `lodestream serve` process, with httpx, cross-checked
with confluent-kafka: a topic created over REST is a Kafka topic, records produced over
REST are consumed by a Kafka consumer, a config altered over REST is what DescribeConfigs
reports, and the lag of a group a Kafka consumer committed for is served over REST.
Plus the error bodies ({error_code, message}, 4xx naming the field), authentication and
the start-up rules of admin.listeners. Every wait is bounded by a deadline."""

from __future__ import annotations

import base64
import json
import re
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, ConfigSource

from broker_process import BrokerProcess

TIMEOUT_S = 30.0


def admin_url(process: BrokerProcess) -> str:
    return json.loads(process.ready_path.read_text())["listeners"]["ADMIN"]


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    process = BrokerProcess(tmp_path_factory.mktemp("rest-broker"),
                            {"admin.listeners": "http://127.0.0.1:0", "group.initial.rebalance.delay.ms": "0"})
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def http(broker):
    with httpx.Client(base_url=admin_url(broker), timeout=TIMEOUT_S) as client:
        yield client


@pytest.fixture(scope="module")
def cluster(http) -> str:
    """/v3/clusters/<id>"""
    return f"/v3/clusters/{http.get('/v3/clusters').json()['data'][0]['cluster_id']}"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def create_topic(http, cluster: str, name: str, partitions: int = 1, **extra) -> dict:
    response = http.post(f"{cluster}/topics", json={"topic_name": name, "partitions_count": partitions, **extra})
    assert response.status_code == 201, response.text
    return response.json()


def ck_admin(broker) -> AdminClient:
    return AdminClient({"bootstrap.servers": broker.bootstrap})


def describe_config(broker, resource: ConfigResource) -> dict:
    admin = ck_admin(broker)  # keep the client alive until the result is in
    futures = admin.describe_configs([resource], request_timeout=TIMEOUT_S)
    return futures[resource].result(timeout=TIMEOUT_S)


def assert_error(response: httpx.Response, status: int, error_code: int, *fragments: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error_code", "message"}, body
    assert body["error_code"] == error_code, body
    for fragment in fragments:
        assert fragment in body["message"], body
    return body


# -- health, discovery ---------------------------------------------------------------------------


def test_health_ready_openapi_and_docs(http, broker):
    assert http.get("/health").json() == {"status": "UP"}
    ready = http.get("/ready").json()
    assert ready["status"] == "READY"
    assert ready["listeners"]["PLAINTEXT"].endswith(f":{broker.port}")
    spec = http.get("/openapi.json").json()
    assert "/v3/clusters/{cluster_id}/topics/{topic_name}/records" in spec["paths"]
    assert "ProduceRequest" in spec["components"]["schemas"]
    assert_docs_offline(http)


def assert_docs_offline(http) -> None:
    """/docs and /redoc name only local assets (fastapi-offline, no CDN), and each answers with its
    JavaScript or CSS, without credentials as the pages themselves."""
    for page, wanted in (("/docs", {"swagger-ui-bundle.js", "swagger-ui.css"}), ("/redoc", {"redoc.standalone.js"})):
        response = http.get(page)
        assert response.status_code == 200 and "text/html" in response.headers["content-type"]
        urls = set(re.findall(r"""(?:src|href|url)\s*[=:]\s*['"]([^'"]+)['"]""", response.text))
        assert urls and not re.search(r"https?://", response.text), urls  # no absolute (CDN) address
        assets = {u for u in urls if u.startswith("/docs/assets/")}
        assert {u.rsplit("/", 1)[1] for u in assets} >= wanted, urls
        for url in assets:
            asset = http.get(url)
            assert asset.status_code == 200, url
            kind = "text/css" if url.endswith(".css") else "javascript" if url.endswith(".js") else "image/"
            assert kind in asset.headers["content-type"], (url, asset.headers["content-type"])
            assert len(asset.content) > 1000, url


def test_cluster_and_broker_resources(http, cluster, broker):
    listing = http.get("/v3/clusters").json()
    assert listing["kind"] == "KafkaClusterList"
    data = http.get(cluster).json()
    assert data["kind"] == "KafkaCluster"
    assert data["metadata"]["self"].endswith(cluster)
    assert data["topics"]["related"].endswith(f"{cluster}/topics")
    brokers = http.get(f"{cluster}/brokers").json()["data"]
    assert [(b["broker_id"], b["port"]) for b in brokers] == [(1, broker.port)]
    configs = {c["name"]: c for c in http.get(f"{cluster}/brokers/1/configs").json()["data"]}
    assert configs["num.partitions"]["value"] == "1" and configs["num.partitions"]["is_default"]
    assert configs["admin.auth.bearer.token"]["is_sensitive"] and configs["admin.auth.bearer.token"]["value"] is None
    assert http.get(f"{cluster}/brokers/1/configs/log.dirs").json()["source"] == "STATIC_BROKER_CONFIG"
    assert_error(http.get(f"{cluster}/brokers/7"), 404, 404, "Broker 7")
    assert_error(http.get("/v3/clusters/no-such-cluster/topics"), 404, 404, "no-such-cluster")


# -- topics: create via REST, see via Kafka ---------------------------------------------------------


def test_topic_lifecycle_and_partitions(http, cluster, broker):
    name = unique("rest-topic")
    created = create_topic(http, cluster, name, 3, configs=[{"name": "cleanup.policy", "value": "compact"}])
    assert created["kind"] == "KafkaTopic"
    assert (created["partitions_count"], created["replication_factor"]) == (3, 1)
    assert created["metadata"]["self"].endswith(f"{cluster}/topics/{name}")
    metadata = ck_admin(broker).list_topics(topic=name, timeout=TIMEOUT_S)
    assert sorted(metadata.topics[name].partitions) == [0, 1, 2]
    assert name in [t["topic_name"] for t in http.get(f"{cluster}/topics").json()["data"]]
    partitions = http.get(f"{cluster}/topics/{name}/partitions").json()["data"]
    assert [(p["partition_id"], p["leader_id"], p["replica_ids"], p["isr_ids"], p["earliest_offset"],
             p["latest_offset"]) for p in partitions] == [(i, 1, [1], [1], 0, 0) for i in range(3)]
    replicas = http.get(f"{cluster}/topics/{name}/partitions/2/replicas").json()["data"]
    assert [(r["broker_id"], r["is_leader"], r["is_in_sync"]) for r in replicas] == [(1, True, True)]
    grown = http.patch(f"{cluster}/topics/{name}", json={"partitions_count": 4})
    assert grown.status_code == 200 and grown.json()["partitions_count"] == 4
    assert http.delete(f"{cluster}/topics/{name}").status_code == 204
    assert_error(http.get(f"{cluster}/topics/{name}"), 404, 40403)


def test_topic_errors_name_the_field(http, cluster):
    assert_error(http.get(f"{cluster}/topics/no-such-topic"), 404, 40403, "no-such-topic")
    assert_error(http.get(f"{cluster}/topics/no-such-topic/partitions"), 404, 40403)
    assert_error(http.post(f"{cluster}/topics", json={"topic_name": unique("t"), "partitions_count": 0}),
                 400, 400, "partitions_count")
    assert_error(http.post(f"{cluster}/topics", json={"topic_name": unique("t"), "partitions_count": "many"}),
                 400, 400, "partitions_count")
    assert_error(http.post(f"{cluster}/topics", json={"topic_name": unique("t"), "replication_factor": 3}),
                 400, 40002, "replication_factor")
    assert_error(http.post(f"{cluster}/topics", json={"topic_name": "bad name!"}), 400, 400, "topic_name")
    assert_error(http.post(f"{cluster}/topics", json={"topic_name": ".."}), 400, 40002, "topic_name")
    assert_error(http.post(f"{cluster}/topics", json={"partitions_count": 1}), 400, 400, "topic_name")
    assert_error(http.post(f"{cluster}/topics", json={"topic_name": unique("t"), "partitions": 2}),
                 400, 400, "partitions")
    assert_error(http.post(f"{cluster}/topics", json={"topic_name": unique("t"),
                                                      "configs": [{"name": "retention.ms", "value": "soon"}]}),
                 400, 40002, "configs", "retention.ms")
    assert_error(http.post(f"{cluster}/topics", content=b"{not json", headers={"content-type": "application/json"}),
                 400, 400, "JSON")
    name = unique("dup")
    create_topic(http, cluster, name)
    assert_error(http.post(f"{cluster}/topics", json={"topic_name": name}), 400, 40002, "already exists")
    assert_error(http.get(f"{cluster}/topics/{name}/partitions/5"), 404, 40402)
    assert_error(http.get(f"{cluster}/topics/{name}/partitions/x"), 400, 400, "partition_id")
    assert_error(http.patch(f"{cluster}/topics/{name}", json={"partitions_count": 1}), 400, 40002,
                 "partitions_count")
    assert_error(http.get(f"{cluster}/topics/{name}/configs/no.such.config"), 404, 404, "no.such.config")
    assert_error(http.get(f"{cluster}/nowhere"), 404, 404)


# -- produce via REST, consume with confluent-kafka -------------------------------------------------


def consume(broker, topic: str, partitions: int, count: int) -> list:
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": unique("reader"),
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        messages = []
        deadline = time.monotonic() + TIMEOUT_S
        while len(messages) < count:
            assert time.monotonic() < deadline, f"consumed {len(messages)} of {count}"
            message = consumer.poll(0.5)
            if message is not None:
                assert message.error() is None, message.error()
                messages.append(message)
        return messages
    finally:
        consumer.close()


def test_produce_via_rest_consume_with_confluent_kafka(http, cluster, broker):
    topic = unique("rest-produce")
    create_topic(http, cluster, topic, 3)
    records = f"{cluster}/topics/{topic}/records"

    one = http.post(records, json={"partition_id": 1, "key": {"type": "STRING", "data": "k1"},
                                   "value": {"type": "JSON", "data": {"n": 1, "tags": ["a", "b"]}},
                                   "headers": [{"name": "trace", "value": base64.b64encode(b"xyz").decode()}],
                                   "timestamp": "2024-05-06T07:08:09.123Z"})
    assert one.status_code == 200, one.text
    single = one.json()
    assert single == {"error_code": 200, "cluster_id": cluster.rsplit("/", 1)[1], "topic_name": topic,
                      "partition_id": 1, "offset": 0, "timestamp": "2024-05-06T07:08:09.123Z",
                      "key": {"type": "STRING", "size": 2}, "value": {"type": "JSON", "size": 24}}

    # streaming mode: several concatenated records, one result line each, in order
    stream = [
        {"partition_id": 0, "value": {"type": "BINARY", "data": base64.b64encode(b"\x00\x01binary").decode()}},
        {"key": {"type": "STRING", "data": "same-key"}, "value": {"type": "STRING", "data": "v-a"}},
        {"key": {"type": "STRING", "data": "same-key"}, "value": {"type": "STRING", "data": "v-b"}},
        {"partition_id": 9, "value": {"data": "nowhere"}},
        {"partition_id": 2, "key": {"type": "JSON", "data": [1, 2]}, "value": {"data": None}},
    ]
    body = "\n".join(json.dumps(r) for r in stream).encode()
    response = http.post(records, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
    results = [json.loads(line) for line in response.text.splitlines()]
    assert [r["error_code"] for r in results] == [200, 200, 200, 40402, 200]
    assert "partition_id" in results[3]["message"]
    assert results[1]["partition_id"] == results[2]["partition_id"]  # murmur2 of the key, like Kafka clients
    assert results[2]["offset"] == results[1]["offset"] + 1

    messages = consume(broker, topic, 3, 5)
    by_position = {(m.partition(), m.offset()): m for m in messages}
    first = by_position[(1, 0)]
    assert (first.key(), json.loads(first.value()), first.headers()) == (b"k1", {"n": 1, "tags": ["a", "b"]},
                                                                          [("trace", b"xyz")])
    assert first.timestamp()[1] == 1714979289123
    for result, record in zip(results, stream):
        if result["error_code"] != 200:
            continue
        message = by_position[(result["partition_id"], result["offset"])]
        if record["value"]["data"] is None:
            assert message.value() is None
        elif record["value"].get("type") == "BINARY":
            assert message.value() == b"\x00\x01binary"
        else:
            assert message.value() == record["value"]["data"].encode()
    keyed = by_position[(2, results[4]["offset"])]
    assert keyed.key() == b"[1,2]"


def test_chunked_stream_answers_each_record_before_the_next_is_sent(http, cluster, broker):
    """REST Proxy's streaming mode: with Transfer-Encoding: chunked, each record's result comes
    back while the request is still open, so a client can wait for it before sending more."""
    topic = unique("rest-chunked")
    create_topic(http, cluster, topic)
    host, port = admin_url(broker).split("//")[1].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=TIMEOUT_S) as sock:
        sock.sendall(f"POST {cluster}/topics/{topic}/records HTTP/1.1\r\nHost: {host}\r\n"
                     "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
        received = b""

        def send_chunk(data: bytes) -> None:
            sock.sendall(b"%x\r\n%s\r\n" % (len(data), data))

        for n in range(3):
            send_chunk(json.dumps({"value": {"data": n}}).encode())
            while received.count(b'"error_code"') < n + 1:  # bounded by the socket timeout
                data = sock.recv(65536)
                assert data, "connection closed"
                received += data
        send_chunk(b'{"partition_id": 5}')
        sock.sendall(b"0\r\n\r\n")
        while not received.endswith(b"0\r\n\r\n"):
            data = sock.recv(65536)
            assert data, "connection closed"
            received += data
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    results = [json.loads(line) for line in body.decode().splitlines() if line.startswith("{")]
    assert [(r["error_code"], r.get("offset")) for r in results] == [(200, 0), (200, 1), (200, 2), (40402, None)]


def test_produce_errors(http, cluster):
    topic = unique("rest-produce-errors")
    create_topic(http, cluster, topic)
    records = f"{cluster}/topics/{topic}/records"
    assert_error(http.post(f"{cluster}/topics/no-such-topic/records", json={"value": {"data": 1}}), 404, 40403)
    assert_error(http.post(records, json={"partition_id": 3, "value": {"data": 1}}), 404, 40402, "partition_id")
    assert_error(http.post(records, json={"value": {"type": "AVRO", "data": 1}}), 400, 400, "value.type")
    assert_error(http.post(records, json={"value": {"type": "BINARY", "data": "%%%"}}), 400, 400, "value.data")
    assert_error(http.post(records, json={"key": {"type": "STRING", "data": 5}}), 400, 400, "key.data")
    assert_error(http.post(records, json={"value": {"data": 1}, "timestamp": "2999-01-01T00:00:00Z"}), 400,
                 40002, "timestamp")
    assert_error(http.post(records, json=[{"value": {"data": 1}}]), 400, 400, "JSON object")
    assert_error(http.post(records, content=b""), 400, 400, "empty")
    assert_error(http.post(records, content=b'{"value": '), 400, 400, "not valid JSON")
    huge = {"value": {"type": "STRING", "data": "x" * 1_100_000}}
    assert_error(http.post(records, json=huge), 400, 40002, "max.message.bytes")


# -- configs: alter via REST, see via DescribeConfigs -------------------------------------------------


def test_alter_topic_config_via_rest_seen_by_describe_configs(http, cluster, broker):
    topic = unique("rest-config")
    create_topic(http, cluster, topic)
    configs = f"{cluster}/topics/{topic}/configs"
    assert http.put(f"{configs}/retention.ms", json={"value": "3600000"}).status_code == 204
    entry = http.get(f"{configs}/retention.ms").json()
    assert (entry["kind"], entry["value"], entry["source"], entry["is_default"]) == (
        "KafkaTopicConfig", "3600000", "DYNAMIC_TOPIC_CONFIG", False)
    described = describe_config(broker, ConfigResource(ConfigResource.Type.TOPIC, topic))
    assert described["retention.ms"].value == "3600000"
    assert described["retention.ms"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value

    batch = {"data": [{"name": "cleanup.policy", "value": "compact"}, {"name": "retention.ms", "operation": "DELETE"}]}
    assert http.post(f"{configs}:alter", json=batch).status_code == 204
    described = describe_config(broker, ConfigResource(ConfigResource.Type.TOPIC, topic))
    assert described["cleanup.policy"].value == "compact"
    assert described["retention.ms"].value == "604800000" and described["retention.ms"].is_default

    assert http.delete(f"{configs}/cleanup.policy").status_code == 204
    assert http.get(f"{configs}/cleanup.policy").json()["source"] == "DEFAULT_CONFIG"
    assert_error(http.put(f"{configs}/retention.ms", json={"value": "soon"}), 400, 40002, "retention.ms")
    assert_error(http.put(f"{configs}/no.such.config", json={"value": "1"}), 400, 40002, "no.such.config")
    assert_error(http.put(f"{configs}/retention.ms", json={}), 400, 400, "value")
    assert_error(http.post(f"{configs}:alter", json={"data": [{"name": "retention.ms"}]}), 400, 40002, "value")
    listed = {c["name"] for c in http.get(configs).json()["data"]}
    assert {"retention.ms", "cleanup.policy", "max.message.bytes"} <= listed


def test_alter_broker_configs_via_rest_seen_by_describe_configs(http, cluster, broker):
    assert http.put(f"{cluster}/brokers/1/configs/log.retention.bytes", json={"value": "123456"}).status_code == 204
    described = describe_config(broker, ConfigResource(ConfigResource.Type.BROKER, "1"))
    assert described["log.retention.bytes"].value == "123456"
    assert http.get(f"{cluster}/brokers/1/configs/log.retention.bytes").json()["source"] == "DYNAMIC_BROKER_CONFIG"
    assert http.delete(f"{cluster}/brokers/1/configs/log.retention.bytes").status_code == 204

    assert http.put(f"{cluster}/broker-configs/log.retention.bytes", json={"value": "654321"}).status_code == 204
    cluster_wide = http.get(f"{cluster}/broker-configs").json()
    assert [(c["name"], c["value"], c["source"]) for c in cluster_wide["data"]] == [
        ("log.retention.bytes", "654321", "DYNAMIC_DEFAULT_BROKER_CONFIG")]
    described = describe_config(broker, ConfigResource(ConfigResource.Type.BROKER, "1"))
    assert described["log.retention.bytes"].value == "654321"
    assert described["log.retention.bytes"].source == ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG.value
    assert http.post(f"{cluster}/broker-configs:alter",
                     json={"data": [{"name": "log.retention.bytes", "operation": "DELETE"}]}).status_code == 204
    assert http.get(f"{cluster}/broker-configs").json()["data"] == []
    assert_error(http.put(f"{cluster}/brokers/1/configs/log.dirs", json={"value": "/x"}), 400, 40002, "log.dirs")


# -- consumer groups: lag of a group a confluent-kafka consumer committed for ------------------------


def test_group_members_and_lag(http, cluster, broker):
    topic = unique("rest-lag")
    group = unique("rest-group")
    create_topic(http, cluster, topic, 2)
    body = "".join(json.dumps({"partition_id": i % 2, "value": {"data": i}}) for i in range(10))
    assert http.post(f"{cluster}/topics/{topic}/records", content=body).status_code == 200

    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group, "client.id": "lag-reader",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest",
                         "session.timeout.ms": 6000, "heartbeat.interval.ms": 1000})
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + TIMEOUT_S
        while len(consumer.assignment()) < 2:
            assert time.monotonic() < deadline, "no assignment"
            consumer.poll(0.2)
        consumer.commit(offsets=[TopicPartition(topic, 0, 2), TopicPartition(topic, 1, 5)], asynchronous=False)

        groups = {g["consumer_group_id"]: g for g in http.get(f"{cluster}/consumer-groups").json()["data"]}
        assert groups[group]["state"] == "STABLE" and groups[group]["kind"] == "KafkaConsumerGroup"
        members = http.get(f"{cluster}/consumer-groups/{group}/consumers").json()["data"]
        assert [m["client_id"] for m in members] == ["lag-reader"]
        member_id = members[0]["consumer_id"]
        assignments = http.get(f"{cluster}/consumer-groups/{group}/consumers/{member_id}/assignments").json()["data"]
        assert sorted((a["topic_name"], a["partition_id"]) for a in assignments) == [(topic, 0), (topic, 1)]

        lags = http.get(f"{cluster}/consumer-groups/{group}/lags").json()["data"]
        assert [(l["partition_id"], l["current_offset"], l["log_end_offset"], l["lag"], l["consumer_id"])
                for l in lags] == [(0, 2, 5, 3, member_id), (1, 5, 5, 0, member_id)]
        summary = http.get(f"{cluster}/consumer-groups/{group}/lag-summary").json()
        assert (summary["total_lag"], summary["max_lag"], summary["max_lag_topic_name"],
                summary["max_lag_partition_id"], summary["max_lag_client_id"]) == (3, 3, topic, 0, "lag-reader")
        one = http.get(f"{cluster}/consumer-groups/{group}/lags/{topic}/partitions/0").json()
        assert one["lag"] == 3
        admin = ck_admin(broker)
        committed = admin.list_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(group)])[group].result(timeout=TIMEOUT_S)
        assert sorted((tp.partition, tp.offset) for tp in committed.topic_partitions) == [(0, 2), (1, 5)]
    finally:
        consumer.close()
    deadline = time.monotonic() + TIMEOUT_S
    while http.get(f"{cluster}/consumer-groups/{group}").json()["state"] != "EMPTY":
        assert time.monotonic() < deadline, "group did not become empty after the consumer left"
        time.sleep(0.1)  # poll interval inside a deadline loop
    summary = http.get(f"{cluster}/consumer-groups/{group}/lag-summary").json()
    assert (summary["total_lag"], summary["max_lag_consumer_id"]) == (3, "")
    assert_error(http.get(f"{cluster}/consumer-groups/no-such-group"), 404, 404, "no-such-group")


# -- authentication and admin.listeners --------------------------------------------------------------


def test_bearer_and_basic_authentication(tmp_path):
    process = BrokerProcess(tmp_path, {"admin.listeners": "http://127.0.0.1:0",
                                       "admin.auth.bearer.token": "s3cret-token",
                                       "admin.auth.basic.users": "alice:wonder,bob:builder"})
    process.start()
    try:
        with httpx.Client(base_url=admin_url(process), timeout=TIMEOUT_S) as http:
            body = assert_error(http.get("/v3/clusters"), 401, 40101)
            assert "Bearer" in http.get("/v3/clusters").headers["www-authenticate"]
            assert_error(http.get("/v3/clusters", headers={"Authorization": "Bearer wrong"}), 401, 40101)
            assert_error(http.get("/v3/clusters", auth=("alice", "builder")), 401, 40101)
            assert body["message"]
            assert http.get("/v3/clusters", headers={"Authorization": "Bearer s3cret-token"}).status_code == 200
            assert http.get("/v3/clusters", auth=("bob", "builder")).status_code == 200
            cluster_id = http.get("/v3/clusters", auth=("alice", "wonder")).json()["data"][0]["cluster_id"]
            assert_error(http.post(f"/v3/clusters/{cluster_id}/topics", json={"topic_name": "x"}), 401, 40101)
            assert http.get("/health").status_code == 200 and http.get("/ready").status_code == 200
            assert_docs_offline(http)  # the API's documentation is open, as /health
            schemes = http.get("/openapi.json").json()["components"]["securitySchemes"]
            assert {"HTTPBearer", "HTTPBasic"} <= set(schemes)
    finally:
        process.stop()
    assert "authentication: bearer token or HTTP basic (2 user(s))" in process.log_path.read_text()
    assert "wonder" not in process.log_path.read_text()


def _serve(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    command = [str(Path(sys.executable).parent / "lodestream"), "serve",
               "--override", "listeners=PLAINTEXT://127.0.0.1:0", "--override", f"log.dirs={tmp_path / 'data'}"]
    for override in overrides:
        command += ["--override", override]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=tmp_path)


def test_non_loopback_admin_listener_without_auth_is_refused(tmp_path):
    result = _serve(tmp_path, "admin.listeners=http://0.0.0.0:0")
    assert result.returncode == 2
    assert "admin.listeners" in result.stderr and "loopback" in result.stderr
    assert not (tmp_path / "data").exists()


def test_busy_admin_port_stops_start_up_naming_the_key(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _serve(tmp_path, f"admin.listeners=http://127.0.0.1:{port}")
    assert result.returncode == 2, result.stderr
    assert "cannot start" in result.stderr and "admin.listeners" in result.stderr


def test_empty_admin_listeners_disables_the_rest_api(tmp_path):
    process = BrokerProcess(tmp_path, {"admin.listeners": ""})
    process.start()
    try:
        assert "ADMIN" not in json.loads(process.ready_path.read_text())["listeners"]
    finally:
        process.stop()
    assert "REST API disabled" in process.log_path.read_text()
