"""The broker's Prometheus instruments: one CollectorRegistry per Broker.

Events on the hot path (requests, errors, latencies, bytes/messages per
topic, LevelDB write time) are counted in plain ints, floats and dicts keyed
by API key/version or topic: no lock, no `.labels()` lookup, ~2-3 µs per
request. prometheus-client's own Counter/Histogram cost several times that
(a lock per increment); here `_EventCollector` turns the numbers into metric
families when /metrics is scraped. Everything that is a level rather than an
event (partitions, log sizes and offsets, connections, group states, consumer
lag) is read from broker state at scrape time by `BrokerStateCollector`.
All of it is single-threaded: updated and scraped on the trio thread.

Not the global default registry: tests run several brokers in one process.
Each registry also gets prometheus-client's own process, platform and GC
collectors (`process_*`, `python_*`): brokers sharing a process report the
same process numbers.
Exposition lives in `admin/metrics.py`; the names and their Kafka JMX
counterparts are listed in docs/metrics.md.
"""

from __future__ import annotations

import dataclasses
import datetime
from bisect import bisect_left
import types
import typing
from functools import cache
from typing import Any, Callable, Iterable, Protocol

from kio.index import api_key_map
from prometheus_client import GC_COLLECTOR, CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from lodestream.protocol.errors import ErrorCode
from lodestream.broker.offset_snapshots import below_log_start


class BrokerView(Protocol):
    """What the state collector reads from the broker (broker/broker.Broker; named structurally here so
    that the broker, which owns its metrics, is not imported by them)."""

    image: Any  # the MetadataImage
    replicas: Any  # the ReplicaManager (None before open)
    groups: Any  # the GroupCoordinator (None before open)
    log_cleaner: Any  # the LogCleaner (None before open)
    connections: set

    def log_start_offset(self, topic_name: str, index: int) -> int | None: ...


# Request latencies: 100 µs .. 30 s (a long-polling fetch waits up to its max_wait).
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)
# LevelDB writes: a synced group commit is ~0.1-50 ms; unsynced ones are µs.
STORAGE_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)


def api_name(api_key: int) -> str:
    """Kafka's request name for an API key ("Produce", "ListOffsets"), as in its JMX `request=` tag."""
    name = api_key_map.get(api_key)
    if name is None:
        return f"Unknown{api_key}"
    return "".join(part.capitalize() for part in name.split("_"))


# -- error codes in a response ---------------------------------------------------------------------
# Kafka's ErrorsPerSec counts AbstractResponse.errorCounts(): every error code the
# response carries (top level, per topic, per partition), NONE included. We get
# the same generically: for each kio response class, a walker over its fields
# typed ErrorCode and into its nested entities, compiled once per class.

def _entity_type(annotation: Any) -> tuple[str, type] | None:
    """('one' | 'many', entity class) if the field holds nested kio entities."""
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        return "one", annotation
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is tuple and args and isinstance(args[0], type) and dataclasses.is_dataclass(args[0]):
        return "many", args[0]
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            found = _entity_type(arg)
            if found is not None:
                return found
    return None


@cache
def _error_walker(cls: type) -> Callable[[Any, Callable[[int], None]], None] | None:
    """A function calling `emit(code)` for every ErrorCode in an entity of `cls`; None if it has none."""
    fields = dataclasses.fields(cls)
    hints: dict = {}
    if any(isinstance(field.type, str) for field in fields):  # postponed annotations (kio's are real types)
        hints = typing.get_type_hints(cls)
    codes: list[str] = []
    nested: list[tuple[str, str, Callable]] = []
    for field in fields:
        annotation = hints.get(field.name, field.type)
        if annotation is ErrorCode:
            codes.append(field.name)
            continue
        entity = _entity_type(annotation)
        if entity is not None:
            walker = _error_walker(entity[1])
            if walker is not None:
                nested.append((field.name, entity[0], walker))
    if not codes and not nested:
        return None

    def walk(obj: Any, emit: Callable[[int], None]) -> None:
        for name in codes:
            emit(getattr(obj, name))
        for name, kind, walker in nested:
            value = getattr(obj, name)
            if value is None:
                continue
            if kind == "one":
                walker(value, emit)
            else:
                for item in value:
                    walker(item, emit)

    return walk


def _error_label(code: int) -> str:
    try:
        return ErrorCode(code).name.upper()
    except ValueError:
        return str(code)


