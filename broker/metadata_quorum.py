"""This node's member of the KRaft metadata quorum: drives the pure state machine (consensus/kraft.py)
with real storage (broker/metadata_log.py), a real clock and the controller listener's connections.

One trio task (`run`) owns the node. It takes every input queued since its last turn (messages from
peers, proposals, timer ticks), hands them to the node, then executes the node's actions in order:
storage work on a worker thread (so a flush covers every proposal that arrived meanwhile: group commit),
messages to peers through their lanes (broker/quorum_peers.py). A one-voter quorum, the embedded
default, needs no network: `open()` elects it and applies the log before the broker serves.
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import trio

from lodestream.consensus.image import MetadataImage
from lodestream.consensus.image_machine import ImageStateMachine
from lodestream.consensus.kraft import (
    Append,
    BeginEpochResponse,
    DropBefore,
    EndEpochResponse,
    FetchResponse,
    FetchSnapshotResponse,
    Flush,
    KRaftNode,
    Message,
    PersistState,
    Role,
    Send,
    Timing,
    Truncate,
    VoteResponse,
    WriteSnapshot,
)
from lodestream.consensus.records import MetadataRecord, encode_records

from lodestream.broker.config import NodeHalted
from lodestream.broker.metadata_log import MetadataLogStore, StorageError

log = logging.getLogger(__name__)

# The machine's answers to a peer's request: they go back through the handler waiting for them.
_RESPONSES = (VoteResponse, BeginEpochResponse, EndEpochResponse, FetchResponse, FetchSnapshotResponse)


class QuorumError(Exception):
    """A proposal's outcome is not a success (on a timeout it may still commit later)."""


class NotController(QuorumError):
    """This node is not the active controller (the quorum's leader); `leader` is the one it knows, or -1."""

    def __init__(self, leader: int) -> None:
        super().__init__(f"this node is not the active controller (the leader is {leader})")
        self.leader = leader


@dataclass
class _Proposal:
    offset: int
    epoch: int
    done: trio.Event
    image: MetadataImage | None = None
    error: str | None = None


