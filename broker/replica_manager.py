"""Produce and fetch against local partition logs.

Appends from every connection go through one committer task: it takes all
appends queued since the last write, assigns offsets, writes them with one
LevelDB WriteBatch (one fsync) on a worker thread, then publishes the new end
offsets and wakes long-polling fetches. That is the group commit: a slow
fsync makes the next group bigger, not the queue longer.

Batches with a producer id (idempotent / transactional) are checked against
the partition's producer state in the committer too, in arrival order, just
before their offsets are assigned; the state changes are undone if the
group's write fails. Transaction markers (write_markers) take the same path.
"""

from __future__ import annotations

import enum
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Mapping

import trio

from lodestream.protocol.errors import ErrorCode, KafkaError
from lodestream.protocol.record_batch import (
    CONTROL_BIT,
    TRANSACTIONAL_BIT,
    build_control_batch,
    marker_of,
    parse_header,
    stamp_for_append,
)
from lodestream.storage.leveldb_log import LogStore, StorageError, producer_index_tail
from lodestream.storage.producer_state import ProducerStateError, last_sequence

from lodestream.broker.config import cleanup_policy_includes, remote_storage_enabled
from lodestream.broker.limits import OncePerInterval
from lodestream.broker.offset_snapshots import keeps_snapshot_data, warn_below_log_start
from lodestream.broker.partition import Partition, StoreGate

if TYPE_CHECKING:
    from lodestream.broker.metrics import BrokerMetrics

log = logging.getLogger(__name__)


class AppendOrigin(enum.Enum):
    """Who wrote a batch (Kafka's AppendOrigin): only clients' batches get sequence checks and duplicate
    detection; replication (a follower copying its leader's batches) takes them as they are."""

    CLIENT = "client"
    COORDINATOR = "coordinator"  # the group / transaction coordinators: internal topics, markers
    REPLICATION = "replication"


@dataclass(slots=True)
class AppendRequest:
    """One partition's batches from one produce request, validated, not yet offset.

    Two events: `done` when the batches are durable here (or refused: see `error`), and `committed` when
    the partition's high watermark has passed them (what acks=all waits for). With one replica the high
    watermark is the local end, so both are set together; with replication `committed` waits for the ISR."""

    partition: "Partition"
    batches: list  # (last_offset_delta, max_timestamp, size, memoryview)
    log_append_time_ms: int | None
    done: trio.Event = field(default_factory=trio.Event)
    committed: trio.Event = field(default_factory=trio.Event)
    end_offset: int = -1  # the next offset after these batches, once appended
    base_offset: int = -1
    error: Exception | None = None  # StorageError, or KafkaError for a refused producer batch / marker
    # A batch with a producer id comes alone (Kafka: one batch per partition); these are its header fields.
    producer_id: int = -1
    producer_epoch: int = -1
    base_sequence: int = -1
    attributes: int = 0
    origin: AppendOrigin = AppendOrigin.CLIENT
    marker: int = -1  # transaction markers: 0 abort, 1 commit
    coordinator_epoch: int = -1
    # The leader epoch the batches are written in: replication keeps the leader's (and its offsets); a
    # leader's own write takes its epoch when queued, and is refused if leadership moved before the write.
    epoch: int = -1

    def set_producer(self, producer_id: int, producer_epoch: int, base_sequence: int, attributes: int) -> None:
        self.producer_id = producer_id
        self.producer_epoch = producer_epoch
        self.base_sequence = base_sequence
        self.attributes = attributes

    def settle(self) -> None:
        """Refused, failed or a duplicate: nothing waits for the high watermark."""
        self.done.set()
        self.committed.set()


