"""The transaction coordinator: every transactional id this broker coordinates, persisted in
``__transaction_state``, with the markers that end transactions and the timers that abort them.

Every decision is made by the pure functions of state.py, synchronously on the trio thread; an
await only happens where a record is written, and then the entry carries the metadata being
written as ``pending`` (other requests get CONCURRENT_TRANSACTIONS) until it is durable. Records
are written by the coordinator runtime (broker/coordinator_runtime.py) and an entry's metadata is
what replaying them gives, at load and after each write.

Ending a transaction (EndTxn, a timeout, InitProducerId fencing an ongoing one):
PrepareCommit/PrepareAbort is written, then a background task writes the markers to every
partition of the transaction (retrying until they are durable; a marker on __consumer_offsets is
replayed by the group coordinator's runtime, which completes the transactional offsets), and
writes CompleteCommit/CompleteAbort; EndTxn and a fencing
InitProducerId answer once that is done (at most COMPLETION_WAIT_S), a timeout does not wait. At
start-up a transaction found in Prepare* is completed the same way; an Ongoing one is left to
its timeout.
"""

from __future__ import annotations

import itertools
import logging
import re
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Iterable

import trio

from lodestream.protocol.errors import ErrorCode, KafkaError

from lodestream.broker.clock import Clock
from lodestream.broker.coordinator_runtime import CoordinatorLog, CoordinatorRuntime, LogRecord, Write, partition_for
from lodestream.broker.internal_topics import TRANSACTION_STATE_TOPIC
from lodestream.broker.transactions import state as sm
from lodestream.broker.transactions.state import TopicPartition, TxnMetadata, TxnState
from lodestream.broker.transactions.state_log import decode_key, decode_value, txn_key, txn_value

log = logging.getLogger(__name__)

MarkerWriter = Callable[[list[TopicPartition], int, int, bool, int], Awaitable[None]]
"""(partitions, producer id, producer epoch, commit, coordinator epoch): durable on return; raises on failure."""

RETRY_BACKOFF_MS = (50, 100, 200, 500, 1000, 2000, 5000)
COMPLETION_WAIT_S = 5.0  # EndTxn / a fencing InitProducerId wait this long for the markers


@dataclass(slots=True)
class TxnEntry:
    metadata: TxnMetadata
    pending: TxnMetadata | None = None  # being written (or, in state PrepareEpochFence, being fenced)


