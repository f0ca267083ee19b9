"""LogStore / PartitionLog on a real LevelDB database in tmp_path."""

from __future__ import annotations

import uuid

import pytest

from lodestream.protocol.record_batch import parse_header, split_batches, stamp_for_append
from lodestream.storage.leveldb_log import LogStore, PartitionLog

import record_batches as rb

TOPIC_A = uuid.UUID(int=0xA)
TOPIC_B = uuid.UUID(int=0xB)


@pytest.fixture
def store(tmp_path):
    store = LogStore(tmp_path / "log", sync_writes=False)
    yield store
    store.close()


def entries(*raw_batches: bytes):
    """What prepare_append takes: (last_offset_delta, max_timestamp, size, view) per batch."""
    result = []
    for raw in raw_batches:
        for header, view in split_batches(raw):
            result.append((header.last_offset_delta, header.max_timestamp, header.size, view))
    return result


def stamp(epoch: int = 0):
    return lambda view, base: stamp_for_append(view, base, epoch, None)


def append(store: LogStore, log: PartitionLog, *raw_batches: bytes) -> int:
    pending = log.prepare_append(entries(*raw_batches), stamp())
    store.write([pending])
    log.complete_append(pending)
    return pending.base_offset


def batch(count: int, size: int = 20, ts: int = 1_000) -> bytes:
    return rb.simple_batch(count, value_size=size, timestamp=ts)


def bases(batches: list[bytes]) -> list[int]:
    return [parse_header(b).base_offset for b in batches]


def test_one_staged_write_covers_several_partitions_with_contiguous_offsets(store):
    a0, a1, b0 = store.partition(TOPIC_A, 0), store.partition(TOPIC_A, 1), store.partition(TOPIC_B, 0)
    first = [a0.prepare_append(entries(batch(3), batch(2)), stamp(5)),
             a1.prepare_append(entries(batch(1)), stamp(5)),
             b0.prepare_append(entries(batch(4)), stamp(5))]
    # A second append to a0 before the first is durable continues its offsets.
    second = a0.prepare_append(entries(batch(2)), stamp(5))
    assert [(p.base_offset, p.next_offset) for p in first] == [(0, 5), (0, 1), (0, 4)]
    assert (second.base_offset, second.next_offset) == (5, 7)
    # Nothing is visible before the write is committed and completed.
    assert a0.log_end_offset == 0 and a0.read(0, 1 << 20, 100) == []
    staged = store.stage([*first, second])
    assert all(p.batches == [] for p in first)
    staged.commit()
    for pending in [*first, second]:
        pending.log.complete_append(pending)
    assert (a0.log_end_offset, a1.log_end_offset, b0.log_end_offset) == (7, 1, 4)
    stored = a0.read(0, 1 << 20, a0.log_end_offset)
    assert bases(stored) == [0, 3, 5]
    assert [parse_header(b).partition_leader_epoch for b in stored] == [5, 5, 5]
    split_batches(b"".join(stored))  # CRCs intact
    assert [r.offset for r in rb.decode_records(b"".join(stored))] == list(range(7))
    assert [r.offset for r in rb.decode_records(b"".join(b0.read(0, 1 << 20, 4)))] == [0, 1, 2, 3]
    assert a0.size_bytes == sum(map(len, stored))


def test_stored_bytes_are_the_produced_bytes_with_offset_and_epoch_patched(store):
    log = store.partition(TOPIC_A, 0)
    raw = rb.build_batch([rb.Record(b"v%d" % i, key=b"k", headers=(("h", b"1"),), timestamp=10 + i)
                          for i in range(4)], compression=rb.ZSTD)
    append(store, log, batch(6))
    append(store, log, raw)
    (stored,) = log.read(6, 1 << 20, 10)
    assert stored[0:8] == (6).to_bytes(8, "big")
    assert stored[16:] == raw[16:]
    assert [(r.offset, r.value, r.timestamp) for r in rb.decode_batch(stored).records] == [
        (6 + i, b"v%d" % i, 10 + i) for i in range(4)]


@pytest.fixture
def three_batches(store):
    """Batches at offsets 0-2, 3-4 and 5, of 200, 100 and 150-byte values."""
    log = store.partition(TOPIC_A, 0)
    raws = [batch(3, 200), batch(2, 100), batch(1, 150)]
    for raw in raws:
        append(store, log, raw)
    return log, [len(r) for r in raws]


