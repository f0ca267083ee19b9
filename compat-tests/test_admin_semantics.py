"""Broker semantics beyond produce/consume, checked through real clients.

* Metadata for a missing topic, with and without auto-creation: per request
  (``allow_auto_topic_creation``, via confluent-kafka's producer/consumer and a
  raw kafka-python MetadataRequest) and per broker
  (``--override auto.create.topics.enable=false`` on a separate broker);
* ListOffsets by timestamp (confluent-kafka AdminClient ``OffsetSpec.for_timestamp``,
  consumer ``offsets_for_times``, kafka-python ``offsets_for_times``);
* DeleteRecords, then a fetch below the new log start -> OFFSET_OUT_OF_RANGE;
* DescribeConfigs / IncrementalAlterConfigs / AlterConfigs on ``max.message.bytes``
  and seeing the new limit enforced by Produce;
* CreateTopics with ``validate_only``.
"""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewTopic,
    OffsetSpec,
    ResourceType,
)

from compat_util import REPLICATION_FACTOR, Deadline, ck_admin, ck_create_topics, now_ms, unique_topic

UNKNOWN_TOPIC_OR_PARTITION = 3
LEADER_NOT_AVAILABLE = 5
OFFSET_OUT_OF_RANGE = 1
MESSAGE_TOO_LARGE = 10
RECORD_LIST_TOO_LARGE = 18


# -- helpers -------------------------------------------------------------------


def _kp_admin(bootstrap: str):
    from kafka import KafkaAdminClient

    return KafkaAdminClient(bootstrap_servers=bootstrap, client_id="compat-admin", request_timeout_ms=30000)


def _kp_metadata(admin, topics: list[str], allow_auto_topic_creation: bool) -> dict:
    """A raw MetadataRequest through kafka-python (KafkaAdminClient only exposes
    allow_auto_topic_creation=False).  Uses kafka-python 3.x's connection manager."""
    from kafka.protocol.metadata import MetadataRequest

    req = MetadataRequest(
        topics=[MetadataRequest.MetadataRequestTopic(name=t) for t in topics],
        allow_auto_topic_creation=allow_auto_topic_creation,
    )
    resp = admin._manager.run(admin._manager.send, req)
    return {t["name"]: t for t in resp.to_dict()["topics"]}


def _ck_topic_exists(bootstrap: str, topic: str) -> bool:
    """Whether the full topic list (no auto-create possible) contains ``topic``."""
    return topic in ck_admin(bootstrap).list_topics(timeout=10).topics


def _wait_topic_ready(bootstrap: str, topic: str, timeout: float = 30) -> int:
    """Poll until ``topic`` is in Metadata with leaders; returns its partition count."""
    admin = ck_admin(bootstrap)
    deadline = Deadline(timeout, f"auto-created topic {topic} to appear")
    while True:
        md = admin.list_topics(timeout=10)
        t = md.topics.get(topic)
        if t is not None and t.error is None and t.partitions and all(
            p.leader >= 0 for p in t.partitions.values()
        ):
            return len(t.partitions)
        deadline.check(f"(last: {t!r} error={getattr(t, 'error', None)})")
        time.sleep(0.1)  # polling interval


def _produce_sync(bootstrap: str, topic: str, values, *, timestamps=None, **conf):
    """Produce and return the list of (err, offset) delivery results, in order."""
    p = Producer({"bootstrap.servers": bootstrap, "max.in.flight.requests.per.connection": 1, **conf})
    results = [None] * len(values)

    def cb(i):
        def on_delivery(err, m):
            results[i] = (err, m.offset())

        return on_delivery

    for i, v in enumerate(values):
        kw = {}
        if timestamps is not None:
            kw["timestamp"] = timestamps[i]
        p.produce(topic, value=v, partition=0, on_delivery=cb(i), **kw)
    assert p.flush(30) == 0, "undelivered messages after 30s"
    return results


def _describe_topic_config(bootstrap: str, topic: str, name: str) -> ConfigEntry:
    admin = ck_admin(bootstrap)
    fut = admin.describe_configs([ConfigResource(ResourceType.TOPIC, topic)])
    [(res, f)] = fut.items()
    entries = f.result(timeout=30)
    assert name in entries, f"{name} missing from DescribeConfigs for {topic}: {sorted(entries)}"
    return entries[name]