def _seconds(value: Any) -> float:
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    return int(value) / 1000.0


class _Histogram:
    """A histogram as plain numbers: observed on the trio thread (no lock), exported at scrape time."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # last: above every bound (+Inf only)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # first bucket whose bound is >= value ("le")
        self.sum += value

    def buckets(self) -> list[tuple[str, float]]:
        cumulative, result = 0, []
        for bound, count in zip(self.bounds, self.counts):
            cumulative += count
            result.append((floatToGoString(bound), cumulative))
        result.append(("+Inf", cumulative + self.counts[-1]))
        return result


class _ApiStats:
    """Everything counted for one API key."""

    __slots__ = ("name", "requests", "errors", "queue", "local", "throttle", "total", "throttled")

    def __init__(self, api_key: int) -> None:
        self.name = api_name(api_key)
        self.requests: dict[int, int] = {}  # version -> count
        self.errors: dict[int, int] = {}  # error code -> count
        self.queue = _Histogram(LATENCY_BUCKETS)
        self.local = _Histogram(LATENCY_BUCKETS)
        self.throttle = _Histogram(LATENCY_BUCKETS)
        self.total = _Histogram(LATENCY_BUCKETS)
        self.throttled = 0.0

    def error_seen(self, code: int) -> None:
        errors = self.errors
        errors[code] = errors.get(code, 0) + 1


class BrokerMetrics:
    """The metrics of one broker. `registry` is what /metrics exposes.

    Events (requests, appends, fetches, log writes) are counted here in plain
    ints, floats and dicts, on the trio thread, without locks or label
    lookups; two collectors turn them and the broker's state into metric
    families when the registry is scraped (call that on the trio thread too).
    """

    def __init__(self, broker: "BrokerView | None" = None) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.apis: dict[int, _ApiStats] = {}
        self.topics_in: dict[str, list[int]] = {}  # topic -> [bytes, messages]
        self.topics_out: dict[str, int] = {}  # topic -> bytes
        self.retention_deleted_bytes: dict[str, int] = {}  # topic -> bytes deleted by retention
        self.cleaner_reclaimed_bytes: dict[str, int] = {}  # topic -> bytes the log cleaner gave back
        self.cleaner_passes: dict[str, int] = {}  # topic -> completed compaction passes
        self.log_write = {True: _Histogram(STORAGE_BUCKETS), False: _Histogram(STORAGE_BUCKETS)}
        self.log_flush = _Histogram(STORAGE_BUCKETS)
        self.connections_created = 0
        self.connections_closed = 0
        self.authentications: dict[tuple[str, str], int] = {}  # (SASL mechanism, "success"/"failure") -> count
        self.registry.register(_EventCollector(self))
        # The process (CPU seconds, resident memory, open fds, start time), the Python runtime and its garbage
        # collector, with prometheus-client's own collectors: the same series as its default registry has.
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.registry.register(GC_COLLECTOR)
        if broker is not None:
            self.registry.register(BrokerStateCollector(broker))

    # -- requests ------------------------------------------------------------------------------------
    def _api(self, api_key: int) -> _ApiStats:
        stats = self.apis.get(api_key)
        if stats is None:
            stats = self.apis[api_key] = _ApiStats(api_key)
        return stats

    def request_done(self, api_key: int, api_version: int, body: Any,
                     received: float, started: float, completed: float, sent: float) -> None:
        """One request answered: count it, its error codes, and its latencies (perf_counter seconds)."""
        api = self.apis.get(api_key) or self._api(api_key)
        requests = api.requests
        requests[api_version] = requests.get(api_version, 0) + 1
        throttle = 0.0
        if body is not None:
            walker = _error_walker(type(body))
            if walker is not None:
                walker(body, api.error_seen)
            value = getattr(body, "throttle_time", None)
            if value is not None:
                throttle = _seconds(value)
                api.throttled += throttle
        api.queue.observe(started - received)
        api.local.observe(completed - started)
        api.throttle.observe(throttle)
        api.total.observe(sent - received)

    def request_failed(self, api_key: int) -> None:
        """A handler raised: the connection is closed (Kafka would answer UNKNOWN_SERVER_ERROR)."""
        (self.apis.get(api_key) or self._api(api_key)).error_seen(ErrorCode.unknown_server_error)

    # -- connections -----------------------------------------------------------------------------------
    def connection_opened(self) -> None:
        self.connections_created += 1

    def connection_closed(self) -> None:
        self.connections_closed += 1

    def authentication(self, mechanism: str, succeeded: bool) -> None:
        key = (mechanism, "success" if succeeded else "failure")
        self.authentications[key] = self.authentications.get(key, 0) + 1

    # -- topics ----------------------------------------------------------------------------------------
    def appended(self, topic: str, size: int, messages: int) -> None:
        counts = self.topics_in.get(topic)
        if counts is None:
            counts = self.topics_in[topic] = [0, 0]
        counts[0] += size
        counts[1] += messages

    def fetched(self, per_topic: dict[str, int]) -> None:
        out = self.topics_out
        for topic, size in per_topic.items():
            out[topic] = out.get(topic, 0) + size

    def retention_deleted(self, topic: str, size: int) -> None:
        self.retention_deleted_bytes[topic] = self.retention_deleted_bytes.get(topic, 0) + size

    def compacted(self, topic: str, reclaimed: int) -> None:
        self.cleaner_reclaimed_bytes[topic] = self.cleaner_reclaimed_bytes.get(topic, 0) + reclaimed
        self.cleaner_passes[topic] = self.cleaner_passes.get(topic, 0) + 1

    def forget_topic(self, topic: str) -> None:
        """A deleted topic's series go away (as Kafka removes its BrokerTopicMetrics)."""
        self.topics_in.pop(topic, None)
        self.topics_out.pop(topic, None)
        self.retention_deleted_bytes.pop(topic, None)
        self.cleaner_reclaimed_bytes.pop(topic, None)
        self.cleaner_passes.pop(topic, None)

    # -- storage -------------------------------------------------------------------------------------
    def log_written(self, seconds: float, synced: bool) -> None:
        self.log_write[synced].observe(seconds)

    def log_flushed(self, seconds: float) -> None:
        self.log_flush.observe(seconds)


