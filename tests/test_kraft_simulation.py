"""A seeded, deterministic simulation of the KRaft quorum (consensus/kraft.py), in the spirit of Kafka's
RaftEventSimulationTest: 3 and 5 in-process voters (and in half the runs an observer, as a broker-only
node is) on a simulated network and clock, with message loss,
delay, reordering and duplication, network partitions, and crashes that lose every write not yet
flushed. After every step it checks the safety invariants:

* at most one leader per epoch;
* a committed entry is never lost (a majority holds it durably) or changed;
* every node's log below its high watermark is the committed prefix;
* every node's image equals the replay of the committed prefix it has applied;
* a node that says it has caught up has applied everything committed before its leader's epoch began
  (a broker serves from its image from then on);
* and two liveness properties: while a minority is cut off, a majority that stays up has a leader within
  LIVENESS_MS, and after everything heals the quorum converges on one leader.

A failure names its seed; ``LODESTREAM_SIM_SEED=<seed>`` replays just that one run, and
``LODESTREAM_SIM_RUNS=<n>`` runs more seeds by hand.
"""

from __future__ import annotations

import heapq
import os
import random
from dataclasses import dataclass, field

import pytest

from lodestream.consensus.image import MetadataImage, replay_all
from lodestream.consensus.image_machine import ImageStateMachine
from lodestream.consensus.kraft import (
    Append,
    DropBefore,
    DurableState,
    Entry,
    Flush,
    KRaftNode,
    PersistState,
    Role,
    Send,
    Timing,
    Truncate,
    WriteSnapshot,
)
from lodestream.consensus.records import ConfigRecord, decode_records, encode_records

TIMING = Timing(election_timeout_ms=100, fetch_timeout_ms=200, election_backoff_max_ms=100,
                fetch_max_wait_ms=50, request_timeout_ms=150, max_fetch_entries=5, snapshot_after_bytes=1400)
RUNS = int(os.environ.get("LODESTREAM_SIM_RUNS", "500"))  # per voter count: 3 and 5 voters, 1,000 runs in all
FAULT_MS = 2500  # simulated time with faults, then everything heals and the quorum must converge
LIVENESS_MS = 2000  # ten fetch timeouts: a majority cut off from the rest has a leader by then
CONVERGE_MS = 3000


class InvariantViolated(AssertionError):
    pass


@dataclass
class Disk:
    """One node's storage: what survives a crash (durable) and what the node has written (current)."""

    state: PersistState = PersistState(0, -1, -1)
    durable_entries: list[Entry] = field(default_factory=list)
    current_entries: list[Entry] = field(default_factory=list)
    snapshot: tuple[int, int, bytes] | None = None
    persist_votes: bool = True  # False plants a bug: a vote is answered but never made durable


