"""The bounded in-memory index (storage/leveldb_log.py): only the active segment has per-batch entries in
memory, closed segments are known by their stored summaries, reads and timestamp lookups in them go to
LevelDB, and opening a log replays producer state only after its newest snapshot. On a real LevelDB."""

from __future__ import annotations

import time
import uuid

from lodestream.protocol.record_batch import split_batches, stamp_for_append
from lodestream.storage.leveldb_log import (
    INDEX_ENTRY_BYTES, SEGMENT, SNAPSHOT, LogStore, _SEGMENT_VALUE, partition_prefix, producer_index_tail)
from lodestream.storage.producer_state import last_sequence

import record_batches as rb

TOPIC = uuid.UUID(int=0x5E)


NOW = int(time.time() * 1000)  # producers idle longer than producer.id.expiration.ms are forgotten at open


def append(store: LogStore, log, raw: bytes, producer: tuple[int, int] | None = None) -> tuple[int, int]:
    """As the committer: assign, change producer state, write (one WriteBatch), publish."""
    entries = [(h.last_offset_delta, h.max_timestamp, h.size, view) for h, view in split_batches(raw)]
    tail = b"" if producer is None else producer_index_tail(producer[0], 0, producer[1], 0)
    pending = log.prepare_append(entries, lambda view, base: stamp_for_append(view, base, 0, None), tail)
    base, last = pending.index_entries[0][:2]
    if producer is not None:
        pid, sequence = producer
        log.producers.append_data(pid, 0, sequence, last_sequence(sequence, last - base), base, last, NOW, False)
    store.write([pending])
    log.complete_append(pending)
    return base, last


def fill(store: LogStore, log, batches: int, producers: int = 3) -> None:
    """`batches` batches of 2 records, round-robin over idempotent producers, timestamps rising."""
    sequences = [0] * producers
    for n in range(batches):
        pid = n % producers
        raw = rb.build_batch([rb.Record(value=b"v%d" % n, key=b"k", timestamp=NOW + n) for _ in range(2)],
                             producer_id=1000 + pid, producer_epoch=0, base_sequence=sequences[pid])
        append(store, log, raw, (1000 + pid, sequences[pid]))
        sequences[pid] += 2


def filled(path, batches: int, batches_per_segment: int = 10):
    """A store whose partition got `batches` batches, its active segment rolling every `batches_per_segment`."""
    store = LogStore(path, sync_writes=False)
    log = store.partition(TOPIC, 0)
    log.segment_index_bytes = batches_per_segment * INDEX_ENTRY_BYTES
    fill(store, log, batches)
    return store, log


def state_of(log) -> dict:
    return {pid: (entry.epoch, list(entry.batches)) for pid, entry in log.producers.producers.items()}


def test_only_the_active_segment_is_indexed_in_memory_and_reads_reach_closed_ones(tmp_path):
    store = LogStore(tmp_path / "log", sync_writes=False)
    log = store.partition(TOPIC, 0)
    log.segment_index_bytes = 10 * INDEX_ENTRY_BYTES  # the active segment rolls at 10 batches
    fill(store, log, 95)
    assert [info.base_offset for info in log.segment_infos()] == list(range(0, 190, 20))
    assert len(log._index) == 5 and log._index.bases[0] == 180
    assert all(info.size > 0 and info.max_timestamp >= 0 for info in log.segment_infos())
    assert log.size_bytes == sum(info.size for info in log.segment_infos())
    assert log.plan_read(3, 1 << 20, 190) is None  # in a closed segment: read_stored finds it
    bases, size, batches = log.read_stored(3, 1 << 20, 190)
    assert bases == list(range(2, 190, 2)) and len(batches) == 94  # from the batch holding offset 3, across segments
    assert size == sum(map(len, batches))
    assert log.read_stored(3, 1, 190)[0] == [2]  # the first batch even when larger than max_bytes
    assert log.read_stored(40, 1 << 20, 44)[0] == [40, 42]  # upper offset respected
    # Timestamp lookups: summaries pick the segment, LevelDB the batch.
    assert log.closed_ranges_reaching(NOW + 50, 0) == [(100, 120), (120, 140), (140, 160), (160, 180)]
    assert log.closed_ranges_reaching(NOW + 50, 165) == [(160, 180)]
    assert log.scan_first_with_timestamp(100, 120, NOW + 50).base_offset == 100
    assert log.scan_first_with_timestamp(160, 180, NOW + 50, 165).base_offset == 164  # the batch holding 165
    assert log.active_first_with_timestamp(NOW + 93, 0).base_offset == 186
    assert log.max_timestamp_range() is None and log.active_batch_with_max_timestamp().base_offset == 188
    store.close()


