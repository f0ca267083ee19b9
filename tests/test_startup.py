"""Start-up refusals, Kafka's configuration names, and the health of a broker whose disk is full.

A broker must never be silently wrong: what it cannot do, it refuses at start-up
with one line naming the key, address or path, and exit code 2 (no traceback).
Each case here starts a real `lodestream serve` and reads what it printed.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from broker_process import BrokerProcess

LODESTREAM = str(Path(sys.executable).parent / "lodestream")
START_TIMEOUT_S = 30


def serve(tmp_path: Path, *overrides: str, config: Path | None = None, data: str = "data",
          timeout: float = START_TIMEOUT_S) -> subprocess.CompletedProcess:
    """Run `lodestream serve` expecting it to stop by itself (a refusal); returns the finished process."""
    cmd = [LODESTREAM, "serve", "--override", "listeners=PLAINTEXT://127.0.0.1:0",
           "--override", "admin.listeners=", "--override", f"log.dirs={tmp_path / data}"]
    if config is not None:
        cmd += ["--config", str(config)]
    for override in overrides:
        cmd += ["--override", override]
    return subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)


def assert_refused(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit code 2, one line on stderr, no traceback, naming every fragment."""
    assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("lodestream:")]
    assert len(lines) == 1, result.stderr[-3000:]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


# -- secure listeners without what they need -----------------------------------------------

@pytest.mark.parametrize("listener, fragments", [
    # Kafka's default sasl.enabled.mechanisms is GSSAPI, which is not implemented: refused, not served open.
    ("SASL_PLAINTEXT://127.0.0.1:0", ("sasl.enabled.mechanisms=GSSAPI", "not implemented")),
    ("SASL_SSL://127.0.0.1:0", ("ssl.keystore.location",)),
])
def test_sasl_listeners_without_their_settings_are_refused(tmp_path, listener, fragments):
    result = serve(tmp_path, f"listeners=PLAINTEXT://127.0.0.1:0,{listener}")
    assert_refused(result, *fragments)


def test_an_ssl_listener_without_its_key_is_refused_not_served_in_plaintext(tmp_path):
    result = serve(tmp_path, "listeners=INTERNAL://127.0.0.1:0",
                   "listener.security.protocol.map=INTERNAL:SSL,CONTROLLER:PLAINTEXT")
    assert_refused(result, "an SSL listener needs its key and certificate", "ssl.keystore.location")


def test_tls_between_brokers_and_controllers_is_refused_until_it_is_built(tmp_path):
    result = serve(tmp_path, "listeners=PLAINTEXT://127.0.0.1:0,CONTROLLER://127.0.0.1:0",
                   "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:SSL")
    assert_refused(result, "controller listener CONTROLLER uses SSL")


def test_listener_name_without_a_security_protocol_is_refused(tmp_path):
    result = serve(tmp_path, "listeners=FOO://127.0.0.1:0")
    assert_refused(result, "listener FOO", "listener.security.protocol.map")


def test_bad_security_protocol_map_is_refused(tmp_path):
    result = serve(tmp_path, "listener.security.protocol.map=PLAINTEXT:TLS")
    assert_refused(result, "listener.security.protocol.map", "'PLAINTEXT:TLS'")


def test_custom_listener_name_mapped_to_plaintext_serves(tmp_path):
    broker = BrokerProcess(tmp_path / "b", {"listeners": "CLIENT://127.0.0.1:0",
                                            "listener.security.protocol.map": "CLIENT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                                            "inter.broker.listener.name": "CLIENT"})
    try:
        broker.start()
        metadata = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=10)
        assert list(metadata.brokers) == [1]
    finally:
        broker.stop()


# -- cluster configurations this node cannot take part in as given ---------------------------

@pytest.mark.parametrize("overrides, fragments", [
    (("controller.quorum.voters=1@127.0.0.1:19093,2@127.0.0.1:19094",), ("controller.quorum.voters", "CONTROLLER")),
    (("listeners=PLAINTEXT://127.0.0.1:0,CONTROLLER://127.0.0.1:0",
      "controller.quorum.voters=1@127.0.0.1:19093,2@127.0.0.1:19094"), ("cluster.id", "every node")),
    (("node.id=1", "controller.quorum.voters=2@127.0.0.1:19094"), ("controller.quorum.voters", "node.id=1")),
    (("controller.quorum.bootstrap.servers=127.0.0.1:19093,127.0.0.1:19094",),
     ("controller.quorum.bootstrap.servers", "static voters")),
    (("process.roles=broker",), ("process.roles=broker", "controller.quorum.voters")),
    (("process.roles=controller",), ("process.roles=controller",)),
    (("process.roles=broker,tiebreaker",), ("process.roles", "broker, controller, or both")),
    (("process.roles=broker", "node.id=1", "controller.quorum.voters=1@127.0.0.1:19093"),
     ("controller.quorum.voters", "no controller role")),
    (("process.roles=controller", "node.id=1", "controller.quorum.voters=1@127.0.0.1:19093"),
     ("controller-only", "PLAINTEXT")),
])
def test_cluster_configurations_this_node_cannot_join_are_refused(tmp_path, overrides, fragments):
    assert_refused(serve(tmp_path, *overrides), *fragments)


# -- the environment stops start-up ------------------------------------------------------

@pytest.mark.parametrize("listeners", ["PLAINTEXT://127.0.0.1:{port}",
                                       "PLAINTEXT://127.0.0.1:0,CONTROLLER://127.0.0.1:{port}"])
def test_port_in_use(tmp_path, listeners):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = serve(tmp_path, "listeners=" + listeners.format(port=port))
    assert_refused(result, "cannot start", f"127.0.0.1:{port}", "in use")


# A busy admin.listeners port: tests/test_rest_api.py::test_busy_admin_port_stops_start_up_naming_the_key.


def test_data_dir_under_a_file(tmp_path):
    (tmp_path / "plain-file").write_text("not a directory")
    result = serve(tmp_path, data="plain-file/data")
    assert_refused(result, "log.dirs", str(tmp_path / "plain-file" / "data"), "Not a directory")


@contextlib.contextmanager
def tmpfs(target: Path, options: str):
    """Mount a tmpfs on target for the block (root can, as in CI; elsewhere the test is skipped)."""
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False)