class Simulation:
    def __init__(self, seed: int, voters: int, persist_votes: bool = True, crashes: int = 3,
                 restart_ms: int = 400, cut_leader_at: int | None = None) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.voters = tuple(range(1, voters + 1))
        self.observer = voters + 1 if self.rng.random() < 0.5 else None  # fetches, never votes
        self.ids = self.voters + ((self.observer,) if self.observer else ())
        self.now = 0
        self.queue: list = []
        self.counter = 0
        self.disks = {i: Disk(persist_votes=persist_votes) for i in self.ids}
        self.nodes: dict[int, KRaftNode | None] = {}
        self.tick_at: dict[int, int] = {}
        self.incarnation = {i: 0 for i in self.ids}  # a flush completes only for the process that asked
        self.cut: set[frozenset[int]] = set()
        self.cut_since = 0
        self.isolated: set[int] = set()  # the minority side of the current partition
        self.majority_led = False  # a node outside `isolated` has led since the partition began
        self.restarted_at = {i: 0 for i in self.ids}  # last crash or restart of each node
        self.leaders: dict[int, int] = {}  # epoch -> leader
        self.committed_before: dict[int, int] = {}  # epoch -> committed prefix when its leader was elected
        self.committed: dict[int, Entry] = {}
        self.images: list[MetadataImage] = [MetadataImage()]  # images[o]: replay of the committed prefix below o
        self.proposed = 0
        self.loss = self.rng.choice([0.0, 0.05, 0.2])
        self.dup = self.rng.choice([0.0, 0.05])
        self.max_delay = self.rng.choice([2, 10, 40])
        self.steps = 0
        self.crashes = crashes
        self.restart_ms = restart_ms
        self.cut_leader_at = cut_leader_at  # a run that cuts whoever leads then off, for LIVENESS_MS
        for i in self.ids:
            self.start(i)

    # -- plumbing

    def schedule(self, at: int, event: tuple) -> None:
        self.counter += 1
        heapq.heappush(self.queue, (at, self.counter, event))

    def start(self, i: int) -> None:
        disk = self.disks[i]
        disk.current_entries = list(disk.durable_entries)
        state = DurableState(disk.state.epoch, disk.state.voted_for, disk.state.leader,
                             tuple(disk.durable_entries), disk.snapshot)
        self.incarnation[i] += 1
        node = KRaftNode(i, self.voters, ImageStateMachine(), state, self.now,
                         random.Random(self.rng.random()), TIMING)
        self.nodes[i] = node
        self.after_input(i)

    def crash(self, i: int) -> None:
        self.nodes[i] = None  # everything not flushed is lost with the process
        self.disks[i].current_entries = list(self.disks[i].durable_entries)

    def after_input(self, i: int) -> None:
        node = self.nodes[i]
        for action in node.take_actions():
            self.execute(i, action)
        self.check(i)
        deadline = max(node.next_deadline(), self.now + 1)
        if self.tick_at.get(i) != deadline:
            self.tick_at[i] = deadline
            self.schedule(deadline, ("tick", i, deadline))

    def execute(self, i: int, action) -> None:
        disk = self.disks[i]
        match action:
            case PersistState():
                if not disk.persist_votes and action.voted_for not in (-1, i) and action.leader == -1:
                    disk.state = PersistState(action.epoch, disk.state.voted_for if disk.state.epoch == action.epoch
                                              else -1, action.leader)
                else:
                    disk.state = action
            case Append(entries=entries):
                assert not disk.current_entries or disk.current_entries[-1].offset + 1 == entries[0].offset \
                    or disk.current_entries[-1].offset < entries[0].offset
                disk.current_entries.extend(entries)
            case Truncate(end_offset=end):
                disk.current_entries = [e for e in disk.current_entries if e.offset < end]
            case Flush():
                self.schedule(self.now + self.rng.randrange(0, 4), ("flush", i, self.incarnation[i]))
            case WriteSnapshot():
                disk.snapshot = (action.end_offset, action.epoch, action.data)
            case DropBefore(offset=offset):
                disk.current_entries = [e for e in disk.current_entries if e.offset >= offset]
                disk.durable_entries = [e for e in disk.durable_entries if e.offset >= offset]
            case Send(to=to, message=message):
                if self.rng.random() < self.loss:
                    return
                copies = 2 if self.rng.random() < self.dup else 1
                for _ in range(copies):
                    self.schedule(self.now + self.rng.randrange(0, self.max_delay + 1), ("deliver", i, to, message))

    # -- invariants

    def fail(self, what: str) -> None:
        raise InvariantViolated(f"seed {self.seed}, {len(self.voters)} voters, t={self.now} ms, step {self.steps}: {what}")

    def check(self, i: int) -> None:
        node = self.nodes[i]
        if node.role is Role.LEADER:
            elected = self.leaders.setdefault(node.epoch, i)
            if elected != i:
                self.fail(f"two leaders in epoch {node.epoch}: {elected} and {i}")
            self.committed_before.setdefault(node.epoch, len(self.committed))
            if i not in self.isolated:
                self.majority_led = True
        for offset in range(max(node.log_start, 0), node.hw):
            entry = node.entry(offset)
            known = self.committed.get(offset)
            if known is None:
                self.committed[offset] = entry
            elif known != entry:
                self.fail(f"node {i} has {entry} below its high watermark {node.hw}, but {known} was committed")
        while len(self.images) <= len(self.committed) and len(self.images) - 1 in self.committed:
            entry = self.committed[len(self.images) - 1]
            image = self.images[-1]
            if entry.payload is not None:
                image = replay_all(image, decode_records(entry.payload))
            self.images.append(image)
        if node.caught_up() and node.applied < self.committed_before.get(node.epoch, 0):
            self.fail(f"node {i} says it caught up at {node.applied}, but {self.committed_before[node.epoch]} "
                      f"entries were committed before epoch {node.epoch}")
        if node.applied < len(self.images) and node.machine.image != self.images[node.applied]:
            self.fail(f"node {i}'s image at offset {node.applied} differs from the replay of the committed prefix")

    def check_majority_has_leader(self) -> None:
        """Cut off for LIVENESS_MS, a majority whose nodes all stayed up has had a leader meanwhile."""
        majority = [i for i in self.voters if i not in self.isolated]
        if not self.isolated or self.now - self.cut_since < LIVENESS_MS or any(
                self.nodes[i] is None or self.restarted_at[i] > self.cut_since for i in majority):
            return
        if not self.majority_led:
            roles = {i: (self.nodes[i].role.value, self.nodes[i].epoch, self.nodes[i].leader) for i in majority}
            self.fail(f"{majority} were cut off from {sorted(self.isolated)} for {LIVENESS_MS} ms and elected no "
                      f"leader: {roles}")

    def check_durability(self) -> None:
        """Every committed entry is held durably (log or snapshot) by a majority of the voters."""
        for offset, entry in self.committed.items():
            holders = 0
            for disk in (self.disks[i] for i in self.voters):
                if disk.snapshot is not None and disk.snapshot[0] > offset:
                    holders += 1
                elif any(e == entry for e in disk.durable_entries if e.offset == offset):
                    holders += 1
            if holders * 2 <= len(self.voters):
                self.fail(f"committed entry {entry} is durable on only {holders} voters")

    # -- the run

    def step(self) -> bool:
        if not self.queue:
            return False
        at, _, event = heapq.heappop(self.queue)
        self.now = max(self.now, at)
        self.steps += 1
        kind = event[0]
        if kind == "tick":
            _, i, deadline = event
            if self.nodes.get(i) is None or self.tick_at.get(i) != deadline:
                return True
            self.nodes[i].tick(self.now)
            self.after_input(i)
        elif kind == "flush":
            _, i, incarnation = event
            node = self.nodes.get(i)
            if node is None or self.incarnation[i] != incarnation:
                return True
            disk = self.disks[i]
            disk.durable_entries = list(disk.current_entries)
            node.flushed(disk.current_entries[-1].offset + 1 if disk.current_entries else node.log_start)
            self.after_input(i)
        elif kind == "deliver":
            _, sender, to, message = event
            if self.nodes.get(to) is None or frozenset((sender, to)) in self.cut:
                return True
            self.nodes[to].tick(self.now)
            self.nodes[to].receive(sender, message)
            self.after_input(to)
        elif kind == "propose":
            alive = [n for n in self.nodes.values() if n is not None and n.role is Role.LEADER]
            if alive:
                node = self.rng.choice(alive)
                self.proposed += 1
                record = ConfigRecord("broker", "", f"key.{self.proposed % 7}", str(self.proposed))
                node.propose(encode_records([record]))
                self.after_input(node.id)
        elif kind == "crash":
            _, i = event
            if self.nodes.get(i) is not None:
                self.restarted_at[i] = self.now
                self.crash(i)
                self.check_durability()
                self.schedule(self.now + self.rng.randrange(1, self.restart_ms), ("restart", i))
        elif kind == "restart":
            _, i = event
            if self.nodes.get(i) is None:
                self.restarted_at[i] = self.now
                self.start(i)
        elif kind == "partition":
            leaders = [i for i in self.voters if self.nodes[i] is not None and self.nodes[i].role is Role.LEADER]
            self.isolated = {leaders[0] if event[1:] == ("leader",) and leaders else self.rng.choice(self.voters)}
            if len(self.voters) == 5 and self.rng.random() < 0.5:  # a 2-3 split
                self.isolated = set(self.rng.sample(self.voters, 2))
            self.cut = {frozenset((a, b)) for a in self.isolated for b in self.ids if b not in self.isolated}
            self.cut_since = self.now
            self.majority_led = any(n is not None and n.role is Role.LEADER and i not in self.isolated
                                    for i, n in self.nodes.items())
        elif kind == "heal":
            self.cut, self.isolated = set(), set()
        elif kind == "liveness":
            self.check_majority_has_leader()
        return True

    def run(self) -> None:
        rng = self.rng
        t = 0
        while t < FAULT_MS:
            t += rng.randrange(5, 40)
            self.schedule(t, ("propose",))
        for _ in range(rng.randrange(0, self.crashes + 1)):
            self.schedule(rng.randrange(0, FAULT_MS), ("crash", rng.choice(self.ids)))
        if self.cut_leader_at is not None:
            self.schedule(self.cut_leader_at, ("partition", "leader"))
            self.schedule(self.cut_leader_at + LIVENESS_MS + 100, ("heal",))
            self.schedule(self.cut_leader_at + LIVENESS_MS, ("liveness",))
        elif rng.random() < 0.7:
            start = rng.randrange(0, FAULT_MS - 200)
            self.schedule(start, ("partition",))
            self.schedule(start + rng.randrange(100, 3000), ("heal",))
            self.schedule(start + LIVENESS_MS, ("liveness",))
        if rng.random() < 0.3:  # crash every node at once: only what was flushed survives
            when = rng.randrange(0, FAULT_MS)
            for i in self.ids:
                self.schedule(when, ("crash", i))
        while self.queue and self.queue[0][0] <= FAULT_MS:
            self.step()
        # Heal everything, restart everyone, stop the faults: the quorum must converge on one leader.
        self.cut = set()
        self.loss, self.dup = 0.0, 0.0
        self.queue = [item for item in self.queue if item[2][0] in ("tick", "flush", "deliver")]
        heapq.heapify(self.queue)
        for i in self.ids:
            if self.nodes[i] is None:
                self.start(i)
        self.schedule(self.now + 1, ("propose",))
        deadline = self.now + CONVERGE_MS
        while self.now < deadline and self.step():
            if self.converged():
                break
        self.check_durability()
        if not self.converged():
            roles = {i: (n.role.value, n.epoch, n.hw, n.end) for i, n in self.nodes.items()}
            self.fail(f"no convergence {CONVERGE_MS} ms after healing: {roles}")

    def converged(self) -> bool:
        nodes = list(self.nodes.values())
        leaders = [n for n in nodes if n.role is Role.LEADER]
        if len(leaders) != 1:
            return False
        leader = leaders[0]
        return leader.hw > leader.epoch_start_offset and all(
            n.epoch == leader.epoch and n.applied == leader.applied == leader.end for n in nodes)