def test_read_from_inside_a_batch_returns_that_whole_batch(three_batches):
    log, _ = three_batches
    assert bases(log.read(1, 1 << 20, 6)) == [0, 3, 5]
    assert bases(log.read(2, 1 << 20, 6)) == [0, 3, 5]
    assert bases(log.read(4, 1 << 20, 6)) == [3, 5]
    assert bases(log.read(5, 1 << 20, 6)) == [5]
    assert log.read(6, 1 << 20, 6) == []


def test_read_stops_before_max_bytes_but_the_first_batch_may_exceed(three_batches):
    log, sizes = three_batches
    assert bases(log.read(0, sizes[0] + sizes[1], 6)) == [0, 3]
    assert bases(log.read(0, sizes[0] + sizes[1] - 1, 6)) == [0]
    assert bases(log.read(0, sizes[0] + sizes[1] + sizes[2], 6)) == [0, 3, 5]
    assert bases(log.read(0, 1, 6)) == [0]  # first batch larger than max_bytes still returned
    assert bases(log.read(0, 0, 6)) == [0]
    assert log.read(0, 1, 6, first_may_exceed=False) == []
    assert bases(log.read(0, sizes[0], 6, first_may_exceed=False)) == [0]


def test_read_respects_the_upper_offset(three_batches):
    log, _ = three_batches
    assert bases(log.read(0, 1 << 20, 3)) == [0]
    assert bases(log.read(0, 1 << 20, 4)) == [0, 3]  # a batch starting below the bound is whole
    assert log.read(0, 1 << 20, 0) == []
    assert log.read(3, 1 << 20, 3) == []


def test_locate_and_batch_locations(three_batches):
    log, sizes = three_batches
    assert [log._index.locate(o) for o in range(7)] == [0, 0, 0, 1, 1, 2, 3]
    assert [(b.base_offset, b.last_offset, b.size) for b in log.batch_locations()] == [
        (0, 2, sizes[0]), (3, 4, sizes[1]), (5, 5, sizes[2])]


def test_abort_append_rolls_back_offsets(store):
    log = store.partition(TOPIC_A, 0)
    append(store, log, batch(2))
    failed_first = log.prepare_append(entries(batch(3)), stamp())
    failed_second = log.prepare_append(entries(batch(1)), stamp())
    assert (failed_first.base_offset, failed_second.base_offset) == (2, 5)
    # The group's write failed (never committed): the committer aborts in reverse order.
    log.abort_append(failed_second)
    log.abort_append(failed_first)
    assert log.log_end_offset == 2
    assert bases(log.read(0, 1 << 20, 100)) == [0]
    retry = log.prepare_append(entries(batch(4)), stamp())
    assert retry.base_offset == 2
    store.write([retry])
    log.complete_append(retry)
    assert log.log_end_offset == 6
    assert [r.offset for r in rb.decode_records(b"".join(log.read(0, 1 << 20, 6)))] == list(range(6))


def test_delete_records_before_drops_whole_batches_below_the_new_start(store, tmp_path):
    log = store.partition(TOPIC_A, 0)
    for count in (3, 2, 1):
        append(store, log, batch(count))
    log.delete_records_before(4)  # inside the batch 3-4: that batch stays
    assert log.log_start_offset == 4
    assert [b.base_offset for b in log.batch_locations()] == [3, 5]
    assert bases(log.read(0, 1 << 20, 6)) == [3, 5]
    assert log.read_batch_at(0) is None
    log.delete_records_before(2)  # never moves backwards
    assert log.log_start_offset == 4
    log.delete_records_before(6)  # up to the end: everything gone, offsets continue
    assert (log.log_start_offset, log.log_end_offset) == (6, 6)
    assert log.batch_locations() == [] and log.size_bytes == 0
    assert append(store, log, batch(1)) == 6



def test_staged_delete_changes_nothing_until_committed_and_completed(store):
    log = store.partition(TOPIC_A, 0)
    for count in (3, 2):
        append(store, log, batch(count))
    assert log.stage_delete_before(0) is None  # not above the current start: nothing to do
    staged = log.stage_delete_before(3)
    assert log.log_start_offset == 0 and log.read_batch_at(0) is not None
    staged.commit()
    assert log.read_batch_at(0) is None  # durable now ...
    assert log.log_start_offset == 0 and list(log._index.bases) == [0, 3]  # ... not published
    log.complete_delete_before(staged)
    assert log.log_start_offset == 3 and [b.base_offset for b in log.batch_locations()] == [3]