@pytest.fixture
def read_only_dir(tmp_path):
    (tmp_path / "ro").mkdir()
    with tmpfs(tmp_path / "ro", "ro,size=1m") as target:
        yield target


def test_unwritable_data_dir(tmp_path, read_only_dir):
    result = serve(tmp_path, data="ro")
    assert_refused(result, "log.dirs", str(read_only_dir), "Read-only file system")


def test_second_broker_on_the_same_data_dir(tmp_path):
    first = BrokerProcess(tmp_path / "b")
    try:
        first.start()
        result = serve(tmp_path, data="b/data")
        line = assert_refused(result, "log.dirs", str(first.data_dir), "in use by another broker")
        assert f"pid {first.proc.pid}" in line
        # The first broker is untouched and still serves.
        metadata = AdminClient({"bootstrap.servers": first.bootstrap}).list_topics(timeout=10)
        assert list(metadata.brokers) == [1]
    finally:
        first.stop()


# -- a log write failure shows in /ready and the metrics, logged once per interval --------

@pytest.fixture
def small_disk(tmp_path):
    """A broker whose data directory is a 40 MiB tmpfs."""
    broker = BrokerProcess(tmp_path / "b", {"log.flush.interval.messages": "1"})
    with tmpfs(broker.data_dir, "size=40m"):
        try:
            yield broker
        finally:
            broker.stop()


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def test_disk_full_is_reported_and_loses_nothing(small_disk):
    broker = small_disk
    broker.data_dir.mkdir(parents=True, exist_ok=True)
    # Freed later: space that comes back. Reopening LevelDB writes its recovered log (up to the 8 MiB
    # memtable) as a table first, so more than that must come back.
    (broker.data_dir / "ballast").write_bytes(b"\0" * (16 << 20))
    broker.start()
    topic = "fill"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(timeout=20)
    assert httpx.get(f"{broker.admin_url}/ready").status_code == 200

    acknowledged: list[int] = []
    refused: list[str] = []

    def report(err, msg):
        if err is None:
            acknowledged.append(msg.offset())
        else:
            refused.append(err.name())

    producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "retries": 0,
                         "enable.idempotence": False, "linger.ms": 5, "message.timeout.ms": 20000})
    payload = os.urandom(4096)  # incompressible: the disk fills at the rate we write
    deadline = time.monotonic() + 60
    sent = 0
    while len(refused) < 50 and time.monotonic() < deadline:
        for _ in range(200):
            producer.produce(topic, payload, partition=0, on_delivery=report)
            sent += 1
        producer.flush(10)
    producer.flush(20)
    assert refused, f"the disk never filled ({sent} messages sent)"
    assert set(refused) == {"KAFKA_STORAGE_ERROR"}, set(refused)

    ready = httpx.get(f"{broker.admin_url}/ready")
    assert ready.status_code == 503
    assert "log directory" in ready.json()["message"], ready.text
    metrics = httpx.get(f"{broker.admin_url}/metrics").text
    assert _metric(metrics, "lodestream_offline_log_dirs") == 1
    assert _metric(metrics, "lodestream_offline_partitions") >= 1

    # Rate-limited: many rejected appends, at most a couple of error lines (once per minute).
    failures_logged = broker.log_path.read_text(errors="replace").count("log write failed")
    print(f"disk full: {len(acknowledged)} acknowledged, {len(refused)} refused, {failures_logged} error lines")
    assert 1 <= failures_logged <= 2, (failures_logged, len(refused))

    # Nothing acknowledged is lost: every acknowledged offset reads back, and the broker still serves.
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "reader",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        read: set[int] = set()
        want = set(acknowledged)
        deadline = time.monotonic() + 30
        while not want <= read and time.monotonic() < deadline:
            for message in consumer.consume(500, timeout=1):
                if message.error() is None:
                    read.add(message.offset())
                elif message.error().code() != KafkaError._PARTITION_EOF:
                    raise AssertionError(message.error())
        assert want <= read, f"{len(want - read)} acknowledged records missing"
    finally:
        consumer.close()

    # Space comes back (the ballast file goes): appends succeed again without a restart (the broker
    # reopens LevelDB, which refuses every write after a failed one).
    (broker.data_dir / "ballast").unlink()
    resumed = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "enable.idempotence": False})
    outcomes: list = []
    resumed.produce(topic, b"after", partition=0, on_delivery=lambda err, msg: outcomes.append(err))
    resumed.flush(30)
    assert outcomes == [None], outcomes
    assert httpx.get(f"{broker.admin_url}/ready").status_code == 200
    assert "log writes succeed again" in broker.log_path.read_text(errors="replace")

    # And after a restart: every acknowledged record is still there, and appends go on.
    broker.stop()
    broker.start()
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "after-restart",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        read_again: set[int] = set()
        deadline = time.monotonic() + 30
        while not want <= read_again and time.monotonic() < deadline:
            for message in consumer.consume(500, timeout=1):
                if message.error() is None:
                    read_again.add(message.offset())
        assert want <= read_again, f"{len(want - read_again)} acknowledged records missing after the restart"
    finally:
        consumer.close()
    again = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "enable.idempotence": False})
    outcomes.clear()
    again.produce(topic, b"after restart", partition=0, on_delivery=lambda err, msg: outcomes.append(err))
    again.flush(20)
    assert outcomes == [None], outcomes


