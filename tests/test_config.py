"""Broker/topic configuration (broker/config.py) and the CLI's refusal of bad configs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lodestream.broker.config import (
    BROKER_CONFIGS,
    TOPIC_CONFIGS,
    BrokerConfig,
    ConfigError,
    describe_topic_config,
    effective_broker_value,
    effective_topic_config,
    parse_properties,
    validate_broker_config,
    validate_topic_config,
)

CLI_TIMEOUT_S = 60


# -- properties parsing --------------------------------------------------------------


def test_parse_properties_comments_blank_lines_and_both_separators():
    text = """
# a comment
! also a comment
   # indented comment

node.id=3
num.partitions : 4
listeners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093
listener.security.protocol.map: PLAINTEXT:PLAINTEXT
  log.dirs =  /var/lib/lodestream  
empty.value=
"""
    assert parse_properties(text) == {
        "node.id": "3",
        "num.partitions": "4",
        "listeners": "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT",
        "log.dirs": "/var/lib/lodestream",
        "empty.value": "",
    }


def test_parse_properties_later_lines_win():
    assert parse_properties("a=1\na=2\n") == {"a": "2"}


def test_parse_properties_rejects_a_line_without_separator():
    with pytest.raises(ConfigError, match="line 2"):
        parse_properties("a=1\njust-a-word\n")


def test_parse_properties_colon_separator_with_equals_in_the_value():
    assert parse_properties("log.dirs: /data/a=b\n") == {"log.dirs": "/data/a=b"}


# -- validation --------------------------------------------------------------------------


def test_unknown_broker_key_is_an_error_naming_the_key():
    with pytest.raises(ConfigError, match="no.such.key"):
        BrokerConfig({"no.such.key": "1"})
    with pytest.raises(ConfigError, match="no.such.key"):
        validate_broker_config("no.such.key", "1")
    with pytest.raises(ConfigError, match="retention.mss"):
        validate_topic_config("retention.mss", "1")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("num.partitions", "abc"),
        ("num.partitions", "0"),
        ("auto.create.topics.enable", "yes"),
        ("log.message.timestamp.type", "WallClock"),
        ("compression.type", "brotli"),
        ("log.cleanup.policy", "delete,shred"),
        ("socket.request.max.bytes", "10"),
        ("node.id", "-1"),
    ],
)
def test_bad_broker_value_is_an_error_naming_the_key(key, value):
    with pytest.raises(ConfigError) as info:
        BrokerConfig({key: value})
    assert key in str(info.value)
    assert value in str(info.value)


@pytest.mark.parametrize(
    ("key", "value"),
    [("retention.ms", "-2"), ("max.message.bytes", "big"), ("cleanup.policy", ""),
     ("message.timestamp.type", "logappendtime"), ("min.insync.replicas", "0")],
)
def test_bad_topic_value_is_an_error_naming_the_key(key, value):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate_topic_config(key, value)


def test_topic_config_parsers_accept_good_values():
    assert validate_topic_config("retention.ms", "-1") == -1
    assert validate_topic_config("cleanup.policy", " compact , delete ") == "compact,delete"
    assert validate_topic_config("message.timestamp.type", "LogAppendTime") == "LogAppendTime"
    with pytest.raises(ConfigError, match="retention.ms"):
        validate_topic_config("retention.ms", None)


def test_defaults():
    config = BrokerConfig({})
    assert config.node_id == 1
    assert config.get("num.partitions") == 1
    assert config.get("auto.create.topics.enable") is True
    assert config.get("message.max.bytes") == 1048588
    assert config.get("log.retention.ms") is None
    assert config.raw("listeners") == "PLAINTEXT://127.0.0.1:9092"
    assert config.data_dir == Path("./data")
    assert config.sync_on_append is True
    assert config.flush_interval_seconds == 1.0
    for definition in BROKER_CONFIGS.values():  # every built-in default parses
        if definition.default is not None:
            definition.parse(definition.default)
    for definition in TOPIC_CONFIGS.values():
        if definition.fallback is not None:  # internal.segment.bytes has no default
            definition.parse(definition.fallback)
        for synonym in definition.synonyms:
            assert synonym in BROKER_CONFIGS


def test_broker_id_and_log_dir_aliases():
    config = BrokerConfig({"broker.id": "7", "log.dir": "/tmp/x"})
    assert config.node_id == 7
    assert config.data_dir == Path("/tmp/x")
    both = BrokerConfig({"broker.id": "8", "node.id": "8"})
    assert both.node_id == 8
    with pytest.raises(ConfigError, match=r"broker.id=7 conflicts with node.id=8"):
        BrokerConfig({"broker.id": "7", "node.id": "8"})


def test_single_data_directory_only():
    with pytest.raises(ConfigError, match="log.dirs"):
        BrokerConfig({"log.dirs": "/a,/b"})


def test_flush_settings():
    config = BrokerConfig({"log.flush.interval.messages": "100", "log.flush.interval.ms": "250"})
    assert config.sync_on_append is False
    assert config.flush_interval_seconds == 0.25


def test_load_file_then_overrides(tmp_path):
    path = tmp_path / "server.properties"
    path.write_text("node.id=2\nnum.partitions=3\n# comment\nlog.dirs=/tmp/a\n")
    config = BrokerConfig.load(path, ["num.partitions=5", "auto.create.topics.enable=false"])
    assert config.node_id == 2
    assert config.get("num.partitions") == 5
    assert config.get("auto.create.topics.enable") is False
    assert config.explicit["num.partitions"] == "5"
    with pytest.raises(ConfigError, match="key=value"):
        BrokerConfig.load(None, ["num.partitions"])
    with pytest.raises(ConfigError, match="missing.properties"):
        BrokerConfig.load(tmp_path / "missing.properties", [])


# -- effective values and DescribeConfigs view ----------------------------------------------


def test_effective_broker_value_precedence():
    static = BrokerConfig({"num.partitions": "2"})
    assert effective_broker_value(static, {}, 1, "num.partitions") == ("2", "STATIC_BROKER_CONFIG")
    assert effective_broker_value(static, {}, 1, "message.max.bytes") == ("1048588", "DEFAULT_CONFIG")
    dynamic = {"": {"num.partitions": "3"}}
    assert effective_broker_value(static, dynamic, 1, "num.partitions") == ("3", "DYNAMIC_DEFAULT_BROKER_CONFIG")
    dynamic = {"": {"num.partitions": "3"}, "1": {"num.partitions": "4"}, "2": {"num.partitions": "9"}}
    assert effective_broker_value(static, dynamic, 1, "num.partitions") == ("4", "DYNAMIC_BROKER_CONFIG")


def test_describe_topic_config_default_source():
    view = describe_topic_config("max.message.bytes", {}, BrokerConfig({}), {}, 1)
    assert (view.value, view.source) == ("1048588", "DEFAULT_CONFIG")
    assert view.synonyms == (("message.max.bytes", "1048588", "DEFAULT_CONFIG"),)
    assert view.kafka_type == "INT" and not view.read_only and not view.sensitive


def test_describe_topic_config_static_broker_source():
    static = BrokerConfig({"message.max.bytes": "2000"})
    view = describe_topic_config("max.message.bytes", {}, static, {}, 1)
    assert (view.value, view.source) == ("2000", "STATIC_BROKER_CONFIG")
    assert view.synonyms == (
        ("message.max.bytes", "2000", "STATIC_BROKER_CONFIG"),
        ("message.max.bytes", "1048588", "DEFAULT_CONFIG"),
    )


def test_describe_topic_config_dynamic_topic_source_and_synonym_order():
    static = BrokerConfig({"message.max.bytes": "2000"})
    dynamic = {"1": {"message.max.bytes": "4000"}, "": {"message.max.bytes": "3000"}}
    view = describe_topic_config("max.message.bytes", {"max.message.bytes": "5000"}, static, dynamic, 1)
    assert (view.value, view.source) == ("5000", "DYNAMIC_TOPIC_CONFIG")
    assert view.synonyms == (
        ("max.message.bytes", "5000", "DYNAMIC_TOPIC_CONFIG"),
        ("message.max.bytes", "4000", "DYNAMIC_BROKER_CONFIG"),
        ("message.max.bytes", "3000", "DYNAMIC_DEFAULT_BROKER_CONFIG"),
        ("message.max.bytes", "2000", "STATIC_BROKER_CONFIG"),
        ("message.max.bytes", "1048588", "DEFAULT_CONFIG"),
    )
    # Without the topic override the most specific broker source wins.
    view = describe_topic_config("max.message.bytes", {}, static, dynamic, 1)
    assert (view.value, view.source) == ("4000", "DYNAMIC_BROKER_CONFIG")
    # Another broker's dynamic config does not apply to this one.
    view = describe_topic_config("max.message.bytes", {}, static, dynamic, 2)
    assert (view.value, view.source) == ("3000", "DYNAMIC_DEFAULT_BROKER_CONFIG")


def test_retention_ms_from_log_retention_hours():
    default = describe_topic_config("retention.ms", {}, BrokerConfig({}), {}, 1)
    assert (default.value, default.source) == (str(168 * 3600 * 1000), "DEFAULT_CONFIG")
    assert default.synonyms == (("log.retention.hours", "168", "DEFAULT_CONFIG"),)

    hours = describe_topic_config("retention.ms", {}, BrokerConfig({"log.retention.hours": "2"}), {}, 1)
    assert (hours.value, hours.source) == ("7200000", "STATIC_BROKER_CONFIG")
    assert hours.synonyms == (
        ("log.retention.hours", "2", "STATIC_BROKER_CONFIG"),
        ("log.retention.hours", "168", "DEFAULT_CONFIG"),
    )

    minutes = describe_topic_config("retention.ms", {}, BrokerConfig({"log.retention.minutes": "3"}), {}, 1)
    assert (minutes.value, minutes.source) == ("180000", "STATIC_BROKER_CONFIG")

    # The most specific property wins even over a dynamic value of a less specific one (Kafka's rule).
    static = BrokerConfig({"log.retention.ms": "1234", "log.retention.hours": "2"})
    view = describe_topic_config("retention.ms", {}, static, {"": {"log.retention.hours": "5"}}, 1)
    assert (view.value, view.source) == ("1234", "STATIC_BROKER_CONFIG")
    assert [name for name, _, _ in view.synonyms] == [
        "log.retention.ms", "log.retention.hours", "log.retention.hours", "log.retention.hours"]
    assert [source for _, _, source in view.synonyms] == [
        "STATIC_BROKER_CONFIG", "DYNAMIC_DEFAULT_BROKER_CONFIG", "STATIC_BROKER_CONFIG", "DEFAULT_CONFIG"]


def test_effective_topic_config_covers_every_topic_key():
    effective = effective_topic_config({"cleanup.policy": "compact"}, BrokerConfig({"num.partitions": "3"}), {}, 1)
    assert set(effective) == set(TOPIC_CONFIGS)
    assert effective["cleanup.policy"] == "compact"
    assert effective["retention.ms"] == "604800000"
    assert effective["segment.ms"] == "604800000"  # from log.roll.hours=168
    assert effective["message.timestamp.type"] == "CreateTime"
    for key, value in effective.items():
        if value is not None:  # internal.segment.bytes has no default
            validate_topic_config(key, value)


# -- the CLI ------------------------------------------------------------------------------------


def _lodestream() -> str:
    return str(Path(sys.executable).parent / "lodestream")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--override", "no.such.key=1"], "no.such.key"),
        (["--override", "num.partitions=abc"], "num.partitions"),
        (["--config", "{tmp}/missing.properties"], "missing.properties"),
        (["--config", "{tmp}/bad.properties"], "no.such.key"),
    ],
    ids=["unknown-key", "bad-value", "missing-file", "bad-file"],
)
def test_serve_refuses_bad_configuration(tmp_path, args, expected):
    (tmp_path / "bad.properties").write_text("node.id=1\nno.such.key=1\n")
    args = [a.format(tmp=tmp_path) for a in args]
    data_dir = tmp_path / "data"
    # Should the config be accepted by mistake, the broker must not bind a fixed port or touch ./data.
    safe = ["--override", "listeners=PLAINTEXT://127.0.0.1:0", "--override", "admin.listeners=http://127.0.0.1:0",
            "--override", f"log.dirs={data_dir}"]
    result = subprocess.run([_lodestream(), "serve", *args, *safe], capture_output=True, text=True,
                            timeout=CLI_TIMEOUT_S, cwd=tmp_path)
    assert result.returncode != 0
    assert expected in result.stderr
    assert "configuration error" in result.stderr
    assert not data_dir.exists()


@pytest.mark.parametrize("key", ["log.retention.hours", "log.retention.minutes"])
def test_negative_retention_hours_means_unlimited(key):
    view = describe_topic_config("retention.ms", {}, BrokerConfig({key: "-1"}), {}, 1)
    assert view.value == "-1"
    validate_topic_config("retention.ms", view.value)


# -- every Apache Kafka config name (broker/kafka_configs.json) ----------------------------------------

def _kafka_catalog() -> dict:
    import json

    return json.loads((Path(__file__).parent.parent / "broker" / "kafka_configs.json").read_text())


def test_every_kafka_broker_config_is_accepted_with_its_default():
    catalog = _kafka_catalog()
    assert catalog["kafka_version"].startswith("4.1")
    settings = {e["name"]: e["default"] for e in catalog["broker"]
                if e["default"] is not None and BROKER_CONFIGS[e["name"]].no_effect}
    assert {"num.network.threads", "num.io.threads", "log.roll.jitter.hours",
            "socket.send.buffer.bytes"} <= set(settings)
    config = BrokerConfig(settings)  # nothing refused
    reasons = config.without_effect()
    assert sorted(k for keys in reasons.values() for k in keys) == sorted(settings)
    for entry in catalog["broker"]:
        definition = BROKER_CONFIGS[entry["name"]]
        if definition.no_effect:  # reported with Kafka's default and update mode
            assert definition.default == entry["default"], entry["name"]
            assert definition.read_only == (entry["dynamic"] == "read-only"), entry["name"]


def test_every_kafka_topic_config_is_accepted():
    for entry in _kafka_catalog()["topic"]:
        definition = TOPIC_CONFIGS[entry["name"]]
        if entry["default"] is not None:
            validate_topic_config(entry["name"], entry["default"])
        if entry["name"] != "flush.ms":  # ours leaves out log.flush.scheduler.interval.ms (1 s here, not Long.MAX)
            assert definition.synonyms == tuple(s["name"] for s in entry["synonyms"]), entry["name"]
    for key in ("segment.jitter.ms", "preallocate", "index.interval.bytes", "file.delete.delay.ms",
                "remote.log.copy.disable"):
        assert TOPIC_CONFIGS[key].no_effect, key
    for key in ("remote.storage.enable", "local.retention.ms", "local.retention.bytes"):
        assert not TOPIC_CONFIGS[key].no_effect, key
    with pytest.raises(ConfigError, match="min.cleanable.dirty.ratio"):
        validate_topic_config("min.cleanable.dirty.ratio", "half")


def test_honoured_and_no_effect_are_recorded_per_key():
    honoured = {key for key, d in BROKER_CONFIGS.items() if not d.no_effect}
    assert {"node.id", "listeners", "log.dirs", "num.partitions", "message.max.bytes", "min.insync.replicas",
            "log.flush.interval.messages", "queued.max.request.bytes", "group.initial.rebalance.delay.ms"} <= honoured
    assert {"log.retention.hours", "log.retention.bytes", "log.segment.bytes", "log.roll.ms",
            "log.retention.check.interval.ms"} <= honoured  # segments and time/size retention
    assert {"log.cleaner.enable", "log.cleaner.backoff.ms", "log.cleaner.io.max.bytes.per.second",
            "log.cleaner.min.cleanable.ratio", "log.cleaner.delete.retention.ms"} <= honoured  # compaction
    assert BROKER_CONFIGS["log.cleaner.threads"].no_effect.startswith("one cleaner task")
    assert BROKER_CONFIGS["num.io.threads"].no_effect.startswith("one trio event loop")


def test_update_modes_follow_kafka():
    assert BROKER_CONFIGS["num.partitions"].read_only  # Kafka: read-only
    assert not BROKER_CONFIGS["message.max.bytes"].read_only  # Kafka: cluster-wide
    assert BROKER_CONFIGS["ssl.cipher.suites"].per_broker_only  # Kafka: per-broker
    # Kafka can change it at runtime, but here it is read once at start-up: refused rather than ignored.
    assert BROKER_CONFIGS["log.flush.interval.messages"].read_only


def test_setting_a_no_effect_config_is_described():
    from lodestream.broker.config import describe_without_effect

    note = describe_without_effect(["min.compaction.lag.ms", "max.message.bytes", "preallocate"], TOPIC_CONFIGS)
    assert note.startswith("preallocate (")
    assert "max.message.bytes" not in note and "min.compaction.lag.ms" not in note  # honoured
    assert describe_without_effect(["num.partitions"], BROKER_CONFIGS) == ""


def test_tiered_storage_settings_are_checked_and_refusals_name_the_key():
    from lodestream.broker.config import effective_topic_config, tiered_topic_problem

    with pytest.raises(ConfigError, match="remote.erasure.code"):
        validate_topic_config("remote.erasure.code", "rs:4-2")
    assert validate_topic_config("remote.erasure.code", " rs:6+3 ") == "rs:6+3"
    with pytest.raises(ConfigError, match="remote.fragment.stores"):
        BrokerConfig({"remote.fragment.stores": "file:///a,http://b"})
    with pytest.raises(ConfigError, match="remote.erasure.code=rs:4\\+2 needs 6 fragment stores.*lists 3"):
        BrokerConfig({"remote.log.storage.system.enable": "true",
                      "remote.fragment.stores": "file:///a,file:///b,file:///c"})
    stores = ",".join(f"file:///s{i}" for i in range(3))
    static = BrokerConfig({"remote.log.storage.system.enable": "true", "remote.fragment.stores": stores,
                           "remote.erasure.code": "rs:2+1"})

    def problem(overrides, enabled=True, count=3):
        return tiered_topic_problem(effective_topic_config(overrides, static, {}, 1), enabled, count)

    assert problem({"remote.storage.enable": "true"}) is None
    assert problem({"remote.storage.enable": "true", "cleanup.policy": "delete, compact"}).startswith(
        "remote.storage.enable: not for compacted topics")
    assert "remote.log.storage.system.enable" in problem({"remote.storage.enable": "true"}, enabled=False)
    assert "remote.erasure.code=rs:4+2 needs 6" in problem({"remote.storage.enable": "true",
                                                           "remote.erasure.code": "rs:4+2"})
    assert problem({"local.retention.ms": "1000", "retention.ms": "500"}).startswith("local.retention.ms=1000")
    assert problem({"local.retention.bytes": "-1", "retention.bytes": "10"}).startswith("local.retention.bytes=-1")
    assert problem({"local.retention.ms": "100", "retention.ms": "-1"}) is None
