"""`lodestream topics|groups|configs` as a subprocess against a `lodestream serve` process,
over the Kafka protocol (--bootstrap-server) and the REST API (--rest), in table and
JSON output, with exit codes for errors."""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
from pathlib import Path

import pytest

from lodestream.cli.cluster_tools import KafkaConnection, render_table
from broker_process import BrokerProcess
from lodestream.protocol.errors import ErrorCode
from lodestream.protocol.messages import request_builder
from record_batches import value_batch

CLI = str(Path(sys.executable).parent / "lodestream")
CLI_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    process = BrokerProcess(tmp_path_factory.mktemp("cli-broker"), {"admin.listeners": "http://127.0.0.1:0"})
    process.start()
    yield process
    process.stop()


def rest_url(broker: BrokerProcess) -> str | None:
    info = json.loads(broker.ready_path.read_text())
    for name, address in info["listeners"].items():
        if name.upper() in ("REST", "ADMIN", "HTTP"):
            address = address.split(",")[0]
            return address if "://" in address else f"http://{address}"
    return None


@pytest.fixture(params=["kafka", "rest"])
def where(request, broker) -> list[str]:
    """The transport options for the CLI."""
    if request.param == "kafka":
        return ["--bootstrap-server", broker.bootstrap]
    url = rest_url(broker)
    if url is None:
        pytest.skip("the broker serves no REST API (admin service not installed)")
    return ["--rest", url]


def cli(*args: str, expect: int = 0) -> subprocess.CompletedProcess:
    result = subprocess.run([CLI, *args], capture_output=True, text=True, timeout=CLI_TIMEOUT_S)
    assert result.returncode == expect, f"{args}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def cli_json(*args: str):
    return json.loads(cli(*args, "--output", "json").stdout)


def table(text: str) -> list[dict[str, str]]:
    """Parse the first table in table output (header line, then rows split on 2+ spaces)."""
    import re

    lines = [line for line in text.splitlines() if line.strip()]
    start = next(i for i, line in enumerate(lines) if line.isupper() or re.match(r"^[A-Z][A-Z-]+(\s{2,}[A-Z-]+)+$", line))
    header = re.split(r"\s{2,}", lines[start].strip())
    rows = []
    for line in lines[start + 1:]:
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) != len(header):
            break
        rows.append(dict(zip(header, cells)))
    return rows


# -- topics -------------------------------------------------------------------------------------------

def test_topics_create_list_describe_delete(where, request):
    name = f"cli-topic-{request.node.callspec.id}"
    created = cli_json("topics", "create", name, "--partitions", "3", "--config", "retention.ms=60000", *where)
    assert created["name"] == name and created["partitions"] == 3

    listed = cli_json("topics", "list", *where)
    assert {"name": name, "partitions": 3, "replication_factor": 1} == {
        k: v for k, v in next(t for t in listed if t["name"] == name).items() if k in ("name", "partitions", "replication_factor")}
    assert not any(t["name"].startswith("__") for t in listed)
    rows = table(cli("topics", "list", *where).stdout)
    assert {"TOPIC": name, "PARTITIONS": "3"}.items() <= next(r for r in rows if r["TOPIC"] == name).items()

    (described,) = cli_json("topics", "describe", name, *where)
    assert described["partition_count"] == 3
    assert [p["partition"] for p in described["partitions"]] == [0, 1, 2]
    assert all(p["leader"] >= 0 and p["end_offset"] == 0 for p in described["partitions"])
    assert all(p["start_offset"] == 0 and p["size_bytes"] == 0 for p in described["partitions"])
    assert described["configs"] == {"retention.ms": "60000"}
    text = cli("topics", "describe", name, *where).stdout
    assert f"Topic: {name}" in text and "PartitionCount: 3" in text and "retention.ms=60000" in text
    assert [r["PARTITION"] for r in table(text)] == ["0", "1", "2"]
    assert [(r["START-OFFSET"], r["SIZE"]) for r in table(text)] == [("0", "0")] * 3

    again = cli("topics", "create", name, *where, expect=1)
    assert "already exists" in again.stderr.lower() or "TOPIC_ALREADY_EXISTS" in again.stderr

    deleted = cli("topics", "delete", name, *where)
    assert f"Deleted topic {name}" in deleted.stdout
    assert name not in [t["name"] for t in cli_json("topics", "list", *where)]
    missing = cli("topics", "describe", name, *where, expect=1)
    assert "does not exist" in missing.stderr
    gone = cli("topics", "delete", name, *where, expect=1)
    assert name in gone.stderr


