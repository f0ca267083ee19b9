"""The partition layer: one Partition per partition this broker hosts, the only door to its log.

Handlers, the REST API, metrics and the coordinators read offsets, batches,
producer state and sizes here; appends go through the replica manager's
committer (broker/replica_manager.py), which is the other half of this layer
and the only other code that touches `Partition._log`. A test
(tests/test_architecture.py) fails if anything else does.

Offsets, as Kafka names them: `log_start_offset`; `local_end_offset` (durable
on this broker); `high_watermark` (committed: with one replica the local end;
on a leader with followers the smallest end over the in-sync replicas, which
their fetches report; on a follower what its leader last said); and
`last_stable_offset` for read_committed.

Replication state lives here too: this broker's role (leader or follower, in
which leader epoch), the ISR the controller committed, and, on a leader, each
follower's progress (`FollowerProgress`), from which the high watermark and
the ISR changes the leader asks for (broker/replication.py) are computed.

Reads are async and planned first: which batches of the active segment to read
comes from its in-memory index (on the event loop, no I/O), then `read_planned`
reads a whole fetch's batches in one worker-thread call behind the replica
manager's read limiter, so a cold read from LevelDB's tables does not stall other
connections (docs/benchmarks.md, "Event-loop blocking by cold reads": the same
8-partition consume throughput as reading on the event loop, A/B on this
machine). A read from a closed segment (no per-batch index in memory: see
storage/leveldb_log.py) is planned and read together on a worker thread.
"""

from __future__ import annotations

import bisect
import contextlib
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Awaitable, Callable, Iterable, Mapping

import trio

from lodestream.broker.compaction import CleanerProcess, CleaningPass, CleanSettings

if TYPE_CHECKING:
    from lodestream.storage.leveldb_log import BatchLocation, CleanPlan, PartitionLog, SegmentInfo
    from lodestream.storage.producer_state import ProducerEntry


class StoreGate:
    """The worker threads using the log database, and the rare reopen that must run while none does
    (after a failed write LevelDB refuses every write until it is reopened: see LogStore.reopen)."""

    def __init__(self) -> None:
        self._users = 0
        self._drained: trio.Event | None = None  # set when the last user leaves, while a reopen waits
        self._reopened: trio.Event | None = None  # set when a reopen is over; None when none runs

    @contextlib.asynccontextmanager
    async def use(self):
        while self._reopened is not None:
            await self._reopened.wait()
        self._users += 1
        try:
            yield
        finally:
            self._users -= 1
            if self._users == 0 and self._drained is not None:
                self._drained.set()

    async def exclusive(self, blocking: Callable[[], None], limiter: trio.CapacityLimiter) -> None:
        """Run `blocking` on a worker thread once no one uses the database, keeping new users out."""
        reopened = self._reopened = trio.Event()
        try:
            while self._users:
                self._drained = trio.Event()
                await self._drained.wait()
            await trio.to_thread.run_sync(blocking, limiter=limiter)
        finally:
            self._drained = self._reopened = None
            reopened.set()


@dataclass(slots=True)
class FollowerProgress:
    """A follower as its leader sees it, from its fetches (Kafka's replica state on the leader)."""

    end_offset: int = -1  # its log end: everything below is durable there (-1: not fetched in this epoch)
    caught_up_s: float = 0.0  # monotonic time it was last caught up with the leader's end
    last_fetch_s: float = 0.0
    leader_end_at_last_fetch: int = -1


