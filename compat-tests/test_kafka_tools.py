"""Apache Kafka's own command-line tools (4.1.1 and a newer 4.x) against a `lodestream serve` subprocess.

Each tool is run the way its bin/*.sh script runs it (`java -cp <Kafka's jars> <main class>`,
compat-tests/kafka_tools.py). Every test checks what the tool printed and, through another client
(confluent-kafka) or another tool reading another API, what the broker holds afterwards.
"""

from __future__ import annotations

import datetime
import json
import re
import signal
import subprocess
import threading
import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import ConfigResource

from compat_util import REPLICATION_FACTOR, Deadline, ck_admin, ck_create_topics, unique_topic, wait_until
from kafka_tools import PINNED_VERSION, VERSIONS, KafkaTools, perf_test_figures


@pytest.fixture(scope="module", params=VERSIONS)
def tools(request) -> KafkaTools:
    """Every test runs with the pinned Kafka 4.1.1 and with the newer 4.x."""
    return KafkaTools.load(request.param)


def run(tools: KafkaTools, broker, tool: str, *args: str, **kwargs) -> str:
    return tools.run(tool, "--bootstrap-server", broker.bootstrap, *args, **kwargs).stdout


def option(tools: KafkaTools, old: str, new: str) -> str:
    """A console tool option that KIP-1147 renamed in Kafka 4.2 (the old name prints a deprecation line on
    stdout there): `old` for 4.1, `new` for the newer version."""
    return old if tools.version == PINNED_VERSION else new


def rows(table: str, first_column: str) -> list[list[str]]:
    """The data rows of a whitespace-separated table whose header starts with `first_column`."""
    lines = [line.split() for line in table.splitlines() if line.strip()]
    return [line for line in lines if line and line[0] != first_column]


def produce(broker, topic: str, values: list[bytes], partition: int = 0, timestamps: list[int] | None = None) -> None:
    producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
    for i, value in enumerate(values):
        producer.produce(topic, value, partition=partition, timestamp=timestamps[i] if timestamps else 0)
    assert producer.flush(30) == 0


def committed(broker, group: str, topic: str, partitions: int) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        found = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=30)
        return {tp.partition: tp.offset for tp in found}
    finally:
        consumer.close()


# -- kafka-topics ---------------------------------------------------------------------------------

def test_kafka_topics_create_list_describe_alter_delete(tools, broker):
    topic = unique_topic("tools-topics")
    out = run(tools, broker, "kafka-topics", "--create", "--topic", topic, "--partitions", "3",
              "--replication-factor", str(REPLICATION_FACTOR), "--config", "cleanup.policy=compact", "--config", "retention.ms=1234567")
    assert f"Created topic {topic}." in out
    assert topic in run(tools, broker, "kafka-topics", "--list").split()

    described = run(tools, broker, "kafka-topics", "--describe", "--topic", topic)
    # Against a cluster (compat-tests/README.md) the broker default min.insync.replicas=2 is listed too.
    assert re.search(rf"Topic: {topic}\tTopicId: \S+\tPartitionCount: 3\tReplicationFactor: {REPLICATION_FACTOR}\t"
                     r"Configs: (min.insync.replicas=2,)?cleanup.policy=compact,retention.ms=1234567", described), described
    replicas = ",".join([r"\d"] * REPLICATION_FACTOR)
    assert re.findall(rf"Partition: (\d)\tLeader: \d\tReplicas: {replicas}\tIsr: {replicas}", described) == ["0", "1", "2"]
    assert "Elr: N/A" not in described  # answered by DescribeTopicPartitions, not the Metadata fallback

    admin = ck_admin(broker.bootstrap)
    resource = ConfigResource("topic", topic)
    configs = admin.describe_configs([resource])[resource].result(30)
    assert configs["retention.ms"].value == "1234567" and configs["cleanup.policy"].value == "compact"

    assert run(tools, broker, "kafka-topics", "--alter", "--topic", topic, "--partitions", "5") == ""
    assert len(admin.list_topics(topic, timeout=30).topics[topic].partitions) == 5
    assert "PartitionCount: 5" in run(tools, broker, "kafka-topics", "--describe", "--topic", topic)

    run(tools, broker, "kafka-topics", "--delete", "--topic", topic)
    wait_until(lambda: topic not in admin.list_topics(timeout=30).topics, 30, "the topic's deletion")
    assert topic not in run(tools, broker, "kafka-topics", "--list").split()


# -- console producer and consumer ----------------------------------------------------------------