# -- Kafka's configuration names ---------------------------------------------------------

# Apache Kafka 4.1's config/server.properties (the quickstart's single combined node), its settings as
# shipped (comments left out). The test moves the ports to 0 and log.dirs to a temporary directory.
KAFKA_41_QUICKSTART = """\
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=localhost:9093
listeners=PLAINTEXT://:9092,CONTROLLER://:9093
inter.broker.listener.name=PLAINTEXT
advertised.listeners=PLAINTEXT://localhost:9092,CONTROLLER://localhost:9093
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL
num.network.threads=3
num.io.threads=8
socket.send.buffer.bytes=102400
socket.receive.buffer.bytes=102400
socket.request.max.bytes=104857600
log.dirs=/tmp/kraft-combined-logs
num.partitions=1
num.recovery.threads.per.data.dir=1
offsets.topic.replication.factor=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
log.retention.hours=168
log.segment.bytes=1073741824
log.retention.check.interval.ms=300000
"""


def test_kafka_quickstart_server_properties_start_the_broker(tmp_path):
    config = tmp_path / "server.properties"
    config.write_text(KAFKA_41_QUICKSTART)
    broker = BrokerProcess(tmp_path / "b", {
        "listeners": "PLAINTEXT://127.0.0.1:0,CONTROLLER://127.0.0.1:0",
        "advertised.listeners": "PLAINTEXT://127.0.0.1:0,CONTROLLER://127.0.0.1:0",
        "controller.quorum.bootstrap.servers": "127.0.0.1:0",
    }, config=config)
    try:
        broker.start()
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        admin.create_topics([NewTopic("quick", num_partitions=1, replication_factor=1)])["quick"].result(timeout=20)
        producer = Producer({"bootstrap.servers": broker.bootstrap})
        producer.produce("quick", b"hello")
        assert producer.flush(20) == 0
        log = broker.log_path.read_text(errors="replace")
        warnings = [line for line in log.splitlines() if "accepted with no effect here" in line]
        assert len(warnings) == 1, warnings  # one warning for all of them
        for key in ("num.network.threads", "num.io.threads", "socket.send.buffer.bytes",
                    "share.coordinator.state.topic.min.isr"):
            assert key in warnings[0], key
    finally:
        broker.stop()


def test_all_unknown_keys_are_named_at_once(tmp_path):
    config = tmp_path / "server.properties"
    config.write_text("num.io.threads=8\nno.such.key=1\nlog.retention.hourz=2\n")
    result = serve(tmp_path, "also.unknown=x", config=config)
    line = assert_refused(result, "configuration error", "'also.unknown'", "'log.retention.hourz'", "'no.such.key'")
    assert "num.io.threads" not in line


def test_bad_values_are_named_with_the_unknown_keys(tmp_path):
    line = assert_refused(serve(tmp_path, "num.io.threads=eight", "num.partitions=0", "bogus=1"),
                          "'bogus'", "'num.io.threads'", "'num.partitions'")
    assert line.count(";") == 2


def test_conflicting_node_ids_are_refused(tmp_path):
    assert_refused(serve(tmp_path, "node.id=1", "broker.id=2"), "broker.id=2 conflicts with node.id=1")