class TransactionCoordinator:
    def __init__(self, config: Callable[[str], Any], txn_log: CoordinatorLog,
                 allocate_producer_id: Callable[[], Awaitable[int]], write_markers: MarkerWriter,
                 clock: Clock | None = None) -> None:
        self.config = config
        self.log = txn_log
        self.runtime = CoordinatorRuntime(TRANSACTION_STATE_TOPIC, txn_log, lambda: self.num_partitions, clock)
        self.runtime.bind(self)
        self.runtime.every(
            lambda: int(self.config("transaction.abort.timed.out.transaction.cleanup.interval.ms")) / 1000,
            self.abort_timed_out_transactions)
        self.runtime.every(
            lambda: int(self.config("transaction.remove.expired.transaction.cleanup.interval.ms")) / 1000,
            self.remove_expired_transactional_ids)
        self.allocate_producer_id = allocate_producer_id
        self.write_markers = write_markers
        self.entries: dict[str, TxnEntry] = {}
        self.coordinator_epoch = 0
        self._completing: dict[str, trio.Event] = {}  # ids whose markers are being written -> set when done

    # -- time, placement -------------------------------------------------------------------------
    def now_ms(self) -> int:
        """Epoch ms advancing with the trio clock (MockClock-friendly)."""
        return self.runtime.clock.wall_ms()

    @property
    def num_partitions(self) -> int:
        return int(self.config("transaction.state.log.num.partitions"))

    def partition_for(self, transactional_id: str) -> int:
        return partition_for(transactional_id, self.num_partitions)

    # -- loading (the runtime replays; these are the state's side) ----------------------------------
    @property
    def loaded(self) -> bool:
        """Every partition replayed (False while loading: COORDINATOR_LOAD_IN_PROGRESS)."""
        return self.runtime.loaded

    def load(self, partitions: Iterable[int] | None = None) -> None:
        """Replay __transaction_state (synchronous; before the listeners start)."""
        self.runtime.load(partitions)
        if self.entries:
            log.info("loaded %d transactional ids from %s", len(self.entries), TRANSACTION_STATE_TOPIC)

    def replay(self, record: LogRecord) -> None:
        """Apply one durable __transaction_state record (CoordinatorState): the id's metadata is its latest."""
        if record.key is None:
            return
        transactional_id = decode_key(record.key)
        if record.value is None:
            self.entries.pop(transactional_id, None)
            return
        metadata = decode_value(transactional_id, record.value)
        entry = self.entries.get(transactional_id)
        if entry is None:
            self.entries[transactional_id] = TxnEntry(metadata)
        else:
            entry.metadata = metadata

    def write_failed(self, record: LogRecord) -> None:
        """Nothing to undo: metadata changes only by replay (the entry's pending is cleared by _write)."""

    def partition_loaded(self, partition: int) -> None:
        """A transaction found prepared is completed (its markers may not all be written)."""
        for transactional_id, entry in self.entries.items():
            if (self.partition_for(transactional_id) == partition
                    and entry.metadata.state in (TxnState.PREPARE_COMMIT, TxnState.PREPARE_ABORT)):
                self._start_completion(transactional_id, entry.metadata)

    def partition_unloaded(self, partition: int) -> None:
        for transactional_id in [t for t in self.entries if self.partition_for(t) == partition]:
            del self.entries[transactional_id]

    async def ensure_loaded(self) -> None:
        """Create __transaction_state on first use; COORDINATOR_LOAD_IN_PROGRESS while loading."""
        if not self.loaded:
            raise KafkaError(ErrorCode.coordinator_load_in_progress)
        await self.runtime.ensure_topic()

    def _coordination_error(self, transactional_id: str) -> ErrorCode:
        """NOT_COORDINATOR unless this broker coordinates the id now (CoordinatorRuntime.check_active: also
        after its lease expired), COORDINATOR_LOAD_IN_PROGRESS while loading; checked before anything is
        answered from memory."""
        return self.runtime.coordination_error(self.partition_for(transactional_id))

    # -- persistence ------------------------------------------------------------------------------
    async def _write(self, entry: TxnEntry, transit: TxnMetadata) -> ErrorCode:
        """Write transit as the entry's next metadata; it becomes current once durable (replayed)."""
        entry.pending = transit
        value = None if transit.state == TxnState.DEAD else txn_value(transit)
        try:
            await self.ensure_loaded()
            await self.runtime.write(self.partition_for(transit.transactional_id),
                                     lambda: Write([(txn_key(transit.transactional_id), value)]))
        except KafkaError as exc:
            log.warning("writing transaction state of %s failed: %s", transit.transactional_id, exc)
            return exc.code
        finally:
            if entry.pending is transit:
                entry.pending = None
        return ErrorCode.none

    # -- InitProducerId ---------------------------------------------------------------------------
    async def init_producer_id(self, transactional_id: str, timeout_ms: int, producer_id: int = -1,
                               producer_epoch: int = -1) -> tuple[ErrorCode, int, int]:
        """InitProducerId with a transactional id -> (error, producer id, epoch)."""
        failed = (sm.NO_PRODUCER_ID, sm.NO_PRODUCER_EPOCH)
        if not transactional_id:
            return (ErrorCode.invalid_request, *failed)
        if not 0 < timeout_ms <= int(self.config("transaction.max.timeout.ms")):
            return (ErrorCode.invalid_transaction_timeout, *failed)
        error = self._coordination_error(transactional_id)
        if error != ErrorCode.none:
            return (error, *failed)
        expected = (producer_id, producer_epoch) if producer_id >= 0 or producer_epoch >= 0 else None
        error, producer_id, producer_epoch = await self._init(transactional_id, timeout_ms, expected, fence=True)
        if error == ErrorCode.concurrent_transactions and transactional_id not in self._completing:
            # We fenced an ongoing transaction and its abort completed: go on, as the client's retry would.
            error, producer_id, producer_epoch = await self._init(transactional_id, timeout_ms, expected, fence=False)
        return error, producer_id, producer_epoch

    async def _init(self, transactional_id: str, timeout_ms: int, expected: tuple[int, int] | None,
                    fence: bool) -> tuple[ErrorCode, int, int]:
        failed = (sm.NO_PRODUCER_ID, sm.NO_PRODUCER_EPOCH)
        entry = self.entries.get(transactional_id)
        if entry is None or entry.metadata.epoch_exhausted:
            try:
                new_id = await self.allocate_producer_id()
            except KafkaError as exc:
                return (exc.code, *failed)
            entry = self.entries.get(transactional_id)  # the await may have let another request in
            if entry is None:
                entry = self.entries[transactional_id] = TxnEntry(
                    sm.new_metadata(transactional_id, new_id, timeout_ms, self.now_ms()))
        else:
            new_id = sm.NO_PRODUCER_ID
        md = entry.metadata
        action = sm.check_init(md, entry.pending is not None, expected)
        if isinstance(action, ErrorCode):
            return (action, *failed)
        if action == sm.InitAction.FENCE:
            if not fence:
                return (ErrorCode.concurrent_transactions, *failed)
            fenced = sm.prepare_fence_epoch(md)
            error, _, _ = await self._end(transactional_id, fenced.producer_id, fenced.producer_epoch, False,
                                          from_client=False, tv2=False, fence=fenced, wait=True)
            return (error if error != ErrorCode.none else ErrorCode.concurrent_transactions, *failed)
        now = self.now_ms()
        if action == sm.InitAction.ROTATE:
            if new_id == sm.NO_PRODUCER_ID:  # exhausted while we were not looking: allocate and let the client retry
                return (ErrorCode.concurrent_transactions, *failed)
            transit = sm.prepare_producer_id_rotation(md, new_id, timeout_ms, now, expected is not None)
        else:
            transit = sm.prepare_increment_epoch(md, timeout_ms, expected[1] if expected else None, now)
            if isinstance(transit, ErrorCode):
                return (transit, *failed)
        error = await self._write(entry, transit)
        if error != ErrorCode.none:
            return (error, *failed)
        log.info("transactional id %s: producer id %d epoch %d", transactional_id, transit.producer_id,
                 transit.producer_epoch)
        return ErrorCode.none, transit.producer_id, transit.producer_epoch

    # -- AddPartitionsToTxn / AddOffsetsToTxn ------------------------------------------------------
    async def add_partitions(self, transactional_id: str, producer_id: int, producer_epoch: int,
                             partitions: Iterable[TopicPartition]) -> ErrorCode:
        if not transactional_id:
            return ErrorCode.invalid_request
        error = self._coordination_error(transactional_id)
        if error != ErrorCode.none:
            return error
        partitions = frozenset(partitions)
        entry = self.entries.get(transactional_id)
        md = entry.metadata if entry is not None else None
        error = sm.check_add_partitions(md, entry is not None and entry.pending is not None, producer_id,
                                        producer_epoch, partitions)
        if error is not None:
            return error
        assert entry is not None and md is not None
        return await self._write(entry, sm.prepare_add_partitions(md, partitions, self.now_ms()))

    def verify_partitions(self, transactional_id: str, producer_id: int, producer_epoch: int,
                          partitions: Iterable[TopicPartition]) -> ErrorCode | dict[TopicPartition, ErrorCode]:
        """AddPartitionsToTxn v4+ verify_only."""
        if not transactional_id:
            return ErrorCode.invalid_request
        error = self._coordination_error(transactional_id)
        if error != ErrorCode.none:
            return error
        entry = self.entries.get(transactional_id)
        return sm.verify_partitions(entry.metadata if entry else None, producer_id, producer_epoch, partitions)

    @staticmethod
    def produce_error(result: ErrorCode) -> ErrorCode:
        """A verification's answer as Kafka's produce path reports it (KIP-890 part 1):
        INVALID_PRODUCER_ID_MAPPING, INVALID_PRODUCER_EPOCH (fenced), INVALID_TXN_STATE (not in the
        transaction), NOT_ENOUGH_REPLICAS (the transaction is completing, or its coordinator is moving:
        retriable)."""
        result = TransactionCoordinator.offset_commit_error(result)
        if result in (ErrorCode.concurrent_transactions, ErrorCode.not_coordinator,
                      ErrorCode.coordinator_not_available, ErrorCode.coordinator_load_in_progress):
            return ErrorCode.not_enough_replicas
        return result

    @staticmethod
    def offset_commit_error(result: ErrorCode) -> ErrorCode:
        """A verification's answer as TxnOffsetCommit (v0-4) reports it: the group's __consumer_offsets
        partition must be in the transaction (AddOffsetsToTxn first)."""
        return {ErrorCode.producer_fenced: ErrorCode.invalid_producer_epoch,
                ErrorCode.transaction_abortable: ErrorCode.invalid_txn_state}.get(result, result)

    # -- EndTxn -----------------------------------------------------------------------------------
    async def end_transaction(self, transactional_id: str, producer_id: int, producer_epoch: int, commit: bool,
                              tv2: bool = False) -> tuple[ErrorCode, int, int]:
        """EndTxn -> (error, producer id, epoch); the id and epoch matter for v5 (KIP-890 bumps the epoch)."""
        if not transactional_id:
            return ErrorCode.invalid_request, sm.NO_PRODUCER_ID, sm.NO_PRODUCER_EPOCH
        error = self._coordination_error(transactional_id)
        if error != ErrorCode.none:
            return error, sm.NO_PRODUCER_ID, sm.NO_PRODUCER_EPOCH
        return await self._end(transactional_id, producer_id, producer_epoch, commit, from_client=True, tv2=tv2,
                               wait=True)

    async def _end(self, transactional_id: str, producer_id: int, producer_epoch: int, commit: bool, *,
                   from_client: bool, tv2: bool, fence: TxnMetadata | None = None,
                   wait: bool = False) -> tuple[ErrorCode, int, int]:
        """wait: answer once the markers and the Complete record are written (bounded by
        COMPLETION_WAIT_S), not right after Prepare* as Kafka does; see docs/transactions.md."""
        entry = self.entries.get(transactional_id)
        md = entry.metadata if entry is not None else None
        next_id = sm.NO_PRODUCER_ID
        if tv2 and md is not None and md.epoch_exhausted and fence is None and from_client:
            try:
                next_id = await self.allocate_producer_id()
            except KafkaError as exc:
                return exc.code, sm.NO_PRODUCER_ID, sm.NO_PRODUCER_EPOCH
            entry = self.entries.get(transactional_id)
            md = entry.metadata if entry is not None else None
        if fence is not None and entry is not None:
            if entry.pending is not None or md is None or md.state != TxnState.ONGOING:
                return ErrorCode.concurrent_transactions, sm.NO_PRODUCER_ID, sm.NO_PRODUCER_EPOCH
            entry.pending = fence
        try:
            decision = sm.check_end(md, entry.pending if entry else None, producer_id, producer_epoch, commit,
                                    from_client, tv2)
        finally:
            if fence is not None and entry is not None and entry.pending is fence:
                entry.pending = None
        if decision.error is not None:
            if md is None or decision.error != ErrorCode.none:
                return decision.error, sm.NO_PRODUCER_ID, sm.NO_PRODUCER_EPOCH
            return ErrorCode.none, md.producer_id, md.producer_epoch
        assert entry is not None and md is not None and decision.next_state is not None
        base = fence if fence is not None else md
        transit = sm.prepare_abort_or_commit(base, decision.next_state, tv2, next_id, self.now_ms(),
                                             decision.no_partition_added)
        error = await self._write(entry, transit)
        if error != ErrorCode.none:
            return error, sm.NO_PRODUCER_ID, sm.NO_PRODUCER_EPOCH
        log.info("transactional id %s: %s (producer id %d epoch %d, %d partitions)", transactional_id,
                 transit.state.value, transit.producer_id, transit.producer_epoch, len(transit.partitions))
        done = self._start_completion(transactional_id, transit)
        if wait:
            with trio.move_on_after(COMPLETION_WAIT_S):
                await done.wait()
        return (ErrorCode.none, *sm.end_response_producer(transit))

    def _start_completion(self, transactional_id: str, prepared: TxnMetadata) -> trio.Event:
        done = self._completing.get(transactional_id)
        if done is None:
            done = self._completing[transactional_id] = trio.Event()
            self._spawn(self._complete, transactional_id, prepared, done)
        return done

    async def _complete(self, transactional_id: str, prepared: TxnMetadata, done: trio.Event) -> None:
        """Markers, transactional offsets, then CompleteCommit/CompleteAbort; retried until done."""
        commit = prepared.state == TxnState.PREPARE_COMMIT
        try:
            for attempt in itertools.count():
                entry = self.entries.get(transactional_id)
                if entry is None or entry.metadata != prepared:
                    return  # completed by someone else (cannot happen on one node, but be safe)
                try:
                    if prepared.partitions:
                        await self.write_markers(sorted(prepared.partitions), prepared.producer_id,
                                                 prepared.producer_epoch, commit, self.coordinator_epoch)
                    if await self._write(entry, sm.prepare_complete(prepared, self.now_ms())) == ErrorCode.none:
                        return
                except Exception as exc:  # storage failures: retry, as Kafka retries markers forever
                    log.warning("completing the transaction of %s failed (attempt %d): %s", transactional_id,
                                attempt + 1, exc)
                await trio.sleep(RETRY_BACKOFF_MS[min(attempt, len(RETRY_BACKOFF_MS) - 1)] / 1000)
        finally:
            if self._completing.get(transactional_id) is done:
                del self._completing[transactional_id]
            done.set()

    # -- timeouts and expiry --------------------------------------------------------------------
    async def abort_timed_out_transactions(self) -> None:
        now = self.now_ms()
        for transactional_id, entry in list(self.entries.items()):
            md = entry.metadata
            if entry.pending is not None or not sm.is_timed_out(md, now):
                continue
            if md.producer_epoch == sm.SHORT_MAX:
                log.error("transactional id %s timed out at epoch %d and cannot be fenced", transactional_id,
                          md.producer_epoch)
                continue
            fenced = sm.prepare_fence_epoch(md)
            log.info("transactional id %s: aborting its transaction after %d ms (timeout %d ms)", transactional_id,
                     now - md.txn_start_ms, md.timeout_ms)
            await self._end(transactional_id, fenced.producer_id, fenced.producer_epoch, False,
                            from_client=False, tv2=md.tv2, fence=fenced)

    async def remove_expired_transactional_ids(self) -> None:
        now = self.now_ms()
        expiration = int(self.config("transactional.id.expiration.ms"))
        for transactional_id, entry in list(self.entries.items()):
            md = entry.metadata
            if entry.pending is None and sm.is_expired(md, now, expiration):
                if await self._write(entry, sm.prepare_dead(md, now)) == ErrorCode.none:  # a tombstone: replay drops it
                    log.info("transactional id %s expired", transactional_id)

    # -- background task ---------------------------------------------------------------------------
    def _spawn(self, async_fn: Callable[..., Any], *args: Any) -> None:
        """Background work runs in the runtime's nursery (queued until its run() starts)."""
        self.runtime.spawn(async_fn, *args)

    async def run(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Aborts transactions past their timeout and removes expired ids, on Kafka's intervals (and runs
        the completions spawned at load)."""
        await self.runtime.run(task_status=task_status)

    # -- DescribeTransactions / ListTransactions ---------------------------------------------------
    def describe(self, transactional_id: str) -> TxnMetadata | None:
        entry = self.entries.get(transactional_id)
        if entry is None or entry.metadata.state == TxnState.DEAD:
            return None
        return entry.metadata

    def list_transactions(self, states: Iterable[str] = (), producer_ids: Iterable[int] = (),
                          duration_ms: int = -1, pattern: str | None = None) -> tuple[list[TxnMetadata], list[str]]:
        """(matching transactions, unknown state names)."""
        wanted_states = set()
        unknown = []
        for name in states:
            state = sm.STATE_BY_NAME.get(name)
            if state is None:
                unknown.append(name)
            else:
                wanted_states.add(state)
        wanted_ids = set(producer_ids)
        regex = re.compile(pattern) if pattern else None
        now = self.now_ms()
        result = []
        for transactional_id, entry in sorted(self.entries.items()):
            md = entry.metadata
            if md.state == TxnState.DEAD:
                continue
            if wanted_ids and md.producer_id not in wanted_ids:
                continue
            if (states and not wanted_states) or (wanted_states and md.state not in wanted_states):
                continue
            if duration_ms >= 0 and now - md.txn_start_ms <= duration_ms:
                continue
            if regex is not None and not regex.search(transactional_id):
                continue
            result.append(md)
        return result, unknown


def compatible_error(error: ErrorCode, api_version: int, producer_fenced_since: int) -> ErrorCode:
    """Clients of versions before KIP-588 do not know PRODUCER_FENCED: they get INVALID_PRODUCER_EPOCH."""
    if error == ErrorCode.producer_fenced and api_version < producer_fenced_since:
        return ErrorCode.invalid_producer_epoch
    return error