def test_console_producer_and_consumer_keys_headers_group_property_files(tools, broker, tmp_path):
    topic = unique_topic("tools-console")
    producer_config = tmp_path / "producer.properties"
    producer_config.write_text("acks=all\ncompression.type=lz4\nclient.id=tools-console-producer\n")
    lines = ["h1:v1,h2:v2\tk1|value-1", "h1:x\tk2|value-2", "h3:z\tk3|value-3"]
    reader_property = option(tools, "--property", "--reader-property")
    run(tools, broker, "kafka-console-producer", "--topic", topic,
        option(tools, "--producer.config", "--command-config"), str(producer_config),
        reader_property, "parse.key=true", reader_property, "key.separator=|", reader_property, "parse.headers=true",
        input="\n".join(lines) + "\n")

    # What the broker holds, read by another client.
    reader = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": f"check-{uuid.uuid4().hex}",
                       "auto.offset.reset": "earliest"})
    reader.assign([TopicPartition(topic, 0, 0)])
    seen = []
    deadline = Deadline(30, "reading the console producer's records")
    while len(seen) < 3:
        deadline.check()
        message = reader.poll(0.5)
        if message is not None and message.error() is None:
            seen.append((message.offset(), message.key(), message.value(), message.headers()))
    reader.close()
    assert seen == [(0, b"k1", b"value-1", [("h1", b"v1"), ("h2", b"v2")]),
                    (1, b"k2", b"value-2", [("h1", b"x")]),
                    (2, b"k3", b"value-3", [("h3", b"z")])]

    consumer_config = tmp_path / "consumer.properties"
    consumer_config.write_text("client.id=tools-console-consumer\nauto.offset.reset=earliest\n")
    group = f"tools-console-{uuid.uuid4().hex[:8]}"
    formatter_property = option(tools, "--property", "--formatter-property")
    done = tools.run("kafka-console-consumer", "--bootstrap-server", broker.bootstrap, "--topic", topic,
                     "--from-beginning", "--max-messages", "3", "--group", group,
                     option(tools, "--consumer.config", "--command-config"), str(consumer_config),
                     formatter_property, "print.key=true", formatter_property, "print.headers=true",
                     formatter_property, "key.separator=|", "--timeout-ms", "30000")
    assert done.stdout.splitlines() == ["h1:v1,h2:v2|k1|value-1", "h1:x|k2|value-2", "h3:z|k3|value-3"]
    assert "Processed a total of 3 messages" in done.stderr
    assert committed(broker, group, topic, 1) == {0: 3}  # the group's position, committed on close


def test_console_consumer_isolation_levels(tools, broker):
    topic = unique_topic("tools-isolation")
    ck_create_topics(broker.bootstrap, [topic])
    producer = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": f"tools-{uuid.uuid4().hex}"})
    producer.init_transactions(30)
    for values, commit in (([b"c1", b"c2"], True), ([b"a1"], False), ([b"c3"], True)):
        producer.begin_transaction()
        for value in values:
            producer.produce(topic, value, partition=0)
        assert producer.flush(30) == 0  # in the log before the abort (librdkafka drops unsent ones on abort)
        (producer.commit_transaction if commit else producer.abort_transaction)(30)

    def consume(*extra: str, count: int) -> list[str]:
        return run(tools, broker, "kafka-console-consumer", "--topic", topic, "--from-beginning",
                   "--max-messages", str(count), "--timeout-ms", "30000", *extra).splitlines()

    assert consume("--isolation-level", "read_committed", count=3) == ["c1", "c2", "c3"]
    assert consume(count=4) == ["c1", "c2", "a1", "c3"]  # read_uncommitted, the default, shows the aborted one


# -- kafka-consumer-groups ------------------------------------------------------------------------