def test_delete_records_beyond_the_end_moves_the_end(store):
    log = store.partition(TOPIC_A, 0)
    append(store, log, batch(2))
    log.delete_records_before(10)
    assert (log.log_start_offset, log.log_end_offset) == (10, 10)
    assert append(store, log, batch(1)) == 10


def test_reopen_recovers_index_log_start_and_log_end(tmp_path):
    path = tmp_path / "log"
    store = LogStore(path, sync_writes=True)
    log = store.partition(TOPIC_A, 0)
    other = store.partition(TOPIC_B, 2)
    raws = [batch(3, ts=100), batch(2, ts=300), batch(4, ts=200)]
    for raw in raws:
        append(store, log, raw)
    append(store, other, batch(5))
    log.delete_records_before(4)
    before = (log.batch_locations(), log.log_start_offset, log.log_end_offset, log.size_bytes,
              log.read(0, 1 << 20, 100))
    # An in-flight append that was never written must not survive.
    log.prepare_append(entries(batch(7)), stamp())
    store.close()

    reopened = LogStore(path)
    try:
        log = reopened.partition(TOPIC_A, 0)
        assert (log.batch_locations(), log.log_start_offset, log.log_end_offset, log.size_bytes,
                log.read(0, 1 << 20, 100)) == before
        assert (log.log_start_offset, log.log_end_offset) == (4, 9)
        assert log.active_batch_with_max_timestamp().base_offset == 3
        assert log.active_first_with_timestamp(150, 0).base_offset == 3
        assert log.active_first_with_timestamp(301, 0) is None
        assert append(reopened, log, batch(1)) == 9
        other = reopened.partition(TOPIC_B, 2)
        assert (other.log_start_offset, other.log_end_offset) == (0, 5)
        assert reopened.partition(TOPIC_B, 0).log_end_offset == 0
    finally:
        reopened.close()


def test_reopen_after_deleting_everything_keeps_the_start_offset(tmp_path):
    path = tmp_path / "log"
    store = LogStore(path)
    log = store.partition(TOPIC_A, 0)
    append(store, log, batch(3))
    log.delete_records_before(8)
    store.close()
    reopened = LogStore(path)
    try:
        log = reopened.partition(TOPIC_A, 0)
        assert (log.log_start_offset, log.log_end_offset, log.batch_locations()) == (8, 8, [])
        assert append(reopened, log, batch(1)) == 8
    finally:
        reopened.close()


def test_existing_partitions_and_drop_partition(tmp_path):
    path = tmp_path / "log"
    store = LogStore(path)
    append(store, store.partition(TOPIC_A, 0), batch(1))
    append(store, store.partition(TOPIC_A, 1), batch(2))
    append(store, store.partition(TOPIC_B, 0), batch(1))
    trimmed = store.partition(TOPIC_B, 7)
    append(store, trimmed, batch(1))
    trimmed.delete_records_before(1)  # only the meta key is left
    store.partition(TOPIC_B, 9)  # opened but never written: nothing stored
    assert store.existing_partitions() == {(TOPIC_A, 0), (TOPIC_A, 1), (TOPIC_B, 0), (TOPIC_B, 7)}

    store.drop_partition(TOPIC_A, 1)
    store.drop_partition(TOPIC_B, 7)
    assert store.existing_partitions() == {(TOPIC_A, 0), (TOPIC_B, 0)}
    fresh = store.partition(TOPIC_A, 1)
    assert (fresh.log_start_offset, fresh.log_end_offset, fresh.batch_locations()) == (0, 0, [])
    assert store.partition(TOPIC_B, 7).log_start_offset == 0
    # Neighbours are untouched.
    assert bases(store.partition(TOPIC_A, 0).read(0, 1 << 20, 10)) == [0]
    store.close()

    reopened = LogStore(path)
    try:
        assert reopened.existing_partitions() == {(TOPIC_A, 0), (TOPIC_B, 0)}
        assert reopened.partition(TOPIC_A, 1).log_end_offset == 0
        assert reopened.partition(TOPIC_B, 0).log_end_offset == 1
    finally:
        reopened.close()


def test_partition_logs_are_cached_per_store(store):
    assert store.partition(TOPIC_A, 0) is store.partition(TOPIC_A, 0)
    assert store.partition(TOPIC_A, 0) is not store.partition(TOPIC_A, 1)