# -- Metadata / auto-create ------------------------------------------------------


def test_metadata_missing_topic_auto_create_by_producer(broker):
    """librdkafka producers request auto-creation (allow.auto.create.topics defaults
    to true for producers); the default broker has auto.create.topics.enable=true."""
    topic = unique_topic("auto-ck")
    p = Producer({"bootstrap.servers": broker.bootstrap})
    md = p.list_topics(topic=topic, timeout=10)
    t = md.topics[topic]
    # First answer may be LEADER_NOT_AVAILABLE while the topic is being created.
    assert t.error is None or t.error.code() == KafkaError.LEADER_NOT_AVAILABLE, t.error
    n = _wait_topic_ready(broker.bootstrap, topic)
    if broker.kind == "lodestream":
        assert n == 1, f"auto-created topic should get num.partitions=1, got {n}"

    # and it is usable right away
    [(err, off)] = _produce_sync(broker.bootstrap, topic, [b"hello"])
    assert err is None and off == 0, (err, off)


def test_metadata_missing_topic_request_flag(broker):
    """Metadata v4+ allow_auto_topic_creation=false -> UNKNOWN_TOPIC_OR_PARTITION and no
    topic; =true -> the topic is created.  Both via raw kafka-python requests, and the
    "false" case also through a confluent-kafka consumer (allow.auto.create.topics=false)."""
    no_create = unique_topic("noauto-kp")
    no_create_ck = unique_topic("noauto-ck")
    yes_create = unique_topic("auto-kp")

    admin = _kp_admin(broker.bootstrap)
    try:
        md = _kp_metadata(admin, [no_create], allow_auto_topic_creation=False)
        assert md[no_create]["error_code"] == UNKNOWN_TOPIC_OR_PARTITION, md
        assert md[no_create]["partitions"] == []

        md = _kp_metadata(admin, [yes_create], allow_auto_topic_creation=True)
        assert md[yes_create]["error_code"] in (0, LEADER_NOT_AVAILABLE), md
    finally:
        admin.close()

    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": unique_topic("g"),
                  "allow.auto.create.topics": False})
    try:
        md = c.list_topics(topic=no_create_ck, timeout=10)
        t = md.topics[no_create_ck]
        assert t.error is not None and t.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART, t.error
    finally:
        c.close()

    _wait_topic_ready(broker.bootstrap, yes_create)
    assert not _ck_topic_exists(broker.bootstrap, no_create)
    assert not _ck_topic_exists(broker.bootstrap, no_create_ck)


def test_metadata_missing_topic_auto_create_disabled_on_broker(broker_factory, broker_kind):
    if broker_kind != "lodestream":
        pytest.skip(f"{broker_kind} cannot be started with --override auto.create.topics.enable=false")
    b = broker_factory({"auto.create.topics.enable": "false"})
    topic = unique_topic("noauto-broker")

    # A client asking for auto-creation still gets UNKNOWN_TOPIC_OR_PARTITION.
    admin = _kp_admin(b.bootstrap)
    try:
        md = _kp_metadata(admin, [topic], allow_auto_topic_creation=True)
        assert md[topic]["error_code"] == UNKNOWN_TOPIC_OR_PARTITION, md
    finally:
        admin.close()
    p = Producer({"bootstrap.servers": b.bootstrap})
    t = p.list_topics(topic=topic, timeout=10).topics[topic]
    assert t.error is not None and t.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART, t.error
    assert not _ck_topic_exists(b.bootstrap, topic)

    # Explicit CreateTopics still works on that broker.
    ck_create_topics(b.bootstrap, [topic])
    assert _ck_topic_exists(b.bootstrap, topic)


# -- ListOffsets by timestamp ----------------------------------------------------