def test_kafka_consumer_groups(tools, broker):
    topic = unique_topic("tools-groups")
    ck_create_topics(broker.bootstrap, [topic], partitions=2)
    base = (int(time.time()) - 3600) * 1000
    for partition in (0, 1):
        produce(broker, topic, [b"v%d" % i for i in range(10)], partition, [base + i * 1000 for i in range(10)])
    group = f"tools-group-{uuid.uuid4().hex[:8]}"
    committer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group, "enable.auto.commit": False})
    committer.commit(offsets=[TopicPartition(topic, 0, 4), TopicPartition(topic, 1, 10)], asynchronous=False)
    committer.close()

    assert group in run(tools, broker, "kafka-consumer-groups", "--list").split()
    described = rows(run(tools, broker, "kafka-consumer-groups", "--describe", "--group", group), "GROUP")
    # GROUP TOPIC PARTITION CURRENT-OFFSET LOG-END-OFFSET LAG, rows in no particular order
    assert sorted(row[:6] for row in described) == [[group, topic, "0", "4", "10", "6"], [group, topic, "1", "10", "10", "0"]]

    # --members --verbose while a member holds both partitions.
    member_group = f"tools-members-{uuid.uuid4().hex[:8]}"
    member = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": member_group, "client.id": "tools-member",
                       "auto.offset.reset": "earliest"})
    member.subscribe([topic])
    deadline = Deadline(60, "the member's assignment")
    while len(member.assignment()) < 2:
        deadline.check()
        member.poll(0.2)
    try:
        members = run(tools, broker, "kafka-consumer-groups", "--describe", "--group", member_group,
                      "--members", "--verbose")
        (row,) = rows(members, "GROUP")
        # GROUP CONSUMER-ID HOST CLIENT-ID #PARTITIONS CURRENT-EPOCH CURRENT-ASSIGNMENT ... (epochs "-": classic)
        assert (row[0], row[3], row[4], row[6]) == (member_group, "tools-member", "2", f"{topic}:0,1"), members
    finally:
        member.close()

    def reset(*how: str, execute: bool) -> dict[int, int]:
        out = run(tools, broker, "kafka-consumer-groups", "--reset-offsets", "--group", group, "--topic", topic,
                  *how, "--execute" if execute else "--dry-run")
        return {int(row[2]): int(row[3]) for row in rows(out, "GROUP")}

    assert reset("--to-earliest", execute=False) == {0: 0, 1: 0}
    assert committed(broker, group, topic, 2) == {0: 4, 1: 10}  # a dry run changes nothing
    assert reset("--to-offset", "3", execute=True) == {0: 3, 1: 3}
    assert committed(broker, group, topic, 2) == {0: 3, 1: 3}
    assert reset("--shift-by", "2", execute=True) == {0: 5, 1: 5}
    assert committed(broker, group, topic, 2) == {0: 5, 1: 5}
    moment = datetime.datetime.fromtimestamp((base + 7000) / 1000, datetime.timezone.utc)
    assert reset("--to-datetime", moment.strftime("%Y-%m-%dT%H:%M:%S.000Z"), execute=True) == {0: 7, 1: 7}
    assert committed(broker, group, topic, 2) == {0: 7, 1: 7}

    out = run(tools, broker, "kafka-consumer-groups", "--delete-offsets", "--group", group, "--topic", topic)
    assert f"Request succeeded for deleting offsets from group {group}." in out
    assert committed(broker, group, topic, 2) == {0: -1001, 1: -1001}  # OFFSET_INVALID: nothing committed

    out = run(tools, broker, "kafka-consumer-groups", "--delete", "--group", group)
    assert f"Deletion of requested consumer groups ('{group}') was successful." in out
    assert group not in run(tools, broker, "kafka-consumer-groups", "--list").split()


# -- kafka-configs --------------------------------------------------------------------------------