def _seeds() -> list[int]:
    if "LODESTREAM_SIM_SEED" in os.environ:
        return [int(os.environ["LODESTREAM_SIM_SEED"])]
    return list(range(RUNS))


@pytest.mark.parametrize("voters", [3, 5])
def test_quorum_is_safe_and_converges_under_faults(voters):
    committed = []
    for seed in _seeds():
        simulation = Simulation(seed, voters)
        simulation.run()  # raises InvariantViolated naming the seed
        committed.append(len(simulation.committed))
    assert sum(committed) > 0
    assert min(committed) > 0, "every run commits something after healing"


def test_the_checker_catches_a_vote_answered_before_it_is_durable():
    """The planted bug: votes are granted and sent, but never reach the disk. After a crash the voter
    votes again in the same epoch, and two leaders get elected in it. Frequent crashes with quick
    restarts make the window likely; the same runs with durable votes stay safe."""
    for seed in range(1500):
        try:
            Simulation(seed, 5, persist_votes=False, crashes=300, restart_ms=30).run()
        except InvariantViolated as caught:
            assert "two leaders in epoch" in str(caught), caught
            break
    else:
        pytest.fail("1,500 runs with votes that are never made durable found no violation")
    for same_seed in range(seed + 1):
        Simulation(same_seed, 5, crashes=300, restart_ms=30).run()


