"""The log cleaner: compacts the partitions of topics whose cleanup.policy includes compact.

Every log.cleaner.backoff.ms it looks at each compacted partition's CleanPlan
(storage/leveldb_log.py) and cleans, one partition at a time, those that are
due, as Kafka's LogCleanerManager decides:
- the dirty ratio (bytes never cleaned / bytes cleanable) reached
  min.cleanable.dirty.ratio, or
- the oldest dirty record is older than max.compaction.lag.ms, or
- tombstones or transaction markers kept by an earlier pass may now go
  (delete.retention.ms later).
The internal topics (__consumer_offsets, __transaction_state) go first, then
the dirtiest. A pass (Partition.clean, broker/compaction.py) runs in chunks on
a worker thread behind the cleaner's own CapacityLimiter, so the committer's
writes never queue behind it, judges records in the cleaner's child process,
so parsing them does not hold the broker's GIL, and sleeps between chunks to
stay within log.cleaner.io.max.bytes.per.second. A pass that fails is logged
and retried at the next check (Kafka would mark the partition uncleanable
until restart).

This task owns each partition's cleaner status (dirty ratio, lag, when its
kept deletes are due), which the metrics read.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping

import trio

from lodestream.broker.compaction import CleanerProcess, CleanSettings
from lodestream.broker.config import cleanup_policy_includes
from lodestream.broker.internal_topics import OFFSETS_TOPIC, TRANSACTION_STATE_TOPIC
from lodestream.broker.limits import OncePerInterval

if TYPE_CHECKING:
    from lodestream.broker.metrics import BrokerMetrics
    from lodestream.broker.partition import Partition

log = logging.getLogger(__name__)

INTERNAL_TOPICS = frozenset({OFFSETS_TOPIC, TRANSACTION_STATE_TOPIC})


@dataclass(slots=True)
class CleanerStatus:
    dirty_ratio: float = 0.0
    lag_seconds: float = 0.0  # age of the oldest record not cleaned yet (0 when nothing is dirty)
    deletes_due_ms: int | None = None  # tombstones / markers kept by the last pass may go from then on
    passes: int = 0


class IoThrottle:
    """log.cleaner.io.max.bytes.per.second over one pass: after each chunk, sleep until the bytes done so
    far fit the budget (Kafka's Throttler does the same on its cleaner thread)."""

    def __init__(self, bytes_per_second: float) -> None:
        self._rate = bytes_per_second
        self._started = trio.current_time()
        self._bytes = 0

    async def __call__(self, done: int) -> None:
        self._bytes += done
        ahead = self._bytes / self._rate - (trio.current_time() - self._started)
        await trio.sleep(max(ahead, 0))  # a checkpoint either way: the event loop runs between chunks


class LogCleaner:
    def __init__(self, partitions: Callable[[], list["Partition"]],
                 topic_config: Callable[["Partition"], Mapping[str, str] | None],
                 broker_config_value: Callable[[str], Any], metrics: "BrokerMetrics | None" = None) -> None:
        self._partitions = partitions
        self._topic_config = topic_config
        self._config = broker_config_value
        self.metrics = metrics
        self.limiter = trio.CapacityLimiter(1)  # Kafka's log.cleaner.threads=1; apart from the committer's
        self.process = CleanerProcess()  # started by the first pass; close() stops it
        self.status: dict["Partition", CleanerStatus] = {}
        self._failure_log = OncePerInterval(log)

    async def run(self) -> None:
        if not self._config("log.cleaner.enable"):
            return
        try:
            while True:
                await trio.sleep(int(self._config("log.cleaner.backoff.ms")) / 1000)
                await self.clean_due()
        finally:
            self.close()

    def close(self) -> None:
        """Stop the cleaner process (if a pass started it)."""
        self.process.close()

    def _due(self, now_ms: int) -> list[tuple["Partition", CleanSettings]]:
        """Compacted partitions to clean now, internal topics first, then the dirtiest; updates statuses."""
        due = []
        hosted = set()
        for partition in self._partitions():
            config = self._topic_config(partition)
            if config is None or not cleanup_policy_includes(config, "compact"):
                continue
            hosted.add(partition)
            settings = CleanSettings.from_topic_config(config)
            status = self.status.setdefault(partition, CleanerStatus())
            plan = partition.clean_plan(now_ms, settings)  # from the segment summaries: cheap at every check
            status.dirty_ratio = plan.dirty_ratio if plan is not None else 0.0
            first_dirty_timestamp = plan.first_dirty_timestamp if plan is not None else -1
            dirty = first_dirty_timestamp >= 0
            status.lag_seconds = max(now_ms - first_dirty_timestamp, 0) / 1000 if dirty else 0.0
            if plan is None:
                continue
            if ((dirty and (status.dirty_ratio >= settings.min_cleanable_dirty_ratio
                            or now_ms - first_dirty_timestamp >= settings.max_compaction_lag_ms))
                    or (status.deletes_due_ms is not None and now_ms >= status.deletes_due_ms)):
                due.append((partition, settings))
        for gone in set(self.status) - hosted:
            del self.status[gone]
        due.sort(key=lambda item: (item[0].topic_name not in INTERNAL_TOPICS, -self.status[item[0]].dirty_ratio))
        return due

    async def clean_due(self) -> int:
        """Clean every partition that is due; returns how many passes completed."""
        completed = 0
        for partition, settings in self._due(_now_ms()):
            status = self.status[partition]
            throttle = IoThrottle(float(self._config("log.cleaner.io.max.bytes.per.second")))
            started = time.monotonic()
            try:
                cleaning = await partition.clean(_now_ms(), settings, self.limiter, throttle, self.process)
            except Exception as exc:  # retried at the next check
                self._failure_log.log("clean", logging.ERROR, "compaction of %s-%d failed (retried in %.0f s): %s",
                                      partition.topic_name, partition.index,
                                      int(self._config("log.cleaner.backoff.ms")) / 1000, exc)
                continue
            if cleaning is None:
                continue
            completed += 1
            status.passes += 1
            status.dirty_ratio, status.lag_seconds = 0.0, 0.0
            status.deletes_due_ms = _now_ms() + settings.delete_retention_ms if cleaning.deletes_kept else None
            log.info("compacted %s-%d up to offset %d: %d bytes read, %d reclaimed in %.2f s", partition.topic_name,
                     partition.index, cleaning.plan.end, cleaning.bytes_read, cleaning.bytes_reclaimed,
                     time.monotonic() - started)
            if self.metrics is not None:
                self.metrics.compacted(partition.topic_name, cleaning.bytes_reclaimed)
        return completed


def _now_ms() -> int:
    return int(time.time() * 1000)