def test_partitions_sharing_a_key_prefix_do_not_see_each_other(store):
    # Partition 1 and partition 256 differ only in the last byte of the 4-byte index.
    p1, p256 = store.partition(TOPIC_A, 1), store.partition(TOPIC_A, 256)
    append(store, p1, batch(2))
    append(store, p256, batch(5))
    assert p1.log_end_offset == 2 and p256.log_end_offset == 5
    assert [r.offset for r in rb.decode_records(b"".join(p1.read(0, 1 << 20, 10)))] == [0, 1]


def test_delete_beyond_the_end_during_an_in_flight_append_keeps_offsets_unique(store):
    log = store.partition(TOPIC_A, 0)
    append(store, log, batch(2))  # offsets 0-1
    in_flight = log.prepare_append(entries(batch(4)), stamp())  # offsets 2-5, not yet written
    log.delete_records_before(4)
    store.write([in_flight])
    log.complete_append(in_flight)
    following = log.prepare_append(entries(batch(1)), stamp())
    assert following.base_offset >= in_flight.next_offset


# -- segments and retention ------------------------------------------------------------------


def reopen(store: LogStore, tmp_path) -> tuple[LogStore, PartitionLog]:
    store.close()
    fresh = LogStore(tmp_path / "log", sync_writes=False)
    return fresh, fresh.partition(TOPIC_A, 0)


def test_segments_roll_by_bytes_and_survive_a_restart(tmp_path):
    store = LogStore(tmp_path / "log", sync_writes=False)
    log = store.partition(TOPIC_A, 0)
    one = len(batch(1, size=100))
    log.segment_bytes = 3 * one  # three batches per segment
    for _ in range(7):
        append(store, log, batch(1, size=100))
    infos = log.segment_infos()
    assert [(i.base_offset, i.end_offset, i.size, i.closed) for i in infos] == [
        (0, 3, 3 * one, True), (3, 6, 3 * one, True), (6, 7, one, False)]
    store, log = reopen(store, tmp_path)
    assert [(i.base_offset, i.end_offset, i.size) for i in log.segment_infos()] == [
        (0, 3, 3 * one), (3, 6, 3 * one), (6, 7, one)]
    log.segment_bytes = 3 * one
    append(store, log, batch(1, size=100))  # the active segment (one batch) takes two more
    assert [i.base_offset for i in log.segment_infos()] == [0, 3, 6]
    store.close()


def test_segments_roll_by_age(store):
    log = store.partition(TOPIC_A, 0)
    append(store, log, batch(1))
    log.segment_ms = 1
    log.segments[-1].created_ms -= 10  # the active segment is older than segment.ms
    append(store, log, batch(1))
    assert [i.base_offset for i in log.segment_infos()] == [0, 1]


def test_time_retention_deletes_whole_segments_by_their_largest_timestamp(tmp_path):
    store = LogStore(tmp_path / "log", sync_writes=False)
    log = store.partition(TOPIC_A, 0)
    log.segment_bytes = 2 * len(batch(1, ts=1))
    for ts in (1_000, 5_000, 2_000, 9_000, 3_000):  # segments [0,2) max 5000, [2,4) max 9000, [4,5) max 3000
        append(store, log, batch(1, ts=ts))
    assert log.retention_offset(now_ms=10_000, retention_ms=4_500, retention_bytes=-1) == 2  # 2nd: 9000 is recent
    assert log.retention_offset(now_ms=10_000, retention_ms=5_000, retention_bytes=-1) is None  # not *more* than
    assert log.retention_offset(now_ms=10_000, retention_ms=500, retention_bytes=-1) == 5  # all, the active too
    assert log.retention_offset(now_ms=10_000, retention_ms=-1, retention_bytes=-1) is None
    log.delete_records_before(2)
    assert log.log_start_offset == 2 and [i.base_offset for i in log.segment_infos()] == [2, 4]
    store, log = reopen(store, tmp_path)
    assert log.log_start_offset == 2 and [i.base_offset for i in log.segment_infos()] == [2, 4]
    log.delete_records_before(5)  # everything: the active segment stays, empty
    assert [(i.base_offset, i.size) for i in log.segment_infos()] == [(4, 0)]
    append(store, log, batch(1))
    assert log.log_end_offset == 6 and log.segment_infos()[-1].size == len(batch(1))
    store.close()


def test_size_retention_keeps_at_least_retention_bytes(store):
    log = store.partition(TOPIC_A, 0)
    one = len(batch(1))
    log.segment_bytes = one  # one batch per segment
    for _ in range(5):
        append(store, log, batch(1))
    assert log.retention_offset(now_ms=0, retention_ms=-1, retention_bytes=2 * one) == 3
    assert log.retention_offset(now_ms=0, retention_ms=-1, retention_bytes=2 * one + 1) == 2
    assert log.retention_offset(now_ms=0, retention_ms=-1, retention_bytes=10 * one) is None


