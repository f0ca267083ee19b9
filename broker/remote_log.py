"""Tiered storage: the broker's remote log manager (docs/tiered-storage.md; Kafka's RemoteLogManager).

Every `remote.log.manager.task.interval.ms`, for each partition this broker leads:

1. **Unfinished manifests** are finished off: a segment left in COPY_SEGMENT_STARTED by a crash or a lost
   leadership (not one this broker is copying now) and one left in DELETE_SEGMENT_STARTED get their
   fragments deleted, then DELETE_SEGMENT_FINISHED. No manifest is readable before COPY_SEGMENT_FINISHED,
   which is committed only once every fragment is durable, so a crash never leaves one pointing at missing
   data.
2. **Offload** (topics with remote.storage.enable=true): each closed segment below the high watermark and
   the last stable offset, after what is offloaded already, is read on a worker thread, encoded with the
   topic's remote.erasure.code and written as k+m fragment objects to k+m distinct stores, under the
   broker-wide budget remote.log.manager.copy.max.bytes.per.second. The manifest goes COPY_SEGMENT_STARTED
   (before the first fragment) -> COPY_SEGMENT_FINISHED (after the last), through the controller
   (UpdateRemoteSegments), which checks each state change and that this broker leads the partition.
3. **Remote retention**: retention.ms / retention.bytes over the whole log delete the oldest offloaded
   segments (DELETE_SEGMENT_STARTED, the fragments, DELETE_SEGMENT_FINISHED).
4. **Local retention**: closed local segments that are offloaded go once past local.retention.ms /
   local.retention.bytes (-2: the total retention's). A segment not yet offloaded is never deleted
   locally. Followers delete what their leader deleted: its fetch answers carry its local log start.

Orphan fragments (objects no manifest knows: a topic deleted, or a copy whose manifest was refused) are
collected at start-up and every ORPHAN_SWEEP_EVERY passes, for topics gone and partitions this broker
leads.

Reads: a fetch below the local log start reads the offloaded segment holding it (Partition.plan_read calls
`read_batches`): its batch index, then the stripes holding the batches asked for, through the stripe
caches (broker/remote_reader.py). A stripe with fewer than k good fragments fails the read with
KAFKA_STORAGE_ERROR, a log line naming the segment and the lodestream_remote_read_errors metric: never
wrong bytes.
"""

from __future__ import annotations

import logging
import os
import signal
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Mapping

import trio

from lodestream.consensus.records import (COPY_FINISHED, COPY_STARTED, DELETE_FINISHED, DELETE_STARTED,
                                          RemoteSegmentRecord)
from lodestream.protocol.errors import ErrorCode, KafkaError
from lodestream.protocol.record_batch import parse_header
from lodestream.storage.erasure import NotEnoughFragments, Scheme, codec_for
from lodestream.storage.fragment_store import FragmentStore, FragmentStoreError
from lodestream.storage.remote_segment import SegmentFormatError, encode_segment
from lodestream.storage.leveldb_log import BatchLocation
from lodestream.storage.store_urls import open_store
from lodestream.storage.stripe_cache import StripeCache
from lodestream.storage.striped_segment import SegmentLayout, check_fragment, write_segment
from lodestream.storage.striped_segment import repair as repair_fragment

from lodestream.broker.config import remote_storage_enabled
from lodestream.broker.offset_snapshots import keeps_snapshot_data, warn_below_log_start
from lodestream.broker.log_cleaner import IoThrottle
from lodestream.broker.remote_reader import RedisStripeCache, RemoteSegmentReader

log = logging.getLogger(__name__)

# Tests only (tests/test_tiered_crash.py): SIGKILL this process at the named point of an offload or a
# deletion, to show that a crash anywhere between the first fragment and the last manifest loses nothing.
CRASH_AT = os.environ.get("LODESTREAM_TIERING_CRASH_AT", "")
CRASH_POINTS = ("copy-started", "fragment-written", "fragments-written", "delete-started", "fragment-deleted")
ORPHAN_SWEEP_EVERY = 10
UPDATE_SEEN_TIMEOUT_S = 10.0  # passes between orphan sweeps (the first pass sweeps too)
ERROR_LOG_INTERVAL_S = 60.0


