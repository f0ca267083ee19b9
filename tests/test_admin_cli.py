"""`lodestream topics|groups|configs` against a `lodestream serve` process, over the Kafka protocol
(--bootstrap-server) and the REST API (--rest), in table and JSON output, with exit codes for errors.
The commands run in this process (cli.main.main: real sockets, no interpreter start per command); the
installed entry point runs once, as a subprocess (test_version_is_the_package_version)."""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
import time
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
    process = BrokerProcess(tmp_path_factory.mktemp("cli-broker"), {
        "admin.listeners": "http://127.0.0.1:0",
        "group.initial.rebalance.delay.ms": "0"})  # a classic consumer joins at once
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
    out, err = run_cli(*args, expect=expect)
    return subprocess.CompletedProcess(args, expect, out, err)


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

    installed = subprocess.run([CLI, "--version"], capture_output=True, text=True, timeout=CLI_TIMEOUT_S)
    assert installed.stdout.strip() == f"lodestream {version('lodestream')}"


# -- daily operations: --if-not-exists, more partitions, group and offset deletion, offset resets ---------

def run_cli(*args: str, expect: int = 0) -> tuple[str, str]:
    import io
    from contextlib import redirect_stderr, redirect_stdout

    from lodestream.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code
    assert code == expect, f"{args}: exit {code}\n{out.getvalue()}\n{err.getvalue()}"
    return out.getvalue(), err.getvalue()


def run_json(*args: str):
    return json.loads(run_cli(*args, "--output", "json")[0])


def test_topics_create_if_not_exists_and_alter_partitions(where, request):
    name = f"cli-grow-{request.node.callspec.id}"
    assert run_json("topics", "create", name, "--partitions", "1", "--if-not-exists", *where)["created"] is True
    out, _ = run_cli("topics", "create", name, "--partitions", "5", "--if-not-exists", *where)
    assert "already exists" in out
    _, err = run_cli("topics", "create", name, *where, expect=1)
    assert "TOPIC_ALREADY_EXISTS" in err

    assert run_json("topics", "alter", name, "--partitions", "3", *where) == {"name": name, "partitions": 3}
    assert next(t for t in run_json("topics", "list", *where) if t["name"] == name)["partitions"] == 3
    _, err = run_cli("topics", "alter", name, "--partitions", "2", *where, expect=1)
    assert "INVALID_PARTITIONS" in err and "3" in err
    _, err = run_cli("topics", "alter", f"{name}-missing", "--partitions", "2", *where, expect=1)
    assert "does not exist" in err
    assert "at least 1" in run_cli("topics", "alter", name, "--partitions", "0", *where, expect=2)[1]


class ActiveMember:
    """A consumer-protocol (KIP-848) member of `group` subscribed to `topic`, by ConsumerGroupHeartbeat: the
    group is active (Stable) at once, with no rebalance delay, until leave()."""

    def __init__(self, broker: BrokerProcess, group: str, topic: str) -> None:
        self.conn = KafkaConnection(broker.host, broker.port, timeout=30)
        self.conn.negotiate()
        self.group, self.topic, self.member_id = group, topic, f"{group}-member"
        joined = self._heartbeat(0, join=True)
        assert joined.error_code == ErrorCode.none, joined
        self.epoch = joined.member_epoch

    def _heartbeat(self, epoch: int, join: bool = False):
        hb = request_builder(68, 1)
        return self.conn.request(hb.ConsumerGroupHeartbeatRequest(
            group_id=self.group, member_id=self.member_id, member_epoch=epoch, instance_id=None, rack_id=None,
            rebalance_timeout=datetime.timedelta(milliseconds=30_000 if join else -1),
            subscribed_topic_names=(self.topic,) if join else None, subscribed_topic_regex=None,
            server_assignor=None, topic_partitions=() if join else None))

    def leave(self) -> None:
        assert self._heartbeat(-1).error_code == ErrorCode.none
        self.conn.close()


def classic_member(broker: BrokerProcess, group: str, topic: str):
    """A classic-protocol consumer (confluent-kafka) of `topic` in `group`, once it has its assignment."""
    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group, "group.protocol": "classic",
                         "enable.auto.commit": False, "session.timeout.ms": 10_000})
    consumer.subscribe([topic])
    deadline = time.monotonic() + 20
    while not consumer.assignment():
        assert time.monotonic() < deadline, "the consumer got no assignment"
        consumer.poll(0.1)
    return consumer