class _EventCollector(Collector):
    """Exports BrokerMetrics' counters and histograms."""

    def __init__(self, metrics: BrokerMetrics) -> None:
        self.metrics = metrics

    def describe(self):
        return []

    def collect(self):
        m = self.metrics
        apis = sorted(list(m.apis.items()))
        requests = CounterMetricFamily("lodestream_requests", "Requests answered, by Kafka API and version.",
                                       labels=["request", "version"])
        errors = CounterMetricFamily(
            "lodestream_request_errors", "Error codes carried in responses (NONE included), by Kafka API and error.",
            labels=["request", "error"])
        throttled = CounterMetricFamily("lodestream_throttle_time_seconds",
                                        "Total quota throttle time given to clients, by Kafka API.", labels=["request"])
        histograms = {
            "queue": HistogramMetricFamily("lodestream_request_queue_time_seconds",
                                           "From the request's last byte received to its handler starting.",
                                           labels=["request"]),
            "local": HistogramMetricFamily("lodestream_request_local_time_seconds",
                                           "Time in the handler, including the log write (produce) and long poll (fetch).",
                                           labels=["request"]),
            "throttle": HistogramMetricFamily("lodestream_request_throttle_time_seconds",
                                              "Quota throttle time given in the response (0 until quotas are enforced).",
                                              labels=["request"]),
            "total": HistogramMetricFamily("lodestream_request_total_time_seconds",
                                           "From the request's last byte received to the last response byte written.",
                                           labels=["request"]),
        }
        for _, api in apis:
            for version, count in sorted(list(api.requests.items())):
                requests.add_metric([api.name, str(version)], count)
            for code, count in sorted(list(api.errors.items())):
                errors.add_metric([api.name, _error_label(code)], count)
            throttled.add_metric([api.name], api.throttled)
            for part, family in histograms.items():
                histogram: _Histogram = getattr(api, part)
                family.add_metric([api.name], histogram.buckets(), histogram.sum)
        yield requests
        yield errors
        yield from histograms.values()
        yield throttled

        bytes_in = CounterMetricFamily("lodestream_topic_bytes_in", "Record-batch bytes appended to the log, by topic.",
                                       labels=["topic"])
        messages_in = CounterMetricFamily("lodestream_topic_messages_in", "Records appended to the log, by topic.",
                                          labels=["topic"])
        for topic, (size, messages) in sorted(list(m.topics_in.items())):
            bytes_in.add_metric([topic], size)
            messages_in.add_metric([topic], messages)
        bytes_out = CounterMetricFamily("lodestream_topic_bytes_out", "Record-batch bytes returned by Fetch, by topic.",
                                        labels=["topic"])
        for topic, size in sorted(list(m.topics_out.items())):
            bytes_out.add_metric([topic], size)
        deleted = CounterMetricFamily("lodestream_retention_deleted_bytes",
                                      "Record-batch bytes deleted by retention (whole segments), by topic.",
                                      labels=["topic"])
        for topic, size in sorted(list(m.retention_deleted_bytes.items())):
            deleted.add_metric([topic], size)
        reclaimed = CounterMetricFamily("lodestream_log_cleaner_reclaimed_bytes",
                                        "Record-batch bytes the log cleaner removed from compacted logs, by topic.",
                                        labels=["topic"])
        for topic, size in sorted(list(m.cleaner_reclaimed_bytes.items())):
            reclaimed.add_metric([topic], size)
        passes = CounterMetricFamily("lodestream_log_cleaner_passes", "Completed compaction passes, by topic.",
                                     labels=["topic"])
        for topic, count in sorted(list(m.cleaner_passes.items())):
            passes.add_metric([topic], count)
        yield bytes_in
        yield messages_in
        yield bytes_out
        yield deleted
        yield reclaimed
        yield passes

        write = HistogramMetricFamily("lodestream_log_write_seconds",
                                      "One group-commit LevelDB WriteBatch write, with its fsync when synced=true.",
                                      labels=["synced"])
        for synced in (True, False):
            histogram = m.log_write[synced]
            write.add_metric(["true" if synced else "false"], histogram.buckets(), histogram.sum)
        yield write
        flush = HistogramMetricFamily("lodestream_log_flush_seconds",
                                      "Background LevelDB fsync (log.flush.interval.messages > 1).")
        flush.add_metric([], m.log_flush.buckets(), m.log_flush.sum)
        yield flush
        yield CounterMetricFamily("lodestream_connections_created", "Client connections accepted.",
                                  value=m.connections_created)
        yield CounterMetricFamily("lodestream_connections_closed", "Client connections closed.",
                                  value=m.connections_closed)
        authentications = CounterMetricFamily(
            "lodestream_sasl_authentications", "SASL authentications by mechanism and result (Kafka's "
            "successful-authentication-total and failed-authentication-total).", labels=["mechanism", "result"])
        for (mechanism, result), count in sorted(m.authentications.items()):
            authentications.add_metric([mechanism, result], count)
        yield authentications


