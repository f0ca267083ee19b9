"""The transaction state machine, pure (no trio, no I/O): Kafka's TransactionMetadata and the
decisions of its TransactionCoordinator, as functions from metadata to an error or the next
metadata. The coordinator (coordinator.py) persists a returned metadata and only then makes it
current; while that write is in flight the entry has a *pending* metadata, and every other
request for the id gets CONCURRENT_TRANSACTIONS.

Error codes follow apache/kafka (TransactionCoordinator.scala, TransactionMetadata.scala).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from typing import Iterable

from lodestream.protocol.errors import ErrorCode

NO_PRODUCER_ID = -1
NO_PRODUCER_EPOCH = -1
SHORT_MAX = 32767

TopicPartition = tuple[str, int]


class TxnState(str, enum.Enum):
    EMPTY = "Empty"
    ONGOING = "Ongoing"
    PREPARE_COMMIT = "PrepareCommit"
    PREPARE_ABORT = "PrepareAbort"
    COMPLETE_COMMIT = "CompleteCommit"
    COMPLETE_ABORT = "CompleteAbort"
    DEAD = "Dead"
    PREPARE_EPOCH_FENCE = "PrepareEpochFence"  # in memory only: an Ongoing txn being aborted to fence its producer


E, O, PC, PA, CC, CA, DEAD, FENCE = TxnState

# Kafka's TransactionState.validPreviousStates.
VALID_PREVIOUS: dict[TxnState, frozenset[TxnState]] = {
    E: frozenset({E, CC, CA}),
    O: frozenset({O, E, CC, CA}),
    PC: frozenset({O}),
    PA: frozenset({O, FENCE, E, CC, CA}),  # E/CC/CA: a TV2 abort with no partitions
    CC: frozenset({PC}),
    CA: frozenset({PA}),
    DEAD: frozenset({E, CC, CA}),
    FENCE: frozenset({O}),
}

STATE_BY_NAME = {state.value: state for state in TxnState}


class IllegalTransition(Exception):
    """A transition the state machine does not allow: a coordinator bug, never a client error."""


@dataclass(frozen=True, slots=True)
class TxnMetadata:
    transactional_id: str
    producer_id: int
    previous_producer_id: int = NO_PRODUCER_ID  # KIP-360: the id before the last rotation
    next_producer_id: int = NO_PRODUCER_ID  # TV2: the id to switch to when this txn completes (epoch overflow)
    producer_epoch: int = NO_PRODUCER_EPOCH
    last_producer_epoch: int = NO_PRODUCER_EPOCH  # KIP-360: lets a retried InitProducerId get the same answer
    timeout_ms: int = 60000
    state: TxnState = TxnState.EMPTY
    partitions: frozenset[TopicPartition] = field(default_factory=frozenset)
    txn_start_ms: int = -1
    last_update_ms: int = -1
    tv2: bool = False  # the client ended its last transaction with EndTxn v5 (KIP-890 epoch bump)

    @property
    def epoch_exhausted(self) -> bool:
        return is_epoch_exhausted(self.producer_epoch)

    def transit(self, state: TxnState, **changes) -> "TxnMetadata":
        if self.state not in VALID_PREVIOUS[state]:
            raise IllegalTransition(f"{self.transactional_id}: {self.state.value} -> {state.value}")
        return replace(self, state=state, **changes)


def is_epoch_exhausted(epoch: int) -> bool:
    # One epoch is kept in reserve so that a fence (epoch + 1) never overflows.
    return epoch >= SHORT_MAX - 1


def new_metadata(transactional_id: str, producer_id: int, timeout_ms: int, now_ms: int) -> TxnMetadata:
    return TxnMetadata(transactional_id, producer_id, timeout_ms=timeout_ms, txn_start_ms=-1, last_update_ms=now_ms)


# -- InitProducerId -------------------------------------------------------------------------------


class InitAction(enum.Enum):
    FENCE = "fence"  # abort the ongoing transaction with a bumped epoch; the client retries
    ROTATE = "rotate"  # epoch exhausted: a new producer id (the caller allocates it)


def check_init(md: TxnMetadata, pending: bool, expected: tuple[int, int] | None) -> ErrorCode | InitAction | None:
    """What InitProducerId does with this metadata: an error, FENCE, ROTATE, or None (bump the epoch
    with prepare_increment_epoch). expected = the (producer id, epoch) the client sent, if any (KIP-360)."""
    if pending:
        return ErrorCode.concurrent_transactions
    if expected is not None and not _valid_expected_producer(md, expected):
        return ErrorCode.producer_fenced
    if md.state in (PC, PA):
        return ErrorCode.concurrent_transactions
    if md.state in (E, CC, CA):
        if md.epoch_exhausted and (expected is None or expected[1] == md.producer_epoch):
            return InitAction.ROTATE
        return None
    if md.state == O:
        return InitAction.FENCE
    raise IllegalTransition(f"{md.transactional_id}: InitProducerId in state {md.state.value}")


def _valid_expected_producer(md: TxnMetadata, expected: tuple[int, int]) -> bool:
    producer_id, epoch = expected
    return (md.producer_epoch == NO_PRODUCER_EPOCH or producer_id == md.producer_id
            or (producer_id == md.previous_producer_id and is_epoch_exhausted(epoch)))


def prepare_increment_epoch(md: TxnMetadata, timeout_ms: int, expected_epoch: int | None,
                            now_ms: int) -> TxnMetadata | ErrorCode:
    if md.epoch_exhausted:
        raise IllegalTransition(f"{md.transactional_id}: cannot bump exhausted epoch {md.producer_epoch}")
    bumped = md.producer_epoch + 1
    if expected_epoch is None:
        epoch, last = bumped, NO_PRODUCER_EPOCH
    elif md.producer_epoch == NO_PRODUCER_EPOCH or expected_epoch == md.producer_epoch:
        epoch, last = bumped, md.producer_epoch
    elif expected_epoch == md.last_producer_epoch:
        epoch, last = md.producer_epoch, md.last_producer_epoch  # a retry of a bump that succeeded
    else:
        return ErrorCode.producer_fenced
    return md.transit(E, producer_epoch=epoch, last_producer_epoch=last, timeout_ms=timeout_ms,
                      partitions=frozenset(), txn_start_ms=-1, last_update_ms=now_ms)


def prepare_producer_id_rotation(md: TxnMetadata, new_producer_id: int, timeout_ms: int, now_ms: int,
                                 record_last_epoch: bool) -> TxnMetadata:
    if md.state not in (E, CC, CA):
        raise IllegalTransition(f"{md.transactional_id}: rotating the producer id in state {md.state.value}")
    return md.transit(E, producer_id=new_producer_id, previous_producer_id=md.producer_id,
                      producer_epoch=0, last_producer_epoch=md.producer_epoch if record_last_epoch else NO_PRODUCER_EPOCH,
                      timeout_ms=timeout_ms, partitions=frozenset(), txn_start_ms=-1, last_update_ms=now_ms)


def prepare_fence_epoch(md: TxnMetadata) -> TxnMetadata:
    """InitProducerId on an Ongoing txn, or its timeout: the epoch to abort it with."""
    if md.producer_epoch == SHORT_MAX:
        raise IllegalTransition(f"{md.transactional_id}: cannot fence epoch {SHORT_MAX}")
    return md.transit(FENCE, producer_epoch=md.producer_epoch + 1, last_producer_epoch=NO_PRODUCER_EPOCH)


# -- AddPartitionsToTxn / AddOffsetsToTxn / verification ------------------------------------------


def check_add_partitions(md: TxnMetadata | None, pending: bool, producer_id: int, producer_epoch: int,
                         partitions: Iterable[TopicPartition]) -> ErrorCode | None:
    """None: write prepare_add_partitions; NONE: already in the txn (answer at once); else the error."""
    error = _check_producer(md, producer_id, producer_epoch)
    if error is not None:
        return error
    assert md is not None
    if pending:
        return ErrorCode.concurrent_transactions
    if md.state == O and set(partitions) <= md.partitions:
        return ErrorCode.none
    return None


def _check_producer(md: TxnMetadata | None, producer_id: int, producer_epoch: int) -> ErrorCode | None:
    """The producer checks shared by adding and verifying partitions (a completing txn is concurrent)."""
    if md is None or md.producer_id != producer_id:
        return ErrorCode.invalid_producer_id_mapping
    if md.producer_epoch != producer_epoch:
        return ErrorCode.producer_fenced
    if md.state in (PC, PA):
        return ErrorCode.concurrent_transactions
    return None


def prepare_add_partitions(md: TxnMetadata, partitions: Iterable[TopicPartition], now_ms: int) -> TxnMetadata:
    start = now_ms if md.state in (E, CA, CC) else md.txn_start_ms
    return md.transit(O, partitions=md.partitions | frozenset(partitions), txn_start_ms=start, last_update_ms=now_ms)


def verify_partitions(md: TxnMetadata | None, producer_id: int, producer_epoch: int,
                      partitions: Iterable[TopicPartition]) -> ErrorCode | dict[TopicPartition, ErrorCode]:
    """AddPartitionsToTxn v4+ verify_only: an error for all, or NONE / TRANSACTION_ABORTABLE per partition."""
    error = _check_producer(md, producer_id, producer_epoch)
    if error is not None:
        return error
    assert md is not None
    return {tp: ErrorCode.none if tp in md.partitions else ErrorCode.transaction_abortable for tp in partitions}


# -- EndTxn ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EndDecision:
    error: ErrorCode | None = None  # set: answer with it, nothing to write (NONE = a retry that already succeeded)
    next_state: TxnState | None = None  # else: write prepare_abort_or_commit(next_state)
    no_partition_added: bool = False


def check_end(md: TxnMetadata | None, pending: TxnMetadata | None, producer_id: int, producer_epoch: int,
              commit: bool, from_client: bool, tv2: bool) -> EndDecision:
    """Kafka's endTransaction (TV1) / the TV2 checks of EndTxn v5. `pending` may be a fenced
    metadata (state PrepareEpochFence): the abort that fences the producer."""
    if md is None:
        return EndDecision(ErrorCode.invalid_producer_id_mapping)
    epoch_fence = pending is not None and pending.state == FENCE
    if pending is not None and not epoch_fence and tv2:  # checked first under TV2 (a pending overflow
        return EndDecision(ErrorCode.concurrent_transactions)  # may have switched producer ids)
    if tv2:
        return _check_end_tv2(md, pending if epoch_fence else None, producer_id, producer_epoch, commit, from_client)
    if md.producer_id != producer_id:
        return EndDecision(ErrorCode.invalid_producer_id_mapping)
    current_epoch = pending.producer_epoch if epoch_fence else md.producer_epoch
    if (from_client and producer_epoch != current_epoch) or producer_epoch < current_epoch:
        return EndDecision(ErrorCode.producer_fenced)
    if pending is not None and not epoch_fence:
        return EndDecision(ErrorCode.concurrent_transactions)
    return _end_by_state(md, commit, retry=True, tv2=False)


def _check_end_tv2(md: TxnMetadata, fence: TxnMetadata | None, producer_id: int, producer_epoch: int,
                   commit: bool, from_client: bool) -> EndDecision:
    retry_on_overflow = (fence is None and md.previous_producer_id == producer_id
                         and producer_epoch == SHORT_MAX - 1 and md.producer_epoch == 0)
    retry_on_bump = fence is None and md.producer_epoch == producer_epoch + 1
    if fence is None:
        if md.state in (O, E, DEAD, FENCE):
            valid = producer_epoch == md.producer_epoch
        elif md.state in (PC, PA):
            valid = retry_on_bump
        else:
            valid = retry_on_bump or retry_on_overflow or producer_epoch == md.producer_epoch
    else:
        valid = (not from_client or producer_epoch == fence.producer_epoch) and producer_epoch >= fence.producer_epoch
    if md.producer_id != producer_id and not retry_on_overflow:
        return EndDecision(ErrorCode.invalid_producer_id_mapping)
    if not valid:
        return EndDecision(ErrorCode.producer_fenced)
    return _end_by_state(md, commit, retry=retry_on_bump or retry_on_overflow, tv2=True)


def _end_by_state(md: TxnMetadata, commit: bool, retry: bool, tv2: bool) -> EndDecision:
    invalid = EndDecision(ErrorCode.invalid_txn_state)
    state = md.state
    if state == O:
        return EndDecision(next_state=PC if commit else PA)
    if state == CC:
        if commit:
            return EndDecision(ErrorCode.none) if retry else invalid
        if tv2 and not retry:
            return EndDecision(next_state=PA, no_partition_added=True)
        return invalid
    if state == CA:
        if not commit:
            if retry:
                return EndDecision(ErrorCode.none)
            return EndDecision(next_state=PA, no_partition_added=True) if tv2 else EndDecision(ErrorCode.none)
        return invalid
    if state == PC:
        return EndDecision(ErrorCode.concurrent_transactions) if commit else invalid
    if state == PA:
        return EndDecision(ErrorCode.concurrent_transactions) if not commit else invalid
    if state == E:
        if not commit and tv2:
            return EndDecision(next_state=PA, no_partition_added=True)
        return invalid
    return EndDecision(ErrorCode.unknown_server_error)


def prepare_abort_or_commit(md: TxnMetadata, state: TxnState, tv2: bool, next_producer_id: int, now_ms: int,
                            no_partition_added: bool = False) -> TxnMetadata:
    if tv2:  # KIP-890: every transaction end bumps the epoch
        epoch, last = md.producer_epoch + 1, md.producer_epoch
    else:
        epoch, last = md.producer_epoch, md.last_producer_epoch
    start = now_ms if no_partition_added else md.txn_start_ms
    return md.transit(state, producer_epoch=epoch, last_producer_epoch=last, next_producer_id=next_producer_id,
                      txn_start_ms=start, last_update_ms=now_ms, tv2=tv2)


def prepare_complete(md: TxnMetadata, now_ms: int) -> TxnMetadata:
    state = CC if md.state == PC else CA
    if md.tv2 and md.next_producer_id != NO_PRODUCER_ID:  # epoch overflow: switch to the new id
        producer_id, previous, epoch = md.next_producer_id, md.producer_id, 0
    else:
        producer_id, previous, epoch = md.producer_id, md.previous_producer_id, md.producer_epoch
    return md.transit(state, producer_id=producer_id, previous_producer_id=previous, producer_epoch=epoch,
                      next_producer_id=NO_PRODUCER_ID, partitions=frozenset(), last_update_ms=now_ms)


def end_response_producer(md: TxnMetadata) -> tuple[int, int]:
    """The (producer id, epoch) EndTxn v5 returns for a transaction being completed as `md`."""
    if md.tv2 and md.next_producer_id != NO_PRODUCER_ID:
        return md.next_producer_id, 0
    return md.producer_id, md.producer_epoch


# -- expiry, timeouts -------------------------------------------------------------------------------


def is_timed_out(md: TxnMetadata, now_ms: int) -> bool:
    return md.state == O and md.txn_start_ms + md.timeout_ms < now_ms


def is_expired(md: TxnMetadata, now_ms: int, expiration_ms: int) -> bool:
    return md.state in (E, CC, CA) and md.last_update_ms + expiration_ms <= now_ms


def prepare_dead(md: TxnMetadata, now_ms: int) -> TxnMetadata:
    return md.transit(DEAD, last_update_ms=now_ms)
