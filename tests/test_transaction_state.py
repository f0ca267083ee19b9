"""The transaction state machine (broker/transactions/state.py), pure: every transition and the
error of every refused request, as Kafka's TransactionCoordinator decides them."""

from __future__ import annotations

import itertools

import pytest

from lodestream.broker.transactions import state as sm
from lodestream.broker.transactions.state import InitAction, TxnMetadata, TxnState
from lodestream.broker.transactions.state_log import decode_key, decode_value, txn_key, txn_value
from lodestream.protocol.errors import ErrorCode

E, O, PC, PA, CC, CA, DEAD, FENCE = TxnState
TP = ("t", 0)
NOW = 1_000_000


def md(state=E, epoch=0, pid=1000, **kw) -> TxnMetadata:
    return TxnMetadata("tx", pid, producer_epoch=epoch, state=state, **kw)


def ongoing(epoch=0, **kw) -> TxnMetadata:
    return md(O, epoch, partitions=frozenset({TP}), txn_start_ms=NOW, **kw)


def test_valid_transitions_are_kafkas_and_nothing_else():
    allowed = {(a, b) for b, previous in sm.VALID_PREVIOUS.items() for a in previous}
    for a, b in itertools.product(TxnState, TxnState):
        if (a, b) in allowed:
            assert md(a).transit(b).state == b
        else:
            with pytest.raises(sm.IllegalTransition):
                md(a).transit(b)
    # The life of a transaction, both ways.
    assert (O, PC) in allowed and (PC, CC) in allowed and (O, PA) in allowed and (PA, CA) in allowed
    assert (O, FENCE) in allowed and (FENCE, PA) in allowed
    assert (CC, O) in allowed and (CA, E) in allowed and (CC, DEAD) in allowed
    assert (PC, PA) not in allowed and (PA, PC) not in allowed and (O, CC) not in allowed


# -- InitProducerId ------------------------------------------------------------------------------


def test_init_new_id_gets_epoch_zero():
    new = sm.new_metadata("tx", 7, 60_000, NOW)
    assert new.producer_epoch == -1 and new.state == E
    assert sm.check_init(new, False, None) is None
    bumped = sm.prepare_increment_epoch(new, 30_000, None, NOW)
    assert (bumped.producer_id, bumped.producer_epoch, bumped.timeout_ms, bumped.state) == (7, 0, 30_000, E)


@pytest.mark.parametrize("state", [E, CC, CA])
def test_init_after_a_transaction_bumps_the_epoch(state):
    current = md(state, epoch=3, partitions=frozenset())
    assert sm.check_init(current, False, None) is None
    bumped = sm.prepare_increment_epoch(current, 60_000, None, NOW)
    assert bumped.producer_epoch == 4 and bumped.last_producer_epoch == -1 and bumped.state == E


def test_init_on_ongoing_fences_and_on_prepare_is_concurrent():
    assert sm.check_init(ongoing(), False, None) == InitAction.FENCE
    assert sm.check_init(md(PC), False, None) == ErrorCode.concurrent_transactions
    assert sm.check_init(md(PA), False, None) == ErrorCode.concurrent_transactions
    assert sm.check_init(md(E), True, None) == ErrorCode.concurrent_transactions  # a write in flight
    fenced = sm.prepare_fence_epoch(ongoing(epoch=5))
    assert fenced.state == FENCE and fenced.producer_epoch == 6 and fenced.last_producer_epoch == -1
    with pytest.raises(sm.IllegalTransition):
        sm.prepare_fence_epoch(ongoing(epoch=sm.SHORT_MAX))


def test_init_with_exhausted_epoch_rotates_the_producer_id():
    exhausted = md(CA, epoch=sm.SHORT_MAX - 1)
    assert sm.check_init(exhausted, False, None) == InitAction.ROTATE
    rotated = sm.prepare_producer_id_rotation(exhausted, 2000, 60_000, NOW, record_last_epoch=False)
    assert (rotated.producer_id, rotated.producer_epoch, rotated.previous_producer_id) == (2000, 0, 1000)
    assert rotated.last_producer_epoch == -1
    # KIP-360: a client that sent its id and epoch can retry and be recognised.
    with_expected = sm.prepare_producer_id_rotation(exhausted, 2000, 60_000, NOW, record_last_epoch=True)
    assert with_expected.last_producer_epoch == sm.SHORT_MAX - 1
    assert sm.check_init(with_expected, False, (1000, sm.SHORT_MAX - 1)) is None  # previous id, exhausted epoch
    with pytest.raises(sm.IllegalTransition):
        sm.prepare_increment_epoch(exhausted, 60_000, None, NOW)
    with pytest.raises(sm.IllegalTransition):
        sm.prepare_producer_id_rotation(ongoing(), 2000, 60_000, NOW, False)