def test_groups_delete_and_delete_offsets(broker, where, request):
    topic, group = f"cli-del-{request.node.callspec.id}", f"cli-del-group-{request.node.callspec.id}"
    kafka = ["--bootstrap-server", broker.bootstrap]
    run_cli("topics", "create", topic, "--partitions", "2", *kafka)
    _produce_and_commit(broker, topic, group, {0: 3, 1: 3}, {0: 2, 1: 3})
    if where[0] == "--rest":  # the REST API has no group deletion: said, usage error
        assert "use --bootstrap-server" in run_cli("groups", "delete", group, *where, expect=2)[1]
        assert "use --bootstrap-server" in run_cli("groups", "delete-offsets", group, "--topic", topic, *where,
                                                   expect=2)[1]
        return

    out, _ = run_cli("groups", "delete-offsets", group, "--topic", f"{topic}:0", *where)
    assert table(out) == [{"TOPIC": topic, "PARTITION": "0", "STATUS": "Successful"}]
    (described,) = run_json("groups", "describe", group, *where)
    assert [(o["partition"], o["committed_offset"]) for o in described["offsets"]] == [(1, 3)]
    assert "no partition 7" in run_cli("groups", "delete-offsets", group, "--topic", f"{topic}:7", *where,
                                       expect=1)[1]

    assert "Deleted group" in run_cli("groups", "delete", group, *where)[0]
    assert "does not exist" in run_cli("groups", "describe", group, *where, expect=1)[1]
    _, err = run_cli("groups", "delete", group, *where, expect=1)
    assert "does not exist" in err and "GROUP_ID_NOT_FOUND" in err

    active = f"{group}-active"
    consumer = classic_member(broker, active, topic)
    try:
        _, err = run_cli("groups", "delete", active, *where, expect=1)
        assert "NON_EMPTY_GROUP" in err and "active members" in err
        out, err = run_cli("groups", "delete-offsets", active, "--topic", topic, *where, expect=1)
        assert "GROUP_SUBSCRIBED_TO_TOPIC" in err and "subscribed to" in err
        assert [r["STATUS"].startswith("Error: GROUP_SUBSCRIBED_TO_TOPIC") for r in table(out)] == [True, True]
    finally:
        consumer.close()
    assert run_json("groups", "delete", active, *where) == [{"group": active, "deleted": True}]


def _committed(group: str, where: list[str]) -> dict[int, int]:
    (described,) = run_json("groups", "describe", group, *where)
    return {o["partition"]: o["committed_offset"] for o in described["offsets"]}


def test_groups_reset_offsets_dry_run_execute_and_active_group(broker, tmp_path):
    topic, group = "cli-reset", "cli-reset-group"
    kafka = ["--bootstrap-server", broker.bootstrap]
    run_cli("topics", "create", topic, "--partitions", "2", *kafka)
    _produce_and_commit(broker, topic, group, {0: 10, 1: 4}, {0: 7, 1: 4})
    reset = ["groups", "reset-offsets", group, *kafka]

    out, _ = run_cli(*reset, "--all-topics", "--to-earliest")  # a dry run by default
    assert "Dry run" in out and "state Empty" in out
    assert table(out) == [
        {"GROUP": group, "TOPIC": topic, "PARTITION": "0", "CURRENT-OFFSET": "7", "NEW-OFFSET": "0"},
        {"GROUP": group, "TOPIC": topic, "PARTITION": "1", "CURRENT-OFFSET": "4", "NEW-OFFSET": "0"}]
    assert _committed(group, kafka) == {0: 7, 1: 4}
    planned = run_json(*reset, "--topic", f"{topic}:1", "--to-offset", "2", "--dry-run")
    assert planned["executed"] is False and planned["state"] == "Empty" and planned["members"] == 0
    assert planned["partitions"] == [{"topic": topic, "partition": 1, "current_offset": 4, "new_offset": 2,
                                      "log_start_offset": 0, "log_end_offset": 4}]
    assert _committed(group, kafka) == {0: 7, 1: 4}

    executed = run_json(*reset, "--topic", f"{topic}:0", "--to-offset", "5", "--execute")
    assert executed["executed"] is True and executed["partitions"][0]["new_offset"] == 5
    assert _committed(group, kafka) == {0: 5, 1: 4}
    out, err = run_cli(*reset, "--all-topics", "--shift-by", "-6", "--execute")  # clamped to the log start
    assert "is lower than earliest offset" in err and f"{topic}-0" in err
    assert _committed(group, kafka) == {0: 0, 1: 0}
    run_cli(*reset, "--topic", topic, "--to-latest", "--execute")
    assert _committed(group, kafka) == {0: 10, 1: 4}
    run_cli(*reset, "--topic", topic, "--by-duration", "P1D", "--execute")  # every record is younger
    assert _committed(group, kafka) == {0: 0, 1: 0}
    moments = [run_json(*reset, "--topic", topic, "--to-datetime", when)["partitions"]
               for when in ("2999-01-01T00:00:00.000Z", "2000-01-01T00:00:00+02:00")]
    assert [[p["new_offset"] for p in plan] for plan in moments] == [[10, 4], [0, 0]]
    assert [p["new_offset"] for p in run_json(*reset, "--topic", topic, "--to-current")["partitions"]] == [0, 0]
    offsets_file = tmp_path / "offsets.csv"  # kafka-consumer-groups --export's format, over both transports
    offsets_file.write_text(f"{topic},0,3\n{topic},1,99\n")
    for where in (kafka, ["--rest", rest_url(broker)]):
        run_cli(*reset[:3], *where, "--all-topics", "--from-file", str(offsets_file), "--execute")
        assert _committed(group, kafka) == {0: 3, 1: 4}  # 99 kept within the log
        run_cli(*reset, "--all-topics", "--to-earliest", "--execute")

    # an active group: the dry run says so, --execute is refused and changes nothing
    member = ActiveMember(broker, "cli-reset-active", topic)
    try:
        out, _ = run_cli("groups", "reset-offsets", member.group, "--topic", topic, "--to-latest", *kafka)
        assert "The group is active" in out and "state Stable" in out
        _, err = run_cli("groups", "reset-offsets", member.group, "--topic", topic, "--to-latest", "--execute",
                         *kafka, expect=1)
        assert f"Assignments can only be reset if the group '{member.group}' is inactive" in err
        assert "Stable" in err
    finally:
        member.leave()
    assert _committed(member.group, kafka) == {}  # the refused commit changed nothing
    run_cli("groups", "reset-offsets", member.group, "--topic", topic, "--to-latest", "--execute", *kafka)
    assert _committed(member.group, kafka) == {0: 10, 1: 4}


