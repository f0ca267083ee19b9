"""Config and quota changes are logged on `lodestream.audit` with who made them (broker/audit.py): one INFO
line per change, from AlterConfigs, IncrementalAlterConfigs and AlterClientQuotas over the wire and from the
REST API, naming the principal, the resource and the keys set (sensitive values redacted) or deleted."""

from __future__ import annotations

import base64
import logging

import httpx
import pytest

from lodestream.admin.auth import Authenticator
from lodestream.admin.rest import create_app
from lodestream.broker.quotas import GROUP_RESOURCE_TYPE
from test_admin_handlers import alter_configs, incremental_alter
from test_quotas import alter as alter_quotas

TOPIC, BROKER = 2, 4
SET, DELETE = 0, 1


def audit_lines(caplog) -> list[str]:
    lines = [r.getMessage() for r in caplog.records if r.name == "lodestream.audit"]
    assert all(r.levelno == logging.INFO for r in caplog.records if r.name == "lodestream.audit")
    caplog.clear()
    return lines


@pytest.fixture
async def rest(running_broker):
    app = create_app(running_broker.broker, Authenticator(None, {"ops": "ops-secret"}))
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    headers = {"Authorization": "Basic " + base64.b64encode(b"ops:ops-secret").decode()}
    async with httpx.AsyncClient(transport=transport, base_url="http://lodestream", headers=headers) as http:
        yield http, f"/v3/clusters/{running_broker.broker.cluster_id}"


async def test_rest_config_changes_name_the_rest_principal(running_broker, rest, caplog):
    caplog.set_level(logging.INFO, logger="lodestream.audit")
    http, cluster = rest
    created = await http.post(f"{cluster}/topics", json={"topic_name": "audited", "partitions_count": 1})
    assert created.status_code == 201, created.text
    caplog.clear()
    assert (await http.put(f"{cluster}/topics/audited/configs/retention.ms", json={"value": "60000"})).status_code == 204
    assert audit_lines(caplog) == [
        "config change by User:ops from 127.0.0.1 (REST): topic audited: set retention.ms=60000"]
    assert (await http.delete(f"{cluster}/topics/audited/configs/retention.ms")).status_code == 204
    assert audit_lines(caplog) == [
        "config change by User:ops from 127.0.0.1 (REST): topic audited: deleted retention.ms"]
    batch = {"data": [{"name": "log.cleaner.backoff.ms", "value": "20000"},
                      {"name": "ssl.key.password", "value": "hunter2"}]}
    assert (await http.post(f"{cluster}/brokers/1/configs:alter", json=batch)).status_code == 204
    assert audit_lines(caplog) == ["config change by User:ops from 127.0.0.1 (REST): broker 1: "
                                   "set log.cleaner.backoff.ms=20000, ssl.key.password=[redacted]"]
    checked = {"data": [{"name": "log.cleaner.backoff.ms", "value": "30000"}], "validate_only": True}
    assert (await http.post(f"{cluster}/broker-configs:alter", json=checked)).status_code == 204
    assert (await http.put(f"{cluster}/topics/audited/configs/retention.ms", json={"value": "x"})).status_code == 400
    assert audit_lines(caplog) == []  # a validate_only request and a refused change change nothing
    assert "hunter2" not in caplog.text


async def test_kafka_config_and_quota_changes_are_logged_once(running_broker, caplog):
    caplog.set_level(logging.INFO, logger="lodestream.audit")
    client = await running_broker.client()
    try:
        result = await incremental_alter(client, 1, BROKER, "1", [
            ("log.cleaner.backoff.ms", SET, "25000"), ("ssl.keystore.key", SET, "-----BEGIN PRIVATE KEY-----x")])
        assert result.error_code == 0, result
        (line,) = audit_lines(caplog)
        assert line.startswith("config change by User:ANONYMOUS from 127.0.0.1 (PLAINTEXT): "
                               "broker 1: set log.cleaner.backoff.ms=25000, ")
        assert "ssl.keystore.key=[redacted]" in line and "PRIVATE" not in caplog.text
        result = await alter_configs(client, 2, BROKER, "1", {"log.cleaner.backoff.ms": "26000"})
        assert result.error_code == 0, result
        assert audit_lines(caplog) == [  # the legacy whole-set replace: what it removed is named too
            "config change by User:ANONYMOUS from 127.0.0.1 (PLAINTEXT): broker 1: "
            "set log.cleaner.backoff.ms=26000; deleted ssl.keystore.key"]
        result = await incremental_alter(client, 1, BROKER, "", [("log.cleaner.backoff.ms", SET, "27000")])
        assert result.error_code == 0, result
        assert audit_lines(caplog) == [
            "config change by User:ANONYMOUS from 127.0.0.1 (PLAINTEXT): cluster-wide broker default: "
            "set log.cleaner.backoff.ms=27000"]
        entry = await alter_quotas(client, [("user", "alice"), ("client-id", None)],
                                   {"producer_byte_rate": 1024.0, "consumer_byte_rate": None})
        assert entry.error_code == 0, entry
        assert audit_lines(caplog) == [
            "quota change by User:ANONYMOUS from 127.0.0.1 (PLAINTEXT): client-id=<default>,user=alice: "
            "set producer_byte_rate=1024.0; deleted consumer_byte_rate"]
        result = await incremental_alter(client, 1, GROUP_RESOURCE_TYPE, "audited-group",
                                         [("consumer.byte.rate", SET, "2048")])
        assert result.error_code == 0, result
        assert audit_lines(caplog) == [
            "config change by User:ANONYMOUS from 127.0.0.1 (PLAINTEXT): group audited-group: "
            "set consumer.byte.rate=2048"]
        await alter_quotas(client, [("user", "bob")], {"producer_byte_rate": 10.0}, validate_only=True)
        assert audit_lines(caplog) == []
    finally:
        await client.aclose()


def test_a_rest_change_on_another_node_is_logged_by_the_controller_with_the_rest_principal(tmp_path):
    """On a node that is not the active controller the REST change travels in an Envelope with the caller's
    principal: the controller, which commits it, writes the one audit line, naming the REST user."""
    import json
    import time

    from kraft_cluster import KRaftCluster

    cluster = KRaftCluster(tmp_path, 3, {"admin.listeners": "http://127.0.0.1:0",
                                         "admin.auth.basic.users": "ops:ops-secret"})
    cluster.start()
    try:
        leader, _, _ = cluster.wait_for_leader(cluster.ids, 30)
        other = next(i for i in cluster.ids if i != leader)
        assert cluster.create_topic(other, "cluster-audited") == 0
        url = json.loads(cluster.nodes[other].ready_path.read_text())["listeners"]["ADMIN"]
        cluster_id = httpx.get(f"{url}/v3/clusters", auth=("ops", "ops-secret"), timeout=30).json()["data"][0][
            "cluster_id"]
        response = httpx.put(f"{url}/v3/clusters/{cluster_id}/topics/cluster-audited/configs/retention.ms",
                             json={"value": "60000"}, auth=("ops", "ops-secret"), timeout=30)
        assert response.status_code == 204, response.text
        # the listener named is the controller's, where the Envelope came in
        wanted = "config change by User:ops from 127.0.0.1 (CONTROLLER): topic cluster-audited: set retention.ms=60000"
        deadline = time.monotonic() + 10
        while wanted not in cluster.nodes[leader].log_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)  # poll interval inside a deadline loop
        assert wanted in cluster.nodes[leader].log_path.read_text()
        logged = [i for i in cluster.ids if "config change by" in cluster.nodes[i].log_path.read_text()]
        assert logged == [leader]
    finally:
        cluster.stop()