def test_init_kip360_expected_producer():
    current = md(CA, epoch=4, last_producer_epoch=3)
    assert sm.check_init(current, False, (999, 4)) == ErrorCode.producer_fenced  # another producer id
    # Same id and current epoch: bump, remembering the last epoch.
    bumped = sm.prepare_increment_epoch(current, 60_000, 4, NOW)
    assert (bumped.producer_epoch, bumped.last_producer_epoch) == (5, 4)
    # A retry of that bump (the client still has epoch 4, we are at 5 with last 4): same answer.
    retried = sm.prepare_increment_epoch(bumped, 60_000, 4, NOW)
    assert (retried.producer_epoch, retried.last_producer_epoch) == (5, 4)
    # Any other epoch is a fenced producer.
    assert sm.prepare_increment_epoch(bumped, 60_000, 2, NOW) == ErrorCode.producer_fenced
    # A metadata without an epoch yet accepts any id (idempotent producer turning transactional).
    fresh = sm.new_metadata("tx", 7, 60_000, NOW)
    assert sm.check_init(fresh, False, (42, 3)) is None
    assert sm.prepare_increment_epoch(fresh, 60_000, 3, NOW).producer_epoch == 0


# -- AddPartitionsToTxn / verification -----------------------------------------------------------------


def test_add_partitions_checks_and_transition():
    current = md(E, epoch=2)
    assert sm.check_add_partitions(None, False, 1000, 2, [TP]) == ErrorCode.invalid_producer_id_mapping
    assert sm.check_add_partitions(current, False, 999, 2, [TP]) == ErrorCode.invalid_producer_id_mapping
    assert sm.check_add_partitions(current, False, 1000, 1, [TP]) == ErrorCode.producer_fenced
    assert sm.check_add_partitions(current, True, 1000, 2, [TP]) == ErrorCode.concurrent_transactions
    assert sm.check_add_partitions(md(PC, 2), False, 1000, 2, [TP]) == ErrorCode.concurrent_transactions
    assert sm.check_add_partitions(md(PA, 2), False, 1000, 2, [TP]) == ErrorCode.concurrent_transactions
    assert sm.check_add_partitions(current, False, 1000, 2, [TP]) is None
    added = sm.prepare_add_partitions(current, [TP], NOW)
    assert added.state == O and added.partitions == {TP} and added.txn_start_ms == NOW
    # Already there: answered at once; a new one keeps the start time.
    assert sm.check_add_partitions(added, False, 1000, 2, [TP]) == ErrorCode.none
    more = sm.prepare_add_partitions(added, [("t", 1)], NOW + 5)
    assert more.partitions == {TP, ("t", 1)} and more.txn_start_ms == NOW and more.last_update_ms == NOW + 5
    # After a completed transaction the start time is new.
    assert sm.prepare_add_partitions(md(CC, 2), [TP], NOW + 9).txn_start_ms == NOW + 9


def test_verify_partitions():
    txn = ongoing(epoch=2)
    assert sm.verify_partitions(txn, 1000, 2, [TP, ("t", 1)]) == {TP: ErrorCode.none,
                                                                 ("t", 1): ErrorCode.transaction_abortable}
    assert sm.verify_partitions(txn, 1000, 1, [TP]) == ErrorCode.producer_fenced
    assert sm.verify_partitions(txn, 5, 2, [TP]) == ErrorCode.invalid_producer_id_mapping
    assert sm.verify_partitions(None, 5, 2, [TP]) == ErrorCode.invalid_producer_id_mapping
    assert sm.verify_partitions(md(PC, 2, partitions=frozenset({TP})), 1000, 2, [TP]) == ErrorCode.concurrent_transactions