def test_kafka_configs_topics_brokers_quotas_groups(tools, broker):
    topic = unique_topic("tools-configs")
    ck_create_topics(broker.bootstrap, [topic])
    admin = ck_admin(broker.bootstrap)

    out = run(tools, broker, "kafka-configs", "--entity-type", "topics", "--entity-name", topic, "--alter",
              "--add-config", "retention.ms=3600000,max.message.bytes=2000000")
    assert f"Completed updating config for topic {topic}." in out
    described = run(tools, broker, "kafka-configs", "--entity-type", "topics", "--entity-name", topic, "--describe")
    assert ("retention.ms=3600000 sensitive=false synonyms={DYNAMIC_TOPIC_CONFIG:retention.ms=3600000, "
            "DEFAULT_CONFIG:log.retention.hours=168}") in described
    resource = ConfigResource("topic", topic)
    assert admin.describe_configs([resource])[resource].result(30)["max.message.bytes"].value == "2000000"
    run(tools, broker, "kafka-configs", "--entity-type", "topics", "--entity-name", topic, "--alter",
        "--delete-config", "retention.ms")
    found = admin.describe_configs([resource])[resource].result(30)["retention.ms"]
    assert (found.value, found.is_default) == ("604800000", True)

    out = run(tools, broker, "kafka-configs", "--entity-type", "brokers", "--entity-default", "--alter",
              "--add-config", "log.cleaner.backoff.ms=20000")
    assert "Completed updating default config for brokers in the cluster." in out
    try:
        described = run(tools, broker, "kafka-configs", "--entity-type", "brokers", "--entity-name", "1",
                        "--describe", "--all")
        assert ("log.cleaner.backoff.ms=20000 sensitive=false synonyms={DYNAMIC_DEFAULT_BROKER_CONFIG:"
                "log.cleaner.backoff.ms=20000, DEFAULT_CONFIG:log.cleaner.backoff.ms=15000}") in described
        broker_resource = ConfigResource("broker", "1")
        assert admin.describe_configs([broker_resource])[broker_resource].result(30)[
            "log.cleaner.backoff.ms"].value == "20000"
    finally:
        run(tools, broker, "kafka-configs", "--entity-type", "brokers", "--entity-default", "--alter",
            "--delete-config", "log.cleaner.backoff.ms")

    user, client = f"alice-{uuid.uuid4().hex[:6]}", f"client-{uuid.uuid4().hex[:6]}"
    run(tools, broker, "kafka-configs", "--entity-type", "users", "--entity-name", user, "--alter",
        "--add-config", "producer_byte_rate=1024,consumer_byte_rate=2048")
    run(tools, broker, "kafka-configs", "--entity-type", "users", "--entity-name", user, "--entity-type", "clients",
        "--entity-name", client, "--alter", "--add-config", "request_percentage=50")
    assert (f"Quota configs for user-principal '{user}' are consumer_byte_rate=2048.0, producer_byte_rate=1024.0"
            in run(tools, broker, "kafka-configs", "--entity-type", "users", "--entity-name", user, "--describe"))
    assert (f"Quota configs for user-principal '{user}', client-id '{client}' are request_percentage=50.0"
            in run(tools, broker, "kafka-configs", "--entity-type", "users", "--entity-name", user,
                   "--entity-type", "clients", "--entity-name", client, "--describe"))

    group = f"tools-configs-{uuid.uuid4().hex[:8]}"
    run(tools, broker, "kafka-configs", "--entity-type", "groups", "--entity-name", group, "--alter",
        "--add-config", "consumer.byte.rate=5000")
    expected = "consumer.byte.rate=5000 sensitive=false synonyms={DYNAMIC_GROUP_CONFIG:consumer.byte.rate=5000}"
    assert expected in run(tools, broker, "kafka-configs", "--entity-type", "groups", "--entity-name", group,
                           "--describe")
    assert expected in run(tools, broker, "kafka-configs", "--entity-type", "groups", "--describe")  # listed
    refused = tools.run("kafka-configs", "--bootstrap-server", broker.bootstrap, "--entity-type", "groups",
                        "--entity-name", group, "--alter", "--add-config", "consumer.session.timeout.ms=50000",
                        check=False)
    assert refused.returncode != 0 and "Unknown group config name: consumer.session.timeout.ms" in refused.stdout + refused.stderr


# -- offsets, records, log dirs -------------------------------------------------------------------

def test_get_offsets_delete_records_log_dirs(tools, broker, tmp_path):
    topic = unique_topic("tools-offsets")
    ck_create_topics(broker.bootstrap, [topic])
    base = (int(time.time()) - 600) * 1000
    produce(broker, topic, [b"x" * 100] * 10, 0, [base + i for i in range(10)])

    assert run(tools, broker, "kafka-get-offsets", "--topic", topic).split() == [f"{topic}:0:10"]
    assert run(tools, broker, "kafka-get-offsets", "--topic", topic, "--time", "-2").split() == [f"{topic}:0:0"]
    assert run(tools, broker, "kafka-get-offsets", "--topic", topic, "--time", "-3").split() == [f"{topic}:0:9"]
    assert run(tools, broker, "kafka-get-offsets", "--topic", topic, "--time", str(base + 4)).split() == [f"{topic}:0:4"]

    offsets = tmp_path / "delete.json"
    offsets.write_text(json.dumps({"partitions": [{"topic": topic, "partition": 0, "offset": 4}], "version": 1}))
    out = run(tools, broker, "kafka-delete-records", "--offset-json-file", str(offsets))
    assert f"partition: {topic}-0\tlow_watermark: 4" in out
    assert run(tools, broker, "kafka-get-offsets", "--topic", topic, "--time", "earliest").split() == [f"{topic}:0:4"]

    out = run(tools, broker, "kafka-log-dirs", "--describe", "--topic-list", topic)
    report = json.loads(out.splitlines()[-1])
    (log_dir,) = report["brokers"][0]["logDirs"]
    assert log_dir["error"] is None and log_dir["logDir"].startswith(str(broker.data_dir))
    (partition,) = log_dir["partitions"]
    assert partition["partition"] == f"{topic}-0" and partition["size"] > 1000 and not partition["isFuture"]