def test_reopening_replays_only_after_the_newest_snapshot(tmp_path):
    path = tmp_path / "log"
    store, log = filled(path, 95)
    expected = (state_of(log), log.log_start_offset, log.log_end_offset, log.size_bytes, log.segment_infos())
    store.db.close()  # a crash: no snapshot at close; the newest is the one written with the last roll

    crashed = LogStore(path, sync_writes=False)
    log = crashed.partition(TOPIC, 0)
    assert (state_of(log), log.log_start_offset, log.log_end_offset, log.size_bytes, log.segment_infos()) == expected
    # The roll's write (the batch at 180) held the snapshot, so the other 4 batches of the active segment
    # are replayed, not 95.
    assert log.replayed_batches == 4 and len(log._index) == 5
    crashed.close()  # a clean close stores the state at the log end

    clean = LogStore(path, sync_writes=False)
    log = clean.partition(TOPIC, 0)
    assert state_of(log) == expected[0] and log.replayed_batches == 0
    snapshots = list(clean.db.iterator(prefix=partition_prefix(SNAPSHOT, TOPIC, 0), include_value=False))
    assert len(snapshots) == 2  # older ones are deleted as new ones are taken
    clean.close()


def test_a_log_from_before_summaries_and_snapshots_is_summed_once(tmp_path):
    path = tmp_path / "log"
    store, log = filled(path, 45)
    expected = (state_of(log), log.log_end_offset, log.size_bytes, log.segment_infos())
    # Rewrite it as the previous format stored it: segment keys with only their creation time, no snapshots.
    with store.db.write_batch() as batch:
        for key, value in store.db.iterator(prefix=partition_prefix(SEGMENT, TOPIC, 0)):
            batch.put(key, _SEGMENT_VALUE.pack(_SEGMENT_VALUE.unpack_from(value)[0]))
        for key in store.db.iterator(prefix=partition_prefix(SNAPSHOT, TOPIC, 0), include_value=False):
            batch.delete(key)
    store.db.close()

    old = LogStore(path, sync_writes=False)
    log = old.partition(TOPIC, 0)
    assert (state_of(log), log.log_end_offset, log.size_bytes, log.segment_infos()) == expected
    assert log.replayed_batches == 45  # everything, once
    old.db.close()
    again = LogStore(path, sync_writes=False)
    log = again.partition(TOPIC, 0)
    assert (state_of(log), log.log_end_offset, log.size_bytes, log.segment_infos()) == expected
    assert log.replayed_batches == 0  # summaries and a snapshot were stored
    again.close()


def test_delete_records_inside_a_closed_segment_shrinks_its_stored_summary(tmp_path):
    path = tmp_path / "log"
    store, log = filled(path, 35)
    kept = sum(batch.size for batch in log.batch_locations() if 24 <= batch.base_offset < 40)
    log.delete_records_before(25)  # inside the second segment [20, 40): batches 0-22 go, 24 holds offset 25
    infos = log.segment_infos()
    assert [info.base_offset for info in infos] == [20, 40, 60]
    assert infos[0].size == kept and log.size_bytes == sum(info.size for info in infos)
    assert log.read_stored(25, 1 << 20, 30)[0] == [24, 26, 28]
    expected = (log.log_start_offset, log.size_bytes, infos)
    store.close()
    reopened = LogStore(path, sync_writes=False)
    log = reopened.partition(TOPIC, 0)
    assert (log.log_start_offset, log.size_bytes, log.segment_infos()) == expected
    reopened.close()


def test_the_active_index_is_bounded_by_segment_index_bytes(tmp_path):
    store = LogStore(tmp_path / "log", sync_writes=False)
    log = store.partition(TOPIC, 0)
    log.segment_index_bytes = 4 * INDEX_ENTRY_BYTES
    for _ in range(3):
        fill(store, log, 10)
        assert len(log._index) <= 4
    assert len(log.segments) == 8  # 30 batches, 4 per segment
    store.close()