# -- levels, read at scrape time ----------------------------------------------------------------------

def _gauge(name: str, documentation: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=list(labels))


class BrokerStateCollector(Collector):
    """Gauges computed from the broker's state when /metrics is scraped.

    Runs on whatever thread calls generate_latest(); call it from the trio
    thread (the REST app's async endpoint) so the state it reads is consistent.
    """

    def __init__(self, broker: "BrokerView") -> None:
        self.broker = broker

    def describe(self):  # no describe-time collect (the broker may not be open yet)
        return []

    def collect(self):
        broker = self.broker
        yield from self._connections(broker)
        yield from self._partitions(broker)
        yield from self._groups(broker)
        yield from self._offset_snapshots(broker)
        yield from self._tiered_storage(broker)

    def _offset_snapshots(self, broker: "BrokerView"):
        """Snapshots pointing below a hosted partition's log start (broker/offset_snapshots.py)."""
        below = _gauge("lodestream_offset_snapshot_partitions_below_log_start",
                       "Partitions hosted here whose log starts past the offset a snapshot points at: a reset to "
                       "the snapshot skips deleted records.", ["snapshot"])
        try:
            snapshots = broker.image.offset_snapshots
        except AssertionError:  # not opened yet
            return
        for name, snapshot in sorted(snapshots.items()):
            below.add_metric([name], len(below_log_start(snapshot, broker.log_start_offset)))
        yield below

    def _tiered_storage(self, broker: "BrokerView"):
        """Counters of tiered storage (broker/remote_log.py), when it is on."""
        remote_log = getattr(broker, "remote_log", None)
        if remote_log is None:
            return
        described = {
            "offloaded_segments": "Segments offloaded to the fragment stores by this broker.",
            "offloaded_bytes": "Segment bytes offloaded (before erasure coding) by this broker.",
            "deleted_segments": "Offloaded segments deleted (retention, abandoned copies) by this broker.",
            "read_errors": "Reads of offloaded segments that failed: fewer than k good fragments "
                           "(answered KAFKA_STORAGE_ERROR; the log names the segment).",
            "orphans_deleted": "Fragment objects no manifest knew, deleted.",
        }
        for name, documentation in described.items():
            yield CounterMetricFamily(f"lodestream_remote_{name}", documentation, value=remote_log.counters[name])
        reader = remote_log.reader
        stripes = CounterMetricFamily("lodestream_remote_stripe_reads",
                                      "Stripes of offloaded segments read, by where from: memory (the in-process "
                                      "cache), redis, or stores (the fragment stores).", labels=["source"])
        stripes.add_metric(["memory"], reader.cache.hits)
        stripes.add_metric(["redis"], reader.redis_hits)
        stripes.add_metric(["stores"], reader.store_reads)
        yield stripes
        redis = remote_log.redis
        yield CounterMetricFamily("lodestream_remote_redis_errors",
                                  "Redis stripe-cache calls that failed or timed out (served from the stores).",
                                  value=redis.errors if redis is not None else 0)

    def _connections(self, broker: "BrokerView"):
        connections = list(getattr(broker, "connections", ()))
        gauge = _gauge("lodestream_connections", "Open client connections.")
        gauge.add_metric([], len(connections))
        yield gauge
        request_pool = getattr(broker, "request_pool", None)
        pool = _gauge("lodestream_request_pool_used_bytes",
                      "Bytes of the request memory pool (queued.max.request.bytes) reserved by requests being "
                      "read or handled.")
        pool.add_metric([], request_pool.used if request_pool is not None else 0)
        yield pool
        capacity = _gauge("lodestream_request_pool_capacity_bytes",
                          "Size of the request memory pool (queued.max.request.bytes); -1 = unbounded.")
        capacity.add_metric([], -1 if request_pool is None or request_pool.capacity is None else request_pool.capacity)
        yield capacity
        waiting = _gauge("lodestream_request_pool_waiting_connections",
                         "Connections not reading their socket because the request pool is used up.")
        waiting.add_metric([], request_pool.waiting if request_pool is not None else 0)
        yield waiting
        limits = getattr(broker, "limits", None)
        hits = CounterMetricFamily("lodestream_limit_hits",
                                   "Times a resource limit was hit, by limit (the broker property's name).",
                                   labels=["limit"])
        for limit, count in sorted((limits.hits if limits is not None else {}).items()):
            hits.add_metric([limit], count)
        yield hits
        in_flight = _gauge("lodestream_requests_in_flight",
                           "Requests read and not yet answered, over all connections.")
        in_flight.add_metric([], sum(c.in_flight for c in connections))
        yield in_flight

    def _partitions(self, broker: "BrokerView"):
        replicas = broker.replicas
        local = list(replicas.partitions.values()) if replicas is not None else []
        try:
            image = broker.image
        except AssertionError:  # not opened yet
            image = None
        count = _gauge("lodestream_partitions", "Partitions with a replica on this broker.")
        count.add_metric([], len(local))
        yield count
        leaders = _gauge("lodestream_leader_partitions", "Partitions this broker leads.")
        leaders.add_metric([], sum(1 for p in local if p.is_leader))
        yield leaders
        under = _gauge("lodestream_under_replicated_partitions",
                       "Led partitions whose in-sync replicas are fewer than their replicas.")
        under.add_metric([], sum(1 for p in local if p.is_leader and len(p.isr) < len(p.replicas)))
        yield under
        failed = replicas is not None and replicas.log_dir_failure is not None
        offline_dirs = _gauge("lodestream_offline_log_dirs",
                              "Log directories whose last write failed (disk full, I/O error): 0 or 1.")
        offline_dirs.add_metric([], int(failed))
        yield offline_dirs
        offline = _gauge("lodestream_offline_partitions",
                         "Partitions without a leader, counting those on a failed log directory.")
        leaderless = 0 if image is None else sum(
            1 for topic in image.topics_by_id.values() for p in topic.partitions.values() if p.leader < 0)
        offline.add_metric([], leaderless + (len(local) if failed else 0))
        yield offline
        size = _gauge("lodestream_log_size_bytes", "Bytes of record batches in the partition's log.", ["topic", "partition"])
        end = _gauge("lodestream_log_end_offset", "The partition's log end offset.", ["topic", "partition"])
        start = _gauge("lodestream_log_start_offset", "The partition's log start offset.", ["topic", "partition"])
        segments = _gauge("lodestream_log_segments", "Segments of the partition's log (the last one is active).",
                          ["topic", "partition"])
        dirty = _gauge("lodestream_log_cleaner_dirty_ratio",
                       "Compacted partitions: bytes not cleaned yet / cleanable bytes, at the cleaner's last check.",
                       ["topic", "partition"])
        lag = _gauge("lodestream_log_cleaner_lag_seconds",
                     "Compacted partitions: age of the oldest record not cleaned yet, at the cleaner's last check.",
                     ["topic", "partition"])
        cleaner = getattr(broker, "log_cleaner", None)
        statuses = cleaner.status if cleaner is not None else {}
        for partition in local:
            labels = [partition.topic_name, str(partition.index)]
            status = statuses.get(partition)
            if status is not None:
                dirty.add_metric(labels, status.dirty_ratio)
                lag.add_metric(labels, status.lag_seconds)
            segments.add_metric(labels, partition.segment_count)
            size.add_metric(labels, partition.size_bytes)
            end.add_metric(labels, partition.local_end_offset)
            start.add_metric(labels, partition.log_start_offset)
        yield size
        yield end
        yield start
        yield segments
        yield dirty
        yield lag

    def _groups(self, broker: "BrokerView"):
        states = _gauge("lodestream_consumer_groups", "Consumer groups by type and state.", ["type", "state"])
        members = _gauge("lodestream_consumer_group_members", "Members of a consumer group.", ["group"])
        committed = _gauge("lodestream_consumer_group_committed_offset",
                           "A group's committed offset for a partition.", ["group", "topic", "partition"])
        lag = _gauge("lodestream_consumer_group_lag",
                     "High watermark minus the group's committed offset.", ["group", "topic", "partition"])
        counts: dict[tuple[str, str], int] = {}
        for row in group_snapshot(broker):
            key = (row.group_type, row.state)
            counts[key] = counts.get(key, 0) + 1
            members.add_metric([row.group_id], row.members)
            for (topic, partition), (offset, high_watermark) in sorted(row.offsets.items()):
                labels = [row.group_id, topic, str(partition)]
                committed.add_metric(labels, offset)
                if high_watermark is not None:
                    lag.add_metric(labels, max(0, high_watermark - offset))
        for (group_type, state), count in sorted(counts.items()):
            states.add_metric([group_type, state], count)
        yield states
        yield members
        yield committed
        yield lag


