"""storage/producer_state.py: Kafka's sequence, epoch and transaction rules, with no log and no event loop."""

from __future__ import annotations

import pytest

from lodestream.storage.producer_state import (
    INT32_MAX,
    CoordinatorFenced,
    InvalidProducerEpoch,
    InvalidTxnState,
    OutOfOrderSequence,
    ProducerStateManager,
    last_sequence,
)

PID = 7


def append(state: ProducerStateManager, first_seq: int, count: int, base: int, epoch: int = 0,
           transactional: bool = False, pid: int = PID, client: bool = True):
    """Check then apply, as the replica manager does; returns the duplicate's offsets if it is one."""
    last_seq = last_sequence(first_seq, count - 1)
    duplicate = state.find_duplicate(pid, epoch, first_seq, last_seq)
    if duplicate is not None:
        return duplicate
    state.check_data(pid, epoch, first_seq, transactional, client)
    state.append_data(pid, epoch, first_seq, last_seq, base, base + count - 1, 1000 + base, transactional)
    return None


def test_in_order_batches_are_accepted_and_a_gap_is_out_of_order():
    state = ProducerStateManager()
    append(state, 0, 3, base=0)
    append(state, 3, 2, base=3)
    with pytest.raises(OutOfOrderSequence):
        append(state, 6, 1, base=5)  # 5 is missing
    with pytest.raises(OutOfOrderSequence):
        append(state, 4, 1, base=5)  # overlaps but is not a retained batch
    assert state.producers[PID].last_seq == 4


def test_a_retry_of_any_of_the_last_five_batches_is_a_duplicate_with_its_offsets():
    state = ProducerStateManager()
    for n in range(6):
        append(state, n * 2, 2, base=100 + n * 2)
    assert append(state, 2, 2, base=999) == (102, 103)  # batch 1 of 6: still retained
    assert append(state, 10, 2, base=999) == (110, 111)
    with pytest.raises(OutOfOrderSequence):  # batch 0 fell out of the 5 retained
        append(state, 0, 2, base=999)
    with pytest.raises(OutOfOrderSequence):  # same first sequence, other range: not a duplicate
        append(state, 2, 1, base=999)
    assert state.find_duplicate(PID, 1, 2, 3) is None  # another epoch never matches


def test_unknown_producer_may_start_at_any_sequence():
    state = ProducerStateManager()
    append(state, 42, 1, base=0)  # Kafka 2.5+: state may have expired or been deleted
    append(state, 43, 1, base=1)


def test_new_epoch_must_start_at_zero_and_old_epochs_are_fenced():
    state = ProducerStateManager()
    append(state, 0, 5, base=0, epoch=3)
    with pytest.raises(OutOfOrderSequence):
        append(state, 5, 1, base=5, epoch=4)
    append(state, 0, 1, base=5, epoch=4)
    with pytest.raises(InvalidProducerEpoch):
        append(state, 5, 1, base=6, epoch=3)
    assert state.producers[PID].epoch == 4
    assert state.producers[PID].batches == [(0, 0, 5, 5)]  # a new epoch drops the old batches


def test_sequences_wrap_at_int32_max():
    state = ProducerStateManager()
    append(state, INT32_MAX - 1, 2, base=0)  # sequences MAX-1, MAX
    assert state.producers[PID].last_seq == INT32_MAX
    append(state, 0, 3, base=2)
    assert last_sequence(INT32_MAX, 2) == 1
    state2 = ProducerStateManager()
    append(state2, INT32_MAX, 3, base=0)  # one batch across the wrap: MAX, 0, 1
    append(state2, 2, 1, base=3)
    assert append(state2, INT32_MAX, 3, base=9) == (0, 2)


def test_broker_written_batches_skip_sequence_checks_but_not_the_epoch():
    state = ProducerStateManager()
    append(state, 0, 1, base=0, epoch=2)
    append(state, 17, 1, base=1, epoch=2, client=False)
    with pytest.raises(InvalidProducerEpoch):
        append(state, 0, 1, base=2, epoch=1, client=False)


