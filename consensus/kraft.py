"""KRaft's quorum as a pure state machine: Kafka's pull-based Raft (KIP-595), with pre-vote (KIP-996) and
snapshots (KIP-630).

No I/O, no clock, no randomness of its own: inputs are messages (``receive``), proposals (``propose``),
timer ticks (``tick(now)``) and storage completions (``flushed``); outputs are ``Action`` objects the
driver executes *in order* (``take_actions``). The same code runs under the trio driver
(broker/controller_quorum.py) and under the seeded simulation in tests/test_kraft_simulation.py, which
drives thousands of schedules with lost, delayed, reordered and duplicated messages and crashes that
lose unsynced writes.

The driver's contract, on which safety rests:

* ``PersistState`` and ``WriteSnapshot`` are durable (fsynced) before any later action runs, so a vote
  or an epoch change is on disk before the message that reveals it is sent.
* ``Append`` and ``Truncate`` change the log but need not be durable; ``Flush`` makes everything
  written so far durable and the driver then calls ``flushed(log end)``. Only flushed entries count
  toward the majority: the leader counts its own flushed end, and a follower sends its next Fetch (whose
  offset tells the leader how far it has the log) only once what it appended is flushed.
* ``DropBefore`` deletes a log prefix that an earlier, durable ``WriteSnapshot`` covers.

Terms: the log holds entries at consecutive offsets, each with the epoch of the leader that wrote it;
``end`` is the next offset; the high watermark (``hw``) is the end of the committed prefix.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Entry:
    offset: int
    epoch: int
    payload: bytes | None  # None: the leader-change control record a new leader writes first


# --- messages (the driver maps them to Kafka's Vote, BeginQuorumEpoch, ... requests) ------------------

@dataclass(frozen=True, slots=True)
class VoteRequest:
    epoch: int  # the epoch the candidate campaigns in (for a pre-vote: the one it would campaign in)
    candidate: int
    last_epoch: int
    end_offset: int
    pre_vote: bool


@dataclass(frozen=True, slots=True)
class VoteResponse:
    epoch: int  # the voter's epoch
    leader: int  # the leader the voter knows in that epoch, -1 if none
    granted: bool
    pre_vote: bool
    error: str | None = None


@dataclass(frozen=True, slots=True)
class BeginEpoch:
    epoch: int
    leader: int


@dataclass(frozen=True, slots=True)
class BeginEpochResponse:
    epoch: int
    leader: int


@dataclass(frozen=True, slots=True)
class EndEpoch:
    epoch: int
    leader: int
    successors: tuple[int, ...]  # preferred next leaders, most caught-up first


@dataclass(frozen=True, slots=True)
class EndEpochResponse:
    epoch: int
    leader: int


@dataclass(frozen=True, slots=True)
class FetchRequest:
    epoch: int
    replica: int
    fetch_offset: int
    last_fetched_epoch: int
    seq: int  # the follower's number for this fetch: a late or duplicated answer is recognised


@dataclass(frozen=True, slots=True)
class FetchResponse:
    epoch: int
    leader: int
    seq: int
    fetch_offset: int
    error: str | None = None  # FENCED_LEADER_EPOCH, NOT_LEADER_OR_FOLLOWER, UNKNOWN_LEADER_EPOCH
    entries: tuple[Entry, ...] = ()
    hw: int = 0
    diverging: tuple[int, int] | None = None  # (epoch, end offset): truncate to the end offset
    snapshot: tuple[int, int] | None = None  # (end offset, epoch): fetch this snapshot first


@dataclass(frozen=True, slots=True)
class FetchSnapshotRequest:
    epoch: int
    replica: int
    snapshot: tuple[int, int]


@dataclass(frozen=True, slots=True)
class FetchSnapshotResponse:
    epoch: int
    leader: int
    snapshot: tuple[int, int]
    data: bytes | None
    error: str | None = None


Message = (VoteRequest | VoteResponse | BeginEpoch | BeginEpochResponse | EndEpoch | EndEpochResponse
           | FetchRequest | FetchResponse | FetchSnapshotRequest | FetchSnapshotResponse)


# --- actions (executed by the driver, in order) -------------------------------------------------------

@dataclass(frozen=True, slots=True)
class PersistState:
    epoch: int
    voted_for: int  # -1 = none
    leader: int  # -1 = none


@dataclass(frozen=True, slots=True)
class Append:
    entries: tuple[Entry, ...]


@dataclass(frozen=True, slots=True)
class Truncate:
    end_offset: int  # drop every entry at or above this offset


@dataclass(frozen=True, slots=True)
class Flush:
    pass


@dataclass(frozen=True, slots=True)
class WriteSnapshot:
    end_offset: int
    epoch: int
    data: bytes


@dataclass(frozen=True, slots=True)
class DropBefore:
    offset: int  # the log now starts here (a durable snapshot ends here)


@dataclass(frozen=True, slots=True)
class Send:
    to: int
    message: Message


Action = PersistState | Append | Truncate | Flush | WriteSnapshot | DropBefore | Send


class StateMachine(Protocol):
    """What the committed log is applied to (the metadata image, consensus/metadata_machine.py)."""

    def apply(self, offset: int, epoch: int, payload: bytes) -> None: ...

    def snapshot(self) -> bytes: ...

    def restore(self, data: bytes, end_offset: int) -> None: ...


class Role(enum.Enum):
    UNATTACHED = "Unattached"  # no leader known in this epoch
    PROSPECTIVE = "Prospective"  # asking for pre-votes (KIP-996); the epoch is not bumped yet
    CANDIDATE = "Candidate"
    LEADER = "Leader"
    FOLLOWER = "Follower"
    RESIGNED = "Resigned"  # a leader shutting down gracefully
    OBSERVER = "Observer"  # not a voter: fetches only


@dataclass(frozen=True, slots=True)
class Timing:
    election_timeout_ms: int = 1000  # controller.quorum.election.timeout.ms
    fetch_timeout_ms: int = 2000  # controller.quorum.fetch.timeout.ms
    election_backoff_max_ms: int = 1000  # controller.quorum.election.backoff.max.ms
    fetch_max_wait_ms: int = 500  # how long the leader parks a fetch that has nothing new
    request_timeout_ms: int = 2000  # a request unanswered this long is sent again
    max_fetch_entries: int = 500
    snapshot_after_bytes: int = 20 << 20  # snapshot once this many payload bytes were applied since the last


@dataclass(frozen=True, slots=True)
class DurableState:
    """What a node finds on disk when it starts (the driver loads it)."""

    epoch: int = 0
    voted_for: int = -1
    leader: int = -1
    entries: tuple[Entry, ...] = ()
    snapshot: tuple[int, int, bytes] | None = None  # (end offset, epoch, data)


@dataclass(slots=True)
class _ReplicaProgress:
    end_offset: int = 0  # matched: the replica's log equals the leader's below this offset
    last_fetch_ms: int | None = None
    caught_up_ms: int | None = None  # the last fetch that asked from the leader's log end on
    has_fetched: bool = False  # in this epoch
    parked: FetchRequest | None = None
    parked_until: int = 0
    sent_hw: int = -1


class KRaftNode:
    def __init__(self, node_id: int, voters: tuple[int, ...], machine: StateMachine, state: DurableState,
                 now_ms: int, rng: random.Random, timing: Timing = Timing()) -> None:
        self.id = node_id
        self.voters = tuple(sorted(set(voters)))
        self.machine = machine
        self.timing = timing
        self.rng = rng
        self._actions: list[Action] = []
        self._needs_flush = False
        self._snapshot_due = False
        self._snapshot_data = b""
        self.epoch = state.epoch
        self.voted_for = state.voted_for
        self.leader = -1
        # The log: a snapshot ends at log_start (its epoch snapshot_epoch), then entries.
        self.snapshot_id: tuple[int, int] | None = None  # (end offset, epoch) of the newest durable snapshot
        self.log_start = 0
        self.snapshot_epoch = 0
        self.entries: list[Entry] = []
        self.flushed_end = 0
        self.hw = 0
        self.applied = 0  # the state machine holds the log below this offset
        self.hw_epoch = -1  # the epoch whose leader last told us the high watermark (or we lead it)
        self.leader_hw = -1  # the high watermark the leader last told us (ours when leading)
        self.applied_bytes = 0  # payload bytes applied since the last snapshot
        if state.snapshot is not None:
            end, epoch, data = state.snapshot
            self.snapshot_id = (end, epoch)
            self.log_start = self.applied = self.hw = end
            self.snapshot_epoch = epoch
            self._snapshot_data = data
            machine.restore(data, end)
        entries = [e for e in state.entries if e.offset >= self.log_start]
        if entries and entries[0].offset != self.log_start:
            entries = []  # the log's durable end lies below the snapshot's: start after the snapshot
        self.entries = entries
        self.flushed_end = self.end
        # Volatile role state.
        self.role = Role.UNATTACHED if self.is_voter else Role.OBSERVER
        self.votes: set[int] = set()
        self.progress: dict[int, _ReplicaProgress] = {}
        self.epoch_start_offset = 0
        self._fetch_seq = 0
        self._fetch_in_flight: FetchRequest | None = None
        self._fetch_sent_ms = 0
        self._snapshot_fetch: tuple[int, int] | None = None
        self._last_leader_contact_ms: int | None = None  # starts a follower's fetch timeout
        # The leader itself answered a fetch (or announced its epoch) this recently: only then does this
        # voter refuse pre-votes for it (a leader merely heard of, e.g. from a pre-vote answer, does not count,
        # or two followers of a dead leader would keep sending each other back to it).
        self._heard_from_leader_ms: int | None = None
        self._election_deadline = 0
        self._check_quorum_deadline = 0
        self._begin_resend_ms = 0
        self._vote_resend_ms = 0
        self.now = now_ms
        if self.is_voter and state.leader not in (-1, self.id) and state.epoch > 0:
            self._become_follower(state.epoch, state.leader, persist=False)
        elif self.is_voter and self.voters == (self.id,):
            self._become_candidate()  # a one-voter quorum elects itself at once
        else:
            self._reset_election_timer()
            if not self.is_voter:
                self._fetch_from(self.rng.choice(self.voters))

    # --- the log -----------------------------------------------------------------------------------

    @property
    def is_voter(self) -> bool:
        return self.id in self.voters

    @property
    def end(self) -> int:
        return self.entries[-1].offset + 1 if self.entries else self.log_start

    @property
    def last_epoch(self) -> int:
        return self.entries[-1].epoch if self.entries else self.snapshot_epoch

    def entry(self, offset: int) -> Entry:
        return self.entries[offset - self.log_start]

    def epoch_at(self, offset: int) -> int:
        """Epoch of the entry just below `offset` (the snapshot's epoch at the log start)."""
        if offset == self.log_start:
            return self.snapshot_epoch
        return self.entry(offset - 1).epoch

    def end_offset_for_epoch(self, epoch: int) -> tuple[int, int]:
        """(largest epoch <= `epoch` in this log, end offset of that epoch's entries); (-1, -1) when that
        epoch ended inside the snapshot, where the log no longer says exactly where."""
        if self.log_start > 0 and self.snapshot_epoch > epoch:
            return -1, -1
        for entry in self.entries:
            if entry.epoch > epoch:
                return self.epoch_at(entry.offset), entry.offset
        return self.last_epoch, self.end

    def _append(self, entries: list[Entry]) -> None:
        self.entries.extend(entries)
        self._actions.append(Append(tuple(entries)))
        self._needs_flush = True

    def _truncate(self, end_offset: int) -> None:
        end_offset = max(end_offset, self.hw, self.log_start)  # never below what may be committed
        if end_offset >= self.end:
            return
        del self.entries[end_offset - self.log_start:]
        self.flushed_end = min(self.flushed_end, end_offset)
        self._actions.append(Truncate(end_offset))
        self._needs_flush = True

    # --- driver interface --------------------------------------------------------------------------

    def take_actions(self) -> list[Action]:
        """The actions produced since the last call, with one Flush at the end if the log changed."""
        if self._snapshot_due:
            self._snapshot_due = False
            self.take_snapshot()
        if self._needs_flush:
            self._actions.append(Flush())
            self._needs_flush = False
        actions, self._actions = self._actions, []
        return actions

    def flushed(self, end_offset: int) -> None:
        """The driver made the log durable up to end_offset (the log end when it flushed)."""
        self.flushed_end = max(self.flushed_end, min(end_offset, self.end))
        if self.role is Role.LEADER:
            self._update_hw()
        elif self.role in (Role.FOLLOWER, Role.OBSERVER) and self._fetch_in_flight is None \
                and self._snapshot_fetch is None and self.leader >= 0 and self.flushed_end == self.end:
            self._fetch_from(self.leader)

    def propose(self, payload: bytes) -> tuple[int, int] | None:
        """Append a payload as the leader; (offset, epoch) that identify it, or None when not leader."""
        if self.role is not Role.LEADER:
            return None
        entry = Entry(self.end, self.epoch, payload)
        self._append([entry])
        self._complete_parked_fetches()
        return entry.offset, entry.epoch

    def resign(self) -> None:
        """Graceful shutdown of a leader (EndQuorumEpoch): the most caught-up voters campaign first."""
        if self.role is not Role.LEADER:
            return
        others = [v for v in self.voters if v != self.id]
        others.sort(key=lambda v: -self.progress[v].end_offset)
        for voter in others:
            self._send(voter, EndEpoch(self.epoch, self.id, tuple(others)))
        self.role = Role.RESIGNED
        self._reset_election_timer()

    def tick(self, now_ms: int) -> None:
        self.now = max(self.now, now_ms)
        now = self.now
        if self.role is Role.LEADER:
            if now >= self._check_quorum_deadline:
                contacted = 1 + sum(1 for v in self.voters if v != self.id and self.progress[v].last_fetch_ms
                                    is not None and now - self.progress[v].last_fetch_ms < self.check_quorum_ms)
                if contacted * 2 <= len(self.voters):
                    self._step_down()  # cannot reach a majority: stop accepting writes it cannot commit
                    return
                self._check_quorum_deadline = now + self.check_quorum_ms
            if now >= self._begin_resend_ms:
                # To voters that have not fetched in this epoch, or not lately: a voter that moved to a
                # higher epoch (and, refused pre-votes by our followers, could never win it) answers with
                # that epoch, and this leader steps down so that an election can end the stalemate.
                self._begin_resend_ms = now + self.timing.election_timeout_ms // 2
                for voter in self.voters:
                    progress = self.progress[voter] if voter != self.id else None
                    if progress is not None and (not progress.has_fetched or progress.last_fetch_ms is None
                                                 or now - progress.last_fetch_ms >= self.timing.fetch_timeout_ms):
                        self._send(voter, BeginEpoch(self.epoch, self.id))
            for replica, progress in self.progress.items():
                if progress.parked is not None and now >= progress.parked_until:
                    self._answer_fetch(progress.parked, park=False)
            return
        if self.role in (Role.FOLLOWER, Role.OBSERVER):
            if now - self._fetch_sent_ms >= self._fetch_retry_ms():
                self._fetch_in_flight = None  # lost, or refused: ask again
                self._retry_fetch()
            if self.role is Role.FOLLOWER and self._last_leader_contact_ms is not None \
                    and now - self._last_leader_contact_ms >= self.timing.fetch_timeout_ms:
                self._become_prospective()  # the leader is gone (or we are cut off from it)
            elif self.role is Role.OBSERVER and self._last_leader_contact_ms is not None \
                    and now - self._last_leader_contact_ms >= self.timing.fetch_timeout_ms:
                self.leader = -1
                self._last_leader_contact_ms = now
                self._fetch_from(self.rng.choice(self.voters))
            return
        if self.role in (Role.PROSPECTIVE, Role.CANDIDATE) and now >= self._vote_resend_ms \
                and now < self._election_deadline:
            self._request_votes()  # to the voters that have not answered yet (a request may be lost)
        if now >= self._election_deadline:
            if self.role is Role.RESIGNED:
                self.role = Role.UNATTACHED
            self._become_prospective()

    def next_deadline(self) -> int:
        """The earliest time tick() has something to do (the driver may sleep until then)."""
        if self.role is Role.LEADER:
            deadlines = [self._check_quorum_deadline, self._begin_resend_ms]
            deadlines += [p.parked_until for p in self.progress.values() if p.parked is not None]
            return min(deadlines)
        if self.role in (Role.FOLLOWER, Role.OBSERVER):
            deadlines = [self._fetch_sent_ms + self._fetch_retry_ms()]
            if self._last_leader_contact_ms is not None:
                deadlines.append(self._last_leader_contact_ms + self.timing.fetch_timeout_ms)
            return min(deadlines)
        if self.role in (Role.PROSPECTIVE, Role.CANDIDATE):
            return min(self._election_deadline, self._vote_resend_ms)
        return self._election_deadline

    # --- messages ----------------------------------------------------------------------------------

    def receive(self, sender: int, message: Message) -> None:
        match message:
            case VoteRequest():
                self._on_vote_request(sender, message)
            case VoteResponse():
                self._on_vote_response(sender, message)
            case BeginEpoch():
                if message.epoch >= self.epoch:
                    self._observe_leader(message.epoch, message.leader)
                    if self.leader == message.leader == sender:
                        self._heard_from_leader_ms = self.now
                self._send(sender, BeginEpochResponse(self.epoch, self.leader))
            case EndEpoch():
                self._on_end_epoch(message)
                self._send(sender, EndEpochResponse(self.epoch, self.leader))
            case BeginEpochResponse() | EndEpochResponse():
                if message.epoch > self.epoch:
                    self._observe_leader(message.epoch, message.leader)
            case FetchRequest():
                self._on_fetch(sender, message)
            case FetchResponse():
                self._on_fetch_response(sender, message)
            case FetchSnapshotRequest():
                self._on_fetch_snapshot(sender, message)
            case FetchSnapshotResponse():
                self._on_fetch_snapshot_response(message)

    def _send(self, to: int, message: Message) -> None:
        self._actions.append(Send(to, message))

    # -- epochs and roles

    def _persist(self) -> None:
        self._actions.append(PersistState(self.epoch, self.voted_for, self.leader))

    def _reset_election_timer(self, backoff: bool = False) -> None:
        base = self.timing.election_backoff_max_ms if backoff else self.timing.election_timeout_ms
        self._election_deadline = self.now + self.timing.election_timeout_ms + self.rng.randrange(max(1, base))

    def _observe_leader(self, epoch: int, leader: int) -> None:
        """Someone told us `leader` leads `epoch` (or, with leader -1, that `epoch` exists)."""
        if epoch < self.epoch or (epoch == self.epoch and (leader < 0 or leader == self.leader)):
            return
        if epoch == self.epoch and self.role in (Role.LEADER, Role.RESIGNED):
            return  # cannot happen while at most one leader is elected per epoch
        if leader < 0 or leader == self.id:
            self._become_unattached(epoch)
        else:
            self._become_follower(epoch, leader)

    def _become_unattached(self, epoch: int) -> None:
        was_leader = self.role is Role.LEADER
        if epoch > self.epoch:
            self.epoch, self.voted_for = epoch, -1
        self.leader = -1
        self.role = Role.UNATTACHED if self.is_voter else Role.OBSERVER
        self._persist()
        self._clear_leader_state(was_leader)
        self._reset_election_timer()
        if not self.is_voter:
            self._fetch_from(self.rng.choice(self.voters))

    def _become_follower(self, epoch: int, leader: int, persist: bool = True) -> None:
        was_leader = self.role is Role.LEADER
        if epoch > self.epoch:
            self.epoch, self.voted_for = epoch, -1
        self.leader = leader
        self.role = Role.FOLLOWER if self.is_voter else Role.OBSERVER
        if persist:
            self._persist()
        self._clear_leader_state(was_leader)
        self._last_leader_contact_ms = self.now
        self._heard_from_leader_ms = None
        self._fetch_in_flight = None
        self._snapshot_fetch = None
        if self.flushed_end == self.end or not persist:
            self._fetch_from(leader)

    def _clear_leader_state(self, was_leader: bool) -> None:
        if was_leader:
            for progress in self.progress.values():
                if progress.parked is not None:  # tell waiting followers we are not the leader now
                    self._send(progress.parked.replica, self._fetch_error(progress.parked, "NOT_LEADER_OR_FOLLOWER"))
        self.progress = {}
        self.votes = set()

    def _become_prospective(self) -> None:
        if not self.is_voter:
            return
        self.role = Role.PROSPECTIVE
        self.leader = -1
        self.votes = {self.id}
        self._last_leader_contact_ms = None
        self._fetch_in_flight = None
        self._snapshot_fetch = None
        self._reset_election_timer(backoff=True)
        if len(self.voters) == 1:
            self._become_candidate()
            return
        self._request_votes()

    def _request_votes(self) -> None:
        pre_vote = self.role is Role.PROSPECTIVE
        request = VoteRequest(self.epoch + 1 if pre_vote else self.epoch, self.id, self.last_epoch, self.end,
                              pre_vote=pre_vote)
        for voter in self.voters:
            if voter not in self.votes:
                self._send(voter, request)
        self._vote_resend_ms = self.now + max(1, self.timing.election_backoff_max_ms // 4)

    def _become_candidate(self) -> None:
        self.epoch += 1
        self.voted_for = self.id
        self.leader = -1
        self.role = Role.CANDIDATE
        self.votes = {self.id}
        self._persist()  # the vote for ourselves is durable before anyone sees the request
        self._reset_election_timer(backoff=True)
        if len(self.votes) * 2 > len(self.voters):
            self._become_leader()
            return
        self._request_votes()

    def _become_leader(self) -> None:
        self.role = Role.LEADER
        self.leader = self.id
        self._persist()
        self.progress = {v: _ReplicaProgress() for v in self.voters if v != self.id}
        self.epoch_start_offset = self.end
        self._append([Entry(self.end, self.epoch, None)])  # commits the earlier epochs' entries with it
        self._check_quorum_deadline = self.now + self.check_quorum_ms
        self._begin_resend_ms = self.now
        for voter in self.progress:
            self._send(voter, BeginEpoch(self.epoch, self.id))
        self._update_hw()

    @property
    def check_quorum_ms(self) -> int:
        """A leader that has heard no fetch from a majority this long resigns: 1.5 fetch timeouts, as
        Kafka's leaders wait (KIP-996), so one lost fetch does not unseat a healthy leader."""
        return self.timing.fetch_timeout_ms * 3 // 2

    def _step_down(self) -> None:
        self._become_unattached(self.epoch)

    # -- votes

    def _log_up_to_date(self, last_epoch: int, end_offset: int) -> bool:
        return (last_epoch, end_offset) >= (self.last_epoch, self.end)

    def _has_live_leader(self) -> bool:
        if self.role in (Role.LEADER, Role.RESIGNED):
            return self.role is Role.LEADER
        return self.role is Role.FOLLOWER and self._heard_from_leader_ms is not None \
            and self.now - self._heard_from_leader_ms < self.timing.fetch_timeout_ms

    def _on_vote_request(self, sender: int, request: VoteRequest) -> None:
        if not self.is_voter:
            return
        if request.pre_vote:
            # KIP-996: grant without changing any state, unless a live leader is known: a node that was cut
            # off and rejoins cannot push the quorum into a new epoch while the leader is healthy.
            granted = request.epoch > self.epoch and not self._has_live_leader() \
                and self._log_up_to_date(request.last_epoch, request.end_offset)
            self._send(sender, VoteResponse(self.epoch, self.leader, granted, pre_vote=True))
            return
        if request.epoch < self.epoch:
            self._send(sender, VoteResponse(self.epoch, self.leader, False, pre_vote=False))
            return
        if request.epoch > self.epoch:
            self._become_unattached(request.epoch)
        granted = False
        if self.voted_for == request.candidate:
            granted = True
        elif self.voted_for < 0 and self.leader < 0 and self.role in (Role.UNATTACHED, Role.PROSPECTIVE) \
                and self._log_up_to_date(request.last_epoch, request.end_offset):
            self.voted_for = request.candidate
            self._persist()  # durable before the answer goes out
            self._reset_election_timer()
            granted = True
        self._send(sender, VoteResponse(self.epoch, self.leader, granted, pre_vote=False))

    def _on_vote_response(self, sender: int, response: VoteResponse) -> None:
        if response.epoch > self.epoch:
            self._observe_leader(response.epoch, response.leader)
            return
        if response.pre_vote:
            if self.role is not Role.PROSPECTIVE or response.epoch < self.epoch:
                return
            if response.granted:
                self.votes.add(sender)
                if len(self.votes) * 2 > len(self.voters):
                    self._become_candidate()
            elif response.leader >= 0 and response.leader != self.id:
                self._become_follower(self.epoch, response.leader)  # a live leader exists: follow it
            return
        if self.role is Role.CANDIDATE and response.epoch == self.epoch and response.granted:
            self.votes.add(sender)
            if len(self.votes) * 2 > len(self.voters):
                self._become_leader()

    def _on_end_epoch(self, message: EndEpoch) -> None:
        if message.epoch < self.epoch or not self.is_voter:
            return
        if message.epoch > self.epoch or self.leader == message.leader:
            if message.epoch > self.epoch:
                self._become_unattached(message.epoch)
            # The most caught-up successor campaigns first; the others back off by their place in the list.
            position = message.successors.index(self.id) if self.id in message.successors else len(message.successors)
            self.role = Role.UNATTACHED
            self.leader = -1
            self._last_leader_contact_ms = None
            self._election_deadline = self.now + position * self.timing.election_backoff_max_ms // 2

    # -- replication: leader side

    @property
    def known_hw(self) -> int:
        """The high watermark as this leader may tell it: -1 until an entry of its own epoch commits (until
        then its hw may lag what the previous leader committed, and a follower must not take it as current)."""
        return self.hw if self.hw_epoch == self.epoch else -1

    def _fetch_error(self, request: FetchRequest, error: str) -> FetchResponse:
        return FetchResponse(self.epoch, self.leader, request.seq, request.fetch_offset, error=error, hw=-1)

    def _on_fetch(self, sender: int, request: FetchRequest) -> None:
        if request.epoch > self.epoch:
            self._observe_leader(request.epoch, -1)
        if self.role is not Role.LEADER:
            self._send(sender, self._fetch_error(request, "NOT_LEADER_OR_FOLLOWER"))
            return
        if request.epoch < self.epoch:
            self._send(sender, self._fetch_error(request, "FENCED_LEADER_EPOCH"))
            return
        progress = self.progress.get(request.replica)
        if progress is None:  # an observer
            progress = self.progress[request.replica] = _ReplicaProgress()
        progress.last_fetch_ms = self.now
        progress.has_fetched = True
        if progress.parked is not None and progress.parked.seq != request.seq:
            progress.parked = None  # superseded by this fetch
        self._answer_fetch(request, park=True)

    def _answer_fetch(self, request: FetchRequest, park: bool) -> None:
        progress = self.progress[request.replica]
        offset, last_epoch = request.fetch_offset, request.last_fetched_epoch
        base = FetchResponse(self.epoch, self.id, request.seq, offset, hw=self.known_hw)
        progress.parked = None
        if offset < self.log_start or (offset == self.log_start and self.log_start > 0
                                         and last_epoch != self.snapshot_epoch):
            self._send(request.replica, _replace_fetch(base, snapshot=self.snapshot_id))
            return
        if offset > self.end or self.epoch_at(offset) != last_epoch:
            epoch, end = self.end_offset_for_epoch(last_epoch)
            if end < 0:
                self._send(request.replica, _replace_fetch(base, snapshot=self.snapshot_id))
            else:
                self._send(request.replica, _replace_fetch(base, diverging=(epoch, min(end, offset))))
            return
        # The replica's log matches ours below `offset`; a voter's offset counts toward the high watermark.
        if offset >= self.end:
            progress.caught_up_ms = self.now
        if offset > progress.end_offset:
            progress.end_offset = offset
            if request.replica in self.voters and self._update_hw():  # observers do not count
                base = _replace_fetch(base, hw=self.known_hw)
        if offset == self.end and progress.sent_hw == self.known_hw and park:
            progress.parked = request  # nothing new: answer when something is, or at the deadline
            progress.parked_until = self.now + self.timing.fetch_max_wait_ms
            return
        entries = tuple(self.entries[offset - self.log_start:offset - self.log_start + self.timing.max_fetch_entries])
        progress.sent_hw = self.known_hw
        self._send(request.replica, _replace_fetch(base, entries=entries))

    def _complete_parked_fetches(self) -> None:
        for progress in list(self.progress.values()):
            if progress.parked is not None:
                self._answer_fetch(progress.parked, park=False)

    def _update_hw(self) -> bool:
        """Advance the leader's high watermark to the majority's durable end; True if it moved."""
        ends = sorted([self.flushed_end] + [self.progress[v].end_offset for v in self.voters if v != self.id],
                      reverse=True)
        majority_end = ends[len(self.voters) // 2]
        # Only an entry of this epoch commits by counting (Raft's rule); earlier ones commit with it.
        if majority_end > self.epoch_start_offset and majority_end > self.hw:
            self.hw = self.leader_hw = majority_end
            self.hw_epoch = self.epoch
            self._apply_committed()
            self._complete_parked_fetches()
            return True
        return False

    # -- replication: follower side

    def _fetch_from(self, leader: int) -> None:
        self._fetch_seq += 1
        request = FetchRequest(self.epoch, self.id, self.end, self.last_epoch, self._fetch_seq)
        self._fetch_in_flight = request
        self._fetch_sent_ms = self.now
        self._send(leader, request)

    def _fetch_retry_ms(self) -> int:
        """A fetch unanswered this long is sent again; after a refusal, the next goes out sooner."""
        if self._fetch_in_flight is None and self._snapshot_fetch is None:
            return self.timing.election_backoff_max_ms // 4
        return self.timing.request_timeout_ms

    def _retry_fetch(self) -> None:
        if self._snapshot_fetch is not None:
            self._fetch_sent_ms = self.now
            self._send(self.leader, FetchSnapshotRequest(self.epoch, self.id, self._snapshot_fetch))
            return
        target = self.leader if self.leader >= 0 else self.rng.choice(self.voters)
        if self.flushed_end == self.end:
            self._fetch_from(target)

    def _on_fetch_response(self, sender: int, response: FetchResponse) -> None:
        request = self._fetch_in_flight
        if request is None or response.seq != request.seq or response.fetch_offset != request.fetch_offset:
            if response.epoch > self.epoch:
                self._observe_leader(response.epoch, response.leader)
            return  # late or duplicated
        self._fetch_in_flight = None
        if response.error is not None:
            if response.epoch > self.epoch or (response.epoch == self.epoch and response.leader >= 0
                                               and response.leader != self.leader):
                self._observe_leader(response.epoch, response.leader)
            elif self.role is Role.FOLLOWER and sender == self.leader and response.epoch == self.epoch \
                    and response.leader < 0:
                self._become_unattached(self.epoch)  # our leader stopped leading (restarted or stepped down)
            elif self.role is Role.OBSERVER:
                self.leader = -1
                self._last_leader_contact_ms = self.now
                candidates = [v for v in self.voters if v != sender] or list(self.voters)
                self._fetch_from(self.rng.choice(candidates))
            return  # a follower keeps its leader until the fetch timeout, then campaigns
        if response.epoch != self.epoch:
            if response.epoch > self.epoch:
                self._observe_leader(response.epoch, response.leader)
            return
        if self.role not in (Role.FOLLOWER, Role.OBSERVER):
            return
        if self.role is Role.OBSERVER:
            self.leader = response.leader
        self._last_leader_contact_ms = self._heard_from_leader_ms = self.now
        if response.snapshot is not None:
            self._snapshot_fetch = response.snapshot
            self._fetch_sent_ms = self.now
            self._send(self.leader, FetchSnapshotRequest(self.epoch, self.id, response.snapshot))
            return
        if response.diverging is not None:
            # Truncate to where our log last agrees with the leader's: the end of the diverging epoch, in
            # whichever of the two logs it ends first (KIP-101's rule).
            epoch, end = response.diverging
            self._truncate(min(end, max(self.end_offset_for_epoch(epoch)[1], self.log_start)))
        elif response.entries and response.entries[0].offset == self.end:
            self._append(list(response.entries))
        new_hw = min(response.hw, self.end)
        if response.hw >= 0:
            self.hw_epoch = self.epoch
            self.leader_hw = response.hw
        if new_hw > self.hw:
            self.hw = new_hw
            self._apply_committed()
        if not self._needs_flush:
            self._fetch_from(self.leader)
        # else: the next fetch goes out once the appended entries are flushed (flushed())

    def _on_fetch_snapshot(self, sender: int, request: FetchSnapshotRequest) -> None:
        if self.role is not Role.LEADER or request.epoch != self.epoch:
            error = "FENCED_LEADER_EPOCH" if request.epoch < self.epoch else "NOT_LEADER_OR_FOLLOWER"
            self._send(sender, FetchSnapshotResponse(self.epoch, self.leader, request.snapshot, None, error))
            return
        data = self._snapshot_data if self.snapshot_id == request.snapshot else None
        self._send(sender, FetchSnapshotResponse(self.epoch, self.id, request.snapshot, data,
                                                 None if data is not None else "SNAPSHOT_NOT_FOUND"))

    def _on_fetch_snapshot_response(self, response: FetchSnapshotResponse) -> None:
        if self._snapshot_fetch is None or response.snapshot != self._snapshot_fetch or response.epoch != self.epoch:
            if response.epoch > self.epoch:
                self._observe_leader(response.epoch, response.leader)
            return
        self._snapshot_fetch = None
        if response.data is None:  # the leader has a newer snapshot now: fetch again to learn it
            self._fetch_from(self.leader)
            return
        end, epoch = response.snapshot
        self._last_leader_contact_ms = self._heard_from_leader_ms = self.now
        # Everything the snapshot covers is committed; our own log is replaced from its end on.
        self._actions.append(WriteSnapshot(end, epoch, response.data))
        self._snapshot_data = response.data
        self.snapshot_id = (end, epoch)
        self.entries = []
        self.log_start = end
        self.applied_bytes = 0
        self.snapshot_epoch = epoch
        self._actions.append(Truncate(end))
        self._actions.append(DropBefore(end))
        self.flushed_end = end
        self.hw = max(self.hw, end)
        self.applied = end
        self.machine.restore(response.data, end)
        self._fetch_from(self.leader)

    # -- applying and snapshots


    def _apply_committed(self) -> None:
        while self.applied < self.hw:
            entry = self.entry(self.applied)
            if entry.payload is not None:
                self.machine.apply(entry.offset, entry.epoch, entry.payload)
                self.applied_bytes += len(entry.payload)
            self.applied += 1
        if self.applied_bytes >= self.timing.snapshot_after_bytes:
            self._snapshot_due = True  # taken in take_actions, outside any message's handling

    def take_snapshot(self) -> None:
        """Snapshot the state machine at the applied offset and drop the log below it (KIP-630)."""
        if self.applied <= self.log_start:
            return
        end, epoch = self.applied, self.epoch_at(self.applied)
        data = self.machine.snapshot()
        self._actions.append(WriteSnapshot(end, epoch, data))
        self._actions.append(DropBefore(end))
        self._snapshot_data = data
        self.snapshot_id = (end, epoch)
        del self.entries[:end - self.log_start]
        self.log_start = end
        self.applied_bytes = 0
        self.snapshot_epoch = epoch

    def caught_up(self) -> bool:
        """A leader is known and this node has applied everything that leader has told it is committed
        (for a leader: its first entry of this epoch is committed). A broker opens its logs and serves
        only once this holds."""
        return self.leader >= 0 and self.hw_epoch == self.epoch and self.applied >= self.leader_hw

    def majority_fetched_ms(self, now: int) -> int | None:
        """For a leader: the latest time by which a majority of the voters (itself, alive at `now`, included)
        had fetched from it in this epoch. No other leader can have been elected before it (the majorities
        meet in a voter that would not fetch from an older epoch). None when this node does not lead."""
        if self.role is not Role.LEADER:
            return None
        never = -(1 << 62)
        times = sorted((now if v == self.id else (self.progress[v].last_fetch_ms or never) for v in self.voters),
                       reverse=True)
        return times[len(self.voters) // 2]

    # --- what DescribeQuorum reports ---------------------------------------------------------------

    def replica_states(self) -> list[tuple[int, int, int | None, int | None]]:
        """(replica id, log end offset, last fetch time, last caught-up time) of every voter and observer
        as the leader sees them (DescribeQuorum); the leader's own row has its log end and now."""
        rows = [(self.id, self.end, self.now, self.now)]
        for replica, progress in sorted(self.progress.items()):
            rows.append((replica, progress.end_offset, progress.last_fetch_ms, progress.caught_up_ms))
        return rows


def _replace_fetch(response: FetchResponse, **changes) -> FetchResponse:
    values = {name: getattr(response, name) for name in FetchResponse.__slots__}
    values.update(changes)
    return FetchResponse(**values)