# -- EndTxn (TV1: v0-4) -----------------------------------------------------------------------------


def end(current, commit=True, epoch=0, pid=1000, pending=None, from_client=True, tv2=False):
    return sm.check_end(current, pending, pid, epoch, commit, from_client, tv2)


def test_end_commit_and_abort_of_an_ongoing_transaction():
    txn = ongoing()
    decision = end(txn, commit=True)
    assert decision.error is None and decision.next_state == PC
    prepared = sm.prepare_abort_or_commit(txn, PC, False, -1, NOW + 1)
    assert prepared.state == PC and prepared.producer_epoch == 0 and prepared.partitions == {TP}
    completed = sm.prepare_complete(prepared, NOW + 2)
    assert completed.state == CC and completed.partitions == frozenset() and completed.producer_epoch == 0
    assert end(txn, commit=False).next_state == PA
    aborted = sm.prepare_complete(sm.prepare_abort_or_commit(txn, PA, False, -1, NOW), NOW)
    assert aborted.state == CA


def test_end_errors():
    txn = ongoing(epoch=3)
    assert end(None).error == ErrorCode.invalid_producer_id_mapping
    assert end(txn, epoch=3, pid=7).error == ErrorCode.invalid_producer_id_mapping
    assert end(txn, epoch=2).error == ErrorCode.producer_fenced
    assert end(txn, epoch=4).error == ErrorCode.producer_fenced  # clients never bump the epoch themselves
    assert end(txn, epoch=3, pending=txn).error == ErrorCode.concurrent_transactions


def test_end_retries_after_completion():
    # Same result again: success, nothing written. The opposite: INVALID_TXN_STATE.
    assert end(md(CC), commit=True).error == ErrorCode.none
    assert end(md(CC), commit=False).error == ErrorCode.invalid_txn_state
    assert end(md(CA), commit=False).error == ErrorCode.none
    assert end(md(CA), commit=True).error == ErrorCode.invalid_txn_state
    # While the markers are written: the same result is retriable, the opposite is not.
    assert end(md(PC), commit=True).error == ErrorCode.concurrent_transactions
    assert end(md(PC), commit=False).error == ErrorCode.invalid_txn_state
    assert end(md(PA), commit=False).error == ErrorCode.concurrent_transactions
    assert end(md(PA), commit=True).error == ErrorCode.invalid_txn_state
    # No transaction at all.
    assert end(md(E), commit=True).error == ErrorCode.invalid_txn_state
    assert end(md(E), commit=False).error == ErrorCode.invalid_txn_state


def test_end_by_the_coordinator_with_a_fenced_epoch():
    txn = ongoing(epoch=3)
    fenced = sm.prepare_fence_epoch(txn)
    decision = end(txn, commit=False, epoch=fenced.producer_epoch, pending=fenced, from_client=False)
    assert decision.next_state == PA
    prepared = sm.prepare_abort_or_commit(fenced, PA, False, -1, NOW)
    assert prepared.state == PA and prepared.producer_epoch == 4 and prepared.last_producer_epoch == -1
    # The old producer's own EndTxn now fails.
    assert end(prepared, commit=True, epoch=3).error == ErrorCode.producer_fenced


def test_timeout_abort_racing_a_commit_whose_markers_are_being_written():
    """The commit won: PrepareCommit is durable and its markers are being written. The timeout check
    must not touch it (only Ongoing transactions time out), and a fence is refused."""
    txn = ongoing(epoch=3, timeout_ms=1000)
    prepared = sm.prepare_abort_or_commit(txn, PC, False, -1, NOW + 10)
    assert sm.is_timed_out(txn, NOW + 1001)
    assert not sm.is_timed_out(prepared, NOW + 10**9)
    with pytest.raises(sm.IllegalTransition):
        sm.prepare_fence_epoch(prepared)
    assert sm.check_init(prepared, False, None) == ErrorCode.concurrent_transactions
    assert end(prepared, commit=False, epoch=4, from_client=False).error == ErrorCode.invalid_txn_state
    completed = sm.prepare_complete(prepared, NOW + 20)
    assert completed.state == CC and not sm.is_timed_out(completed, NOW + 10**9)


