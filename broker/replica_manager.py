"""Produce and fetch against local partition logs.

Appends from every connection go through one committer task: it takes all
appends queued since the last write, assigns offsets, writes them with one
LevelDB WriteBatch (one fsync) on a worker thread, then publishes the new end
offsets and wakes long-polling fetches. That is the group commit: a slow
fsync makes the next group bigger, not the queue longer.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

from protocol.record_batch import parse_header, stamp_for_append
from storage.leveldb_log import LogStore, PartitionLog, StorageError

if TYPE_CHECKING:
    from .metrics import BrokerMetrics

log = logging.getLogger(__name__)


@dataclass(slots=True)
class AppendRequest:
    """One partition's batches from one produce request, validated, not yet offset."""

    partition: "Partition"
    batches: list  # (last_offset_delta, max_timestamp, size, memoryview)
    log_append_time_ms: int | None
    done: trio.Event = field(default_factory=trio.Event)
    base_offset: int = -1
    error: Exception | None = None


class Partition:
    """A partition this broker leads: its log plus the wakeup for long-polling fetches."""

    def __init__(self, topic_name: str, topic_id: uuid.UUID, index: int, log: PartitionLog, leader_epoch: int) -> None:
        self.topic_name = topic_name
        self.topic_id = topic_id
        self.index = index
        self.log = log
        self.leader_epoch = leader_epoch
        self.waiters: set[trio.Event] = set()  # long-polling fetches

    @property
    def high_watermark(self) -> int:
        # Single node: everything durable (or written, with background flush) is committed.
        return self.log.log_end_offset

    def notify_appended(self) -> None:
        for waiter in self.waiters:
            waiter.set()


class ReplicaManager:
    def __init__(self, store: LogStore, sync_on_append: bool, flush_interval: float, io_limiter: trio.CapacityLimiter,
                 metrics: "BrokerMetrics | None" = None) -> None:
        self.store = store
        self.metrics = metrics
        self.sync_on_append = sync_on_append
        self.flush_interval = flush_interval
        self.io_limiter = io_limiter
        self.partitions: dict[tuple[uuid.UUID, int], Partition] = {}
        self._queue: list[AppendRequest] = []
        self._queue_nonempty = trio.Event()
        self._closed = False
        self.unflushed_writes = 0

    # -- partition lifecycle -------------------------------------------------------
    def ensure_partition(self, topic_name: str, topic_id: uuid.UUID, index: int, leader_epoch: int) -> Partition:
        key = (topic_id, index)
        partition = self.partitions.get(key)
        if partition is None:
            partition = Partition(topic_name, topic_id, index, self.store.partition(topic_id, index), leader_epoch)
            self.partitions[key] = partition
        return partition

    def get(self, topic_id: uuid.UUID, index: int) -> Partition | None:
        return self.partitions.get((topic_id, index))

    async def drop_topic(self, topic_id: uuid.UUID) -> None:
        doomed = [key for key in self.partitions if key[0] == topic_id]
        for key in doomed:
            partition = self.partitions.pop(key)
            partition.notify_appended()  # wake fetchers so they see the topic is gone
        for _, index in doomed:
            await trio.to_thread.run_sync(self.store.drop_partition, topic_id, index, limiter=self.io_limiter)

    # -- appends --------------------------------------------------------------------
    def enqueue(self, request: AppendRequest) -> None:
        """Queue an append. Order of enqueue = order of offsets within a partition."""
        if self._closed:
            request.error = StorageError("broker is shutting down")
            request.done.set()
            return
        self._queue.append(request)
        self._queue_nonempty.set()

    async def append_batch(self, partition: Partition, batch: bytes) -> int:
        """Append one broker-built batch (internal topics); returns its base offset once durable."""
        header = parse_header(batch)
        request = AppendRequest(partition, [(header.last_offset_delta, header.max_timestamp, header.size, memoryview(batch))], None)
        self.enqueue(request)
        await request.done.wait()
        if request.error is not None:
            raise request.error
        return request.base_offset

    async def run_committer(self) -> None:
        while True:
            await self._queue_nonempty.wait()
            group, self._queue = self._queue, []
            self._queue_nonempty = trio.Event()
            await self._commit_group(group)

    async def _commit_group(self, group: list[AppendRequest]) -> None:
        pendings = []
        for request in group:
            epoch = request.partition.leader_epoch
            append_time = request.log_append_time_ms

            def stamp(batch, base_offset, epoch=epoch, append_time=append_time):
                return stamp_for_append(batch, base_offset, epoch, append_time)

            pending = request.partition.log.prepare_append(request.batches, stamp)
            request.base_offset = pending.base_offset
            pendings.append(pending)
        try:
            staged = self.store.stage(pendings, self.sync_on_append)
            write_seconds = await trio.to_thread.run_sync(_timed, staged.commit, limiter=self.io_limiter)
        except Exception as exc:  # disk full, I/O error: fail the whole group, keep serving
            log.error("log write failed, %d appends rejected: %s", len(group), exc)
            for pending in reversed(pendings):
                pending.log.abort_append(pending)
            for request in group:
                request.error = exc if isinstance(exc, StorageError) else StorageError(str(exc))
                request.done.set()
            return
        if not self.sync_on_append:
            self.unflushed_writes += 1
        metrics = self.metrics
        if metrics is not None:
            metrics.log_written(write_seconds, self.sync_on_append)
        woken = set()
        for pending, request in zip(pendings, group):
            pending.log.complete_append(pending)
            woken.add(request.partition)
            request.done.set()
            if metrics is not None:  # bytes and records from batch headers (offsets assigned = records)
                metrics.appended(request.partition.topic_name, sum([entry[2] for entry in request.batches]),
                                 pending.next_offset - pending.base_offset)
        for partition in woken:
            partition.notify_appended()

    async def run_flusher(self) -> None:
        """With log.flush.interval.messages > 1, fsync in the background instead of per append."""
        if self.sync_on_append:
            return
        while True:
            await trio.sleep(self.flush_interval)
            await self.flush()

    async def flush(self) -> None:
        if self.unflushed_writes:
            self.unflushed_writes = 0
            seconds = await trio.to_thread.run_sync(_timed, self.store.sync, limiter=self.io_limiter)
            if self.metrics is not None:
                self.metrics.log_flushed(seconds)

    async def close(self) -> None:
        """Stop accepting appends, finish what is queued, and sync."""
        self._closed = True
        if self._queue:
            group, self._queue = self._queue, []
            await self._commit_group(group)
        await trio.to_thread.run_sync(self.store.sync, limiter=self.io_limiter)


def _timed(operation) -> float:
    """Run a blocking operation (on a worker thread); return how long it took."""
    started = time.perf_counter()
    operation()
    return time.perf_counter() - started