def quorum_timing(config) -> Timing:
    """The quorum's timers from Kafka's controller.quorum.* configs."""
    election = int(config.get("controller.quorum.election.timeout.ms"))
    fetch = int(config.get("controller.quorum.fetch.timeout.ms"))
    return Timing(election_timeout_ms=election, fetch_timeout_ms=fetch,
                  election_backoff_max_ms=int(config.get("controller.quorum.election.backoff.max.ms")),
                  fetch_max_wait_ms=min(500, fetch // 4), request_timeout_ms=int(config.get("controller.quorum.request.timeout.ms")),
                  snapshot_after_bytes=int(config.get("metadata.log.max.record.bytes.between.snapshots")))


def _now_ms() -> int:
    return int(time.monotonic() * 1000)


class MetadataQuorum:
    def __init__(self, node_id: int, voters: tuple[int, ...], directory: Path, timing: Timing = Timing(),
                 on_image: Callable[[MetadataImage], None] | None = None) -> None:
        self.node_id = node_id
        self.voters = voters
        self.directory = directory
        self.timing = timing
        self.on_image = on_image
        self.storage: MetadataLogStore | None = None
        self.node: KRaftNode | None = None
        self.machine = ImageStateMachine(self._applied)
        self._proposals: dict[int, _Proposal] = {}
        self._notified: MetadataImage | None = None  # the image on_image last saw
        self._role = None  # (role, epoch, leader) last logged
        self._caught_up = trio.Event()
        self._turned = trio.Event()  # set (and replaced) at the end of each turn of the loop
        self._inbox_send, self._inbox = trio.open_memory_channel[tuple](math.inf)
        self.send_to_peer: Callable[[int, Message], None] | None = None  # set by the peer lanes
        self._answers: dict[tuple[int, type], tuple[trio.Event, list]] = {}  # (peer, response type) -> waiter
        self.fetch_seq = 0  # numbers the peers' fetches (the machine tells a late answer by it)
        self.limiter = trio.CapacityLimiter(1)

    # -- start-up (blocking, before trio serves)

    def open(self) -> None:
        try:
            self.storage = MetadataLogStore(self.directory)
            state = self.storage.load()
            if state.snapshot is not None and self.storage.log.log_start_offset < state.snapshot[0]:
                # A crash between writing a snapshot and deleting the log below it: finish the deletion, so
                # the log goes on from the snapshot's end (it may even have ended before it).
                self.storage.drop_before(state.snapshot[0])
                state = self.storage.load()
        except (StorageError, OSError) as exc:
            raise QuorumError(f"cannot open the metadata log in {self.directory}: {exc}") from None
        self.node = KRaftNode(self.node_id, self.voters, self.machine, state, _now_ms(),
                              random.Random(), self.timing)
        if self.voters == (self.node_id,):
            self._settle_blocking()  # a one-voter quorum is its own leader: apply the whole log now

    def _settle_blocking(self) -> None:
        node = self.node
        actions = node.take_actions()
        while actions:
            for action in actions:
                self._execute_storage(action)
            actions = node.take_actions()

    def propose_blocking(self, records: list[MetadataRecord]) -> MetadataImage:
        """Commit records before trio runs (a one-voter quorum at start-up: migration)."""
        placed = self.node.propose(encode_records(records))
        if placed is None:
            raise NotController(self.node.leader)
        proposal = self._proposals[placed[0]] = _Proposal(placed[0], placed[1], trio.Event())
        self._settle_blocking()
        self._proposals.pop(placed[0], None)
        if proposal.error is not None or proposal.image is None:
            raise QuorumError(f"metadata proposal failed: {proposal.error}")
        return proposal.image

    def close(self) -> None:
        if self.storage is not None:
            self.storage.close()
            self.storage = None

    # -- state

    @property
    def image(self) -> MetadataImage:
        return self.machine.image

    @property
    def leader(self) -> int:
        """The active controller's node id as this node knows it (-1: none known)."""
        return self.node.leader if self.node is not None else -1

    @property
    def is_leader(self) -> bool:
        return self.node is not None and self.node.role is Role.LEADER

    @property
    def epoch(self) -> int:
        return self.node.epoch if self.node is not None else -1

    def majority_fetched_s(self) -> float | None:
        """When leading: the latest monotonic time (s) by which a majority of voters had fetched from this
        node in its epoch (KRaftNode.majority_fetched_ms); None otherwise."""
        fetched = self.node.majority_fetched_ms(_now_ms()) if self.node is not None else None
        return None if fetched is None else fetched / 1000

    @property
    def applied_offset(self) -> int:
        """The metadata log is applied to the image below this offset."""
        return self.node.applied if self.node is not None else 0

    @property
    def log_start_offset(self) -> int:
        return self.node.log_start if self.node is not None else 0

    @property
    def high_watermark(self) -> int:
        return self.node.hw if self.node is not None else -1

    def replica_states(self) -> list[tuple[int, int, int | None, int | None]]:
        return self.node.replica_states()

    @staticmethod
    def wall_clock_ms(monotonic_ms: int | None) -> int:
        """A time of the machine's (monotonic ms) as epoch ms, -1 for never."""
        if monotonic_ms is None:
            return -1
        return int(time.time() * 1000) - (_now_ms() - monotonic_ms)

    @property
    def caught_up(self) -> bool:
        """A leader is known and this node has applied everything it knows to be committed."""
        node = self.node
        return node is not None and node.caught_up()

    # -- proposals

    async def propose(self, records: list[MetadataRecord], timeout: float = 10.0) -> MetadataImage:
        """Commit one batch of records (applied all or nothing) and return the image right after it.

        Only the leader takes proposals (NotController otherwise). QuorumError on timeout (outcome
        unknown), when the leader lost the entry, or when the batch does not replay (image unchanged)."""
        reply: dict = {}
        placed = trio.Event()
        self._inbox_send.send_nowait(("propose", encode_records(records), reply, placed))
        await placed.wait()
        if "leader" in reply:
            raise NotController(reply["leader"])
        proposal: _Proposal = reply["proposal"]
        with trio.move_on_after(timeout):
            await proposal.done.wait()
        if not proposal.done.is_set():
            raise QuorumError(f"metadata proposal timed out after {timeout:.1f}s (outcome unknown)")
        if proposal.error is not None:
            raise QuorumError(f"metadata proposal failed: {proposal.error}")
        return proposal.image

    def _applied(self, offset: int, epoch: int, image: MetadataImage, error: str | None) -> None:
        for waiting in [p for p in self._proposals.values() if p.offset <= offset]:
            del self._proposals[waiting.offset]
            if waiting.offset == offset and waiting.epoch == epoch:
                waiting.image, waiting.error = image, error
            else:
                waiting.error = "the leader changed before the batch was committed (not applied)"
            waiting.done.set()

    def _notify(self) -> None:
        """Once per turn: tell on_image about a new image, wake wait_caught_up, and fail the proposals of
        a leadership this node lost (as Kafka's controller fails its pending writes when it resigns)."""
        role = (self.node.role, self.node.epoch, self.node.leader)
        if role != self._role:
            self._role = role
            log.info("metadata quorum: %s in epoch %d, leader %s", role[0].value, role[1],
                     role[2] if role[2] >= 0 else "unknown")
        if self._proposals and not self.is_leader:
            for proposal in self._proposals.values():
                proposal.error = "this node stopped leading the quorum (the change may or may not be committed)"
                proposal.done.set()
            self._proposals.clear()
        image = self.machine.image
        if image is not self._notified:
            self._notified = image
            if self.on_image is not None:
                try:
                    self.on_image(image)
                except Exception:  # noqa: BLE001 - a listener's bug must not stop the quorum
                    log.exception("metadata image listener failed")
        self._turned.set()
        self._turned = trio.Event()
        if self.caught_up:
            self._caught_up.set()

    async def wait_for(self, predicate: Callable[[MetadataImage], object], timeout: float):
        """The first truthy predicate(image), asked now and after each turn of the loop, or None after
        `timeout` seconds."""
        with trio.move_on_after(timeout):
            while True:
                found = predicate(self.machine.image)
                if found:
                    return found
                await self._turned.wait()
        return None

    async def wait_caught_up(self) -> None:
        """Until a leader is known and everything it has committed (as far as we know) is applied."""
        await self._caught_up.wait()

    # -- messages from peers (the controller listener's handlers and the peer lanes)

    async def resign(self, timeout: float) -> None:
        """A leader shutting down hands over (EndQuorumEpoch to the other voters), then waits up to
        `timeout` for one of them to take over, so clients see a new leader at once."""
        if not self.is_leader or len(self.voters) == 1:
            return
        self._inbox_send.send_nowait(("resign",))
        await self.wait_for(lambda _: self.node.role is not Role.RESIGNED and not self.is_leader
                            and self.node.leader >= 0, timeout)

    def deliver(self, sender: int, message: Message) -> None:
        self._inbox_send.send_nowait(("message", sender, message))

    async def exchange(self, sender: int, message: Message, response_type: type, timeout: float) -> Message | None:
        """Hand a peer's request to the machine and wait for its answer (None: none within `timeout`, or a
        newer request of the same kind from the same peer replaced this one)."""
        key = (sender, response_type)
        previous = self._answers.get(key)
        if previous is not None:
            previous[0].set()
        waiter = self._answers[key] = (trio.Event(), [])
        self.deliver(sender, message)
        with trio.move_on_after(timeout):
            await waiter[0].wait()
        if self._answers.get(key) is waiter:
            del self._answers[key]
        return waiter[1][0] if waiter[1] else None

    def _send(self, to: int, message: Message) -> None:
        if isinstance(message, _RESPONSES):
            waiter = self._answers.pop((to, type(message)), None)
            if waiter is not None:
                waiter[1].append(message)
                waiter[0].set()
        elif self.send_to_peer is not None:
            self.send_to_peer(to, message)

    # -- the loop

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        node = self.node
        assert node is not None, "MetadataQuorum.open() first"
        self._notified = self.machine.image
        self._notify()
        task_status.started()
        try:
            while True:
                delay = max(0.0, (node.next_deadline() - _now_ms()) / 1000)
                with trio.move_on_after(delay):
                    first = await self._inbox.receive()
                    self._take(first)
                    while True:  # everything queued meanwhile goes into the same turn
                        try:
                            self._take(self._inbox.receive_nowait())
                        except trio.WouldBlock:
                            break
                node.tick(_now_ms())
                actions = node.take_actions()
                while actions:
                    await self._execute(actions)
                    actions = node.take_actions()
                self._notify()
        finally:
            for proposal in self._proposals.values():
                proposal.error = "the metadata quorum stopped"
                proposal.done.set()
            self._proposals.clear()

    def _take(self, item: tuple) -> None:
        node = self.node
        node.tick(_now_ms())
        if item[0] == "message":
            node.receive(item[1], item[2])
        elif item[0] == "resign":
            node.resign()
        elif item[0] == "propose":
            _, payload, reply, placed = item
            where = node.propose(payload)
            if where is None:
                reply["leader"] = node.leader
            else:
                reply["proposal"] = self._proposals[where[0]] = _Proposal(where[0], where[1], trio.Event())
            placed.set()

    async def _execute(self, actions: list) -> None:
        storage_work = []
        for action in actions:
            if isinstance(action, Send):
                if storage_work:
                    await self._run_storage(storage_work)
                    storage_work = []
                self._send(action.to, action.message)
            else:
                storage_work.append(action)
        if storage_work:
            await self._run_storage(storage_work)

    async def _run_storage(self, actions: list) -> None:
        try:
            flushed = await trio.to_thread.run_sync(self._execute_storage_batch, actions, limiter=self.limiter)
        except (StorageError, OSError) as exc:
            # A vote, an epoch or an entry that cannot be made durable: the node must not go on answering as
            # if it were (Kafka's controller halts too). The process stops with this one line.
            log.critical("the metadata log in %s cannot be written (%s): stopping this node", self.directory, exc)
            raise NodeHalted(f"metadata log: cannot write {self.directory}: {exc}") from None
        if flushed is not None:
            self.node.flushed(flushed)

    def _execute_storage_batch(self, actions: list) -> int | None:
        flushed = None
        for action in actions:
            result = self._execute_storage(action, report=False)
            if result is not None:
                flushed = result
        return flushed

    def _execute_storage(self, action, report: bool = True) -> int | None:
        storage = self.storage
        match action:
            case PersistState():
                storage.persist_state(action)
            case Append(entries=entries):
                storage.append(entries)
            case Truncate(end_offset=end):
                storage.truncate(end)
            case Flush():
                end = storage.flush()
                if report:
                    self.node.flushed(end)
                return end
            case WriteSnapshot():
                storage.write_snapshot(action.end_offset, action.epoch, action.data)
            case DropBefore(offset=offset):
                if offset > storage.log.log_end_offset:  # after a FetchSnapshot: the log restarts there
                    log.info("installed the leader's snapshot of the metadata log up to offset %d", offset)
                storage.drop_before(offset)
            case _:
                raise AssertionError(f"not a storage action: {action!r}")
        return None