def test_list_offsets_by_timestamp(broker):
    topic = unique_topic("lo-ts")
    ck_create_topics(broker.bootstrap, [topic])
    base = now_ms() - 3_600_000
    n = 20
    ts = [base + i * 1000 for i in range(n)]
    # Two produce calls so the partition holds more than one batch.
    res = _produce_sync(broker.bootstrap, topic, [b"v%d" % i for i in range(10)], timestamps=ts[:10])
    res += _produce_sync(broker.bootstrap, topic, [b"v%d" % i for i in range(10, n)], timestamps=ts[10:])
    assert [r for r in res] == [(None, i) for i in range(n)], res

    tp = TopicPartition(topic, 0)
    cases = {
        "before first": (base - 1, 0, ts[0]),
        "exact first": (base, 0, ts[0]),
        "exact middle": (base + 5000, 5, ts[5]),
        "between": (base + 5500, 6, ts[6]),
        "exact last": (ts[-1], n - 1, ts[-1]),
        "after last": (ts[-1] + 1, -1, -1),
    }
    admin = ck_admin(broker.bootstrap)
    failures = []
    for name, (query, want_off, want_ts) in cases.items():
        info = admin.list_offsets({tp: OffsetSpec.for_timestamp(query)})[tp].result(timeout=30)
        if info.offset != want_off or (want_off >= 0 and info.timestamp != want_ts):
            failures.append(f"{name}: for_timestamp({query}) -> offset={info.offset} ts={info.timestamp}, "
                            f"want offset={want_off} ts={want_ts}")
    for spec, want in ((OffsetSpec.earliest(), 0), (OffsetSpec.latest(), n)):
        info = admin.list_offsets({tp: spec})[tp].result(timeout=30)
        if info.offset != want:
            failures.append(f"{spec}: offset={info.offset}, want {want}")
    assert not failures, "ListOffsets (confluent-kafka AdminClient):\n  " + "\n  ".join(failures)

    # Same questions through the consumer APIs of two clients.
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": unique_topic("g")})
    try:
        got = c.offsets_for_times([TopicPartition(topic, 0, base + 5500)], timeout=30)
        assert got[0].error is None and got[0].offset == 6, got
    finally:
        c.close()

    from kafka import KafkaConsumer
    from kafka import TopicPartition as KTP

    kc = KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False)
    try:
        ktp = KTP(topic, 0)
        got = kc.offsets_for_times({ktp: base + 5500})
        assert got[ktp] is not None and (got[ktp].offset, got[ktp].timestamp) == (6, ts[6]), got
        got = kc.offsets_for_times({ktp: ts[-1] + 1})
        assert got[ktp] is None, got
    finally:
        kc.close()


def test_list_offsets_by_timestamp_out_of_order(broker):
    """Timestamps need not be monotonic: the answer is the first offset whose
    timestamp is >= the target."""
    topic = unique_topic("lo-ooo")
    ck_create_topics(broker.bootstrap, [topic])
    base = now_ms() - 3_600_000
    ts = [base, base + 1000, base + 5000, base + 2000, base + 3000]
    res = _produce_sync(broker.bootstrap, topic, [b"x"] * len(ts), timestamps=ts)
    assert [r[1] for r in res] == list(range(len(ts)))
    admin = ck_admin(broker.bootstrap)
    tp = TopicPartition(topic, 0)
    for query, want in ((base + 1500, 2), (base + 2500, 2), (base + 5000, 2), (base + 5001, -1)):
        info = admin.list_offsets({tp: OffsetSpec.for_timestamp(query)})[tp].result(timeout=30)
        assert info.offset == want, f"for_timestamp(base+{query - base}) -> {info.offset}, want {want}"


def test_list_offsets_max_timestamp(broker):
    """OffsetSpec.max_timestamp (ListOffsets v7, KIP-734): offset of the record with
    the largest timestamp.  Beyond the issue's list, but a standard ListOffsets query."""
    topic = unique_topic("lo-max")
    ck_create_topics(broker.bootstrap, [topic])
    base = now_ms() - 3_600_000
    ts = [base, base + 9000, base + 2000]
    _produce_sync(broker.bootstrap, topic, [b"a", b"b", b"c"], timestamps=ts)
    tp = TopicPartition(topic, 0)
    admin = ck_admin(broker.bootstrap)  # keep a reference: the future dies with its client
    info = admin.list_offsets({tp: OffsetSpec.max_timestamp()})[tp].result(timeout=30)
    assert (info.offset, info.timestamp) == (1, base + 9000), (info.offset, info.timestamp)


# -- DeleteRecords -----------------------------------------------------------------