class ReplicaManager:
    def __init__(self, store: LogStore, sync_on_append: bool, flush_interval: float, io_limiter: trio.CapacityLimiter,
                 metrics: "BrokerMetrics | None" = None,
                 producer_expiration_check_seconds: float = 600.0, node_id: int = -1) -> None:
        self.store = store
        self.node_id = node_id
        self.metrics = metrics
        # internal topic name -> its coordinator's marker listener (partition, producer id, commit)
        self.marker_listeners: dict[str, Callable[[int, int, bool], None]] = {}
        self.follower_caught_up: Callable[[], None] = lambda: None  # the ISR manager looks for ISR additions
        # {snapshot name: offset} of the offset snapshots pointing into a partition (broker/offset_snapshots.py)
        self.snapshot_offsets: Callable[[Partition], Mapping[str, int]] = lambda partition: {}
        self._awaiting_commit: dict[Partition, list[AppendRequest]] = {}  # durable, above the high watermark
        self.sync_on_append = sync_on_append
        self.flush_interval = flush_interval
        self.io_limiter = io_limiter
        self.read_limiter = trio.CapacityLimiter(4)  # fetches reading batches on worker threads
        self.store_gate = StoreGate()  # worker threads using the database; a reopen waits for none
        self._reopen_store = False  # a write failed: LevelDB refuses writes until it is reopened
        self.partitions: dict[tuple[uuid.UUID, int], Partition] = {}
        self._queue: list[AppendRequest] = []
        self._queue_nonempty = trio.Event()
        self._closed = False
        self.unflushed_writes = 0
        # The last log write error while writes fail (disk full, I/O error); None once a write succeeds.
        # /ready and the offline metrics report it; the error log says it once per interval.
        self.log_dir_failure: str | None = None
        self._failure_log = OncePerInterval(log)
        self.producer_expiration_check_seconds = producer_expiration_check_seconds
        self._next_expiration_check = time.monotonic() + producer_expiration_check_seconds

    # -- partition lifecycle -------------------------------------------------------
    def ensure_partition(self, topic_name: str, topic_id: uuid.UUID, index: int, leader_epoch: int) -> Partition:
        key = (topic_id, index)
        partition = self.partitions.get(key)
        if partition is None:
            partition = Partition(topic_name, topic_id, index, self.store.partition(topic_id, index), leader_epoch,
                                  self.io_limiter, self.read_limiter, self.store_gate, self.node_id)
            self.partitions[key] = partition
        return partition

    def get(self, topic_id: uuid.UUID, index: int) -> Partition | None:
        return self.partitions.get((topic_id, index))

    async def drop_topic(self, topic_id: uuid.UUID) -> None:
        await self.drop_partitions([key for key in self.partitions if key[0] == topic_id])

    async def drop_partitions(self, doomed: list[tuple[uuid.UUID, int]]) -> None:
        """Forget partitions and delete their data (a deleted topic, or replicas moved away)."""
        for key in doomed:
            partition = self.partitions.pop(key)
            self.leadership_lost(partition)  # wakes fetchers, fails waiting produces
        for topic_id, index in doomed:
            async with self.store_gate.use():
                await trio.to_thread.run_sync(self.store.drop_partition, topic_id, index, limiter=self.io_limiter)

    # -- appends --------------------------------------------------------------------
    def enqueue(self, request: AppendRequest) -> None:
        """Queue an append. Order of enqueue = order of offsets within a partition."""
        if self._closed:
            request.error = StorageError("broker is shutting down")
            request.settle()
            return
        if request.origin is not AppendOrigin.REPLICATION:
            request.epoch = request.partition.leader_epoch
        self._queue.append(request)
        self._queue_nonempty.set()

    async def append_batch(self, partition: Partition, batch: bytes) -> int:
        """Append one broker-built batch (internal topics); returns its base offset once committed (durable
        on every in-sync replica, as Kafka's coordinators write with acks=all).

        A transactional batch (TxnOffsetCommit) opens its producer's transaction on
        the partition; it gets the epoch check but no sequence check, as in Kafka.
        Raises StorageError, or KafkaError if the producer state refuses it."""
        header = parse_header(batch)
        request = AppendRequest(partition, [(header.last_offset_delta, header.max_timestamp, header.size, memoryview(batch))], None,
                                origin=AppendOrigin.COORDINATOR)
        if header.producer_id >= 0:
            request.set_producer(header.producer_id, header.producer_epoch, header.base_sequence, header.attributes)
        self.enqueue(request)
        await request.done.wait()
        if request.error is None:
            await request.committed.wait()
        if request.error is not None:
            raise request.error
        return request.base_offset

    async def append_replicated(self, partition: Partition, batches: list[bytes]) -> None:
        """A follower's copy of batches fetched from its leader: written as they are (offsets, leader epoch,
        producer fields), in one group commit, durable on return. The producer state follows them (markers
        included), so idempotence and transactions hold if this replica becomes leader. Raises StorageError."""
        requests: list[AppendRequest] = []
        for batch in batches:
            header = parse_header(batch)
            entry = (header.last_offset_delta, header.max_timestamp, header.size, memoryview(batch))
            epoch = header.partition_leader_epoch
            last = requests[-1] if requests else None
            if header.producer_id < 0 and last is not None and last.producer_id < 0 and last.epoch == epoch:
                last.batches.append(entry)
                continue
            request = AppendRequest(partition, [entry], None, origin=AppendOrigin.REPLICATION, epoch=epoch)
            if header.producer_id >= 0:
                request.set_producer(header.producer_id, header.producer_epoch, header.base_sequence,
                                     header.attributes)
                if header.attributes & CONTROL_BIT:
                    marker = marker_of(batch)
                    if marker is not None:
                        request.marker, request.coordinator_epoch = int(marker[0]), marker[1]
            requests.append(request)
        for request in requests:
            self.enqueue(request)
        for request in requests:
            await request.done.wait()
        for request in requests:
            if request.error is not None:
                raise request.error

    def follower_fetched(self, partition: Partition, replica: int, offset: int) -> None:
        """A follower's fetch told its progress: the high watermark may move, and acks=all answers with it."""
        partition.follower_fetched(replica, offset)
        self.advance_high_watermark(partition)
        if replica not in partition.isr and offset >= partition.high_watermark:
            self.follower_caught_up()

    def leadership_lost(self, partition: Partition) -> None:
        """This broker no longer leads the partition: produces waiting for its high watermark fail with
        NOT_LEADER_OR_FOLLOWER (the producer retries with the new leader)."""
        for request in self._awaiting_commit.pop(partition, []):
            request.error = KafkaError(ErrorCode.not_leader_or_follower,
                                       f"{partition.topic_name}-{partition.index}: leadership moved before the "
                                       "in-sync replicas had the batch")
            request.committed.set()
        partition.notify_appended()

    async def write_markers(self, partitions: list[Partition], producer_id: int, producer_epoch: int, commit: bool,
                            coordinator_epoch: int) -> dict[Partition, ErrorCode]:
        """Write a COMMIT / ABORT marker to each partition in one group commit; committed on return.

        Ends the producer's transaction on each partition (LSO moves, an abort
        is recorded in the aborted-transaction index) and wakes fetchers.
        Returns the partitions that refused the marker (older producer epoch:
        INVALID_PRODUCER_EPOCH; older coordinator epoch:
        TRANSACTION_COORDINATOR_FENCED); raises StorageError if the write failed.
        """
        now_ms = int(time.time() * 1000)
        requests = []
        for partition in partitions:
            batch = build_control_batch(producer_id, producer_epoch, commit, coordinator_epoch, now_ms)
            request = AppendRequest(partition, [(0, now_ms, len(batch), memoryview(batch))], None,
                                    origin=AppendOrigin.COORDINATOR, marker=int(commit),
                                    coordinator_epoch=coordinator_epoch)
            request.set_producer(producer_id, producer_epoch, -1, CONTROL_BIT | TRANSACTIONAL_BIT)
            self.enqueue(request)  # enqueued together, so written in one group
            requests.append(request)
        refused: dict[Partition, ErrorCode] = {}
        for request in requests:
            await request.done.wait()
            if request.error is None:  # on every in-sync replica, as Kafka writes markers with acks=all
                await request.committed.wait()
        for request in requests:
            if isinstance(request.error, KafkaError):
                refused[request.partition] = request.error.code
            elif request.error is not None:
                raise request.error
        for request in requests:  # a coordinator whose internal topic got the marker replays it
            listener = self.marker_listeners.get(request.partition.topic_name)
            if listener is not None and request.partition not in refused:
                listener(request.partition.index, producer_id, commit)
        return refused

    async def run_committer(self) -> None:
        while True:
            await self._queue_nonempty.wait()
            group, self._queue = self._queue, []
            self._queue_nonempty = trio.Event()
            await self._commit_group(group)
            if time.monotonic() >= self._next_expiration_check:
                self.expire_producers()

    def expire_producers(self) -> None:
        """Forget producers idle for producer.id.expiration.ms (Kafka checks every 10 minutes too)."""
        self._next_expiration_check = time.monotonic() + self.producer_expiration_check_seconds
        now_ms = int(time.time() * 1000)
        for partition in self.partitions.values():
            partition._log.producers.remove_expired(now_ms, self.store.producer_id_expiration_ms)

    def _check_producer(self, request: AppendRequest, journaled: list) -> bool:
        """Producer-state checks for one request, before offsets are assigned.

        False: nothing to append (a refused batch, with request.error set, or a
        duplicate, answered with the original offsets once they are committed).
        """
        state = request.partition._log.producers
        pid, epoch, first_seq = request.producer_id, request.producer_epoch, request.base_sequence
        last_delta = request.batches[0][0]
        try:
            if request.origin is AppendOrigin.REPLICATION:
                pass  # the leader checked them; a follower takes its leader's log as it is
            elif request.marker >= 0:
                state.check_marker(pid, epoch, request.coordinator_epoch)
            else:
                if request.origin is AppendOrigin.CLIENT:
                    duplicate = state.find_duplicate(pid, epoch, first_seq, last_sequence(first_seq, last_delta))
                    if duplicate is not None:
                        request.base_offset, request.end_offset = duplicate[0], duplicate[1] + 1
                        return False
                state.check_data(pid, epoch, first_seq, bool(request.attributes & TRANSACTIONAL_BIT),
                                 request.origin is AppendOrigin.CLIENT)
        except ProducerStateError as exc:
            request.error = KafkaError(ErrorCode[exc.error_name], str(exc))
            return False
        if not state.in_journal:
            request.partition.lso_hold = request.partition.last_stable_offset
            state.begin()
            journaled.append(request.partition)
        return True

    @staticmethod
    def _still_in_role(request: AppendRequest) -> bool:
        """Whether the partition still has the role the request was queued for: a leader's write needs the
        same leadership (an await between the handler's check and the write, a verification or the previous
        group commit, may have moved it; written anyway, the batch would carry another leader's epoch at
        offsets that leader fills differently); a follower's copy needs this broker not to lead now.
        Otherwise the request is refused with NOT_LEADER_OR_FOLLOWER (the producer retries at the leader)."""
        partition = request.partition
        if request.origin is AppendOrigin.REPLICATION:
            still = not partition.is_leader
        else:
            still = partition.is_leader and partition.leader_epoch == request.epoch
        if not still:
            request.error = KafkaError(ErrorCode.not_leader_or_follower,
                                       f"{partition.topic_name}-{partition.index}: leadership moved before the write")
        return still

    @staticmethod
    def _apply_producer(request: AppendRequest, base: int, last: int) -> None:
        state = request.partition._log.producers
        max_timestamp = request.batches[0][1]
        if request.marker >= 0:
            state.append_marker(request.producer_id, request.producer_epoch, request.coordinator_epoch, base,
                                request.marker == 1, max_timestamp)
        else:
            state.append_data(request.producer_id, request.producer_epoch, request.base_sequence,
                              last_sequence(request.base_sequence, last - base), base, last, max_timestamp,
                              bool(request.attributes & TRANSACTIONAL_BIT))

    async def _commit_group(self, group: list[AppendRequest]) -> None:
        pendings = []
        appended = []  # requests with a pending append, parallel to pendings
        settled: list[AppendRequest] = []  # refused: nothing appended
        duplicates: list[AppendRequest] = []  # a retry of a batch already in the log: answered once it is committed
        journaled: list[Partition] = []  # partitions whose producer state this group changed (undone if it fails)
        for request in group:
            if not self._still_in_role(request):
                settled.append(request)
                continue
            tail = b""
            if request.producer_id >= 0:
                if not self._check_producer(request, journaled):
                    (settled if request.error is not None else duplicates).append(request)
                    continue
                tail = producer_index_tail(request.producer_id, request.producer_epoch, request.base_sequence,
                                           request.attributes, request.marker, request.coordinator_epoch)
            replicated = request.origin is AppendOrigin.REPLICATION
            epoch = request.epoch
            append_time = request.log_append_time_ms

            def stamp(batch, base_offset, epoch=epoch, append_time=append_time):
                return stamp_for_append(batch, base_offset, epoch, append_time)

            try:
                pending = request.partition._log.prepare_append(request.batches, _as_fetched if replicated else stamp,
                                                                tail, epoch, keep_offsets=replicated)
            except StorageError as exc:  # a replicated batch overlapping the log: refused alone
                request.error = exc
                settled.append(request)
                continue
            request.base_offset = pending.base_offset
            pendings.append(pending)
            appended.append(request)
            if tail:
                base, last = pending.index_entries[0][:2]
                self._apply_producer(request, base, last)
        try:
            if pendings:
                if self._reopen_store:  # the last write failed: LevelDB must be reopened to write again
                    await self.store_gate.exclusive(self.store.reopen, self.io_limiter)
                    self._reopen_store = False
                async with self.store_gate.use():
                    staged = self.store.stage(pendings, self.sync_on_append)
                    write_seconds = await trio.to_thread.run_sync(_timed, staged.commit, limiter=self.io_limiter)
            else:
                write_seconds = None
        except Exception as exc:  # disk full, I/O error: fail the whole group, keep serving
            self._reopen_store = True
            self.log_dir_failure = str(exc) or type(exc).__name__
            self._failure_log.log("write", logging.ERROR, "log write failed, appends rejected: %s", exc)
            for pending in reversed(pendings):
                pending.log.abort_append(pending)
            for partition in journaled:
                partition._log.producers.rollback()
                partition.lso_hold = None
            for request in group:
                if request.error is None:  # duplicates too: their original may have been in this group
                    request.error = exc if isinstance(exc, StorageError) else StorageError(str(exc))
                request.settle()
            return
        if self.log_dir_failure is not None and pendings:
            log.warning("log writes succeed again after: %s", self.log_dir_failure)
            self.log_dir_failure = None
        for partition in journaled:
            partition._log.producers.commit()
        for request in settled:
            request.settle()
        # A duplicate waits for the high watermark like its original: a retry that reaches a leader about to
        # lose its unreplicated suffix must not be told "written" (acks=all would then lose it).
        for request in duplicates:
            request.done.set()
            self._awaiting_commit.setdefault(request.partition, []).append(request)
        for partition in {request.partition for request in duplicates}:
            self.advance_high_watermark(partition)
        if write_seconds is None:
            return
        if not self.sync_on_append:
            self.unflushed_writes += 1
        metrics = self.metrics
        if metrics is not None:
            metrics.log_written(write_seconds, self.sync_on_append)
        woken = set()
        for pending, request in zip(pendings, appended):
            pending.log.complete_append(pending)
            woken.add(request.partition)
            request.end_offset = pending.next_offset
            request.done.set()
            self._awaiting_commit.setdefault(request.partition, []).append(request)
            if metrics is not None:  # bytes and records from batch headers (offsets assigned = records)
                metrics.appended(request.partition.topic_name, sum([entry[2] for entry in request.batches]),
                                 pending.next_offset - pending.base_offset)
        for partition in journaled:  # the markers are durable: the LSO may move (Kafka: once HW passes them)
            partition.lso_hold = None
        for partition in woken:
            self.advance_high_watermark(partition)
            partition.notify_appended()

    def advance_high_watermark(self, partition: Partition) -> None:
        """Appends below the partition's high watermark are committed (acks=all answers). One replica: the
        high watermark is the local end, so this runs right after the write; with followers it runs when
        their fetches move the ISR's smallest end, and when the ISR changes."""
        partition.update_high_watermark()
        waiting = self._awaiting_commit.get(partition)
        if not waiting:
            return
        high_watermark = partition.high_watermark
        still = [request for request in waiting if request.end_offset > high_watermark]
        for request in waiting:
            if request.end_offset <= high_watermark:
                request.committed.set()
        if still:
            self._awaiting_commit[partition] = still
        else:
            del self._awaiting_commit[partition]

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
            try:
                async with self.store_gate.use():
                    seconds = await trio.to_thread.run_sync(_timed, self.store.sync, limiter=self.io_limiter)
            except Exception as exc:  # an fsync failure is a log directory failure too; keep serving
                self._reopen_store = True
                self.log_dir_failure = str(exc) or type(exc).__name__
                self._failure_log.log("sync", logging.ERROR, "log sync failed: %s", exc)
                return
            if self.metrics is not None:
                self.metrics.log_flushed(seconds)

    # -- retention ------------------------------------------------------------------
    async def run_retention(self, topic_config: Callable[[Partition], Mapping[str, str] | None],
                            interval_s: Callable[[], float]) -> None:
        """Every log.retention.check.interval.ms: each partition whose cleanup.policy includes delete loses
        the whole segments past retention.ms / retention.bytes (Kafka's log retention)."""
        while True:
            await trio.sleep(interval_s())
            await self.apply_retention(topic_config)

    async def apply_retention(self, topic_config: Callable[[Partition], Mapping[str, str] | None]) -> None:
        now_ms = int(time.time() * 1000)
        for partition in list(self.partitions.values()):
            config = topic_config(partition)
            if config is None or not cleanup_policy_includes(config, "delete"):
                continue
            if partition.remote is not None and remote_storage_enabled(config):
                continue  # tiered: broker/remote_log.py deletes local segments once offloaded
            pinned = self.snapshot_offsets(partition)
            keep_from = min(pinned.values()) if pinned and keeps_snapshot_data(config) else None
            try:
                deleted = await partition.apply_retention(now_ms, int(config["retention.ms"]),
                                                          int(config["retention.bytes"]), keep_from)
            except Exception as exc:  # a failed delete loses nothing: the next check tries again
                self._failure_log.log("retention", logging.ERROR, "retention of %s-%d failed: %s",
                                      partition.topic_name, partition.index, exc)
                continue
            if deleted:
                log.info("retention: %s-%d deleted %d bytes, log start offset now %d", partition.topic_name,
                         partition.index, deleted, partition.log_start_offset)
                if self.metrics is not None:
                    self.metrics.retention_deleted(partition.topic_name, deleted)
                warn_below_log_start(partition, pinned)

    async def close(self) -> None:
        """Stop accepting appends, finish what is queued, and sync."""
        self._closed = True
        if self._queue:
            group, self._queue = self._queue, []
            await self._commit_group(group)
        try:
            await trio.to_thread.run_sync(self.store.sync, limiter=self.io_limiter)
        except Exception as exc:  # a failed log directory: what was acknowledged is already durable
            log.error("final log sync failed: %s", exc)


def _as_fetched(batch: memoryview, base_offset: int) -> bytes:
    """A replicated batch is stored as its leader stored it."""
    return bytes(batch)


def _timed(operation) -> float:
    """Run a blocking operation (on a worker thread); return how long it took."""
    started = time.perf_counter()
    operation()
    return time.perf_counter() - started