def test_a_run_replays_from_its_seed():
    first, second = Simulation(7, 3), Simulation(7, 3)
    first.run()
    second.run()
    assert (first.steps, first.now, first.committed) == (second.steps, second.now, second.committed)


def test_the_checker_catches_a_new_leader_telling_its_stale_high_watermark(monkeypatch):
    """The planted bug: a new leader tells followers its high watermark before an entry of its own epoch
    commits. After a restart it may lag what was committed, and a follower would serve an image that is
    missing committed metadata (a broker would even drop partitions it thinks were deleted)."""
    monkeypatch.setattr(KRaftNode, "known_hw", property(lambda node: node.hw))
    for seed in range(300):
        try:
            Simulation(seed, 3).run()
        except InvariantViolated as caught:
            assert "caught up" in str(caught), caught
            return
    pytest.fail("300 runs with a leader telling an unconfirmed high watermark found no violation")


def test_the_checker_catches_followers_sending_each_other_back_to_a_dead_leader(monkeypatch):
    """The planted bug: a voter refuses pre-votes while it merely knows of a leader (one another voter named
    in its pre-vote answer), not only after the leader itself answered. Cut the leader off, and its two
    followers keep sending each other back to it: the majority never elects a new leader."""
    monkeypatch.setattr(KRaftNode, "_has_live_leader", lambda node: node.role is Role.FOLLOWER
                        and node._last_leader_contact_ms is not None
                        and node.now - node._last_leader_contact_ms < node.timing.fetch_timeout_ms)
    for seed in range(300):
        try:
            Simulation(seed, 3, cut_leader_at=300).run()
        except InvariantViolated as caught:
            assert "elected no leader" in str(caught) or "no convergence" in str(caught), caught
            break
    else:
        pytest.fail("300 runs with followers that trust a leader they only heard of found no violation")
    monkeypatch.undo()
    for same_seed in range(seed + 1):
        Simulation(same_seed, 3, cut_leader_at=300).run()