def test_groups_reset_offsets_usage_errors(broker):
    kafka = ["--bootstrap-server", broker.bootstrap]
    base = ["groups", "reset-offsets", "g", *kafka]
    assert "not allowed with" in run_cli(*base, "--all-topics", "--to-earliest", "--to-latest", expect=2)[1]
    assert "one of the arguments" in run_cli(*base, "--all-topics", expect=2)[1]
    assert "not allowed with" in run_cli(*base, "--all-topics", "--topic", "t", "--to-earliest", expect=2)[1]
    assert "--to-datetime" in run_cli(*base, "--all-topics", "--to-datetime", "2024-01-01 10:00", expect=2)[1]
    assert "PnDTnHnMnS" in run_cli(*base, "--all-topics", "--by-duration", "1h", expect=2)[1]
    assert "TOPIC:PARTITION" in run_cli(*base, "--topic", "t:", "--to-earliest", expect=2)[1]
    assert "no committed offsets" in run_cli(*base, "--all-topics", "--to-earliest", expect=1)[1]
    assert "does not exist" in run_cli(*base, "--topic", "cli-no-such-topic", "--to-earliest", expect=1)[1]
    rest = ["--rest", rest_url(broker)]
    # Over REST the broker plans (admin/offset_snapshots.py); whole topics only, and snapshots need REST.
    _, err = run_cli("groups", "reset-offsets", "g", "--topic", "t:0", "--to-earliest", *rest, expect=2)
    assert "whole topics" in err
    _, err = run_cli("groups", "reset-offsets", "g", "--all-topics", "--to-earliest", *rest, expect=1)
    assert "no committed offsets" in err
    _, err = run_cli(*base, "--all-topics", "--to-snapshot", "s", expect=2)
    assert "REST API" in err


def test_datetime_and_duration_parse_as_kafka():
    from lodestream.cli.cluster_tools import parse_datetime_ms, parse_duration_ms

    assert parse_datetime_ms("1970-01-01T00:00:01.500Z") == 1500
    assert parse_datetime_ms("1970-01-01T00:00:02") == 2000  # no zone: UTC, as Kafka's Utils.getDateTime
    assert parse_datetime_ms("1970-01-01T01:00:00.000+01:00") == parse_datetime_ms("1970-01-01T01:00:00+0100") == 0
    assert parse_duration_ms("PT1H30M") == 5_400_000
    assert parse_duration_ms("P1DT2H3M4.005S") == 93_784_005
    assert parse_duration_ms("-PT1S") == -1000


def test_progress_on_a_terminal_and_off_it(monkeypatch):
    import io

    from lodestream.cli import cluster_tools

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    progress = cluster_tools.Progress("deleting topics", 3, terminal)
    for _ in range(3):
        progress.step()
    progress.done()
    assert terminal.getvalue() == ("\rdeleting topics: 1/3\rdeleting topics: 2/3\rdeleting topics: 3/3"
                                   "\rdeleting topics: 3/3 done\n")
    quiet = io.StringIO()
    few = cluster_tools.Progress("deleting topics", cluster_tools.PROGRESS_MIN - 1, quiet)
    few.step()
    few.done()
    assert quiet.getvalue() == ""
    monkeypatch.setattr(cluster_tools, "PROGRESS_EVERY_S", 0.0)
    log = io.StringIO()
    many = cluster_tools.Progress("deleting topics", cluster_tools.PROGRESS_MIN, log)
    for _ in range(cluster_tools.PROGRESS_MIN):
        many.step()
    many.done()
    lines = log.getvalue().splitlines()
    assert lines[0] == f"deleting topics: 1/{cluster_tools.PROGRESS_MIN}"
    assert lines[-1] == f"deleting topics: {cluster_tools.PROGRESS_MIN}/{cluster_tools.PROGRESS_MIN} done"