def test_topics_alter_config(where, request):
    name = f"cli-alter-{request.node.callspec.id}"
    cli("topics", "create", name, "--partitions", "1", *where)
    cli("topics", "alter-config", name, "--set", "cleanup.policy=compact", "--set", "retention.ms=1000", *where)
    (described,) = cli_json("topics", "describe", name, *where)
    assert described["configs"] == {"cleanup.policy": "compact", "retention.ms": "1000"}
    cli("topics", "alter-config", name, "--delete", "retention.ms", *where)
    (described,) = cli_json("topics", "describe", name, *where)
    assert described["configs"] == {"cleanup.policy": "compact"}
    bad = cli("topics", "alter-config", name, "--set", "no.such.config=1", *where, expect=1)
    assert "no.such.config" in bad.stderr
    cli("topics", "delete", name, *where)


# -- configs ------------------------------------------------------------------------------------------

def test_configs_alter_and_describe_topic_and_broker(where, request):
    name = f"cli-configs-{request.node.callspec.id}"
    cli("topics", "create", name, "--partitions", "1", *where)
    cli("configs", "alter", "--topic", name, "--set", "max.message.bytes=2000000", *where)
    described = cli_json("configs", "describe", "--topic", name, *where)
    assert [(c["name"], c["value"], c["source"]) for c in described["configs"]] == [
        ("max.message.bytes", "2000000", "DYNAMIC_TOPIC_CONFIG")]
    every = cli_json("configs", "describe", "--topic", name, "--all", *where)["configs"]
    by_name = {c["name"]: c for c in every}
    assert by_name["max.message.bytes"]["value"] == "2000000"
    assert by_name["cleanup.policy"]["source"] in ("DEFAULT_CONFIG", "STATIC_BROKER_CONFIG")
    rows = table(cli("configs", "describe", "--topic", name, *where).stdout)
    assert rows == [{"NAME": "max.message.bytes", "VALUE": "2000000", "SOURCE": "DYNAMIC_TOPIC_CONFIG",
                     "READ-ONLY": "false"}]

    cli("configs", "alter", "--broker", "1", "--set", "log.retention.ms=7200000", *where)
    broker_configs = cli_json("configs", "describe", "--broker", "1", *where)["configs"]
    assert ("log.retention.ms", "7200000", "DYNAMIC_BROKER_CONFIG") in [
        (c["name"], c["value"], c["source"]) for c in broker_configs]
    all_broker = {c["name"]: c for c in cli_json("configs", "describe", "--broker", "1", "--all", *where)["configs"]}
    assert all_broker["num.partitions"]["source"] in ("DEFAULT_CONFIG", "STATIC_BROKER_CONFIG")
    cli("configs", "alter", "--broker", "1", "--delete", "log.retention.ms", *where)
    assert "log.retention.ms" not in [c["name"] for c in cli_json("configs", "describe", "--broker", "1", *where)["configs"]]

    cli("configs", "alter", "--broker-defaults", "--set", "log.retention.ms=3600000", *where)
    defaults = cli_json("configs", "describe", "--broker-defaults", *where)["configs"]
    assert [(c["name"], c["value"]) for c in defaults] == [("log.retention.ms", "3600000")]
    cli("configs", "alter", "--broker-defaults", "--delete", "log.retention.ms", *where)

    refused = cli("configs", "alter", "--broker", "1", "--set", "node.id=7", *where, expect=1)
    assert "node.id" in refused.stderr
    cli("topics", "delete", name, *where)


# -- groups -------------------------------------------------------------------------------------------

def _produce_and_commit(broker: BrokerProcess, topic: str, group: str, counts: dict[int, int],
                        committed: dict[int, int]) -> None:
    conn = KafkaConnection(broker.host, broker.port, timeout=30)
    try:
        conn.negotiate()
        b = request_builder(0, 9)
        for partition, count in counts.items():
            response = conn.request(b.ProduceRequest(
                transactional_id=None, acks=-1, timeout=datetime.timedelta(seconds=10),
                topic_data=(b.TopicProduceData(name=topic, partition_data=(
                    b.PartitionProduceData(index=partition, records=value_batch([b"m"] * count)),)),)))
            assert response.responses[0].partition_responses[0].error_code == ErrorCode.none
        c = request_builder(8, 8)
        response = conn.request(c.OffsetCommitRequest(
            group_id=group, generation_id_or_member_epoch=-1, member_id="", group_instance_id=None,
            topics=(c.OffsetCommitRequestTopic(name=topic, partitions=tuple(
                c.OffsetCommitRequestPartition(partition_index=p, committed_offset=o, committed_leader_epoch=-1,
                                               committed_metadata=None) for p, o in committed.items())),)))
        assert all(p.error_code == ErrorCode.none for t in response.topics for p in t.partitions)
    finally:
        conn.close()