# -- kafka-transactions ---------------------------------------------------------------------------

def test_kafka_transactions_list_describe_describe_producers_find_hanging(tools, broker):
    topic = unique_topic("tools-txn")
    ck_create_topics(broker.bootstrap, [topic])
    transactional_id = f"tools-txn-{uuid.uuid4().hex[:8]}"
    producer = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": transactional_id})
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(topic, b"open", partition=0)
    assert producer.flush(30) == 0

    listed = run(tools, broker, "kafka-transactions", "list")
    row = next(row for row in rows(listed, "TransactionalId") if row[0] == transactional_id)
    producer_id, state = row[2], row[3]
    assert state == "Ongoing"
    described = run(tools, broker, "kafka-transactions", "describe", "--transactional-id", transactional_id)
    (row,) = rows(described, "CoordinatorId")
    assert row[0].isdigit() and row[1] == transactional_id and row[2] == producer_id and row[4] == "Ongoing"
    assert f"{topic}-0" in described
    producers = run(tools, broker, "kafka-transactions", "describe-producers", "--topic", topic, "--partition", "0")
    (row,) = rows(producers, "ProducerId")
    assert row[0] == producer_id and row[5] == "0"  # the open transaction starts at offset 0
    # Open for seconds, not past the 15-minute --max-transaction-timeout: not hanging.
    hanging = run(tools, broker, "kafka-transactions", "find-hanging", "--broker-id", "1")
    assert hanging.startswith("Topic") and rows(hanging, "Topic") == []

    producer.commit_transaction(30)
    described = run(tools, broker, "kafka-transactions", "describe", "--transactional-id", transactional_id)
    assert rows(described, "CoordinatorId")[0][4] == "CompleteCommit"


def test_kafka_transactions_abort_writes_the_marker(tools, broker):
    """`abort` ends a transaction on one partition by itself (for hanging ones): WriteTxnMarkers with the
    producer DescribeProducers reports; read_committed readers then get past it."""
    topic = unique_topic("tools-abort")
    ck_create_topics(broker.bootstrap, [topic])
    producer = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": f"tools-abort-{uuid.uuid4().hex}",
                         "transaction.timeout.ms": 300000})
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(topic, b"left-open", partition=0)
    assert producer.flush(30) == 0
    produce(broker, topic, [b"after"])  # a plain record behind the open transaction: offset 1

    def stable_offset() -> int:
        reader = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": f"check-{uuid.uuid4().hex}",
                           "isolation.level": "read_committed"})
        try:
            return reader.get_watermark_offsets(TopicPartition(topic, 0), timeout=30)[1]
        finally:
            reader.close()

    assert stable_offset() == 0  # held at the open transaction's first offset
    run(tools, broker, "kafka-transactions", "abort", "--topic", topic, "--partition", "0", "--start-offset", "0")
    producers = run(tools, broker, "kafka-transactions", "describe-producers", "--topic", topic, "--partition", "0")
    assert [row[5] for row in rows(producers, "ProducerId")] == ["None"]  # its transaction is no longer open
    assert stable_offset() == 3  # the open record, the plain one and the ABORT marker
    del producer  # its coordinator still times the transaction out later, as with Kafka


# -- kafka-features, kafka-broker-api-versions -----------------------------------------------------

def test_kafka_features_and_broker_api_versions(tools, broker):
    features = run(tools, broker, "kafka-features", "describe")
    assert re.search(r"Feature: group.version\s+SupportedMinVersion: 0\s+SupportedMaxVersion: 1\s+"
                     r"FinalizedVersionLevel: 1\s+Epoch: 0", features), features
    versions = run(tools, broker, "kafka-broker-api-versions")
    assert "Produce(0): 0 to 13 [usable: 13]" in versions
    assert "DescribeUserScramCredentials(50): 0 [usable: 0]" in versions
    assert "ListConfigResources(74): 0 to 1 [usable: 1]" in versions


# -- perf tools -----------------------------------------------------------------------------------