def test_deleted_segments_give_their_space_back(tmp_path):
    store = LogStore(tmp_path / "log", sync_writes=False)
    log = store.partition(TOPIC_A, 0)
    log.segment_bytes = 1 << 20
    payload = __import__("os").urandom(200_000)
    for _ in range(100):  # 20 MB of incompressible batches
        append(store, log, rb.value_batch([payload]))
    store.db.compact_range()
    before = sum(f.stat().st_size for f in (tmp_path / "log").iterdir())
    end = log.retention_offset(now_ms=0, retention_ms=-1, retention_bytes=2 << 20)
    log.delete_records_before(end)
    log.compact_below(end)
    after = sum(f.stat().st_size for f in (tmp_path / "log").iterdir())
    print(f"LevelDB directory {before} -> {after} bytes (retention.bytes 2 MiB of 20 MB, range compacted)")
    assert before > 19_000_000 and after < 6_000_000, (before, after)
    store.close()


def append_in_epoch(store: LogStore, log: PartitionLog, epoch: int, *raw_batches: bytes) -> int:
    pending = log.prepare_append(entries(*raw_batches), stamp(epoch), epoch=epoch)
    store.write([pending])
    log.complete_append(pending)
    return pending.base_offset


def test_the_leader_epoch_cache_answers_where_each_epoch_ends_and_survives_a_restart(tmp_path):
    store = LogStore(tmp_path / "log", sync_writes=False)
    log = store.partition(TOPIC_A, 0)
    append_in_epoch(store, log, 0, batch(3))
    append_in_epoch(store, log, 0, batch(2))
    append_in_epoch(store, log, 4, batch(5))  # epochs 1-3 wrote nothing here
    assert log.epochs == [(0, 0), (4, 5)]
    assert log.end_offset_for_epoch(0) == (0, 5)
    assert log.end_offset_for_epoch(2) == (0, 5)  # the largest epoch at or below the one asked for
    assert log.end_offset_for_epoch(4) == (4, 10)  # the current epoch ends at the log end
    store.close()
    store = LogStore(tmp_path / "log", sync_writes=False)
    assert store.partition(TOPIC_A, 0).epochs == [(0, 0), (4, 5)]
    store.close()


def test_replicated_batches_keep_their_offsets_and_gaps(store):
    leader, follower = store.partition(TOPIC_A, 0), store.partition(TOPIC_B, 0)
    append_in_epoch(store, leader, 2, batch(3))
    append_in_epoch(store, leader, 2, batch(2))
    stored = leader.read(0, 1 << 20, leader.log_end_offset)
    # A compacted log may have gaps: drop the first batch and shift nothing.
    pending = follower.prepare_append(entries(stored[1]), lambda view, base: bytes(view), epoch=2, keep_offsets=True)
    store.write([pending])
    follower.complete_append(pending)
    assert (follower.log_end_offset, follower.read(0, 1 << 20, 10) == [stored[1]]) == (5, True)
    with pytest.raises(Exception, match="overlaps"):
        follower.prepare_append(entries(stored[0]), lambda view, base: bytes(view), epoch=2, keep_offsets=True)


def test_truncate_to_cuts_closed_segments_too_and_rebuilds_the_log(tmp_path):
    store = LogStore(tmp_path / "log", sync_writes=False)
    log = store.partition(TOPIC_A, 0)
    log.segment_bytes = 1  # every batch rolls a segment
    for epoch in (0, 0, 1, 2):
        append_in_epoch(store, log, epoch, batch(2))
    assert len(log.segments) == 4 and log.log_end_offset == 8
    log.truncate_to(3)  # inside the second batch: it goes whole
    assert (log.log_end_offset, log.epochs, len(log.segments)) == (2, [(0, 0)], 1)
    assert bases(log.read(0, 1 << 20, 100)) == [0]
    assert append_in_epoch(store, log, 3, batch(1)) == 2  # appends continue from the cut
    store.close()
    store = LogStore(tmp_path / "log", sync_writes=False)
    reopened = store.partition(TOPIC_A, 0)
    assert (reopened.log_end_offset, reopened.epochs) == (3, [(0, 0), (3, 2)])
    assert bases(reopened.read(0, 1 << 20, 100)) == [0, 2]
    store.close()