def test_transaction_open_commit_and_abort_move_the_lso_and_the_aborted_index():
    state = ProducerStateManager()
    assert state.first_unstable_offset() is None
    append(state, 0, 2, base=10, transactional=True)
    append(state, 0, 1, base=12, transactional=True, pid=8)
    append(state, 2, 1, base=13, transactional=True)
    assert state.first_unstable_offset() == 10
    assert state.producers[PID].txn_first_offset == 10
    with pytest.raises(InvalidTxnState):  # a plain batch inside an open transaction
        append(state, 3, 1, base=14)
    assert state.append_marker(PID, 0, 5, offset=14, commit=False, timestamp=2000) == 10
    assert state.first_unstable_offset() == 12
    assert state.append_marker(8, 0, 5, offset=15, commit=True, timestamp=2000) == 12
    assert state.first_unstable_offset() is None
    assert state.aborted == [(PID, 10, 14)]
    assert state.aborted_transactions(0, 100) == [(PID, 10)]
    assert state.aborted_transactions(14, 100) == [(PID, 10)]
    assert state.aborted_transactions(15, 100) == []  # ends before the fetched range
    assert state.aborted_transactions(0, 10) == []  # starts after it
    entry = state.producers[PID]
    assert (entry.coordinator_epoch, entry.last_timestamp, entry.txn_first_offset) == (5, 2000, None)
    # After the marker the producer's next batch opens a new transaction at its own offset.
    append(state, 3, 1, base=16, transactional=True)
    assert state.first_unstable_offset() == 16


def test_markers_with_an_old_producer_or_coordinator_epoch_are_refused():
    state = ProducerStateManager()
    append(state, 0, 1, base=0, epoch=5, transactional=True)
    state.check_marker(PID, 5, 0)
    state.check_marker(PID, 6, 0)  # a bumped epoch (KIP-890) is fine
    with pytest.raises(InvalidProducerEpoch):
        state.check_marker(PID, 4, 0)
    state.append_marker(PID, 6, 3, offset=1, commit=True, timestamp=0)
    with pytest.raises(CoordinatorFenced):
        state.check_marker(PID, 6, 2)
    state.check_marker(12345, 0, 0)  # a marker for an unknown producer is written (empty transaction)
    # The marker's epoch bump resets the sequence space: the producer restarts at 0.
    append(state, 0, 1, base=2, epoch=6)


def test_rollback_undoes_every_change_since_begin():
    state = ProducerStateManager()
    append(state, 0, 1, base=0, transactional=True)
    state.append_marker(PID, 0, 1, offset=1, commit=False, timestamp=0)
    append(state, 1, 1, base=2, transactional=True)
    before = (state.producers[PID].copy(), dict(state.open_txns), list(state.aborted))
    state.begin()
    append(state, 2, 1, base=3, transactional=True)
    state.append_marker(PID, 0, 1, offset=4, commit=False, timestamp=0)
    append(state, 0, 1, base=5, pid=99)
    state.rollback()
    assert (state.producers[PID], state.open_txns, state.aborted) == before
    assert 99 not in state.producers
    assert state.aborted_transactions(0, 100) == [(PID, 0)]
    state.begin()
    append(state, 2, 1, base=3, transactional=True)
    state.commit()
    state.rollback()  # nothing open: no effect
    assert state.producers[PID].last_seq == 2


def test_expiry_drops_idle_producers_without_an_open_transaction():
    state = ProducerStateManager()
    append(state, 0, 1, base=0)  # last timestamp 1000
    append(state, 0, 1, base=1, pid=8, transactional=True)  # 1001, transaction open
    assert state.remove_expired(now_ms=1000 + 500, expiration_ms=1000) == 0
    assert state.remove_expired(now_ms=5000, expiration_ms=1000) == 1
    assert set(state.producers) == {8}


def test_truncate_forgets_aborted_transactions_below_the_log_start():
    state = ProducerStateManager()
    for n, pid in enumerate((1, 2, 3)):
        append(state, 0, 1, base=n * 10, pid=pid, transactional=True)
        state.append_marker(pid, 0, 0, offset=n * 10 + 1, commit=False, timestamp=0)
    state.truncate_before(11)
    assert state.aborted_transactions(0, 100) == [(2, 10), (3, 20)]


def test_producer_id_blocks_in_the_metadata_image_never_move_back_and_survive_snapshots():
    from lodestream.consensus.image import MetadataImage, replay_all
    from lodestream.consensus.image_machine import image_from_snapshot, image_to_snapshot
    from lodestream.consensus.records import ProducerIdsRecord, decode_records, encode_records

    records = [ProducerIdsRecord(1, 1000), ProducerIdsRecord(1, 2000), ProducerIdsRecord(2, 1500)]
    assert decode_records(encode_records(records)) == records
    image = replay_all(MetadataImage(), records)
    assert image.next_producer_id == 2000
    assert image_from_snapshot(image_to_snapshot(image)).next_producer_id == 2000