@dataclasses.dataclass
class GroupRow:
    group_id: str
    group_type: str
    state: str
    members: int
    offsets: dict[tuple[str, int], tuple[int, int | None]]  # (topic, partition) -> (committed, high watermark)


def group_snapshot(broker: "BrokerView") -> list[GroupRow]:
    """Every group with its state and committed offsets (empty until the group coordinator exists)."""
    coordinator = getattr(broker, "groups", None)
    if coordinator is None:
        return []
    groups = getattr(coordinator, "groups", {})
    rows = []
    for group_id, group in list(groups.items()):
        offsets = {}
        for key, value in _committed(coordinator, group_id).items():
            topic, partition = key
            offset = getattr(value, "offset", value)
            offsets[(topic, int(partition))] = (int(offset), _high_watermark(broker, topic, int(partition)))
        rows.append(GroupRow(
            group_id=group_id,
            group_type=str(getattr(group, "group_type", "classic")),
            state=str(getattr(group, "state_name", getattr(group, "state", "Unknown"))),
            members=len(getattr(group, "members", ()) or ()),
            offsets=offsets,
        ))
    return rows


def _committed(coordinator: Any, group_id: str) -> dict:
    committed = getattr(coordinator, "committed", None)
    if committed is None:
        return {}
    result = committed(group_id)
    return dict(result or {})


def _high_watermark(broker: "BrokerView", topic_name: str, index: int) -> int | None:
    topic = broker.image.topic(topic_name)
    if topic is None or broker.replicas is None:
        return None
    partition = broker.replicas.get(topic.topic_id, index)
    return None if partition is None else partition.high_watermark