def test_producer_and_consumer_perf_test(tools, broker):
    topic = unique_topic("tools-perf")
    ck_create_topics(broker.bootstrap, [topic])
    out = tools.run("kafka-producer-perf-test", "--topic", topic, "--num-records", "20000", "--record-size", "1000",
                    "--throughput", "-1", "--producer-props", f"bootstrap.servers={broker.bootstrap}",
                    "acks=all").stdout
    assert re.search(r"^20000 records sent, [\d.]+ records/sec \([\d.]+ MB/sec\)", out, re.M), out
    assert run(tools, broker, "kafka-get-offsets", "--topic", topic).split() == [f"{topic}:0:20000"]
    figures = perf_test_figures(run(tools, broker, "kafka-consumer-perf-test", "--topic", topic, "--messages", "20000"))
    assert figures["data.consumed.in.nMsg"] == "20000"
    assert float(figures["data.consumed.in.MB"]) == pytest.approx(20000 * 1000 / 1048576, rel=1e-3)


# -- verifiable producer and consumer -------------------------------------------------------------

class JsonLines:
    """A tool's stdout, one JSON event per line, read on a thread."""

    def __init__(self, process) -> None:
        self.process = process
        self.events: list[dict] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            if line.startswith("{"):
                with self._lock:
                    self.events.append(json.loads(line))

    def named(self, name: str) -> list[dict]:
        with self._lock:
            return [event for event in self.events if event.get("name") == name]

    def consumed(self) -> int:
        return sum(part["count"] for event in self.named("records_consumed") for part in event["partitions"])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # the tools' shutdown hook closes the client cleanly
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(30)
        self._thread.join(30)


MESSAGES = 100_000


def test_verifiable_producer_and_consumer_exactly_once_through_a_rebalance(tools, broker):
    """Kafka's system-test tools: every message acknowledged with acks=all is consumed exactly once by a
    group that rebalances twice (a second consumer joins, then leaves) while the producer runs."""
    topic = unique_topic("tools-verifiable")
    ck_create_topics(broker.bootstrap, [topic], partitions=3)
    group = f"tools-verifiable-{uuid.uuid4().hex[:8]}"

    def consumer() -> JsonLines:
        return JsonLines(tools.start("kafka-verifiable-consumer", "--bootstrap-server", broker.bootstrap,
                                     "--topic", topic, "--group-id", group, "--reset-policy", "earliest",
                                     "--session-timeout", "10000", stdout=subprocess.PIPE))

    consumers = [consumer()]
    producer = None
    try:
        wait_until(lambda: consumers[0].named("partitions_assigned"), 60, "the first consumer's assignment")
        producer = JsonLines(tools.start("kafka-verifiable-producer", "--bootstrap-server", broker.bootstrap,
                                         "--topic", topic, "--max-messages", str(MESSAGES), "--acks", "-1",
                                         "--throughput", "10000", stdout=subprocess.PIPE))
        wait_until(lambda: consumers[0].consumed() >= MESSAGES // 5, 120, "20% consumed")
        consumers.append(consumer())
        wait_until(lambda: consumers[1].named("partitions_assigned") and
                   any(event["partitions"] for event in consumers[1].named("partitions_assigned")),
                   120, "the second consumer's assignment")
        wait_until(lambda: sum(c.consumed() for c in consumers) >= MESSAGES * 3 // 5, 120, "60% consumed")
        consumers[1].stop()  # leaves the group: a second rebalance
        assert producer.process.wait(180) == 0
        acked = {(event["partition"], event["offset"]) for event in producer.named("producer_send_success")}
        assert len(acked) == MESSAGES and not producer.named("producer_send_error")
        wait_until(lambda: sum(c.consumed() for c in consumers) >= MESSAGES, 180, "every record consumed",
                   lambda: f"{sum(c.consumed() for c in consumers)} of {MESSAGES}")
    finally:
        for running in consumers + ([producer] if producer else []):
            running.stop()

    consumed: list[tuple[int, int]] = []
    for running in consumers:
        for event in running.named("records_consumed"):
            for part in event["partitions"]:
                assert part["count"] == part["maxOffset"] - part["minOffset"] + 1, part  # no gap inside a batch
                consumed += [(part["partition"], offset) for offset in range(part["minOffset"], part["maxOffset"] + 1)]
    assert len(consumed) == len(set(consumed)), "a record was consumed twice"
    assert set(consumed) == acked
    rebalances = sum(len(c.named("partitions_revoked")) for c in consumers)
    assert rebalances >= 2