def test_groups_list_and_describe_with_lag(broker, where, request):
    topic, group = f"cli-lag-{request.node.callspec.id}", f"cli-group-{request.node.callspec.id}"
    cli("topics", "create", topic, "--partitions", "2", "--bootstrap-server", broker.bootstrap)
    _produce_and_commit(broker, topic, group, {0: 10, 1: 4}, {0: 7, 1: 4})

    listed = cli_json("groups", "list", *where)
    assert group in [g["group"] for g in listed]
    assert group in [r["GROUP"] for r in table(cli("groups", "list", *where).stdout)]

    (described,) = cli_json("groups", "describe", group, *where)
    assert described["group"] == group
    assert described["members"] == []
    assert [(o["topic"], o["partition"], o["committed_offset"], o["end_offset"], o["lag"]) for o in described["offsets"]] == [
        (topic, 0, 7, 10, 3), (topic, 1, 4, 4, 0)]
    text = cli("groups", "describe", group, *where).stdout
    assert f"Group: {group}" in text and "TotalLag: 3" in text
    rows = table(text)
    assert [(r["TOPIC"], r["PARTITION"], r["CURRENT-OFFSET"], r["LOG-END-OFFSET"], r["LAG"]) for r in rows] == [
        (topic, "0", "7", "10", "3"), (topic, "1", "4", "4", "0")]

    missing = cli("groups", "describe", "no-such-group", *where, expect=1)
    assert "does not exist" in missing.stderr


# -- namespaces ---------------------------------------------------------------------------------------

def test_namespaces_create_describe_and_delete(broker):
    rest = ["--rest", rest_url(broker)]
    cli("namespaces", "create", "shop", "--default", "num.partitions=2", "--default", "retention.ms=60000", *rest)
    cli("topics", "create", "shop.carts", *rest)  # no partition count: the namespace's
    described = cli_json("namespaces", "describe", "shop", *rest)
    assert described["topics"] == ["shop.carts"] and described["defaults"]["num.partitions"] == "2"
    assert len(cli_json("topics", "describe", "shop.carts", *rest)[0]["partitions"]) == 2
    listed = table(cli("namespaces", "list", *rest).stdout)
    assert {"NAMESPACE": "shop", "PREFIX": "shop.", "TOPICS": "1"}.items() <= listed[0].items()
    assert "still has topics" in cli("namespaces", "delete", "shop", *rest, expect=1).stderr
    cli("topics", "delete", "shop.carts", *rest)
    cli("namespaces", "delete", "shop", *rest)
    assert "namespace shop" in cli("namespaces", "describe", "shop", *rest, expect=1).stderr
    assert "REST API only" in cli("namespaces", "list", "--bootstrap-server", broker.bootstrap, expect=2).stderr


# -- errors -------------------------------------------------------------------------------------------

def test_unreachable_broker_exits_3(tmp_path):
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = cli("topics", "list", "--bootstrap-server", f"127.0.0.1:{port}", "--timeout", "5", expect=3)
    assert "cannot connect" in result.stderr
    result = cli("topics", "list", "--rest", f"http://127.0.0.1:{port}", "--timeout", "5", expect=3)
    assert "cannot reach" in result.stderr


def test_usage_errors_exit_2(broker):
    assert "required" in cli("configs", "describe", "--bootstrap-server", broker.bootstrap, expect=2).stderr
    result = cli("configs", "alter", "--topic", "x", "--bootstrap-server", broker.bootstrap, expect=2)
    assert "nothing to change" in result.stderr
    result = cli("topics", "create", "x", "--config", "novalue", "--bootstrap-server", broker.bootstrap, expect=2)
    assert "KEY=VALUE" in result.stderr
    result = cli("topics", "list", "--bootstrap-server", broker.bootstrap, "--rest", "http://127.0.0.1:1", expect=2)
    assert "not both" in result.stderr


def test_render_table_aligns_columns():
    assert render_table(["A", "LONGER"], [["xyz", 1], [None, [1, 2]]]).splitlines() == [
        "A    LONGER",
        "xyz  1",
        "-    1,2",
    ]


def test_version_is_the_package_version():
    from importlib.metadata import version

    assert cli("--version").stdout.strip() == f"lodestream {version('lodestream')}"