class Partition:
    def __init__(self, topic_name: str, topic_id: uuid.UUID, index: int, log: "PartitionLog", leader_epoch: int,
                 io_limiter: trio.CapacityLimiter, read_limiter: trio.CapacityLimiter, store_gate: StoreGate,
                 node_id: int = -1) -> None:
        self.topic_name = topic_name
        self.topic_id = topic_id
        self.index = index
        self._log = log
        self.leader_epoch = leader_epoch
        self.node_id = node_id  # this broker
        self.leader_id = -2  # who leads it (-1: nobody), from the metadata image (apply_state; -2 until then)
        self.replicas: tuple[int, ...] = (node_id,)
        self.isr: tuple[int, ...] = (node_id,)  # as the controller committed it
        self.pending_isr: tuple[int, ...] | None = None  # an ISR expansion asked of the controller, not yet seen
        self.partition_epoch = 0
        self.min_isr = 1  # the topic's min.insync.replicas
        self.followers: dict[int, FollowerProgress] = {}  # on the leader: each other replica's progress
        self.leader_epoch_start = 0  # on the leader: its log end when it was elected
        # With followers: from the log start until the ISR's fetches (or the leader's answers) say more, so a
        # restarted broker never shows records its ISR may not have.
        self._high_watermark = log.log_start_offset
        self.io_limiter = io_limiter  # synced writes (DeleteRecords)
        self.read_limiter = read_limiter  # worker threads reading batches (read_planned)
        self.store_gate = store_gate
        self.waiters: set[trio.Event] = set()  # long-polling fetches
        # The LSO from before the producer-state changes of a group being written: the committer applies
        # them (a marker ends a transaction) before the write is durable, and Kafka moves the LSO only
        # once the marker is written. None when no such group is in flight.
        self.lso_hold: int | None = None
        self._truncation = trio.Lock()  # one DeleteRecords at a time: its write runs on a worker thread
        # Tiered storage (broker/remote_log.py): the broker's RemoteLogManager that reads offloaded segments
        # (None when remote.log.storage.system.enable is off), and the segments (set_remote_log).
        self.remote = None
        self.set_remote_log(())

    # -- offsets and sizes --------------------------------------------------------------
    @property
    def log_start_offset(self) -> int:
        """The first offset clients can read: the first offloaded segment's when the remote log reaches the
        local log (KIP-405's log start offset), else the local log's."""
        local = self._log.log_start_offset
        if self.remote_segments and self.remote_end_offset >= local:
            return min(self.remote_segments[0].base_offset, local)
        return local

    @property
    def local_log_start_offset(self) -> int:
        """The first offset in this broker's own log (ListOffsets EARLIEST_LOCAL; what followers follow)."""
        return self._log.log_start_offset

    def set_remote_log(self, segments) -> None:
        """This partition's offloaded segments the image lists as readable (COPY_SEGMENT_FINISHED manifests,
        by base offset; they do not overlap: each offload starts where the last one ended). What fetches ask
        of them is worked out here once, not per fetch."""
        self.remote_segments = tuple(segments)
        self._remote_bases = [segment.base_offset for segment in self.remote_segments]
        # The offset after the last offloaded record (-1: nothing offloaded).
        self.remote_end_offset = self.remote_segments[-1].end_offset if self.remote_segments else -1
        self._remote_aborted = any(segment.aborted for segment in self.remote_segments)

    def remote_segment_at(self, offset: int):
        """The readable offloaded segment holding `offset`, if one does and it is below the local log."""
        if offset >= self._log.log_start_offset or self.remote is None:
            return None
        position = bisect.bisect_right(self._remote_bases, offset) - 1
        if position >= 0 and offset < self.remote_segments[position].end_offset:
            return self.remote_segments[position]
        return None

    @property
    def local_end_offset(self) -> int:
        """The next offset after the last batch durable (or written, with background flush) here."""
        return self._log.log_end_offset

    @property
    def high_watermark(self) -> int:
        """Committed: consumers read below it. One replica: everything durable locally is committed."""
        if len(self.replicas) == 1:
            return self._log.log_end_offset
        return self._high_watermark

    # -- replication ------------------------------------------------------------------
    @property
    def is_leader(self) -> bool:
        return self.leader_id == self.node_id

    @property
    def maximal_isr(self) -> tuple[int, ...]:
        """The ISR the high watermark waits for: the committed one plus an expansion asked for (Kafka's
        maximal ISR), so a replica joining never misses a record committed while the change travels."""
        return self.pending_isr if self.pending_isr is not None else self.isr

    @property
    def last_epoch(self) -> int:
        """The leader epoch of this log's last batch (a follower's Fetch says it: last_fetched_epoch)."""
        return self._log.last_epoch

    def end_offset_for_epoch(self, epoch: int) -> tuple[int, int]:
        return self._log.end_offset_for_epoch(epoch)

    def apply_state(self, replicas: tuple[int, ...], leader: int, leader_epoch: int, isr: tuple[int, ...],
                    partition_epoch: int, min_isr: int) -> str | None:
        """The metadata image's state of this partition; returns "leader" or "follower" when this broker's
        role or the leader epoch changed (the caller starts or stops fetching, fails waiting produces)."""
        changed = leader != self.leader_id or leader_epoch != self.leader_epoch
        if partition_epoch != self.partition_epoch:  # an asked-for ISR change was decided (or overtaken)
            self.pending_isr = None
        if len(self.replicas) == 1 and len(replicas) > 1 and self.leader_id == self.node_id:
            # One replica had everything committed: the high watermark it kept implicitly stays.
            self._high_watermark = max(self._high_watermark, self._log.log_end_offset)
        self.replicas, self.isr, self.partition_epoch, self.min_isr = replicas, isr, partition_epoch, min_isr
        if not changed:
            if leader == self.node_id:  # a reassignment adds or removes followers
                now = time.monotonic()
                self.followers = {replica: self.followers.get(replica) or FollowerProgress(caught_up_s=now)
                                  for replica in replicas if replica != self.node_id}
            return None
        self.leader_id, self.leader_epoch = leader, leader_epoch
        self.pending_isr = None
        if leader == self.node_id:
            self.leader_epoch_start = self._log.log_end_offset  # a follower joins the ISR once past it
            now = time.monotonic()  # followers get a full replica.lag.time.max.ms from now to catch up
            self.followers = {replica: FollowerProgress(caught_up_s=now) for replica in replicas
                              if replica != self.node_id}
            return "leader"
        self.followers = {}
        return "follower"

    def follower_fetched(self, replica: int, offset: int) -> None:
        """A follower fetched from `offset`: it holds (durably) everything below it. It is caught up when it
        asked for the leader's end, or for what was the end at its previous fetch (Kafka's rule)."""
        progress = self.followers.get(replica)
        if progress is None:
            return
        now = time.monotonic()
        end = self._log.log_end_offset
        if offset >= end:
            progress.caught_up_s = now
        elif offset >= progress.leader_end_at_last_fetch >= 0:
            progress.caught_up_s = progress.last_fetch_s
        progress.end_offset = offset
        progress.last_fetch_s = now
        progress.leader_end_at_last_fetch = end

    def update_high_watermark(self) -> bool:
        """On a leader: the smallest log end over the maximal ISR, never moving back; it stays while the ISR
        is smaller than min.insync.replicas (KIP-966: the replicas that left it keep every committed record).
        Returns whether it moved."""
        if not self.is_leader or len(self.replicas) == 1:
            return False
        isr = self.maximal_isr
        if len(isr) < min(self.min_isr, len(self.replicas)):
            return False
        ends = [self._log.log_end_offset]
        for replica in isr:
            if replica != self.node_id:
                progress = self.followers.get(replica)
                ends.append(progress.end_offset if progress is not None else -1)
        new = min(ends)
        if new > self._high_watermark:
            self._high_watermark = new
            return True
        return False

    def follow_leader_high_watermark(self, leader_high_watermark: int) -> None:
        """On a follower: the leader's high watermark, capped at what this log holds."""
        self._high_watermark = min(leader_high_watermark, self._log.log_end_offset)

    async def truncate_to(self, offset: int) -> None:
        """Cut this log's suffix from `offset` (a follower's records its leader does not have), with one
        synced write on a worker thread; the producer state is rebuilt from what remains."""
        async with self._truncation:
            async with self.store_gate.use():
                await trio.to_thread.run_sync(self._log.truncate_to, offset, limiter=self.io_limiter)
            self._high_watermark = min(self._high_watermark, self._log.log_end_offset)

    @property
    def last_stable_offset(self) -> int:
        """READ_COMMITTED consumers stop here: the first offset of the oldest ongoing transaction."""
        first_unstable = self._log.producers.first_unstable_offset()
        high_watermark = self.high_watermark
        stable = high_watermark if first_unstable is None else min(first_unstable, high_watermark)
        return stable if self.lso_hold is None else min(stable, self.lso_hold)

    @property
    def size_bytes(self) -> int:
        return self._log.size_bytes

    # -- reads ---------------------------------------------------------------------------
    async def plan_read(self, offset: int, max_bytes: int, upper_offset: int,
                        first_may_exceed: bool = True) -> "PlannedRead":
        """What a read of whole batches from `offset` below `upper_offset` returns: planned from the active
        segment's index (no I/O yet), or, from a closed segment, planned and read on a worker thread."""
        segment = self.remote_segment_at(offset)
        if segment is not None:  # offloaded, and gone from the local log
            batches = await self.remote.read_batches(self, segment, offset, max_bytes, upper_offset)
            if batches and not first_may_exceed and len(batches[0]) > max_bytes:
                batches = []
            return PlannedRead(self, [offset] if batches else [], sum(map(len, batches)), batches)
        planned = self._log.plan_read(offset, max_bytes, upper_offset, first_may_exceed)
        if planned is not None:
            return PlannedRead(self, *planned)
        bases, size, batches = await self._blocking(self._log.read_stored, offset, max_bytes, upper_offset,
                                                    first_may_exceed)
        return PlannedRead(self, bases, size, batches)

    async def _blocking(self, function, *args):
        """A LevelDB read on a worker thread behind the read limiter."""
        async with self.store_gate.use():
            return await trio.to_thread.run_sync(function, *args, limiter=self.read_limiter)

    def read_at_start_up(self, offset: int, max_bytes: int, upper_offset: int) -> list[bytes]:
        """Blocking read, for replaying internal topics while the broker opens (nothing is served yet)."""
        return self._log.read(offset, max_bytes, upper_offset)

    async def read_batch_at(self, base_offset: int) -> bytes | None:
        segment = self.remote_segment_at(base_offset)
        if segment is not None:
            batches = await self.remote.read_batches(self, segment, base_offset, 1, base_offset + 1)
            return batches[0] if batches else None
        batches = (await read_planned([PlannedRead(self, [base_offset], 0)]))[0]
        return batches[0] if batches else None

    async def batch_with_max_timestamp(self) -> "BatchLocation | None":
        """The first batch holding the log's largest timestamp (ListOffsets MAX_TIMESTAMP), offloaded
        segments included."""
        local = self._log.log_start_offset
        offloaded = [s for s in self.remote_segments if s.base_offset < local] if self.remote is not None else []
        if offloaded:
            newest = max(offloaded, key=lambda s: (s.max_timestamp, -s.base_offset))
            local_location = None if self._log.log_end_offset <= local else await self._local_max_timestamp()
            if local_location is None or newest.max_timestamp >= local_location.max_timestamp:
                return await self.remote.batch_with_max_timestamp(self, newest)
            return local_location
        return await self._local_max_timestamp()

    async def _local_max_timestamp(self) -> "BatchLocation | None":
        closed = self._log.max_timestamp_range()
        if closed is None:
            return self._log.active_batch_with_max_timestamp()
        return await self._blocking(self._log.scan_max_timestamp, *closed)

    async def first_batch_with_timestamp(self, timestamp: int, from_offset: int) -> "BatchLocation | None":
        """The first batch from `from_offset` on whose largest timestamp reaches `timestamp`: the closed
        segments whose summaries say it may be there are scanned on a worker thread, then the active one.
        Offloaded segments below the local log come first, by their manifests' largest timestamps."""
        if self.remote is not None and from_offset < self._log.log_start_offset:
            for segment in self.remote_segments:
                if segment.end_offset > from_offset and segment.max_timestamp >= timestamp \
                        and segment.base_offset < self._log.log_start_offset:
                    found = await self.remote.first_with_timestamp(self, segment, timestamp, from_offset)
                    if found is not None:
                        return found
        for low, high in self._log.closed_ranges_reaching(timestamp, from_offset):
            found = await self._blocking(self._log.scan_first_with_timestamp, low, high, timestamp, from_offset)
            if found is not None:
                return found
        return self._log.active_first_with_timestamp(timestamp, from_offset)

    # -- transactions and producers ----------------------------------------------------
    @property
    def has_aborted_transactions(self) -> bool:
        return bool(self._log.producers.aborted) or self._remote_aborted

    def aborted_transactions(self, first_offset: int, upper_offset: int) -> list[tuple[int, int]]:
        """(producer id, first offset) of aborted transactions overlapping [first_offset, upper_offset); below
        the local log, from the offloaded segments' manifests (their transaction index)."""
        found = self._log.aborted_transactions(first_offset, upper_offset)
        if self.remote_segments and first_offset < self._log.log_start_offset:
            seen = set(found)
            # Only the segments overlapping the range: each one's manifest lists the aborted transactions
            # overlapping it, so together they hold every one overlapping the range.
            start = max(bisect.bisect_right(self._remote_bases, first_offset) - 1, 0)
            end = bisect.bisect_left(self._remote_bases, upper_offset)
            for segment in self.remote_segments[start:end]:
                for producer_id, first, last in segment.aborted:
                    if last >= first_offset and first < upper_offset and (producer_id, first) not in seen:
                        seen.add((producer_id, first))
                        found.append((producer_id, first))
            found.sort(key=lambda entry: entry[1])
        return found

    def aborted_overlapping(self, first_offset: int, upper_offset: int) -> list[tuple[int, int, int]]:
        """The local log's aborted transactions overlapping [first_offset, upper_offset), with their marker
        offsets (what an offloaded segment's manifest keeps)."""
        return self._log.producers.aborted_overlapping(first_offset, upper_offset)

    def in_transaction(self, producer_id: int, producer_epoch: int) -> bool:
        """This producer (in this epoch) has a transaction open on this partition."""
        entry = self._log.producers.producers.get(producer_id)
        return entry is not None and entry.epoch == producer_epoch and entry.txn_first_offset is not None

    def active_producers(self) -> Iterable["ProducerEntry"]:
        return self._log.producers.producers.values()

    # -- truncation -------------------------------------------------------------------------
    async def delete_records_before(self, offset: int) -> int:
        """Advance the log start offset to `offset` (DeleteRecords, retention), dropping the batches
        wholly below it with one synced write; returns the resulting log start offset."""
        async with self._truncation:
            if offset > self._log.log_start_offset:
                async with self.store_gate.use():
                    staged = self._log.stage_delete_before(offset)
                    if staged is not None:
                        await trio.to_thread.run_sync(staged.commit, limiter=self.io_limiter)
                        self._log.complete_delete_before(staged)
            return self._log.log_start_offset

    # -- segments and retention ----------------------------------------------------------------
    async def read_segment(self, start: int, end: int, limiter: trio.CapacityLimiter) -> list[bytes]:
        """The stored batches with base offsets in [start, end), as fetched (offload reads a closed segment
        whole, on a worker thread behind `limiter`)."""
        async with self.store_gate.use():
            batches, _ = await trio.to_thread.run_sync(self._log.scan, start, end, limiter=limiter)
        return [data for _, data in batches]

    def configure(self, topic_config: Mapping[str, str]) -> None:
        """Apply the topic's segment.bytes / segment.ms / segment.index.bytes (the next append rolls by them)."""
        self._log.segment_bytes = int(topic_config["segment.bytes"])
        self._log.segment_ms = int(topic_config["segment.ms"])
        self._log.segment_index_bytes = int(topic_config["segment.index.bytes"])

    def segments(self) -> list["SegmentInfo"]:
        return self._log.segment_infos()

    @property
    def segment_count(self) -> int:
        return len(self._log.segments)

    async def apply_retention(self, now_ms: int, retention_ms: int, retention_bytes: int,
                              keep_from: int | None = None) -> int:
        """Delete the whole segments past retention (log start advances, never past `keep_from`); returns
        the bytes deleted. The deleted key ranges are then compacted so LevelDB gives the space back."""
        offset = self._log.retention_offset(now_ms, retention_ms, retention_bytes, keep_from)
        return 0 if offset is None else await self.apply_local_deletion(offset)

    async def apply_local_deletion(self, offset: int) -> int:
        """Advance the local log start to `offset` (a segment boundary) and give the space back; returns the
        bytes deleted. Retention, and tiered storage's local retention (broker/remote_log.py)."""
        # From the index, before the delete: a size difference across the awaits would count appends too.
        deleted = self._log.size_below(offset)
        await self.delete_records_before(offset)
        async with self.store_gate.use():
            await trio.to_thread.run_sync(self._log.compact_below, offset, limiter=self.io_limiter)
        return deleted

    # -- compaction ----------------------------------------------------------------------------------
    def clean_plan(self, now_ms: int, settings: CleanSettings) -> "CleanPlan | None":
        """What a compaction pass would cover now (from the segment summaries; the cleaner's dirty ratio and
        lag)."""
        return self._log.clean_plan(now_ms, settings.min_compaction_lag_ms, settings.delete_retention_ms)

    async def clean(self, now_ms: int, settings: CleanSettings, limiter: trio.CapacityLimiter,
                    throttle: Callable[[int], Awaitable[None]], process: CleanerProcess) -> CleaningPass | None:
        """One compaction pass (broker/compaction.py) in chunks on worker threads behind `limiter`, the
        records judged in the cleaner `process`, awaiting `throttle(bytes)` after each chunk
        (log.cleaner.io.max.bytes.per.second). Appends, fetches and the committer's writes go on
        meanwhile: the pass only touches closed segments, and a rewritten batch keeps its base offset, so
        a fetch planned before it reads the new bytes. Retention and DeleteRecords wait for the chunk being
        written; if they moved the log start (or the topic was deleted) the pass stops and the next one
        starts over. None when nothing was cleaned to the end."""
        plan = self.clean_plan(now_ms, settings)
        if plan is None:
            return None
        cleaning = CleaningPass(plan, await trio.to_thread.run_sync(process.begin, plan, limiter=limiter))
        low = plan.dirty_from
        while low < plan.end:
            read_before = cleaning.bytes_read
            async with self.store_gate.use():
                low = await trio.to_thread.run_sync(cleaning.map_chunk, self._log, low, plan.end, limiter=limiter)
            await throttle(cleaning.bytes_read - read_before)
        low = plan.start
        while low < plan.end:
            async with self._truncation:
                if self._log.log_start_offset != plan.start or self._log.dropped:
                    return None
                read_before = cleaning.bytes_read
                async with self.store_gate.use():
                    changes, low = await trio.to_thread.run_sync(cleaning.clean_chunk, self._log, low, plan.end,
                                                                 limiter=limiter)
                cleaning.bytes_reclaimed += self._log.complete_clean(changes)
            await throttle(cleaning.bytes_read - read_before)
        async with self._truncation:
            if self._log.log_start_offset != plan.start or self._log.dropped:
                return None
            staged, groups = self._log.stage_finish_clean(plan)
            async with self.store_gate.use():
                await trio.to_thread.run_sync(staged.commit, limiter=limiter)
            self._log.complete_finish_clean(plan, groups)
        cleaning.deletes_kept = await trio.to_thread.run_sync(lambda: process.deletes_kept, limiter=limiter)
        # Deleted and overwritten keys give their space back only when LevelDB compacts their files.
        async with self.store_gate.use():
            await trio.to_thread.run_sync(self._log.compact_below, plan.end, limiter=limiter)
        return cleaning

    # -- waking long polls --------------------------------------------------------------------
    def notify_appended(self) -> None:
        for waiter in self.waiters:
            waiter.set()


@dataclass(slots=True)
class PlannedRead:
    partition: Partition
    bases: list[int]  # base offsets of the batches to read
    size: int  # their total size, from the index
    batches: list[bytes] | None = None  # read already (a read from a closed segment)


async def read_planned(plans: list[PlannedRead]) -> list[list[bytes]]:
    """The batches of each plan (a fetch's partitions together), read in one worker-thread call."""
    unread = [plan for plan in plans if plan.batches is None]
    if unread:
        read = await unread[0].partition._blocking(_read_all, [(plan.partition._log, plan.bases) for plan in unread])
        for plan, batches in zip(unread, read):
            plan.batches = batches
    return [plan.batches for plan in plans]


def _read_all(logs_and_bases: list[tuple["PartitionLog", list[int]]]) -> list[list[bytes]]:
    return [log.fetch(bases) for log, bases in logs_and_bases]