def test_delete_records_then_fetch_below_start(broker):
    topic = unique_topic("delrec")
    ck_create_topics(broker.bootstrap, [topic])
    res = _produce_sync(broker.bootstrap, topic, [b"v%d" % i for i in range(10)])
    assert [r[1] for r in res] == list(range(10))

    admin = ck_admin(broker.bootstrap)
    futs = admin.delete_records([TopicPartition(topic, 0, 5)], operation_timeout=30)
    [(tp, f)] = futs.items()
    r = f.result(timeout=30)
    assert r.low_watermark == 5, f"DeleteRecords low_watermark={r.low_watermark}"

    tp0 = TopicPartition(topic, 0)
    assert admin.list_offsets({tp0: OffsetSpec.earliest()})[tp0].result(timeout=30).offset == 5
    assert admin.list_offsets({tp0: OffsetSpec.latest()})[tp0].result(timeout=30).offset == 10

    # confluent-kafka: fetch at 2 with auto.offset.reset=error surfaces the broker's
    # OFFSET_OUT_OF_RANGE as an _AUTO_OFFSET_RESET consumer error.
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": unique_topic("g"),
                  "enable.auto.commit": False, "auto.offset.reset": "error"})
    try:
        assert c.get_watermark_offsets(tp0, timeout=10) == (5, 10)
        c.assign([TopicPartition(topic, 0, 2)])
        deadline = Deadline(20, "OFFSET_OUT_OF_RANGE error from confluent-kafka")
        while True:
            deadline.check()
            m = c.poll(1.0)
            if m is None:
                continue
            assert m.error() is not None, f"fetched offset {m.offset()} below the log start offset 5"
            assert m.error().code() == KafkaError._AUTO_OFFSET_RESET, m.error()
            assert "out of range" in m.error().str().lower(), m.error()
            break
        # and fetching at the new start works (re-assign: after an offset-reset
        # error librdkafka has stopped the partition, so seek() would fail with _STATE)
        c.assign([TopicPartition(topic, 0, 5)])
        deadline = Deadline(20, "fetch at the new log start")
        while True:
            deadline.check()
            m = c.poll(1.0)
            if m is None:
                continue
            assert m.error() is None, m.error()
            assert (m.offset(), m.value()) == (5, b"v5")
            break
    finally:
        c.close()

    # kafka-python with auto_offset_reset='none' raises OffsetOutOfRangeError.
    from kafka import KafkaConsumer
    from kafka import TopicPartition as KTP
    from kafka.errors import OffsetOutOfRangeError

    kc = KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False, auto_offset_reset="none")
    try:
        ktp = KTP(topic, 0)
        kc.assign([ktp])
        kc.seek(ktp, 2)
        deadline = Deadline(20, "OffsetOutOfRangeError from kafka-python")
        with pytest.raises(OffsetOutOfRangeError):
            while True:
                deadline.check()
                recs = kc.poll(timeout_ms=1000)
                assert not recs, f"fetched below the log start offset: {recs}"
        assert kc.beginning_offsets([ktp]) == {ktp: 5}
    finally:
        kc.close()

    # Deleting up to the high watermark (offset -1 = "high watermark") empties the log.
    futs = admin.delete_records([TopicPartition(topic, 0, -1)], operation_timeout=30)
    [(tp, f)] = futs.items()
    assert f.result(timeout=30).low_watermark == 10


# -- Configs: max.message.bytes ----------------------------------------------------


def _produce_one(bootstrap: str, topic: str, size: int):
    [(err, off)] = _produce_sync(
        bootstrap, topic, [b"x" * size],
        **{"compression.type": "none", "message.max.bytes": 10_000_000, "linger.ms": 0},
    )
    return err, off