def test_commit_racing_a_timeout_abort_whose_markers_are_being_written():
    """The timeout won: PrepareAbort with the bumped epoch is durable; the producer's commit is fenced."""
    txn = ongoing(epoch=3, timeout_ms=1000)
    fenced = sm.prepare_fence_epoch(txn)
    aborting = sm.prepare_abort_or_commit(fenced, PA, False, -1, NOW + 1001)
    assert end(aborting, commit=True, epoch=3).error == ErrorCode.producer_fenced
    assert sm.check_add_partitions(aborting, False, 1000, 3, [TP]) == ErrorCode.producer_fenced
    assert sm.verify_partitions(aborting, 1000, 3, [TP]) == ErrorCode.producer_fenced
    done = sm.prepare_complete(aborting, NOW + 1002)
    assert done.state == CA and done.producer_epoch == 4
    assert end(done, commit=True, epoch=3).error == ErrorCode.producer_fenced


# -- EndTxn v5 (TV2, KIP-890 part 2) -----------------------------------------------------------------


def test_tv2_end_bumps_the_epoch_and_retries_are_recognised():
    txn = ongoing(epoch=3)
    decision = end(txn, commit=True, epoch=3, tv2=True)
    assert decision.next_state == PC
    prepared = sm.prepare_abort_or_commit(txn, PC, True, -1, NOW)
    assert (prepared.producer_epoch, prepared.last_producer_epoch, prepared.tv2) == (4, 3, True)
    assert sm.end_response_producer(prepared) == (1000, 4)
    assert end(prepared, commit=True, epoch=3, tv2=True).error == ErrorCode.concurrent_transactions
    done = sm.prepare_complete(prepared, NOW)
    assert done.producer_epoch == 4
    # A retry with the old epoch: success; the other result: INVALID_TXN_STATE.
    assert end(done, commit=True, epoch=3, tv2=True).error == ErrorCode.none
    assert end(done, commit=False, epoch=3, tv2=True).error == ErrorCode.invalid_txn_state
    # A late EndTxn of the epoch before (KAFKA-17754) is fenced.
    assert end(done, commit=True, epoch=2, tv2=True).error == ErrorCode.producer_fenced
    # With the new epoch, an abort of an empty transaction is allowed under TV2.
    empty_abort = end(done, commit=False, epoch=4, tv2=True)
    assert empty_abort.next_state == PA and empty_abort.no_partition_added


def test_tv2_epoch_overflow_switches_producer_id():
    txn = ongoing(epoch=sm.SHORT_MAX - 1)
    prepared = sm.prepare_abort_or_commit(txn, PC, True, 2000, NOW)
    assert sm.end_response_producer(prepared) == (2000, 0)
    done = sm.prepare_complete(prepared, NOW)
    assert (done.producer_id, done.producer_epoch, done.previous_producer_id) == (2000, 0, 1000)
    # The producer retrying with the old id and last epoch is recognised.
    assert end(done, commit=True, epoch=sm.SHORT_MAX - 1, pid=1000, tv2=True).error == ErrorCode.none


# -- expiry, timeouts, records -------------------------------------------------------------------------


def test_timeouts_and_expiry():
    txn = ongoing(timeout_ms=1000)
    assert not sm.is_timed_out(txn, NOW + 1000) and sm.is_timed_out(txn, NOW + 1001)
    for state in (E, CC, CA):
        idle = md(state, last_update_ms=NOW)
        assert sm.is_expired(idle, NOW + 100, 100) and not sm.is_expired(idle, NOW + 99, 100)
        assert sm.prepare_dead(idle, NOW).state == DEAD
    assert not sm.is_expired(md(O, last_update_ms=NOW), NOW + 10**9, 100)
    with pytest.raises(sm.IllegalTransition):
        sm.prepare_dead(md(PC), NOW)


def test_record_round_trip():
    value = ongoing(epoch=7, previous_producer_id=5, last_producer_epoch=6, timeout_ms=1234, last_update_ms=NOW,
                    tv2=True)
    assert decode_key(txn_key("tx")) == "tx"
    assert decode_value("tx", txn_value(value)) == value
    assert txn_key("tx") == b'{"transactional_id":"tx"}'
