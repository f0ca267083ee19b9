"""Broker and topic configuration with Kafka's property names.

Every key we accept is declared here with its type, default and (for topic
configs) the broker property it falls back to, which is what DescribeConfigs
reports as synonyms. Unknown keys and bad values raise ConfigError naming the key.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import re
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable, Mapping

LONG_MAX = 9223372036854775807


class ConfigError(ValueError):
    """A configuration the broker refuses; start-up stops with exit code 2 and this message."""


class StartupError(Exception):
    """The environment stops start-up (a port in use, an unusable data directory): one line, exit code 2."""


class NodeHalted(StartupError):
    """A running node stops because it cannot go on safely (its metadata log cannot be written)."""


def multi_value(value: str | None) -> list[str]:
    """A comma-separated config value as its items (Kafka's LIST type)."""
    return [item.strip() for item in (value or "").split(",") if item.strip()]


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered not in ("true", "false"):
        raise ValueError("expected true or false")
    return lowered == "true"


def _int(value: str) -> int:
    return int(value.strip())


def _str(value: str) -> str:
    return value.strip()


def _one_of(*choices: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        value = value.strip()
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return value

    return parse


def _cleanup_policy(value: str) -> str:
    parts = [p.strip() for p in value.split(",") if p.strip()]
    if not parts or any(p not in ("delete", "compact") for p in parts):
        raise ValueError("expected delete, compact or delete,compact")
    return ",".join(parts)


def cleanup_policy_includes(topic_config: Mapping[str, str], policy: str) -> bool:
    """Whether a topic's effective cleanup.policy (normalized by _cleanup_policy) includes delete / compact."""
    return policy in topic_config["cleanup.policy"].split(",")


def remote_storage_enabled(topic_config: Mapping[str, str]) -> bool:
    """Whether a topic's effective configs offload its closed segments (remote.storage.enable)."""
    return str(topic_config["remote.storage.enable"]).strip().lower() == "true"


def _positive_float(value: str) -> float:
    number = float(value.strip())
    if not number > 0:
        raise ValueError(f"{value!r} is not a positive number")
    return number


def _ratio(value: str) -> float:
    ratio = float(value.strip())
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"{value!r} is not between 0 and 1")
    return ratio


def _authorizer_class(value: str) -> str:
    from lodestream.broker.authorizer import AUTHORIZER_CLASS_NAMES
    value = value.strip()
    if value and value not in AUTHORIZER_CLASS_NAMES:
        raise ValueError(f"expected one of {', '.join(AUTHORIZER_CLASS_NAMES)} (ACLs), or empty (no authorizer)")
    return value


def _super_users(value: str) -> frozenset[str]:
    from lodestream.broker.authorizer import parse_super_users
    return parse_super_users(value)


def _sasl_mechanisms(value: str) -> list[str]:
    """sasl.enabled.mechanisms; unknown ones are checked when a SASL listener needs them (GSSAPI is Kafka's
    default, so it must parse)."""
    return [item.strip().upper() for item in value.split(",") if item.strip()]


def _at_least(minimum: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        number = int(value.strip())
        if number < minimum:
            raise ValueError(f"must be at least {minimum}")
        return number

    return parse


def _http_listeners(value: str) -> tuple[tuple[str, int, str], ...]:
    """admin.listeners: `http://host:port` or `https://host:port` (TLS with the ssl.* settings), comma-separated
    -> ((host, port, scheme), ...); empty = no REST API."""
    result = []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        scheme, sep, address = item.partition("://")
        if not sep or scheme.lower() not in ("http", "https"):
            raise ValueError(f"expected http://host:port or https://host:port, got {item!r}")
        host, sep, port_text = address.rpartition(":")
        if not sep or not port_text.isdigit() or int(port_text) > 65535:
            raise ValueError(f"bad port in {item!r}")
        result.append((host.strip("[]"), int(port_text), scheme.lower()))
    return tuple(result)


def _basic_users(value: str) -> dict[str, str]:
    """admin.auth.basic.users: `user:password[,user:password]` (never echoes the passwords)."""
    users: dict[str, str] = {}
    for position, item in enumerate((part.strip() for part in value.split(",")), 1):
        if not item:
            continue
        user, sep, password = item.partition(":")
        if not sep or not user.strip() or not password:
            raise ValueError(f"entry {position}: expected user:password")
        users[user.strip()] = password
    return users


def _pool_bytes(value: str) -> int:
    number = int(value.strip())
    if number == 0 or number < -1:
        raise ValueError("must be -1 (unbounded) or positive")
    return number


def _ip_overrides(value: str) -> dict[str, int]:
    from lodestream.broker.limits import parse_ip_overrides

    return parse_ip_overrides(value)


def _erasure_code(value: str) -> str:
    """remote.erasure.code: rs:K+M (storage/erasure.py says which K and M)."""
    from lodestream.storage.erasure import ErasureError, Scheme  # the parser lives with the codec
    try:
        return str(Scheme.parse(value.strip()))
    except ErasureError as exc:
        raise ValueError(str(exc)) from None


def _store_urls(value: str) -> tuple[str, ...]:
    """remote.fragment.stores: file:///path or s3://bucket?endpoint=http://host:port, comma-separated."""
    urls = tuple(multi_value(value))
    for url in urls:
        if not url.startswith(("file:///", "file://localhost/", "s3://")):
            raise ValueError(f"{url!r} is not a file:///path or s3://bucket?endpoint=... store URL")
    if len(set(urls)) != len(urls):
        raise ValueError("a store is listed twice (each store is one failure domain)")
    return urls


def _local_retention(value: str) -> int:
    """local.retention.*: -2 = the total retention, -1 = unlimited, else at least 0."""
    number = int(value.strip())
    if number < -2:
        raise ValueError("must be -2 (same as retention), -1 (unlimited) or at least 0")
    return number


def is_loopback_host(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ConfigDef:
    name: str
    parse: Callable[[str], object]
    default: str | None
    kafka_type: str  # BOOLEAN, STRING, INT, SHORT, LONG, DOUBLE, LIST, CLASS, PASSWORD
    doc: str = ""
    read_only: bool = False  # cannot be changed at runtime via AlterConfigs
    sensitive: bool = False
    no_effect: str = ""  # accepted (a Kafka name) but not acted on here: why; "" = honoured
    per_broker_only: bool = False  # Kafka's "per-broker" update mode: not settable as a cluster-wide default
    internal: bool = False  # Kafka's internal configs: DescribeConfigs lists them only when set


# Why a Kafka config is accepted but has no effect here (ConfigDef.no_effect). Start-up logs the
# explicitly set ones in one warning; docs/configuration.md explains the policy.
_ONE_CLEANER = "one cleaner task compacts one partition at a time; its offset map holds every dirty key"
_AS_PRODUCED = "batches are stored as produced (no broker-side recompression)"
_NOT_YET_REPLICATION = "not built yet: replication covers ISR, elections and acks=all (docs/replication.md)"
_BROKER_FLUSH = "the broker-wide log.flush.interval.messages decides when appends are synced"
_NO_EFFECT_BY_PREFIX: tuple[tuple[str, str], ...] = (
    ("num.network.threads", "one trio event loop serves every connection: there are no thread pools to size"),
    ("num.io.threads", "one trio event loop serves every connection: there are no thread pools to size"),
    ("background.threads", "one trio event loop serves every connection: there are no thread pools to size"),
    ("num.recovery.threads.per.data.dir", "logs are opened by one LevelDB store, not recovered per segment"),
    ("queued.max.requests", "back-pressure is the request memory pool, queued.max.request.bytes"),
    ("socket.send.buffer.bytes", "the operating system's socket buffer sizes are used"),
    ("socket.receive.buffer.bytes", "the operating system's socket buffer sizes are used"),
    ("socket.listen.backlog.size", "the operating system's listen backlog is used"),
    ("compression.", _AS_PRODUCED),
    ("log.cleaner.", _ONE_CLEANER),
    ("log.segment.delete.delay.ms", "a segment's batches are deleted at once (LevelDB keys: no files to unlink later)"),
    ("log.segment.jitter.ms", "segments roll exactly at segment.ms (no jitter)"),
    ("log.index.interval.bytes", "no sparse index: the active segment's in-memory index has one entry per batch"),
    ("index.interval.bytes", "no sparse index: the active segment's in-memory index has one entry per batch"),
    ("log.roll.jitter.", "segments roll exactly at segment.ms (no jitter)"),
    ("log.flush.offset.checkpoint.", "no checkpoint files: offsets live in LevelDB with the batches"),
    ("log.flush.start.offset.checkpoint.", "no checkpoint files: offsets live in LevelDB with the batches"),
    ("transaction.partition.verification.enable", "transactional produces are always verified (KIP-890 part 1)"),
    ("log.preallocate", "LevelDB writes its own files: nothing to preallocate"),
    ("log.initial.task.delay.ms", "the first retention check runs one log.retention.check.interval.ms after start-up"),
    ("remote.log.", "tiered storage is Lodestream's erasure-coded one, with its own remote.* settings "
                    "(docs/tiered-storage.md)"),
    ("remote.", "tiered storage is Lodestream's erasure-coded one, with its own remote.* settings "
                "(docs/tiered-storage.md)"),
    ("log.dir.failure.timeout.ms", "a failed log directory is reported by /ready and metrics; the broker keeps running"),
    ("ssl.", "TLS keys and certificates are PEM, loaded by Python's ssl module (docs/security.md)"),
    ("sasl.kerberos.", "GSSAPI (Kerberos) is not implemented (docs/security.md lists the SASL mechanisms)"),
    ("sasl.", "a SASL setting Lodestream does not use (its SASL settings: docs/security.md)"),
    ("security.", "a security setting Lodestream does not use (docs/security.md)"),
    ("principal.builder.class", "principals come from certificates (ssl.principal.mapping.rules) and SASL"),
    ("delegation.token.", "delegation tokens are not implemented"),
    ("replica.", "one fetch task per leader, with the replica.fetch.* settings Lodestream lists (docs/replication.md)"),
    ("leader.", _NOT_YET_REPLICATION),
    ("follower.", "followers do not serve consumers (KIP-392 is not built)"),
    ("num.replica.", "one fetch task per leader, with the replica.fetch.* settings Lodestream lists (docs/replication.md)"),
    ("controlled.shutdown.", "a stopping broker asks to be fenced, which moves its leaderships (docs/kraft.md)"),
    ("offsets.topic.", "__consumer_offsets has Lodestream's own segment and compression settings"),
    ("transaction.state.log.", "__transaction_state has Lodestream's own segment settings"),
    ("share.", "share groups (KIP-932) are not implemented"),
    ("group.share.", "share groups (KIP-932) are not implemented"),
    ("group.streams.", "streams groups (KIP-1071) are not implemented"),
    ("controller.quorum.bootstrap.servers", "the KRaft quorum has static voters (controller.quorum.voters, docs/kraft.md)"),
    ("controller.", "a KRaft setting Lodestream's quorum does not use (its settings: docs/kraft.md)"),
    ("metadata.", "a KRaft setting Lodestream's quorum does not use (its settings: docs/kraft.md)"),
    ("initial.broker.registration.", "brokers register as soon as they have caught up (docs/kraft.md)"),
    ("eligible.leader.replicas.", "Eligible Leader Replicas (KIP-966) are always on (docs/replication.md)"),
    ("metric.", "metrics are served in Prometheus format on the REST listener (docs/metrics.md)"),
    ("metrics.", "metrics are served in Prometheus format on the REST listener (docs/metrics.md)"),
    ("kafka.metrics.", "metrics are served in Prometheus format on the REST listener (docs/metrics.md)"),
    ("auto.include.jmx.reporter", "metrics are served in Prometheus format on the REST listener (docs/metrics.md)"),
    ("telemetry.", "client telemetry (KIP-714) is not implemented"),
    ("client.telemetry.", "client telemetry (KIP-714) is not implemented"),
    ("quota.", "quotas use token buckets with one second of burst (docs/quotas.md): no sample windows"),
    ("client.quota.callback.class", "quota callbacks are not supported: quotas are Kafka's built-in entities"),
)
_NO_EFFECT_DEFAULT = "not implemented in Lodestream; accepted so that Kafka configuration files start"


def no_effect_reason(key: str) -> str:
    for prefix, reason in _NO_EFFECT_BY_PREFIX:
        if key.startswith(prefix):
            return reason
    return _NO_EFFECT_DEFAULT


_COMPRESSION = _one_of("producer", "uncompressed", "gzip", "snappy", "lz4", "zstd")
_TIMESTAMP_TYPE = _one_of("CreateTime", "LogAppendTime")

BROKER_CONFIGS: dict[str, ConfigDef] = {
    d.name: d
    for d in [
        ConfigDef("node.id", _at_least(0), "1", "INT", "This broker's id", read_only=True),
        ConfigDef("broker.id", _at_least(0), None, "INT", "Alias of node.id", read_only=True),
        ConfigDef("process.roles", _str, "broker,controller", "LIST", "Roles of this process", read_only=True),
        ConfigDef("listeners", _str, "PLAINTEXT://127.0.0.1:9092", "LIST", "Listeners to bind", read_only=True),
        ConfigDef("advertised.listeners", _str, None, "LIST", "Listeners given to clients", read_only=True),
        ConfigDef("listener.security.protocol.map", _str,
                  "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT", "STRING", "", read_only=True),
        ConfigDef("inter.broker.listener.name", _str, "PLAINTEXT", "STRING", "", read_only=True),
        ConfigDef("controller.listener.names", _str, "CONTROLLER", "STRING", "", read_only=True),
        ConfigDef("controller.quorum.voters", _str, "", "LIST",
                  "id@host:port,... the KRaft voters' controller listeners; empty = this node alone", read_only=True),
        # The KRaft metadata quorum (broker/metadata_quorum.py, docs/kraft.md), Kafka's names and defaults.
        ConfigDef("controller.quorum.election.timeout.ms", _at_least(10), "1000", "INT",
                  "Without a leader this long, a voter asks for (pre-)votes", read_only=True),
        ConfigDef("controller.quorum.fetch.timeout.ms", _at_least(10), "2000", "INT",
                  "A follower that has not heard from its leader this long starts an election; a leader "
                  "that has not heard from a majority this long steps down", read_only=True),
        ConfigDef("controller.quorum.election.backoff.max.ms", _at_least(1), "1000", "INT",
                  "Most random back-off before another election", read_only=True),
        ConfigDef("controller.quorum.request.timeout.ms", _at_least(10), "2000", "INT",
                  "A quorum request unanswered this long is sent again", read_only=True),
        ConfigDef("metadata.log.max.record.bytes.between.snapshots", _at_least(1), "20971520", "LONG",
                  "A snapshot of the image is taken once this many bytes of records were applied since the last",
                  read_only=True),
        ConfigDef("broker.rack", _str, None, "STRING", "This broker's rack (rack-aware partition placement)",
                  read_only=True),
        ConfigDef("broker.session.timeout.ms", _at_least(1), "9000", "INT",
                  "A broker whose heartbeats stop this long is fenced by the controller", read_only=True),
        ConfigDef("broker.heartbeat.interval.ms", _at_least(1), "2000", "INT",
                  "How often a broker heartbeats to the active controller", read_only=True),
        ConfigDef("log.dirs", _str, "./data", "STRING", "Data directory", read_only=True),
        ConfigDef("log.dir", _str, None, "STRING", "Alias of log.dirs", read_only=True),
        ConfigDef("num.partitions", _at_least(1), "1", "INT", "Default partitions for new topics"),
        ConfigDef("default.replication.factor", _at_least(1), "1", "INT", "Default replication factor"),
        ConfigDef("auto.create.topics.enable", _bool, "true", "BOOLEAN", "Create topics on Metadata/Produce"),
        ConfigDef("delete.topic.enable", _bool, "true", "BOOLEAN", "Allow DeleteTopics"),
        ConfigDef("message.max.bytes", _at_least(0), "1048588", "INT", "Largest record batch"),
        ConfigDef("socket.request.max.bytes", _at_least(1024), "104857600", "INT", "Largest request frame",
                  read_only=True),
        # Back-pressure and connection limits (broker/limits.py, docs/limits.md).
        ConfigDef("queued.max.request.bytes", _pool_bytes, "268435456", "LONG",
                  "Broker-wide budget of request bytes being read or handled; when used up the broker stops "
                  "reading sockets. -1 = unbounded (Kafka's default); ours is 256 MiB", read_only=True),
        ConfigDef("max.connections", _at_least(0), "2147483647", "INT",
                  "Most client connections; more are closed right after accept"),
        ConfigDef("max.connections.per.ip", _at_least(0), "2147483647", "INT",
                  "Most client connections from one IP address"),
        ConfigDef("max.connections.per.ip.overrides", _ip_overrides, "", "STRING",
                  "Per-IP exceptions to max.connections.per.ip: ip:count,ip:count"),
        ConfigDef("connections.max.idle.ms", _at_least(1), "600000", "LONG",
                  "Close a connection with no request and nothing in flight for this long", read_only=True),
        ConfigDef("log.flush.interval.messages", _at_least(1), "1", "LONG",
                  "1 (default) = fsync before acknowledging; larger = fsync in the background"),
        ConfigDef("log.flush.interval.ms", _at_least(0), None, "LONG", "Background fsync period"),
        ConfigDef("log.flush.scheduler.interval.ms", _at_least(1), "1000", "LONG", "Background fsync period"),
        ConfigDef("log.retention.ms", _int, None, "LONG", ""),
        ConfigDef("log.retention.minutes", _int, None, "INT", ""),
        ConfigDef("log.retention.hours", _int, "168", "INT", ""),
        ConfigDef("log.retention.bytes", _int, "-1", "LONG", ""),
        ConfigDef("log.segment.bytes", _at_least(14), "1073741824", "INT", ""),
        ConfigDef("log.roll.ms", _int, None, "LONG", ""),
        ConfigDef("log.index.size.max.bytes", _at_least(4), "10485760", "INT",
                  "the active segment rolls when its in-memory batch index (32 bytes per batch) reaches this"),
        ConfigDef("log.roll.hours", _at_least(1), "168", "INT", ""),
        ConfigDef("log.cleanup.policy", _cleanup_policy, "delete", "LIST",
                  "delete: retention deletes old segments; compact: the cleaner keeps each key's last record"),
        ConfigDef("log.message.timestamp.type", _TIMESTAMP_TYPE, "CreateTime", "STRING", ""),
        ConfigDef("compression.type", _COMPRESSION, "producer", "STRING", "", no_effect=_AS_PRODUCED),
        ConfigDef("min.insync.replicas", _at_least(1), "1", "INT",
                  "acks=all is refused with NOT_ENOUGH_REPLICAS while the ISR is smaller; the high watermark "
                  "waits too (KIP-966)"),
        ConfigDef("unclean.leader.election.enable", _bool, "false", "BOOLEAN",
                  "Elect a replica outside the ISR and ELR when none of them is alive (loses committed records)"),
        # Replication (broker/replication.py, docs/replication.md).
        ConfigDef("auto.leader.rebalance.enable", _bool, "true", "BOOLEAN",
                  "The controller gives preferred replicas their leadership back (ElectLeaders, preferred)"),
        ConfigDef("leader.imbalance.check.interval.seconds", _at_least(1), "300", "LONG",
                  "How often the controller looks for leadership to give back"),
        ConfigDef("leader.imbalance.per.broker.percentage", _at_least(0), "10", "INT",
                  "A broker not leading more than this share of its preferred partitions gets them back"),
        ConfigDef("replica.lag.time.max.ms", _at_least(1), "30000", "LONG",
                  "A follower not caught up with its leader this long leaves the ISR"),
        ConfigDef("replica.fetch.wait.max.ms", _at_least(0), "500", "INT", "A follower fetch's max wait"),
        ConfigDef("replica.fetch.min.bytes", _at_least(1), "1", "INT", "A follower fetch's min bytes"),
        ConfigDef("replica.fetch.max.bytes", _at_least(0), "1048576", "INT", "Bytes per partition per follower fetch"),
        ConfigDef("replica.fetch.response.max.bytes", _at_least(0), "10485760", "INT",
                  "Bytes per follower fetch answer"),
        ConfigDef("replica.fetch.backoff.ms", _at_least(0), "1000", "INT",
                  "A follower's pause after a failed fetch"),
        ConfigDef("replica.socket.timeout.ms", _at_least(1), "30000", "INT",
                  "A follower fetch's network timeout (on top of its max wait)"),
        # Log compaction (broker/log_cleaner.py, README "Retention and compaction").
        ConfigDef("log.cleaner.enable", _bool, "true", "BOOLEAN", "Run the log cleaner (compacted topics)"),
        ConfigDef("log.cleaner.backoff.ms", _at_least(0), "15000", "LONG",
                  "How often the cleaner looks for partitions to compact"),
        ConfigDef("log.cleaner.io.max.bytes.per.second", _positive_float, "20971520", "DOUBLE",
                  "The cleaner's budget of log bytes read per second (both sweeps of a pass). Kafka's default "
                  "is unlimited; ours is 20 MiB/s, which keeps produce latency flat during a pass on a "
                  "2-core machine (docs/benchmarks.md)"),
        ConfigDef("log.cleaner.min.cleanable.ratio", _ratio, "0.5", "DOUBLE", ""),
        ConfigDef("log.cleaner.delete.retention.ms", _at_least(0), "86400000", "LONG", ""),
        ConfigDef("log.cleaner.min.compaction.lag.ms", _at_least(0), "0", "LONG", ""),
        ConfigDef("log.cleaner.max.compaction.lag.ms", _at_least(1), str(LONG_MAX), "LONG", ""),
        ConfigDef("log.retention.check.interval.ms", _at_least(1), "300000", "LONG",
                  "How often retention deletes segments past retention.ms / retention.bytes", read_only=True),
        ConfigDef("log.message.timestamp.before.max.ms", _at_least(0), str(LONG_MAX), "LONG", ""),
        ConfigDef("log.message.timestamp.after.max.ms", _at_least(0), "3600000", "LONG", ""),
        # Group coordinator (docs/groups.md).
        ConfigDef("offsets.topic.num.partitions", _at_least(1), "50", "INT",
                  "Partitions of __consumer_offsets (fixed once the topic exists)", read_only=True),
        ConfigDef("offsets.topic.replication.factor", _at_least(1), "3", "SHORT",
                  "Replication factor of __consumer_offsets; fewer live brokers: as many as there are",
                  read_only=True),
        ConfigDef("transaction.state.log.replication.factor", _at_least(1), "3", "SHORT",
                  "Replication factor of __transaction_state; fewer live brokers: as many as there are",
                  read_only=True),
        ConfigDef("offsets.topic.segment.bytes", _at_least(1), "104857600", "INT",
                  "segment.bytes of __consumer_offsets when it is created (small segments are compacted sooner)",
                  read_only=True),
        ConfigDef("transaction.state.log.segment.bytes", _at_least(1), "104857600", "INT",
                  "segment.bytes of __transaction_state when it is created", read_only=True),
        ConfigDef("offsets.retention.minutes", _at_least(1), "10080", "INT",
                  "Committed offsets of an empty group are kept this long"),
        ConfigDef("offsets.retention.check.interval.ms", _at_least(1), "600000", "LONG",
                  "How often expired offsets are removed"),
        ConfigDef("offset.metadata.max.bytes", _at_least(0), "4096", "INT",
                  "Largest metadata string of a committed offset"),
        ConfigDef("group.initial.rebalance.delay.ms", _at_least(0), "3000", "INT",
                  "Delay of a new classic group's first rebalance, waiting for more members"),
        ConfigDef("group.min.session.timeout.ms", _at_least(0), "6000", "INT", "Smallest session timeout"),
        ConfigDef("group.max.session.timeout.ms", _at_least(0), "1800000", "INT", "Largest session timeout"),
        ConfigDef("group.max.size", _at_least(1), "2147483647", "INT", "Most members of a classic group"),
        ConfigDef("group.consumer.session.timeout.ms", _at_least(1), "45000", "INT",
                  "Session timeout of consumer-protocol (KIP-848) members"),
        ConfigDef("group.consumer.heartbeat.interval.ms", _at_least(1), "5000", "INT",
                  "Heartbeat interval of consumer-protocol (KIP-848) members"),
        ConfigDef("group.consumer.assignors", _str, "uniform,range", "LIST",
                  "Server-side assignors of consumer groups; the first is the default"),
        ConfigDef("group.consumer.max.size", _at_least(1), "2147483647", "INT",
                  "Most members of a consumer group"),
        ConfigDef("group.coordinator.rebalance.protocols", _str, "classic,consumer", "LIST",
                  "Group protocols the coordinator accepts", read_only=True),
        # Transaction coordinator (docs/transactions.md).
        ConfigDef("transaction.state.log.num.partitions", _at_least(1), "50", "INT",
                  "Partitions of __transaction_state (fixed once the topic exists)", read_only=True),
        ConfigDef("transaction.max.timeout.ms", _at_least(1), "900000", "INT",
                  "Largest transaction.timeout.ms a producer may ask for"),
        ConfigDef("transactional.id.expiration.ms", _at_least(1), "604800000", "INT",
                  "A transactional id without a transaction for this long is removed"),
        ConfigDef("transaction.abort.timed.out.transaction.cleanup.interval.ms", _at_least(1), "10000", "INT",
                  "How often transactions past their timeout are aborted"),
        ConfigDef("transaction.remove.expired.transaction.cleanup.interval.ms", _at_least(1), "3600000", "INT",
                  "How often expired transactional ids are removed"),
        # Idempotent producers (storage/producer_state.py, docs/transactions.md).
        ConfigDef("producer.id.expiration.ms", _at_least(1), "86400000", "INT",
                  "Producer state of a producer idle this long (and with no open transaction) is dropped",
                  read_only=True),
        ConfigDef("producer.id.expiration.check.interval.ms", _at_least(1), "600000", "INT",
                  "How often idle producers are looked for", read_only=True),
        ConfigDef("cluster.id", _str, None, "STRING", "Cluster id (generated and stored under log.dirs if unset)",
                  read_only=True),
        # Erasure-coded tiered storage (docs/tiered-storage.md).
        ConfigDef("remote.log.storage.system.enable", _bool, "false", "BOOLEAN",
                  "Offload closed segments of topics with remote.storage.enable=true to the fragment stores",
                  read_only=True),
        ConfigDef("remote.fragment.stores", _store_urls, "", "LIST",
                  "The fragment stores, one per failure domain: file:///path or s3://bucket?endpoint=http://h:p; "
                  "at least k+m of them", read_only=True),
        ConfigDef("remote.erasure.code", _erasure_code, "rs:4+2", "STRING",
                  "Reed-Solomon scheme of offloaded segments, rs:K+M: K data and M parity fragments"),
        ConfigDef("remote.stripe.bytes", _at_least(4096), "1048576", "INT",
                  "Segment bytes per stripe: a fetch reads whole stripes", read_only=True),
        ConfigDef("remote.log.manager.task.interval.ms", _at_least(1), "30000", "LONG",
                  "How often each partition's leader looks for segments to offload and to delete", read_only=True),
        ConfigDef("remote.log.manager.copy.max.bytes.per.second", _positive_float, str(LONG_MAX), "LONG",
                  "Offload's budget of segment bytes encoded per second, for the whole broker"),
        ConfigDef("remote.scrub.interval.ms", _at_least(1), "3600000", "LONG",
                  "How often the scrubber checks every fragment of the segments this broker's partitions "
                  "offloaded, and repairs the bad ones", read_only=True),
        ConfigDef("remote.scrub.max.bytes.per.second", _positive_float, "10485760", "LONG",
                  "The scrubber's budget of fragment bytes read per second"),
        ConfigDef("remote.fetch.hedge.ms", _at_least(1), "100", "LONG",
                  "A read of an offloaded stripe asks one more store whenever this long passes with no fragment "
                  "piece arriving (a slow store is not waited for)", read_only=True),
        ConfigDef("remote.cache.bytes", _at_least(0), "268435456", "LONG",
                  "In-process cache of remote stripes (least recently used out)", read_only=True),
        ConfigDef("remote.cache.redis.url", _str, None, "STRING",
                  "Optional shared Redis tier of remote stripes, redis://host:port", read_only=True),
        ConfigDef("remote.cache.redis.ttl.ms", _at_least(1), "3600000", "LONG",
                  "How long a stripe stays in Redis", read_only=True),
        ConfigDef("log.local.retention.ms", _local_retention, "-2", "LONG",
                  "How long closed segments of remote-enabled topics stay on local disk once offloaded "
                  "(-2: retention.ms)"),
        ConfigDef("log.local.retention.bytes", _local_retention, "-2", "LONG",
                  "Local bytes of a remote-enabled partition kept once offloaded (-2: retention.bytes)"),
        # TLS on SSL listeners (broker/tls.py, docs/security.md): PEM keys and certificates.
        ConfigDef("ssl.keystore.type", _one_of("PEM", "pem"), "PEM", "STRING",
                  "PEM only (Kafka's default is JKS: convert a JKS keystore with keytool and openssl)"),
        ConfigDef("ssl.keystore.location", _str, None, "STRING",
                  "PEM file with the listener's private key and certificate chain"),
        ConfigDef("ssl.keystore.key", _str, None, "PASSWORD", "The private key, PEM, inline",
                  sensitive=True),
        ConfigDef("ssl.keystore.certificate.chain", _str, None, "PASSWORD", "The certificate chain, PEM, inline",
                  sensitive=True),
        ConfigDef("ssl.key.password", _str, None, "PASSWORD", "Password of an encrypted private key",
                  sensitive=True),
        ConfigDef("ssl.truststore.type", _one_of("PEM", "pem"), "PEM", "STRING", "PEM only"),
        ConfigDef("ssl.truststore.location", _str, None, "STRING",
                  "PEM file of the CA certificates client certificates must chain to"),
        ConfigDef("ssl.truststore.certificates", _str, None, "PASSWORD", "The trusted CA certificates, PEM, inline",
                  sensitive=True),
        ConfigDef("ssl.client.auth", _one_of("none", "requested", "required"), "none", "STRING",
                  "Client certificates: none, requested (checked when given) or required (mTLS)"),
        ConfigDef("ssl.enabled.protocols", _str, "TLSv1.2,TLSv1.3", "LIST",
                  "TLS versions served: TLSv1.2 and TLSv1.3 (nothing older)"),
        ConfigDef("ssl.cipher.suites", _str, "", "LIST", "OpenSSL cipher names for TLS 1.2; empty = OpenSSL's"),
        ConfigDef("ssl.endpoint.identification.algorithm", _str, "https", "STRING",
                  "https: a broker checks that another broker's certificate names the host it connects to; "
                  "empty: not checked"),
        ConfigDef("ssl.principal.mapping.rules", _str, "DEFAULT", "STRING",
                  "Certificate subject to principal name: RULE:pattern/replacement/[LU],...,DEFAULT"),
        # SASL on SASL_PLAINTEXT / SASL_SSL listeners (broker/sasl.py, docs/security.md).
        ConfigDef("sasl.enabled.mechanisms", _sasl_mechanisms, "GSSAPI", "LIST",
                  "Mechanisms SASL listeners offer: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER "
                  "(Kafka's default, GSSAPI, is not implemented)"),
        ConfigDef("sasl.jaas.config", _str, None, "PASSWORD",
                  "PLAIN users: PlainLoginModule required user_<name>=\"<password>\" ...; (never set at runtime)",
                  sensitive=True),
        ConfigDef("sasl.server.max.receive.size", _at_least(64), "524288", "INT",
                  "Largest request accepted before a connection has authenticated"),
        ConfigDef("connection.failed.authentication.delay.ms", _at_least(0), "100", "INT",
                  "A failed authentication is answered, and the connection closed, this much later (KIP-306)"),
        ConfigDef("connections.max.reauth.ms", _at_least(0), "0", "LONG",
                  "SASL sessions last at most this long; a client must re-authenticate (KIP-368); 0 = no limit"),
        ConfigDef("sasl.oauthbearer.jwks.endpoint.url", _str, None, "STRING",
                  "OAUTHBEARER: the JWKS (https://, http:// or file://) tokens are checked against"),
        ConfigDef("sasl.oauthbearer.jwks.endpoint.refresh.ms", _at_least(1000), "3600000", "LONG",
                  "OAUTHBEARER: how often the JWKS is fetched again"),
        ConfigDef("sasl.oauthbearer.expected.audience", _str, None, "LIST",
                  "OAUTHBEARER: a token's aud must name one of these (unset: not checked)"),
        ConfigDef("sasl.oauthbearer.expected.issuer", _str, None, "STRING",
                  "OAUTHBEARER: a token's iss must be this (unset: not checked)"),
        ConfigDef("sasl.oauthbearer.sub.claim.name", _str, "sub", "STRING",
                  "OAUTHBEARER: the claim that names the principal"),
        ConfigDef("sasl.oauthbearer.clock.skew.seconds", _at_least(0), "30", "INT",
                  "OAUTHBEARER: tolerance on exp and nbf"),
        # ACLs (broker/authorizer.py, docs/security.md).
        ConfigDef("authorizer.class.name", _authorizer_class, "", "STRING",
                  "Empty: everyone may do everything; Kafka's StandardAuthorizer (or AclAuthorizer): ACLs decide"),
        ConfigDef("super.users", _super_users, "", "LIST", "Principals ACLs never refuse, e.g. User:admin;User:ops"),
        ConfigDef("allow.everyone.if.no.acl.found", _bool, "false", "BOOLEAN",
                  "A resource without any ACL is open to everyone (true) or to super users only (false)"),
        ConfigDef("admin.listeners", _http_listeners, "http://127.0.0.1:8083", "LIST",
                  "REST API listeners, http://host:port or https://host:port (the ssl.* key, certificates and client "
                  "auth), ...; port 0 binds a free port; empty disables the REST API. "
                  "Without authentication only loopback addresses are accepted", read_only=True),
        ConfigDef("admin.auth.bearer.token", _str, None, "PASSWORD",
                  "REST API: accept `Authorization: Bearer <token>`", read_only=True, sensitive=True),
        ConfigDef("admin.auth.basic.users", _basic_users, None, "PASSWORD",
                  "REST API: HTTP basic users, user:password,...", read_only=True, sensitive=True),
    ]
}

# topic config -> (broker synonym, how to turn the broker value into the topic value)
_HOURS_TO_MS = 3600 * 1000


@dataclass(frozen=True)
class TopicConfigDef:
    name: str
    parse: Callable[[str], object]
    kafka_type: str
    synonyms: tuple[str, ...]  # broker properties, most specific first
    fallback: str | None  # Kafka's default when no broker property is set
    no_effect: str = ""  # accepted (a Kafka name) but not acted on here: why; "" = honoured
    internal: bool = False  # Kafka's internal topic configs


TOPIC_CONFIGS: dict[str, TopicConfigDef] = {
    d.name: d
    for d in [
        TopicConfigDef("cleanup.policy", _cleanup_policy, "LIST", ("log.cleanup.policy",), "delete"),
        TopicConfigDef("compression.type", _COMPRESSION, "STRING", ("compression.type",), "producer", _AS_PRODUCED),
        TopicConfigDef("max.message.bytes", _at_least(0), "INT", ("message.max.bytes",), "1048588"),
        TopicConfigDef("message.timestamp.type", _TIMESTAMP_TYPE, "STRING", ("log.message.timestamp.type",),
                       "CreateTime"),
        TopicConfigDef("retention.ms", _at_least(-1), "LONG",
                       ("log.retention.ms", "log.retention.minutes", "log.retention.hours"), "604800000"),
        TopicConfigDef("retention.bytes", _int, "LONG", ("log.retention.bytes",), "-1"),
        TopicConfigDef("segment.bytes", _at_least(14), "INT", ("log.segment.bytes",), "1073741824"),
        TopicConfigDef("segment.ms", _at_least(1), "LONG", ("log.roll.ms", "log.roll.hours"), "604800000"),
        TopicConfigDef("segment.index.bytes", _at_least(4), "INT", ("log.index.size.max.bytes",), "10485760"),
        TopicConfigDef("min.insync.replicas", _at_least(1), "INT", ("min.insync.replicas",), "1"),
        TopicConfigDef("unclean.leader.election.enable", _bool, "BOOLEAN", ("unclean.leader.election.enable",),
                       "false"),
        TopicConfigDef("flush.messages", _at_least(1), "LONG", ("log.flush.interval.messages",), str(LONG_MAX),
                       _BROKER_FLUSH),
        TopicConfigDef("flush.ms", _at_least(0), "LONG", ("log.flush.interval.ms",), str(LONG_MAX), _BROKER_FLUSH),
        TopicConfigDef("delete.retention.ms", _at_least(0), "LONG", ("log.cleaner.delete.retention.ms",),
                       "86400000"),
        TopicConfigDef("min.compaction.lag.ms", _at_least(0), "LONG", ("log.cleaner.min.compaction.lag.ms",), "0"),
        TopicConfigDef("max.compaction.lag.ms", _at_least(1), "LONG", ("log.cleaner.max.compaction.lag.ms",),
                       str(LONG_MAX)),
        TopicConfigDef("min.cleanable.dirty.ratio", _ratio, "DOUBLE", ("log.cleaner.min.cleanable.ratio",), "0.5"),
        TopicConfigDef("message.timestamp.before.max.ms", _at_least(0), "LONG",
                       ("log.message.timestamp.before.max.ms",), str(LONG_MAX)),
        TopicConfigDef("message.timestamp.after.max.ms", _at_least(0), "LONG",
                       ("log.message.timestamp.after.max.ms",), "3600000"),
        TopicConfigDef("remote.storage.enable", _bool, "BOOLEAN", (), "false"),
        TopicConfigDef("local.retention.ms", _local_retention, "LONG", ("log.local.retention.ms",), "-2"),
        TopicConfigDef("local.retention.bytes", _local_retention, "LONG", ("log.local.retention.bytes",), "-2"),
        TopicConfigDef("remote.erasure.code", _erasure_code, "STRING", ("remote.erasure.code",), "rs:4+2"),
        # Lodestream's own: retention keeps the records offset snapshots point at (broker/offset_snapshots.py)
        TopicConfigDef("retention.keep.snapshots", _bool, "BOOLEAN", (), "false"),
    ]
}


# Honoured configs that Kafka can change at runtime but this broker reads once, at start-up: refused by
# AlterConfigs (changing them would be reported and not applied).
_STARTUP_ONLY = frozenset({"log.flush.interval.messages", "log.flush.interval.ms", "log.flush.scheduler.interval.ms",
                           "producer.id.expiration.ms", "listeners", "listener.security.protocol.map",
                           "advertised.listeners",
                           # Never set over AlterConfigs (the CVE-2023-25194 class: login modules from a client).
                           "sasl.jaas.config", "sasl.enabled.mechanisms"})
_PARSE_BY_TYPE: dict[str, Callable[[str], object]] = {
    "BOOLEAN": _bool, "INT": _int, "SHORT": _int, "LONG": _int, "DOUBLE": lambda v: float(v.strip()),
}


def _load_kafka_catalog() -> dict:
    """broker/kafka_configs.json: every broker and topic config of Apache Kafka (names, types, defaults,
    update modes, synonyms), generated from Kafka's own definitions by compat-tests/java."""
    with open(Path(__file__).with_name("kafka_configs.json"), encoding="utf-8") as catalog:
        return json.load(catalog)


def _merge_kafka_catalog() -> str:
    """Complete BROKER_CONFIGS and TOPIC_CONFIGS with every Kafka config name: ours keep their parser and
    default and take Kafka's update mode; the rest are accepted with Kafka's defaults and no effect."""
    catalog = _load_kafka_catalog()
    # Dynamic-only configs (replication throttles) exist only as AlterConfigs keys, cluster-wide or per broker.
    broker_entries = catalog["broker"] + [dict(entry, dynamic="cluster-wide") for entry in catalog["broker_dynamic_only"]]
    modes = {entry["name"]: entry["dynamic"] for entry in broker_entries}
    for name, definition in list(BROKER_CONFIGS.items()):
        mode = modes.get(name)
        if mode is not None:  # ours and Kafka's: Kafka decides what can change at runtime
            BROKER_CONFIGS[name] = replace(definition, read_only=mode == "read-only" or name in _STARTUP_ONLY,
                                           per_broker_only=mode == "per-broker")
    for entry in broker_entries:
        name, kafka_type, mode = entry["name"], entry["type"], entry["dynamic"]
        if name not in BROKER_CONFIGS:
            BROKER_CONFIGS[name] = ConfigDef(
                name, _PARSE_BY_TYPE.get(kafka_type, _str), entry["default"], kafka_type,
                read_only=mode == "read-only", sensitive=kafka_type == "PASSWORD", no_effect=no_effect_reason(name),
                per_broker_only=mode == "per-broker", internal=entry["internal"])
    for entry in catalog["topic"]:
        name = entry["name"]
        if name not in TOPIC_CONFIGS:
            TOPIC_CONFIGS[name] = TopicConfigDef(
                name, _PARSE_BY_TYPE.get(entry["type"], _str), entry["type"],
                tuple(synonym["name"] for synonym in entry["synonyms"]), entry["default"],
                no_effect_reason("log." + name) if name.startswith(("segment.", "retention.")) else no_effect_reason(name),
                internal=entry["internal"])
    return catalog["kafka_version"]


KAFKA_VERSION = _merge_kafka_catalog()  # the Kafka release whose config names are all accepted


def _broker_value_as_topic_value(broker_key: str, value: str) -> str:
    """log.retention.hours=168 -> retention.ms=604800000; any negative means unlimited (-1), as in Kafka."""
    for suffix, factor in ((".hours", _HOURS_TO_MS), (".minutes", 60 * 1000)):
        if broker_key.endswith(suffix):
            number = int(value)
            return "-1" if number < 0 else str(number * factor)
    return value


def describe_without_effect(keys: Iterable[str], table: Mapping[str, ConfigDef | TopicConfigDef]) -> str:
    """"key (reason); ..." for the keys set that are accepted but not acted on here; "" if none."""
    return "; ".join(f"{key} ({table[key].no_effect})" for key in sorted(keys) if key in table and table[key].no_effect)


def validate_broker_config(key: str, value: str) -> object:
    definition = BROKER_CONFIGS.get(key)
    if definition is None:
        raise ConfigError(f"unknown broker config {key!r}")
    try:
        return definition.parse(value)
    except ValueError as exc:
        shown = "(hidden)" if definition.sensitive else repr(value)
        raise ConfigError(f"invalid value {shown} for {key!r}: {exc}") from None


def validate_topic_config(key: str, value: str | None) -> object:
    definition = TOPIC_CONFIGS.get(key)
    if definition is None:
        raise ConfigError(f"unknown topic config {key!r}")
    if value is None:
        raise ConfigError(f"null value for topic config {key!r}")
    try:
        return definition.parse(value)
    except ValueError as exc:
        raise ConfigError(f"invalid value {value!r} for {key!r}: {exc}") from None


def parse_properties(text: str) -> dict[str, str]:
    """Parse Java-style .properties (key=value or key: value, # and ! comments)."""
    result: dict[str, str] = {}
    for line_number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#!":
            continue
        # Like java.util.Properties: the first '=' or ':' separates key and value.
        positions = [p for p in (line.find("="), line.find(":")) if p >= 0]
        if not positions:
            raise ConfigError(f"line {line_number}: expected key=value, got {raw!r}")
        key, value = line[: min(positions)], line[min(positions) + 1 :]
        result[key.strip()] = value.strip()
    return result


ENV_PREFIX = "LODESTREAM_"


def env_variable_key(name: str) -> str:
    """LODESTREAM_LOG_DIRS -> log.dirs, as Kafka's docker image maps KAFKA_*: lower case, `_` -> `.`,
    `__` -> `_`, `___` -> `-`."""
    dotted = ".".join(name[len(ENV_PREFIX):].lower().split("_"))
    return "_".join("-".join(dotted.split("...")).split(".."))


def environment_overrides(environ: Mapping[str, str]) -> dict[str, str]:
    """The broker configs set by LODESTREAM_* variables. A variable whose key is a broker config (or a
    listener.name.* one) is config; one whose first word is a config's first word (log, num, listeners,
    ...) but is not a config is a typo and refused; any other (LODESTREAM_BOOTSTRAP_SERVER of the CLI,
    the tests' LODESTREAM_COMPAT_BROKER, ...) is not config and left alone."""
    found: dict[str, str] = {}
    refused: list[str] = []
    first_words = {key.split(".")[0] for key in BROKER_CONFIGS}
    for name, value in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or name == ENV_PREFIX:
            continue
        key = env_variable_key(name)
        if key in BROKER_CONFIGS or key.startswith("listener.name."):
            found[key] = value
        elif key.split(".")[0] in first_words:
            refused.append(f"{name} ({key})")
    if refused:
        raise ConfigError(f"environment variable{'s' if len(refused) > 1 else ''} {', '.join(refused)} "
                          f"name{'' if len(refused) > 1 else 's'} no broker config (LODESTREAM_<KEY>: the key in "
                          "upper case with `.` as `_`, `_` as `__`, `-` as `___`)")
    return found


@dataclass(frozen=True)
class ConfigEntryView:
    """One config as DescribeConfigs reports it."""

    name: str
    value: str | None
    source: str  # DYNAMIC_TOPIC_CONFIG, DYNAMIC_BROKER_CONFIG, DYNAMIC_DEFAULT_BROKER_CONFIG, STATIC_BROKER_CONFIG, DEFAULT_CONFIG
    read_only: bool
    sensitive: bool
    kafka_type: str
    doc: str
    synonyms: tuple[tuple[str, str | None, str], ...]  # (name, value, source)


_LISTENER_JAAS = re.compile(r"listener\.name\.([A-Za-z0-9_]+)\.plain\.sasl\.jaas\.config")


class BrokerConfig:
    """Static (file + overrides) broker config; dynamic values come from the metadata image."""

    def __init__(self, explicit: Mapping[str, str]) -> None:
        parsed: dict[str, object] = {}
        unknown, problems = [], []
        # listener.name.<listener>.<mechanism>.sasl.jaas.config: a SASL listener's own PLAIN users (broker/sasl.py)
        self.listener_jaas: dict[str, str] = {}
        for key in [k for k in explicit if k.startswith("listener.name.")]:
            match = _LISTENER_JAAS.fullmatch(key)
            if match is None:
                unknown.append(key)
            else:
                self.listener_jaas[match.group(1).upper()] = explicit[key]
        explicit = {k: v for k, v in explicit.items() if not k.startswith("listener.name.")}
        for key, value in explicit.items():
            if key not in BROKER_CONFIGS:
                unknown.append(key)
                continue
            try:
                parsed[key] = validate_broker_config(key, value)
            except ConfigError as exc:
                problems.append(str(exc))
        if unknown:  # every unknown key at once, not one per start attempt
            problems.insert(0, f"unknown broker config{'s' if len(unknown) > 1 else ''} "
                               f"{', '.join(repr(k) for k in sorted(unknown))} (not an Apache Kafka "
                               f"{KAFKA_VERSION} broker config nor one of Lodestream's)")
        for alias, key in (("broker.id", "node.id"),):
            if alias in parsed and key in parsed and parsed[alias] != parsed[key]:
                problems.append(f"{alias}={explicit[alias]} conflicts with {key}={explicit[key]} (they name the "
                                "same thing; set one, or both to the same value)")
        if problems:
            raise ConfigError("; ".join(problems))
        self.explicit = dict(explicit)  # as written by the operator
        self._parsed = parsed
        if "broker.id" in explicit and "node.id" not in explicit:
            self.explicit["node.id"] = explicit["broker.id"]
            self._parsed["node.id"] = parsed["broker.id"]
        if "log.dir" in explicit and "log.dirs" not in explicit:
            self.explicit["log.dirs"] = explicit["log.dir"]
            self._parsed["log.dirs"] = parsed["log.dir"]
        if "," in str(self.get("log.dirs")):
            raise ConfigError("log.dirs: a single data directory is supported")
        if self.get("remote.log.storage.system.enable"):
            problem = stores_problem(str(self.get("remote.erasure.code")), len(self.get("remote.fragment.stores")))
            if problem:
                raise ConfigError(f"remote.log.storage.system.enable=true: {problem}")
        self._check_admin_exposure()

    def _check_admin_exposure(self) -> None:
        """Without REST API authentication, bind loopback addresses only (refuse anything else)."""
        if self.get("admin.auth.bearer.token") or self.get("admin.auth.basic.users") or self._rest_uses_sasl_users():
            return
        for host, port, scheme in self.get("admin.listeners"):
            if scheme == "https" and self.get("ssl.client.auth") == "required":
                continue  # mTLS: every caller has a certificate, hence a principal (admin/auth.py)
            if not is_loopback_host(host):
                raise ConfigError(
                    f"admin.listeners: {scheme}://{host}:{port} is not a loopback address and no REST API "
                    "authentication is configured; set admin.auth.bearer.token or admin.auth.basic.users, "
                    "serve SCRAM or OAUTHBEARER on a SASL listener, use https with ssl.client.auth=required, "
                    "or bind 127.0.0.1")

    def _rest_uses_sasl_users(self) -> bool:
        """SASL listeners with SCRAM or OAUTHBEARER: the REST API authenticates their users (admin/auth.py)."""
        listeners = f"{self.raw('listeners')},{self.raw('listener.security.protocol.map')}"
        return "SASL_" in listeners.upper() and bool(
            set(self.get("sasl.enabled.mechanisms")) & {"SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"})

    def without_effect(self) -> dict[str, list[str]]:
        """Explicitly set keys that are accepted but not acted on here, grouped by the reason why."""
        reasons: dict[str, list[str]] = {}
        for key in sorted(self.explicit):
            if BROKER_CONFIGS[key].no_effect:
                reasons.setdefault(BROKER_CONFIGS[key].no_effect, []).append(key)
        return reasons

    @classmethod
    def load(cls, path: Path | None, overrides: list[str],
             environment: Mapping[str, str] | None = None) -> "BrokerConfig":
        """The file, then `environment` (environment_overrides), then each key=value override."""
        explicit: dict[str, str] = {}
        if path is not None:
            try:
                explicit.update(parse_properties(path.read_text()))
            except OSError as exc:
                raise ConfigError(f"cannot read config file {path}: {exc}") from None
        explicit.update(environment or {})
        for override in overrides:
            if "=" not in override:
                raise ConfigError(f"--override expects key=value, got {override!r}")
            key, value = override.split("=", 1)
            explicit[key.strip()] = value
        return cls(explicit)

    def get(self, key: str):
        if key in self._parsed:
            return self._parsed[key]
        default = BROKER_CONFIGS[key].default
        return None if default is None else BROKER_CONFIGS[key].parse(default)

    def raw(self, key: str) -> str | None:
        return self.explicit.get(key, BROKER_CONFIGS[key].default)

    @property
    def node_id(self) -> int:
        return int(self.get("node.id"))

    @property
    def data_dir(self) -> Path:
        return Path(str(self.get("log.dirs")))

    @property
    def sync_on_append(self) -> bool:
        return int(self.get("log.flush.interval.messages")) == 1

    @property
    def flush_interval_seconds(self) -> float:
        interval = self.get("log.flush.interval.ms")
        if interval is None:
            interval = self.get("log.flush.scheduler.interval.ms")
        return max(int(interval), 1) / 1000


def listed_broker_config(key: str, value: str | None, source: str) -> bool:
    """Whether DescribeConfigs (and the REST API) list a broker config: the aliases broker.id and log.dir,
    and Kafka's internal configs, only when set."""
    if key in ("broker.id", "log.dir"):
        return value is not None
    return not (BROKER_CONFIGS[key].internal and source == "DEFAULT_CONFIG")


def broker_config_layers(
    static: BrokerConfig, dynamic: Mapping[str, Mapping[str, str]], node_id: int
) -> list[tuple[Mapping[str, str], str]]:
    """Where a broker property's value can come from, most specific first, with Kafka's source names:
    per-broker dynamic > cluster-default dynamic > static file (built-in defaults come after)."""
    return [
        (dynamic.get(str(node_id), {}), "DYNAMIC_BROKER_CONFIG"),
        (dynamic.get("", {}), "DYNAMIC_DEFAULT_BROKER_CONFIG"),
        (static.explicit, "STATIC_BROKER_CONFIG"),
    ]


def effective_broker_value(
    static: BrokerConfig, dynamic: Mapping[str, Mapping[str, str]], node_id: int, key: str
) -> tuple[str | None, str]:
    """A broker property's value and source, per Kafka's precedence (broker_config_layers, then the default)."""
    for layer, source in broker_config_layers(static, dynamic, node_id):
        if key in layer:
            return layer[key], source
    return BROKER_CONFIGS[key].default, "DEFAULT_CONFIG"


# Broker properties that alias one another (most specific first), as Kafka's
# DynamicBrokerConfig.brokerConfigSynonyms: log.retention.{ms,minutes,hours}, log.roll.{ms,hours}.
_SYNONYM_GROUPS = [d.synonyms for d in TOPIC_CONFIGS.values() if len(d.synonyms) > 1]


def broker_synonym_names(key: str) -> tuple[str, ...]:
    for group in _SYNONYM_GROUPS:
        if key in group:
            return group
    return (key,)


def broker_config_synonyms(
    key: str, static: BrokerConfig, dynamic: Mapping[str, Mapping[str, str]], node_id: int, per_broker: bool
) -> list[tuple[str, str | None, str]]:
    """Kafka's ConfigHelper.configSynonyms for a broker property: (name, value, source), first wins.
    per_broker=False describes the cluster-wide dynamic default (only that layer is listed)."""
    names = broker_synonym_names(key)
    defaults = {n: BROKER_CONFIGS[n].default for n in names if BROKER_CONFIGS[n].default is not None}
    layers = [*broker_config_layers(static, dynamic, node_id), (defaults, "DEFAULT_CONFIG")]
    synonyms = [(n, layer[n], source) for layer, source in layers for n in names if n in layer]
    while synonyms and synonyms[0][0] != key:  # drop synonyms more specific than the described key
        synonyms.pop(0)
    if not per_broker:
        synonyms = [s for s in synonyms if s[2] == "DYNAMIC_DEFAULT_BROKER_CONFIG"]
    return synonyms


def describe_topic_config(
    key: str,
    topic_overrides: Mapping[str, str],
    static: BrokerConfig,
    dynamic: Mapping[str, Mapping[str, str]],
    node_id: int,
) -> ConfigEntryView:
    """A topic config with its source and the chain of synonyms Kafka reports."""
    definition = TOPIC_CONFIGS[key]
    synonyms: list[tuple[str, str | None, str]] = []
    if key in topic_overrides:
        synonyms.append((key, topic_overrides[key], "DYNAMIC_TOPIC_CONFIG"))
    layers = broker_config_layers(static, dynamic, node_id)
    for broker_key in definition.synonyms:
        synonyms.extend((broker_key, layer[broker_key], source) for layer, source in layers if broker_key in layer)
    for broker_key in definition.synonyms:
        builtin = BROKER_CONFIGS[broker_key].default
        if builtin is not None:
            synonyms.append((broker_key, builtin, "DEFAULT_CONFIG"))
            break
    if synonyms:
        name, value, source = synonyms[0]
        if name != key and value is not None:
            value = _broker_value_as_topic_value(name, value)
    else:
        value, source = definition.fallback, "DEFAULT_CONFIG"
    return ConfigEntryView(
        name=key,
        value=value,
        source=source,
        read_only=False,
        sensitive=False,
        kafka_type=definition.kafka_type,
        doc="",
        synonyms=tuple(synonyms),
    )


def effective_topic_config(
    topic_overrides: Mapping[str, str],
    static: BrokerConfig,
    dynamic: Mapping[str, Mapping[str, str]],
    node_id: int,
) -> dict[str, str]:
    return {
        key: describe_topic_config(key, topic_overrides, static, dynamic, node_id).value  # type: ignore[misc]
        for key in TOPIC_CONFIGS
    }


# DescribeConfigs / CreateTopics wire ids of config sources.
CONFIG_SOURCE_IDS = {
    "UNKNOWN": 0,
    "DYNAMIC_TOPIC_CONFIG": 1,
    "DYNAMIC_BROKER_CONFIG": 2,
    "DYNAMIC_DEFAULT_BROKER_CONFIG": 3,
    "STATIC_BROKER_CONFIG": 4,
    "DEFAULT_CONFIG": 5,
    "DYNAMIC_BROKER_LOGGER_CONFIG": 6,
    "CLIENT_METRICS_CONFIG": 7,
    "GROUP_CONFIG": 8,
}

# DescribeConfigs v3+ wire ids of config types.
CONFIG_TYPE_IDS = {"BOOLEAN": 1, "STRING": 2, "INT": 3, "SHORT": 4, "LONG": 5, "DOUBLE": 6, "LIST": 7,
                   "CLASS": 8, "PASSWORD": 9}


def stores_problem(scheme_text: str, store_count: int) -> str | None:
    """Why a scheme cannot be used with this many fragment stores (each fragment needs its own), if it can't."""
    from lodestream.storage.erasure import Scheme
    width = Scheme.parse(scheme_text).width
    if store_count < width:
        return (f"remote.erasure.code={scheme_text} needs {width} fragment stores (one per fragment), "
                f"remote.fragment.stores lists {store_count}")
    return None


def tiered_topic_problem(config: Mapping[str, str], system_enabled: bool, store_count: int) -> str | None:
    """Why a topic's effective configs are not a valid tiered-storage set (the message names the key), or
    None. As Kafka: remote storage needs remote.log.storage.system.enable, and local.retention.* may not
    exceed retention.* (-2: the same as it)."""
    if config["remote.storage.enable"].strip().lower() == "true":
        if not system_enabled:
            return ("remote.storage.enable: tiered storage is disabled on the broker "
                    "(remote.log.storage.system.enable=false)")
        if "compact" in _cleanup_policy(config["cleanup.policy"]).split(","):  # as Kafka: never cleaned remotely
            return f"remote.storage.enable: not for compacted topics (cleanup.policy={config['cleanup.policy']})"
        problem = stores_problem(config["remote.erasure.code"], store_count)
        if problem:
            return problem
    for local_key, total_key in (("local.retention.ms", "retention.ms"), ("local.retention.bytes", "retention.bytes")):
        local, total = int(config[local_key]), int(config[total_key])
        if local == -2 or total < 0:
            continue
        if local == -1 or local > total:
            return f"{local_key}={local} cannot exceed {total_key}={total}"
    return None


def random_cluster_id() -> str:
    """A cluster id as Kafka's `kafka-storage random-uuid` prints it (a URL-safe base64 UUID)."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