def crash_point(name: str) -> None:
    if CRASH_AT == name:
        log.warning("LODESTREAM_TIERING_CRASH_AT=%s: killing this process", name)
        os.kill(os.getpid(), signal.SIGKILL)


def layout_of(segment: RemoteSegmentRecord) -> SegmentLayout:
    return SegmentLayout(segment_key(segment), Scheme.parse(segment.scheme), segment.size, segment.stripe_bytes,
                         segment.piece_size, segment.stores)


def segment_key(segment: RemoteSegmentRecord) -> str:
    """Object key prefix of a segment's fragments: `<topic id>/<partition>/<base offset>-<segment id>`."""
    return f"{segment.topic_id}/{segment.partition}/{segment.base_offset:020d}-{segment.segment_id}"


@dataclass
class ScrubJob:
    """A scrub or repair run and how far it got (REST and `lodestream tiering` show it)."""

    kind: str
    segments_total: int = 0
    segments_done: int = 0
    fragments_checked: int = 0
    bad_fragments: int = 0
    repaired: int = 0
    errors: list[str] = field(default_factory=list)
    done: bool = False


class RemoteLogManager:
    def __init__(self, broker, stores: dict[str, FragmentStore], stripe_bytes: int, cache_bytes: int,
                 redis: RedisStripeCache | None, interval_s: float, hedge_s: float = 0.1) -> None:
        self.broker = broker  # its image, replicas, controller client and configs (not imported: a cycle)
        self.stores = stores  # store URL -> store, in remote.fragment.stores order
        self.stripe_bytes = stripe_bytes
        self.interval_s = interval_s
        self.coding_limiter = trio.CapacityLimiter(1)  # reads' decoding: CPU, one core at a time
        # Offload's and repair's encoding and writes: one at a time, and never ahead of a read's decoding.
        self.background_limiter = trio.CapacityLimiter(1)
        self.attempts = 0  # offload attempts: each starts its k+m stores one further along the list
        self.redis = redis
        self.reader = RemoteSegmentReader(lambda: self.stores, self.coding_limiter, StripeCache(cache_bytes), redis,
                                          hedge_s=hedge_s)
        self.copying: set[uuid.UUID] = set()  # segments this broker is writing now (not orphans)
        # Segments being deleted now -> set when done: DeleteRecords and the background pass (which finishes
        # any DELETE_SEGMENT_STARTED it sees) may both reach one; the second waits for the first.
        self.deleting: dict[uuid.UUID, trio.Event] = {}
        self.passes = 0
        self.seen_topics: set[uuid.UUID] = set()  # topics in an image of an earlier pass (gone = deleted)
        self.health: dict[uuid.UUID, dict[int, list[int]]] = {}  # segment -> {bad fragment: bad stripes}
        self.job: ScrubJob | None = None  # the last scrub or repair (REST, CLI, the background scrubber)
        self.counters = {"offloaded_segments": 0, "offloaded_bytes": 0, "deleted_segments": 0,
                         "read_errors": 0, "orphans_deleted": 0}
        self._last_error_logged: dict[str, float] = {}

    @classmethod
    def from_config(cls, broker) -> "RemoteLogManager | None":
        config = broker.config
        if not config.get("remote.log.storage.system.enable"):
            return None
        stores = {url: open_store(url) for url in config.get("remote.fragment.stores")}
        redis_url = config.get("remote.cache.redis.url")
        ttl_s = max(1, int(config.get("remote.cache.redis.ttl.ms")) // 1000)  # Redis expiries are whole seconds
        redis = RedisStripeCache(redis_url, ttl_s) if redis_url else None
        return cls(broker, stores, int(config.get("remote.stripe.bytes")), int(config.get("remote.cache.bytes")),
                   redis, int(config.get("remote.log.manager.task.interval.ms")) / 1000,
                   int(config.get("remote.fetch.hedge.ms")) / 1000)

    # -- the loop ----------------------------------------------------------------------------------

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            if self.redis is not None:
                await nursery.start(self.redis.run)
            nursery.start_soon(self.run_scrubber)
            task_status.started()
            while True:
                await self.run_once()
                await trio.sleep(self.interval_s)

    async def run_once(self) -> None:
        """One pass over the partitions this broker leads (see the module's docstring). Skipped while this
        broker does not hold its lease: a paused or cut-off broker's image may be stale, and another may lead
        its partitions by now."""
        broker = self.broker
        if not broker.controller_client.holds_lease():
            return
        self.seen_topics |= set(broker.image.topics_by_id)
        if self.passes % ORPHAN_SWEEP_EVERY == 0:
            await self._guarded("orphans", self.collect_orphans)
        self.passes += 1
        throttle = IoThrottle(float(broker.broker_config_value("remote.log.manager.copy.max.bytes.per.second")))
        for partition in list(broker.replicas.partitions.values()):
            topic = broker.image.topics_by_id.get(partition.topic_id)
            if topic is None or not partition.is_leader:
                continue
            config = broker.topic_config(topic)
            name = f"{partition.topic_name}-{partition.index}"
            await self._guarded(name, self._finish_unfinished, partition)
            if remote_storage_enabled(config):
                await self._guarded(name, self._offload, partition, config, throttle)
            await self._guarded(name, self._apply_remote_retention, partition, config)
            if remote_storage_enabled(config):
                await self._guarded(name, self._apply_local_retention, partition, config)

    async def _guarded(self, what: str, function, *args) -> None:
        """Run one step; a store or controller failure is logged (once a minute per partition) and the
        next pass tries again."""
        try:
            await function(*args)
        except (KafkaError, FragmentStoreError, OSError, NotEnoughFragments, SegmentFormatError) as exc:
            now = time.monotonic()
            if now - self._last_error_logged.get(what, -ERROR_LOG_INTERVAL_S) >= ERROR_LOG_INTERVAL_S:
                self._last_error_logged[what] = now
                log.warning("tiered storage, %s: %s (tried again in the next pass)", what, exc)

    def _manifests(self, partition) -> dict[uuid.UUID, RemoteSegmentRecord]:
        return dict(self.broker.image.remote_segments.get((partition.topic_id, partition.index), {}))

    async def _update(self, records: list[RemoteSegmentRecord]) -> None:
        """Commit manifest changes through the controller, and see them here before going on (the next
        offload starts after the last offloaded offset)."""
        await self.broker.controller_client.update_remote_segments(records)
        image = await self.broker.quorum.wait_for(lambda image: all(
            image.remote_segments.get((r.topic_id, r.partition), {}).get(r.segment_id) == r
            or (r.state == DELETE_FINISHED and r.segment_id not in image.remote_segments.get(
                (r.topic_id, r.partition), {})) for r in records) and image, UPDATE_SEEN_TIMEOUT_S)
        if image is None:
            raise KafkaError(ErrorCode.request_timed_out, "a committed manifest change has not reached this broker")
        for topic_id, index in {(r.topic_id, r.partition) for r in records}:
            partition = self.broker.replicas.get(topic_id, index)
            if partition is not None:  # the image callback may come later in this turn: readers see it now
                partition.set_remote_log(image.remote_log(topic_id, index))

    async def delete_records_before(self, partition, offset: int) -> None:
        """DeleteRecords below the local log: the offloaded segments wholly below `offset` go (the log start
        becomes the start of the one holding it: offloaded segments are deleted whole)."""
        for segment in partition.remote_segments:
            if segment.end_offset <= offset:
                try:
                    await self._delete_segment(segment)
                except (FragmentStoreError, OSError) as exc:  # deleted later by the retention pass
                    raise KafkaError(ErrorCode.kafka_storage_error, f"deleting offloaded segment: {exc}") from None

    # -- offload -----------------------------------------------------------------------------------

    async def _offload(self, partition, config: Mapping[str, str], throttle: IoThrottle) -> None:
        """Copy every closed segment below the high watermark and last stable offset that is not offloaded
        yet, oldest first (only the batches after what is offloaded: replicas roll segments on their own)."""
        scheme = Scheme.parse(str(config["remote.erasure.code"]))
        bound = min(partition.high_watermark, partition.last_stable_offset)
        for info in partition.segments():
            copied = max(partition.remote_end_offset, partition.local_log_start_offset)
            if not info.closed or info.end_offset > bound or not partition.is_leader:
                return
            if info.end_offset <= copied or info.size == 0:
                continue
            batches = await partition.read_segment(max(info.base_offset, copied), info.end_offset,
                                                   self.broker.io_limiter)
            if batches:
                await self._copy_segment(partition, scheme, batches)
                await throttle(sum(map(len, batches)))

    async def _copy_segment(self, partition, scheme: Scheme, batches: list[bytes]) -> None:
        headers = [parse_header(batch) for batch in batches]
        epochs: list[tuple[int, int]] = []
        for header in headers:
            if not epochs or epochs[-1][0] != header.partition_leader_epoch:
                epochs.append((header.partition_leader_epoch, header.base_offset))
        entries = [(h.base_offset, h.last_offset, h.max_timestamp, len(b)) for h, b in zip(headers, batches)]
        stores = self._stores_for(scheme)
        base, end = headers[0].base_offset, headers[-1].last_offset + 1
        started = RemoteSegmentRecord(
            partition.topic_id, partition.index, uuid.uuid4(), COPY_STARTED, base, end,
            max(h.max_timestamp for h in headers), tuple(epochs), 0, 0, str(scheme), self.stripe_bytes, 0,
            tuple(store.url for store in stores), self.broker.node_id,
            tuple(tuple(entry) for entry in partition.aborted_overlapping(base, end)))
        self.copying.add(started.segment_id)
        try:
            await self._update([started])
            crash_point("copy-started")
            key = segment_key(started)

            def encode_and_write() -> tuple[SegmentLayout, int]:
                blob, index_position = encode_segment(batches, entries)
                layout = write_segment(codec_for(scheme), stores, key, blob, self.stripe_bytes,
                                       lambda index: crash_point("fragment-written"))
                crash_point("fragments-written")
                return layout, index_position

            layout, index_position = await trio.to_thread.run_sync(encode_and_write,
                                                                   limiter=self.background_limiter)
            finished = replace(started, state=COPY_FINISHED, size=layout.length, index_position=index_position,
                               piece_size=layout.piece_size)
            await self._update([finished])
        finally:
            # Finished, or not readable: then the next pass deletes what was written (DELETE_SEGMENT_STARTED).
            self.copying.discard(started.segment_id)
        self.counters["offloaded_segments"] += 1
        self.counters["offloaded_bytes"] += layout.length
        log.info("offloaded %s-%d [%d, %d): %d bytes as %s fragments", partition.topic_name, partition.index,
                 started.base_offset, started.end_offset, layout.length, scheme)

    def _stores_for(self, scheme: Scheme) -> list[FragmentStore]:
        """k+m distinct stores, the first one further along the list at each attempt: fragments spread over
        every store listed, and with spare stores a copy that failed on a dead store is retried without it
        within len(stores) attempts."""
        stores = list(self.stores.values())
        first = self.attempts % len(stores)
        self.attempts += 1
        return (stores[first:] + stores[:first])[:scheme.width]

    # -- deletion --------------------------------------------------------------------------------

    async def _finish_unfinished(self, partition) -> None:
        """Delete the fragments of segments a crash or a lost leadership left in COPY_SEGMENT_STARTED or
        DELETE_SEGMENT_STARTED."""
        for segment in self._manifests(partition).values():
            if segment.state == COPY_STARTED and segment.segment_id not in self.copying:
                log.info("%s-%d: segment %s was never finished (a crash or a leadership change): deleting its "
                         "fragments", partition.topic_name, partition.index, segment.segment_id)
                await self._delete_segment(segment)
            elif segment.state == DELETE_STARTED:
                await self._delete_segment(segment)

    async def _delete_segment(self, segment: RemoteSegmentRecord) -> None:
        """Delete one offloaded segment's fragments and manifest. Callers hold manifests read before an await,
        so the segment may be gone or being deleted by the other caller by now."""
        while True:
            underway = self.deleting.get(segment.segment_id)
            if underway is not None:
                await underway.wait()
            current = self.broker.image.remote_segments.get((segment.topic_id, segment.partition), {})
            if segment.segment_id not in current:
                return  # deleted already
            segment = current[segment.segment_id]  # its state now (another deletion may have failed midway)
            if underway is None:
                break
        self.deleting[segment.segment_id] = done = trio.Event()
        try:
            if segment.state != DELETE_STARTED:
                segment = replace(segment, state=DELETE_STARTED)
                await self._update([segment])
                crash_point("delete-started")
            await trio.to_thread.run_sync(self._delete_objects, segment, limiter=self.broker.io_limiter)
            await self._update([replace(segment, state=DELETE_FINISHED)])
            self.counters["deleted_segments"] += 1
        finally:
            del self.deleting[segment.segment_id]
            done.set()

    def _delete_objects(self, segment: RemoteSegmentRecord) -> None:
        key = segment_key(segment)
        for index, url in enumerate(segment.stores):
            store = self.stores.get(url)
            if store is None:
                raise FragmentStoreError(f"segment {segment.segment_id}: fragment {index} is on {url}, which is "
                                         "not in remote.fragment.stores")
            store.delete(f"{key}.{index}")
            crash_point("fragment-deleted")

    async def _apply_remote_retention(self, partition, config: Mapping[str, str]) -> None:
        """retention.ms / retention.bytes over the whole log: the oldest offloaded segments go first."""
        segments = list(partition.remote_segments)
        if not segments:
            return
        retention_ms, retention_bytes = int(config["retention.ms"]), int(config["retention.bytes"])
        now_ms = int(time.time() * 1000)
        remote_end = partition.remote_end_offset
        local_beyond = sum(info.size for info in partition.segments() if info.end_offset > remote_end)
        total = sum(segment.size for segment in segments) + local_beyond
        pinned = self.broker.replicas.snapshot_offsets(partition)
        keep_from = min(pinned.values()) if pinned and keeps_snapshot_data(config) else None
        for segment in segments:
            due = ((retention_ms >= 0 and now_ms - segment.max_timestamp > retention_ms)
                   or (retention_bytes >= 0 and total - segment.size >= retention_bytes))
            if not due or not partition.is_leader or (keep_from is not None and segment.end_offset > keep_from):
                break
            await self._delete_segment(segment)
            total -= segment.size
            log.info("retention: %s-%d deleted offloaded segment [%d, %d)", partition.topic_name,
                     partition.index, segment.base_offset, segment.end_offset)
            warn_below_log_start(partition, pinned)

    async def _apply_local_retention(self, partition, config: Mapping[str, str]) -> None:
        """Delete local segments that are offloaded, oldest first, past local.retention.ms / .bytes."""
        local_ms, local_bytes = int(config["local.retention.ms"]), int(config["local.retention.bytes"])
        if local_ms == -2:
            local_ms = int(config["retention.ms"])
        if local_bytes == -2:
            local_bytes = int(config["retention.bytes"])
        copied = partition.remote_end_offset
        now_ms = int(time.time() * 1000)
        total = partition.size_bytes
        new_start = None
        for info in partition.segments():
            if not info.closed or info.end_offset > copied:
                break
            due = ((local_ms >= 0 and now_ms - info.max_timestamp > local_ms)
                   or (local_bytes >= 0 and total - info.size >= local_bytes))
            if not due:
                break
            total -= info.size
            new_start = info.end_offset
        if new_start is not None and new_start > partition.local_log_start_offset:
            deleted = await partition.apply_local_deletion(new_start)
            log.info("local retention: %s-%d deleted %d offloaded bytes, local log start offset now %d",
                     partition.topic_name, partition.index, deleted, partition.local_log_start_offset)

    # -- scrub and repair --------------------------------------------------------------------------

    async def run_scrubber(self) -> None:
        """Every remote.scrub.interval.ms: check every fragment and repair the bad ones."""
        interval_s = int(self.broker.config.get("remote.scrub.interval.ms")) / 1000
        while True:
            await trio.sleep(interval_s)
            if self.job is None or self.job.done:
                await self._guarded("scrub", self.scrub, True)

    def start_job(self, repair: bool) -> "ScrubJob":
        """A scrub (repair=False: check only) or repair run in the background; the running one if any."""
        if self.job is None or self.job.done:
            self.job = ScrubJob("repair" if repair else "scrub")
            self.broker.background.start_soon(self._guarded, "scrub", self.scrub, repair)
        return self.job

    async def scrub(self, repair: bool) -> "ScrubJob":
        """Check each fragment of every readable segment of the partitions this broker leads (their leader
        updates their manifests), at remote.scrub.max.bytes.per.second; with `repair`, rebuild each bad
        fragment from k good ones onto its store, or a spare store when its own refuses, and record the
        move in the manifest (COPY_SEGMENT_FINISHED again)."""
        job = self.job if self.job is not None and not self.job.done else ScrubJob("repair" if repair else "scrub")
        self.job = job
        try:
            throttle = IoThrottle(float(self.broker.broker_config_value("remote.scrub.max.bytes.per.second")))
            led = [p for p in self.broker.replicas.partitions.values() if p.is_leader]
            segments = [(p, s) for p in led for s in p.remote_segments]
            job.segments_total = len(segments)
            for partition, segment in segments:
                layout = layout_of(segment)
                codec = codec_for(layout.scheme)
                bad: dict[int, list[int]] = {}
                for index in range(layout.scheme.width):
                    stripes = await trio.to_thread.run_sync(check_fragment, codec, layout, self.stores, index,
                                                            limiter=self.broker.io_limiter)
                    job.fragments_checked += 1
                    if stripes:
                        bad[index] = stripes
                    await throttle(layout.stripes * layout.piece_size)
                self.health[segment.segment_id] = bad
                job.bad_fragments += len(bad)
                if bad and repair:
                    await self._repair(partition, segment, sorted(bad), job)
                job.segments_done += 1
        except Exception as exc:
            job.errors.append(str(exc))
            raise
        finally:
            job.done = True
        log.info("tiered storage %s: %d segments, %d fragments checked, %d bad, %d repaired", job.kind,
                 job.segments_done, job.fragments_checked, job.bad_fragments, job.repaired)
        return job

    async def _repair(self, partition, segment: RemoteSegmentRecord, bad: list[int], job: "ScrubJob") -> None:
        layout = layout_of(segment)
        codec = codec_for(layout.scheme)
        for index in bad:
            spares = [store for url, store in self.stores.items() if url not in layout.stores]
            targets = [store for store in [self.stores.get(layout.stores[index])] if store is not None] + spares
            for target in targets:
                try:
                    layout = await trio.to_thread.run_sync(repair_fragment, codec, layout, self.stores, index,
                                                           target, limiter=self.background_limiter)
                    break
                except FragmentStoreError as exc:
                    log.warning("segment %s: fragment %d cannot be written to %s: %s", segment.segment_id, index,
                                target.url, exc)
                except NotEnoughFragments as exc:  # this segment cannot be rebuilt now; the others may be
                    job.errors.append(f"segment {segment.segment_id}: {exc}")
                    log.error("%s-%d: offloaded segment %s cannot be repaired: %s", partition.topic_name,
                              partition.index, segment.segment_id, exc)
                    return
            else:
                job.errors.append(f"segment {segment.segment_id}: fragment {index}: no store took it")
                continue
            job.repaired += 1
            self.health.get(segment.segment_id, {}).pop(index, None)
        if layout.stores != segment.stores:
            await self._update([replace(segment, stores=layout.stores)])
        log.info("%s-%d: repaired offloaded segment %s (fragments %s)", partition.topic_name, partition.index,
                 segment.segment_id, bad)

    def status(self) -> list[dict]:
        """Every manifest in the image, with its fragments' health as this broker's last scrub saw it."""
        rows = []
        image = self.broker.image
        for (topic_id, index), segments in sorted(image.remote_segments.items(), key=lambda item: str(item[0])):
            topic = image.topics_by_id.get(topic_id)
            for segment in sorted(segments.values(), key=lambda s: s.base_offset):
                health = self.health.get(segment.segment_id)
                rows.append({
                    "topic": topic.name if topic is not None else str(topic_id), "topic_id": str(topic_id),
                    "partition": index,
                    "segment_id": str(segment.segment_id), "state": segment.state,
                    "base_offset": segment.base_offset, "end_offset": segment.end_offset, "size": segment.size,
                    "scheme": segment.scheme, "stores": list(segment.stores),
                    "checked": health is not None,
                    "bad_fragments": {str(i): stripes for i, stripes in (health or {}).items()},
                })
        return rows

    # -- orphans ---------------------------------------------------------------------------------

    async def collect_orphans(self) -> None:
        """Delete fragment objects that no manifest knows, of partitions led here and of topics gone: seen
        in an earlier image and no longer there, or, on the first pass, not in the image (caught up at
        registration): a topic this broker has not heard of yet may be offloading already."""
        image = self.broker.image
        known = {(url, f"{segment_key(segment)}.{index}") for segments in image.remote_segments.values()
                 for segment in segments.values() for index, url in enumerate(segment.stores)}
        led = {(str(p.topic_id), str(p.index)) for p in self.broker.replicas.partitions.values() if p.is_leader}
        copying = {str(segment_id) for segment_id in self.copying}
        live_topics = {str(topic_id) for topic_id in image.topics_by_id}
        gone = {str(topic_id) for topic_id in self.seen_topics} - live_topics
        first_sweep = self.passes == 0

        def sweep() -> int:
            deleted = 0
            for url, store in self.stores.items():
                for object_key in list(store.keys()):
                    parts = object_key.rpartition(".")[0].split("/")
                    if len(parts) != 3 or (url, object_key) in known or parts[2].rpartition("-")[2] in copying:
                        continue
                    topic_gone = parts[0] in gone or (first_sweep and parts[0] not in live_topics)
                    if topic_gone or (parts[0], parts[1]) in led:
                        store.delete(object_key)
                        deleted += 1
            return deleted

        deleted = await trio.to_thread.run_sync(sweep, limiter=self.broker.io_limiter)
        if deleted:
            self.counters["orphans_deleted"] += deleted
            log.info("tiered storage: deleted %d orphan fragment objects", deleted)

    # -- reads -----------------------------------------------------------------------------------

    async def read_batches(self, partition, segment: RemoteSegmentRecord, offset: int, max_bytes: int,
                           upper_offset: int) -> list[bytes]:
        layout = layout_of(segment)
        try:
            return await self.reader.read_batches(codec_for(layout.scheme), layout, segment.index_position,
                                                  offset, max_bytes, upper_offset)
        except (NotEnoughFragments, FragmentStoreError, SegmentFormatError) as exc:
            raise self._read_failed(partition, segment, exc) from None

    async def _index(self, partition, segment: RemoteSegmentRecord):
        layout = layout_of(segment)
        try:
            return await self.reader.index(codec_for(layout.scheme), layout, segment.index_position)
        except (NotEnoughFragments, FragmentStoreError, SegmentFormatError) as exc:
            raise self._read_failed(partition, segment, exc) from None

    def _read_failed(self, partition, segment: RemoteSegmentRecord, exc: Exception) -> KafkaError:
        self.counters["read_errors"] += 1
        log.error("%s-%d: offloaded segment %s [%d, %d) cannot be read: %s", partition.topic_name, partition.index,
                  segment.segment_id, segment.base_offset, segment.end_offset, exc)
        return KafkaError(ErrorCode.kafka_storage_error, f"offloaded segment {segment.segment_id} cannot be read")

    async def first_with_timestamp(self, partition, segment: RemoteSegmentRecord, timestamp: int,
                                   from_offset: int) -> BatchLocation | None:
        index = await self._index(partition, segment)
        for position, (base, last, max_timestamp) in enumerate(zip(index.bases, index.lasts, index.max_timestamps)):
            if last >= from_offset and max_timestamp >= timestamp:
                return BatchLocation(base, last, max_timestamp, index.positions[position + 1] - index.positions[position])
        return None

    async def batch_with_max_timestamp(self, partition, segment: RemoteSegmentRecord) -> BatchLocation | None:
        return await self.first_with_timestamp(partition, segment, segment.max_timestamp, segment.base_offset)