def test_describe_and_incremental_alter_max_message_bytes(broker):
    topic = unique_topic("cfg-inc")
    ck_create_topics(broker.bootstrap, [topic])

    e = _describe_topic_config(broker.bootstrap, topic, "max.message.bytes")
    default = int(e.value)
    assert e.source != ConfigSource.DYNAMIC_TOPIC_CONFIG.value, e
    if broker.kind == "lodestream":
        assert default == 1048588, f"Kafka's default max.message.bytes is 1048588, got {default}"
    err, _ = _produce_one(broker.bootstrap, topic, 5000)
    assert err is None, f"5000-byte message refused under the default limit: {err}"

    admin = ck_admin(broker.bootstrap)
    res = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("max.message.bytes", "1024", incremental_operation=AlterConfigOpType.SET)])
    for f in admin.incremental_alter_configs([res]).values():
        f.result(timeout=30)

    e = _describe_topic_config(broker.bootstrap, topic, "max.message.bytes")
    assert e.value == "1024", e
    assert e.source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value, e

    err, _ = _produce_one(broker.bootstrap, topic, 5000)
    assert err is not None and err.code() in (KafkaError.MSG_SIZE_TOO_LARGE, RECORD_LIST_TOO_LARGE), (
        f"5000-byte message under max.message.bytes=1024 should fail with MESSAGE_TOO_LARGE, got {err}")
    err, _ = _produce_one(broker.bootstrap, topic, 100)
    assert err is None, f"100-byte message refused under max.message.bytes=1024: {err}"

    # DELETE reverts to the default.
    res = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("max.message.bytes", None, incremental_operation=AlterConfigOpType.DELETE)])
    for f in admin.incremental_alter_configs([res]).values():
        f.result(timeout=30)
    e = _describe_topic_config(broker.bootstrap, topic, "max.message.bytes")
    assert int(e.value) == default and e.source != ConfigSource.DYNAMIC_TOPIC_CONFIG.value, e
    err, _ = _produce_one(broker.bootstrap, topic, 5000)
    assert err is None, f"5000-byte message refused after resetting the limit: {err}"

    # An invalid value is refused with INVALID_CONFIG and changes nothing.
    res = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("max.message.bytes", "not-a-number", incremental_operation=AlterConfigOpType.SET)])
    with pytest.raises(KafkaException) as ei:
        for f in admin.incremental_alter_configs([res]).values():
            f.result(timeout=30)
    assert ei.value.args[0].code() == KafkaError.INVALID_CONFIG, ei.value
    assert int(_describe_topic_config(broker.bootstrap, topic, "max.message.bytes").value) == default


def test_legacy_alter_configs_max_message_bytes(broker):
    """The older AlterConfigs API (key 33, replaces the topic's whole dynamic config)."""
    topic = unique_topic("cfg-legacy")
    ck_create_topics(broker.bootstrap, [topic])
    admin = ck_admin(broker.bootstrap)
    res = ConfigResource(ResourceType.TOPIC, topic, set_config={"max.message.bytes": "2048"})
    for f in admin.alter_configs([res]).values():
        f.result(timeout=30)
    e = _describe_topic_config(broker.bootstrap, topic, "max.message.bytes")
    assert e.value == "2048", e
    err, _ = _produce_one(broker.bootstrap, topic, 4000)
    assert err is not None and err.code() in (KafkaError.MSG_SIZE_TOO_LARGE, RECORD_LIST_TOO_LARGE), err
    err, _ = _produce_one(broker.bootstrap, topic, 1000)
    assert err is None, err

    # kafka-python sees the same value.
    from kafka.admin import ConfigResource as KCR, ConfigResourceType

    kadmin = _kp_admin(broker.bootstrap)
    try:
        out = kadmin.describe_configs([KCR(ConfigResourceType.TOPIC, topic, ["max.message.bytes"])])
    finally:
        kadmin.close()
    assert "2048" in repr(out), out


def test_create_topic_with_config_and_validate_only(broker):
    admin = ck_admin(broker.bootstrap)
    # validate_only: accepted, but nothing is created.
    ghost = unique_topic("validate-only")
    futs = admin.create_topics([NewTopic(ghost, num_partitions=2, replication_factor=REPLICATION_FACTOR)],
                               validate_only=True, operation_timeout=30)
    futs[ghost].result(timeout=30)
    assert not _ck_topic_exists(broker.bootstrap, ghost)

    # Configs given at creation are reported as dynamic topic configs.
    topic = unique_topic("with-config")
    ck_create_topics(broker.bootstrap, [topic], config={"max.message.bytes": "4096"})
    e = _describe_topic_config(broker.bootstrap, topic, "max.message.bytes")
    assert e.value == "4096" and e.source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value, e

    # Invalid partition count is refused.
    bad = unique_topic("bad")
    futs = admin.create_topics([NewTopic(bad, num_partitions=0, replication_factor=REPLICATION_FACTOR)], operation_timeout=30)
    with pytest.raises(KafkaException) as ei:
        futs[bad].result(timeout=30)
    assert ei.value.args[0].code() == KafkaError.INVALID_PARTITIONS, ei.value
