"""Idempotent and transactional producer state of one partition.

Kafka's ProducerStateManager / ProducerAppendInfo rules, header fields only:
per producer id the epoch, the last 5 batches' sequence ranges and offsets
(a retry of one of them is a duplicate), the last timestamp, the coordinator
epoch and the first offset of its ongoing transaction; per partition the
aborted-transaction index and the first unstable offset (for the LSO).

Pure and synchronous. Changes made while a journal is open (begin()) can be
undone with rollback(), for when the group's log write fails.
"""

from __future__ import annotations

import bisect
import json
from dataclasses import dataclass, field

NO_SEQUENCE = -1
NO_EPOCH = -1
INT32_MAX = 2**31 - 1
BATCHES_RETAINED = 5  # Kafka: as many as a producer may have in flight


class ProducerStateError(Exception):
    """A batch or marker refused; error_name is the Kafka error code's name (kio's ErrorCode member)."""

    error_name = "unknown_server_error"


class OutOfOrderSequence(ProducerStateError):
    error_name = "out_of_order_sequence_number"


class InvalidProducerEpoch(ProducerStateError):
    error_name = "invalid_producer_epoch"


class InvalidTxnState(ProducerStateError):
    error_name = "invalid_txn_state"


class CoordinatorFenced(ProducerStateError):
    error_name = "transaction_coordinator_fenced"


def last_sequence(base_sequence: int, last_offset_delta: int) -> int:
    """Sequences wrap from Int32 max to 0 (Kafka's DefaultRecordBatch.incrementSequence)."""
    return (base_sequence + last_offset_delta) % (INT32_MAX + 1)


def _in_sequence(last_seq: int, next_seq: int) -> bool:
    return next_seq == last_seq + 1 or (next_seq == 0 and last_seq == INT32_MAX)


@dataclass(slots=True)
class ProducerEntry:
    producer_id: int
    epoch: int = NO_EPOCH
    # (first_seq, last_seq, base_offset, last_offset), oldest first
    batches: list[tuple[int, int, int, int]] = field(default_factory=list)
    last_timestamp: int = -1
    coordinator_epoch: int = -1
    txn_first_offset: int | None = None

    @property
    def last_seq(self) -> int:
        return self.batches[-1][1] if self.batches else NO_SEQUENCE

    def copy(self) -> "ProducerEntry":
        return ProducerEntry(self.producer_id, self.epoch, list(self.batches), self.last_timestamp,
                             self.coordinator_epoch, self.txn_first_offset)

    def _set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:  # a new epoch starts a new sequence space
            self.batches.clear()
            self.epoch = epoch


class ProducerStateManager:
    def __init__(self) -> None:
        self.producers: dict[int, ProducerEntry] = {}
        self.open_txns: dict[int, int] = {}  # producer id -> first offset of its ongoing transaction
        # Aborted transactions in marker order: (producer id, first offset, last offset = marker offset).
        self.aborted: list[tuple[int, int, int]] = []
        self._aborted_last: list[int] = []  # their last offsets, for bisect
        self._journal: dict[int, tuple[ProducerEntry | None, int | None]] | None = None
        self._journal_aborted = 0

    # -- checks (client appends) -----------------------------------------------------
    def find_duplicate(self, producer_id: int, epoch: int, first_seq: int, last_seq: int) -> tuple[int, int] | None:
        """(base offset, last offset) of a retained batch with this exact sequence range, else None."""
        entry = self.producers.get(producer_id)
        if entry is None or entry.epoch != epoch:
            return None
        for batch_first, batch_last, base, last in entry.batches:
            if batch_first == first_seq and batch_last == last_seq:
                return base, last
        return None

    def check_data(self, producer_id: int, epoch: int, first_seq: int, transactional: bool, client: bool) -> None:
        """Raise ProducerStateError if the batch may not be appended (ProducerAppendInfo's rules)."""
        entry = self.producers.get(producer_id)
        current_epoch = entry.epoch if entry is not None else NO_EPOCH
        if epoch < current_epoch:
            raise InvalidProducerEpoch(
                f"epoch {epoch} of producer {producer_id} is older than the last seen epoch {current_epoch}")
        # Unknown producer (never seen, or expired): any sequence is accepted, as in Kafka 2.5+.
        if client and entry is not None:  # broker-written batches (transactional offset commits) carry no sequence
            if epoch != current_epoch:
                if first_seq != 0:
                    raise OutOfOrderSequence(
                        f"new epoch {epoch} of producer {producer_id} must start at sequence 0, not {first_seq}")
            elif not _in_sequence(entry.last_seq, first_seq):
                raise OutOfOrderSequence(
                    f"out of order sequence {first_seq} of producer {producer_id}: last was {entry.last_seq}")
        if entry is not None and entry.txn_first_offset is not None and not transactional:
            raise InvalidTxnState(f"non-transactional batch from producer {producer_id} inside its transaction")

    def check_marker(self, producer_id: int, epoch: int, coordinator_epoch: int) -> None:
        entry = self.producers.get(producer_id)
        if entry is None:
            return
        if epoch < entry.epoch:  # markers of transaction version 1 carry the producer's epoch
            raise InvalidProducerEpoch(
                f"marker epoch {epoch} of producer {producer_id} is older than the last seen epoch {entry.epoch}")
        if coordinator_epoch < entry.coordinator_epoch:
            raise CoordinatorFenced(
                f"marker coordinator epoch {coordinator_epoch} of producer {producer_id} is older than "
                f"{entry.coordinator_epoch}")

    # -- updates (no checks: also used to rebuild from the log) --------------------------
    def append_data(self, producer_id: int, epoch: int, first_seq: int, last_seq: int, base_offset: int,
                    last_offset: int, timestamp: int, transactional: bool) -> None:
        entry = self._entry_for_update(producer_id)
        entry._set_epoch(epoch)
        if len(entry.batches) >= BATCHES_RETAINED:
            del entry.batches[0]
        entry.batches.append((first_seq, last_seq, base_offset, last_offset))
        entry.last_timestamp = timestamp
        if transactional and entry.txn_first_offset is None:
            entry.txn_first_offset = base_offset
            self.open_txns[producer_id] = base_offset

    def append_marker(self, producer_id: int, epoch: int, coordinator_epoch: int, offset: int, commit: bool,
                      timestamp: int) -> int | None:
        """End the producer's transaction at marker `offset`; return its first offset (None if none was open)."""
        entry = self._entry_for_update(producer_id)
        first = entry.txn_first_offset
        entry._set_epoch(epoch)
        entry.coordinator_epoch = coordinator_epoch
        entry.last_timestamp = timestamp
        entry.txn_first_offset = None
        if first is not None:
            del self.open_txns[producer_id]
            if not commit:
                self.aborted.append((producer_id, first, offset))
                self._aborted_last.append(offset)
        return first

    def _entry_for_update(self, producer_id: int) -> ProducerEntry:
        entry = self.producers.get(producer_id)
        if self._journal is not None and producer_id not in self._journal:
            self._journal[producer_id] = (None if entry is None else entry.copy(), self.open_txns.get(producer_id))
        if entry is None:
            entry = self.producers[producer_id] = ProducerEntry(producer_id)
        return entry

    # -- journal ----------------------------------------------------------------------------
    def begin(self) -> None:
        self._journal = {}
        self._journal_aborted = len(self.aborted)

    @property
    def in_journal(self) -> bool:
        return self._journal is not None

    def commit(self) -> None:
        self._journal = None

    def rollback(self) -> None:
        journal, self._journal = self._journal, None
        if journal is None:
            return
        for producer_id, (entry, txn_first) in journal.items():
            if entry is None:
                self.producers.pop(producer_id, None)
            else:
                self.producers[producer_id] = entry
            if txn_first is None:
                self.open_txns.pop(producer_id, None)
            else:
                self.open_txns[producer_id] = txn_first
        del self.aborted[self._journal_aborted:]
        del self._aborted_last[self._journal_aborted:]

    # -- reads and housekeeping -------------------------------------------------------------
    def first_unstable_offset(self) -> int | None:
        """First offset of the oldest ongoing transaction (the LSO stops there)."""
        return min(self.open_txns.values()) if self.open_txns else None

    def aborted_transactions(self, first_offset: int, upper_offset: int) -> list[tuple[int, int]]:
        """(producer id, first offset) of aborted transactions overlapping [first_offset, upper_offset)."""
        return [(pid, first) for pid, first, _ in self.aborted_overlapping(first_offset, upper_offset)]

    def aborted_overlapping(self, first_offset: int, upper_offset: int) -> list[tuple[int, int, int]]:
        """(producer id, first offset, marker offset) of aborted transactions overlapping [first, upper)."""
        start = bisect.bisect_left(self._aborted_last, first_offset)
        return [entry for entry in self.aborted[start:] if entry[1] < upper_offset]

    def truncate_before(self, log_start_offset: int) -> None:
        """Forget aborted transactions wholly below the new log start."""
        keep = bisect.bisect_left(self._aborted_last, log_start_offset)
        if keep:
            del self.aborted[:keep]
            del self._aborted_last[:keep]

    def forget_below(self, log_start_offset: int) -> None:
        """Drop producers whose every retained batch is below the new log start (Kafka's truncateHead),
        unless a transaction of theirs is open. Producers known only by markers stay until they expire."""
        gone = [pid for pid, entry in self.producers.items()
                if entry.batches and entry.batches[-1][3] < log_start_offset and entry.txn_first_offset is None]
        for pid in gone:
            del self.producers[pid]

    # -- snapshots (storage/leveldb_log.py keeps one at each segment roll) -----------------------
    def snapshot(self) -> bytes:
        """The whole state as bytes (the journal must be closed or about to be written with it)."""
        return json.dumps({
            "producers": [[e.producer_id, e.epoch, e.batches, e.last_timestamp, e.coordinator_epoch,
                           e.txn_first_offset] for e in self.producers.values()],
            "aborted": self.aborted,
        }, separators=(",", ":")).encode()

    @classmethod
    def restore(cls, data: bytes) -> "ProducerStateManager":
        state = cls()
        saved = json.loads(data)
        for pid, epoch, batches, last_timestamp, coordinator_epoch, txn_first in saved["producers"]:
            state.producers[pid] = ProducerEntry(pid, epoch, [tuple(b) for b in batches], last_timestamp,
                                                 coordinator_epoch, txn_first)
            if txn_first is not None:
                state.open_txns[pid] = txn_first
        state.aborted = [tuple(a) for a in saved["aborted"]]
        state._aborted_last = [last for _, _, last in state.aborted]
        return state

    def remove_expired(self, now_ms: int, expiration_ms: int) -> int:
        """Drop producers idle for producer.id.expiration.ms with no ongoing transaction; return how many."""
        expired = [pid for pid, entry in self.producers.items()
                   if entry.txn_first_offset is None and now_ms - entry.last_timestamp >= expiration_ms]
        for pid in expired:
            del self.producers[pid]
        return len(expired)
