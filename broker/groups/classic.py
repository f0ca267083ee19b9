"""Classic groups: the JoinGroup / SyncGroup / Heartbeat / LeaveGroup protocol.

The state machine follows Kafka's ClassicGroup and GroupMetadataManager:

  Empty --join--> PreparingRebalance --all joined / rebalance timeout--> CompletingRebalance
  CompletingRebalance --leader's SyncGroup persisted--> Stable
  Stable / CompletingRebalance --join with new metadata, leave, expiry--> PreparingRebalance
  PreparingRebalance --no member left--> Empty;  any --deleted/expired--> Dead

Every operation runs synchronously on the trio thread (no awaits while the group
changes), so operations on a group never interleave; only persistence awaits.
JoinGroup and SyncGroup responses that must wait are parked on a `Future` the
state machine completes. Timers (initial-rebalance delay, rebalance timeout,
session expiry, pending sync) go through the coordinator's trio-clock timer.
"""

from __future__ import annotations

import base64
import logging
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from lodestream.protocol.consumer_protocol import subscription_topics
from lodestream.protocol.errors import ErrorCode, KafkaError

from lodestream.broker.groups.coordinator import GROUP_TYPES

if TYPE_CHECKING:
    from lodestream.broker.groups.coordinator import GroupCoordinator

log = logging.getLogger(__name__)

EMPTY = "Empty"
PREPARING_REBALANCE = "PreparingRebalance"
COMPLETING_REBALANCE = "CompletingRebalance"
STABLE = "Stable"
DEAD = "Dead"

_VALID_PREVIOUS = {
    EMPTY: {PREPARING_REBALANCE},
    PREPARING_REBALANCE: {STABLE, COMPLETING_REBALANCE, EMPTY},
    COMPLETING_REBALANCE: {PREPARING_REBALANCE},
    STABLE: {COMPLETING_REBALANCE},
    DEAD: {STABLE, PREPARING_REBALANCE, COMPLETING_REBALANCE, EMPTY, DEAD},
}

UNKNOWN_MEMBER_ID = ""
NO_GENERATION = -1
# Kafka's group.classic.new.member.join.timeout (not configurable there either): a new member's JoinGroup
# that is still parked after this long is dropped (the client retries if it is alive).
NEW_MEMBER_JOIN_TIMEOUT_MS = 5 * 60 * 1000


class Future:
    """A one-shot result a request handler awaits (JoinGroup / SyncGroup responses)."""

    __slots__ = ("_event", "value")

    def __init__(self) -> None:
        self._event = trio.Event()
        self.value: Any = None

    def set(self, value: Any) -> bool:
        if self._event.is_set():
            return False
        self.value = value
        self._event.set()
        return True

    def done(self) -> bool:
        return self._event.is_set()

    async def get(self) -> Any:
        await self._event.wait()
        return self.value


@dataclass
class JoinResult:
    error: ErrorCode
    member_id: str = UNKNOWN_MEMBER_ID
    generation_id: int = NO_GENERATION
    protocol_type: str | None = None
    protocol_name: str | None = None
    leader: str = ""
    skip_assignment: bool = False
    members: list[tuple[str, str | None, bytes]] = field(default_factory=list)  # (member_id, instance_id, metadata)


@dataclass
class SyncResult:
    error: ErrorCode
    assignment: bytes = b""
    protocol_type: str | None = None
    protocol_name: str | None = None


@dataclass
class JoinRequest:
    group_id: str
    member_id: str
    group_instance_id: str | None
    protocol_type: str
    protocols: list[tuple[str, bytes]]
    session_timeout_ms: int
    rebalance_timeout_ms: int
    client_id: str
    client_host: str
    api_version: int
    reason: str | None = None


class ClassicMember:
    __slots__ = ("member_id", "group_instance_id", "client_id", "client_host", "rebalance_timeout_ms",
                 "session_timeout_ms", "protocol_type", "protocols", "assignment", "join_future", "sync_future",
                 "is_new")

    def __init__(self, member_id: str, group_instance_id: str | None, client_id: str, client_host: str,
                 rebalance_timeout_ms: int, session_timeout_ms: int, protocol_type: str,
                 protocols: list[tuple[str, bytes]], assignment: bytes = b"") -> None:
        self.member_id = member_id
        self.group_instance_id = group_instance_id
        self.client_id = client_id
        self.client_host = client_host
        self.rebalance_timeout_ms = rebalance_timeout_ms
        self.session_timeout_ms = session_timeout_ms
        self.protocol_type = protocol_type
        self.protocols = list(protocols)
        self.assignment = assignment
        self.join_future: Future | None = None
        self.sync_future: Future | None = None
        self.is_new = False

    @property
    def is_static(self) -> bool:
        return self.group_instance_id is not None

    @property
    def awaiting_join(self) -> bool:
        return self.join_future is not None

    @property
    def awaiting_sync(self) -> bool:
        return self.sync_future is not None

    def protocol_names(self) -> list[str]:
        return [name for name, _ in self.protocols]

    def metadata(self, protocol: str | None) -> bytes:
        for name, metadata in self.protocols:
            if name == protocol:
                return metadata
        return b""

    def matches(self, protocols: list[tuple[str, bytes]]) -> bool:
        return [(n, bytes(m)) for n, m in protocols] == [(n, bytes(m)) for n, m in self.protocols]

    def vote(self, candidates: set[str]) -> str:
        for name in self.protocol_names():
            if name in candidates:
                return name
        raise ValueError("member does not support any candidate protocol")

    def has_satisfied_heartbeat(self) -> bool:
        if self.is_new:
            return False  # new members expire even while awaiting join
        return self.awaiting_join or self.awaiting_sync


class ClassicGroup:
    group_type = "classic"

    def __init__(self, coordinator: "GroupCoordinator", group_id: str) -> None:
        self.coordinator = coordinator
        self.group_id = group_id
        self.state = EMPTY
        self.previous_state = DEAD
        self.state_timestamp: int | None = coordinator.wall_ms()
        self.generation_id = 0
        self.protocol_type_: str | None = None
        self.protocol_name: str | None = None
        self.leader_id: str | None = None
        self.members: dict[str, ClassicMember] = {}
        self.static_members: dict[str, str] = {}  # instance id -> member id
        self.pending_join: set[str] = set()
        self.pending_sync: set[str] = set()
        self.new_member_added = False
        self.subscribed: set[str] | None = None

    # -- the shared Group interface ------------------------------------------------------
    @property
    def state_name(self) -> str:
        return self.state

    @property
    def protocol_type(self) -> str:
        return self.protocol_type_ or ""

    def is_empty(self) -> bool:
        return self.state == EMPTY

    def is_simple(self) -> bool:
        """A group created only to hold offsets (no member ever joined)."""
        return self.protocol_type_ is None and not self.members and not self.pending_join

    def to_record(self) -> dict:
        return {
            "protocol_type": self.protocol_type_,
            "generation": self.generation_id,
            "protocol": self.protocol_name,
            "leader": self.leader_id,
            "current_state_timestamp": self.state_timestamp,
            "members": [
                {
                    "member_id": m.member_id,
                    "group_instance_id": m.group_instance_id,
                    "client_id": m.client_id,
                    "client_host": m.client_host,
                    "rebalance_timeout": m.rebalance_timeout_ms,
                    "session_timeout": m.session_timeout_ms,
                    "subscription": base64.b64encode(m.metadata(self.protocol_name)).decode(),
                    "assignment": base64.b64encode(m.assignment).decode(),
                }
                for m in self.members.values()
            ],
        }

    @classmethod
    def from_record(cls, coordinator: "GroupCoordinator", group_id: str, record: dict) -> "ClassicGroup":
        group = cls(coordinator, group_id)
        group.protocol_type_ = record.get("protocol_type")
        group.generation_id = int(record.get("generation", 0))
        group.protocol_name = record.get("protocol")
        group.leader_id = record.get("leader")
        group.state_timestamp = record.get("current_state_timestamp")
        for m in record.get("members", []):
            protocols = [(group.protocol_name or "", base64.b64decode(m.get("subscription", "")))]
            member = ClassicMember(
                m["member_id"], m.get("group_instance_id"), m.get("client_id", ""), m.get("client_host", ""),
                int(m.get("rebalance_timeout", m.get("session_timeout", 0))), int(m.get("session_timeout", 0)),
                group.protocol_type_ or "", protocols, base64.b64decode(m.get("assignment", "")),
            )
            group.members[member.member_id] = member
            if member.group_instance_id is not None:
                group.static_members[member.group_instance_id] = member.member_id
        group.state = STABLE if group.members else EMPTY
        if group.leader_id not in group.members:
            group.leader_id = next(iter(group.members), None)
        group.subscribed = group.compute_subscribed_topics()
        return group

    def on_loaded(self) -> None:
        for member in self.members.values():
            self.reschedule_heartbeat(member)
        max_size = int(self.coordinator.config("group.max.size"))
        if len(self.members) > max_size:
            self.prepare_rebalance(f"Freshly-loaded group has {len(self.members)} members, above the maximum {max_size}")

    def on_deleted(self) -> None:
        self.transition_to_dead()

    def validate_offset_commit(self, member_id: str, generation_or_member_epoch: int,
                               group_instance_id: str | None, is_transactional: bool = False) -> ErrorCode:
        generation = generation_or_member_epoch
        if self.state == DEAD:
            return ErrorCode.coordinator_not_available
        if generation < 0 and self.state == EMPTY:
            return ErrorCode.none  # admin client / manual assignment: allowed while the group is empty
        if generation >= 0 or member_id or group_instance_id is not None:
            error = self.validate_member(member_id, group_instance_id)
            if error != ErrorCode.none:
                return error
            if generation != self.generation_id:
                return ErrorCode.illegal_generation
        elif not is_transactional and self.state != EMPTY:
            return ErrorCode.unknown_member_id
        if not is_transactional and self.state == COMPLETING_REBALANCE:
            return ErrorCode.rebalance_in_progress
        return ErrorCode.none

    def validate_offset_fetch(self, member_id: str | None, member_epoch: int | None) -> ErrorCode:
        return ErrorCode.group_id_not_found if self.state == DEAD else ErrorCode.none

    def validate_offset_delete(self) -> ErrorCode:
        if self.state == DEAD:
            return ErrorCode.group_id_not_found
        if self.state != EMPTY and not self.uses_consumer_protocol():
            return ErrorCode.non_empty_group
        return ErrorCode.none

    def validate_delete_group(self) -> ErrorCode:
        if self.state == DEAD:
            return ErrorCode.group_id_not_found
        if self.state != EMPTY:
            return ErrorCode.non_empty_group
        return ErrorCode.none

    def is_subscribed_to_topic(self, topic: str) -> bool:
        if self.subscribed is None:
            return self.uses_consumer_protocol()
        return topic in self.subscribed

    def offsets_expire_after_ms(self, commit_timestamp_ms: int) -> int | None:
        if self.protocol_type_ is not None:
            if self.state == EMPTY:
                return self.state_timestamp if self.state_timestamp is not None else commit_timestamp_ms
            if self.uses_consumer_protocol() and self.subscribed is not None and self.state == STABLE:
                return None  # Kafka expires unsubscribed topics' offsets here; we keep them (docs/groups.md)
            return None
        return commit_timestamp_ms

    # -- helpers ------------------------------------------------------------------------------
    def uses_consumer_protocol(self) -> bool:
        return self.protocol_type_ == "consumer"

    def transition_to(self, state: str) -> None:
        if self.state not in _VALID_PREVIOUS[state]:
            raise AssertionError(f"group {self.group_id}: invalid transition {self.state} -> {state}")
        self.previous_state = self.state
        self.state = state
        self.state_timestamp = self.coordinator.wall_ms()

    def transition_to_dead(self) -> None:
        if self.state == DEAD:
            return
        self.transition_to(DEAD)
        for member in list(self.members.values()):
            self.coordinator.cancel(self._hb_key(member.member_id))
            self.complete_join(member, JoinResult(ErrorCode.coordinator_not_available, member.member_id))
            self.complete_sync(member, SyncResult(ErrorCode.coordinator_not_available))
        for member_id in self.pending_join:
            self.coordinator.cancel(self._hb_key(member_id))
        self.coordinator.cancel(self._join_key())
        self.coordinator.cancel(self._sync_key())

    def has_member(self, member_id: str) -> bool:
        return member_id in self.members

    def is_leader(self, member_id: str) -> bool:
        return self.leader_id is not None and self.leader_id == member_id

    def rebalance_timeout_ms(self) -> int:
        return max((m.rebalance_timeout_ms for m in self.members.values()), default=0)

    def num_awaiting_join(self) -> int:
        return sum(1 for m in self.members.values() if m.awaiting_join)

    def has_all_members_joined(self) -> bool:
        return all(m.awaiting_join for m in self.members.values()) and not self.pending_join

    def validate_member(self, member_id: str, group_instance_id: str | None) -> ErrorCode:
        if group_instance_id is not None:
            existing = self.static_members.get(group_instance_id)
            if existing is None:
                return ErrorCode.unknown_member_id
            if existing != member_id:
                log.info("group %s: member %s of static instance %s is fenced by %s",
                         self.group_id, member_id, group_instance_id, existing)
                return ErrorCode.fenced_instance_id
        if member_id not in self.members:
            return ErrorCode.unknown_member_id
        return ErrorCode.none

    def supports_protocols(self, protocol_type: str, protocol_names: list[str]) -> bool:
        if self.state == EMPTY:
            return bool(protocol_type) and bool(protocol_names)
        if self.protocol_type_ != protocol_type:
            return False
        candidates = self.candidate_protocols()
        return any(name in candidates for name in protocol_names)

    def candidate_protocols(self) -> set[str]:
        members = list(self.members.values())
        if not members:
            return set()
        common = set(members[0].protocol_names())
        for member in members[1:]:
            common &= set(member.protocol_names())
        return common

    def select_protocol(self) -> str:
        candidates = self.candidate_protocols()
        votes: dict[str, int] = {}
        for member in self.members.values():
            choice = member.vote(candidates)
            votes[choice] = votes.get(choice, 0) + 1
        return max(votes.items(), key=lambda item: item[1])[0]

    def compute_subscribed_topics(self) -> set[str] | None:
        if self.protocol_type_ != "consumer":
            return None
        if not self.members:
            return set()
        if self.protocol_name is None:
            return None
        topics: set[str] = set()
        try:
            for member in self.members.values():
                topics |= subscription_topics(member.metadata(self.protocol_name))
        except (ValueError, IndexError):
            return None
        return topics

    def add_member(self, member: ClassicMember, future: Future | None) -> None:
        if member.group_instance_id is not None:
            self.static_members[member.group_instance_id] = member.member_id
        if not self.members:
            self.protocol_type_ = member.protocol_type
        if self.leader_id is None:
            self.leader_id = member.member_id
        self.members[member.member_id] = member
        member.join_future = future
        self.pending_join.discard(member.member_id)

    def remove_member(self, member_id: str) -> None:
        member = self.members.pop(member_id, None)
        if member is not None and member.group_instance_id is not None:
            if self.static_members.get(member.group_instance_id) == member_id:
                del self.static_members[member.group_instance_id]
        if self.is_leader(member_id):
            self.leader_id = next(iter(self.members), None)
        self.pending_join.discard(member_id)
        self.pending_sync.discard(member_id)

    def maybe_elect_new_joined_leader(self) -> bool:
        if self.leader_id is None:
            return False
        leader = self.members[self.leader_id]
        if leader.awaiting_join:
            return True
        for member in self.members.values():
            if member.awaiting_join:
                log.info("group %s: leader %s did not rejoin; %s is the new leader", self.group_id,
                         self.leader_id, member.member_id)
                self.leader_id = member.member_id
                return True
        return False

    def replace_static_member(self, instance_id: str, old_member_id: str, new_member_id: str) -> ClassicMember:
        old = self.members.pop(old_member_id)
        # Fence whatever the old member id was waiting for.
        self.complete_join(old, JoinResult(ErrorCode.fenced_instance_id, old_member_id))
        self.complete_sync(old, SyncResult(ErrorCode.fenced_instance_id))
        self.coordinator.cancel(self._hb_key(old_member_id))
        new = ClassicMember(new_member_id, old.group_instance_id, old.client_id, old.client_host,
                            old.rebalance_timeout_ms, old.session_timeout_ms, old.protocol_type, old.protocols,
                            old.assignment)
        self.members[new_member_id] = new
        if self.is_leader(old_member_id):
            self.leader_id = new_member_id
        self.static_members[instance_id] = new_member_id
        if old_member_id in self.pending_sync:
            self.pending_sync.discard(old_member_id)
            self.pending_sync.add(new_member_id)
        return new

    def update_member(self, member: ClassicMember, protocols, rebalance_timeout_ms: int, session_timeout_ms: int,
                      future: Future | None) -> None:
        member.protocols = list(protocols)
        member.rebalance_timeout_ms = rebalance_timeout_ms
        member.session_timeout_ms = session_timeout_ms
        member.join_future = future

    def complete_join(self, member: ClassicMember, result: JoinResult) -> bool:
        future = member.join_future
        if future is None:
            return False
        member.join_future = None
        future.set(result)
        return True

    def complete_sync(self, member: ClassicMember, result: SyncResult) -> bool:
        future = member.sync_future
        if future is None:
            return False
        member.sync_future = None
        future.set(result)
        return True

    def current_members_metadata(self) -> list[tuple[str, str | None, bytes]]:
        return [(m.member_id, m.group_instance_id, m.metadata(self.protocol_name)) for m in self.members.values()]

    def init_next_generation(self) -> None:
        self.generation_id += 1
        if self.members:
            self.protocol_name = self.select_protocol()
            self.subscribed = self.compute_subscribed_topics()
            self.transition_to(COMPLETING_REBALANCE)
        else:
            self.protocol_name = None
            self.subscribed = self.compute_subscribed_topics()
            self.transition_to(EMPTY)
        self.pending_sync.clear()

    def generate_member_id(self, client_id: str, group_instance_id: str | None) -> str:
        return f"{group_instance_id if group_instance_id is not None else client_id}-{uuid.uuid4()}"

    # -- timers ------------------------------------------------------------------------------------
    def _hb_key(self, member_id: str):
        return ("classic-heartbeat", self.group_id, member_id)

    def _join_key(self):
        return ("classic-join", self.group_id)

    def _sync_key(self):
        return ("classic-sync", self.group_id)

    def reschedule_heartbeat(self, member: ClassicMember, timeout_ms: int | None = None) -> None:
        member_id = member.member_id
        self.coordinator.schedule(self._hb_key(member_id), member.session_timeout_ms if timeout_ms is None else timeout_ms,
                                  lambda: self.heartbeat_expired(member_id))

    def _is_current(self) -> bool:
        return self.coordinator.groups.get(self.group_id) is self and self.state != DEAD

    def heartbeat_expired(self, member_id: str) -> None:
        if not self._is_current():
            return
        if member_id in self.pending_join:
            log.info("group %s: pending member %s expired", self.group_id, member_id)
            self.remove_pending_member(member_id)
            return
        member = self.members.get(member_id)
        if member is None:
            return
        if not member.has_satisfied_heartbeat():
            log.info("group %s: member %s expired (session timeout)", self.group_id, member_id)
            self.remove_member_and_update(member, f"removing member {member_id} on heartbeat expiration")

    def remove_pending_member(self, member_id: str) -> None:
        self.remove_member(member_id)
        self.coordinator.cancel(self._hb_key(member_id))
        if self.state == PREPARING_REBALANCE:
            self.maybe_complete_join()

    def remove_member_and_update(self, member: ClassicMember, reason: str) -> None:
        # A new member may time out while its JoinGroup is parked: answer it before removing it.
        self.complete_join(member, JoinResult(ErrorCode.unknown_member_id, UNKNOWN_MEMBER_ID))
        self.complete_sync(member, SyncResult(ErrorCode.unknown_member_id))
        self.coordinator.cancel(self._hb_key(member.member_id))
        self.remove_member(member.member_id)
        if self.state in (STABLE, COMPLETING_REBALANCE):
            self.maybe_prepare_rebalance_or_complete_join(reason)
        elif self.state == PREPARING_REBALANCE:
            self.maybe_complete_join()

    # -- rebalance -----------------------------------------------------------------------------------
    def can_rebalance(self) -> bool:
        return self.state in _VALID_PREVIOUS[PREPARING_REBALANCE]

    def maybe_prepare_rebalance_or_complete_join(self, reason: str) -> None:
        if self.can_rebalance():
            self.prepare_rebalance(reason)
        else:
            self.maybe_complete_join()

    def prepare_rebalance(self, reason: str) -> None:
        if self.state == COMPLETING_REBALANCE:
            self.reset_and_propagate_assignment(ErrorCode.rebalance_in_progress)
        self.coordinator.cancel(self._sync_key())
        initial = self.state == EMPTY
        self.transition_to(PREPARING_REBALANCE)
        log.info("group %s: preparing to rebalance (generation %d): %s", self.group_id, self.generation_id, reason)
        if initial:
            delay = int(self.coordinator.config("group.initial.rebalance.delay.ms"))
            remaining = max(self.rebalance_timeout_ms() - delay, 0)
            self.coordinator.schedule(self._join_key(), delay,
                                      lambda: self.try_complete_initial_rebalance(delay, remaining))
        else:
            self.coordinator.schedule(self._join_key(), self.rebalance_timeout_ms(), self.complete_join_phase)
        self.maybe_complete_join()

    def try_complete_initial_rebalance(self, delay: int, remaining: int) -> None:
        if not self._is_current() or self.state != PREPARING_REBALANCE:
            return
        if self.new_member_added and remaining != 0:
            self.new_member_added = False
            configured = int(self.coordinator.config("group.initial.rebalance.delay.ms"))
            new_delay = min(configured, remaining)
            new_remaining = max(remaining - delay, 0)
            self.coordinator.schedule(self._join_key(), new_delay,
                                      lambda: self.try_complete_initial_rebalance(new_delay, new_remaining))
        else:
            self.complete_join_phase()

    def maybe_complete_join(self) -> None:
        if self.state == PREPARING_REBALANCE and self.has_all_members_joined() and self.previous_state != EMPTY:
            self.complete_join_phase()

    def complete_join_phase(self) -> None:
        self.coordinator.cancel(self._join_key())
        if not self._is_current() or self.state != PREPARING_REBALANCE:
            return
        # Dynamic members that did not rejoin are removed; static members are expected back.
        for member in [m for m in self.members.values() if not m.awaiting_join and not m.is_static]:
            log.info("group %s: member %s did not rejoin before the rebalance timeout; removed",
                     self.group_id, member.member_id)
            self.coordinator.cancel(self._hb_key(member.member_id))
            self.remove_member(member.member_id)
        if not self.maybe_elect_new_joined_leader() and self.members:
            log.error("group %s could not complete the rebalance: no member rejoined", self.group_id)
            self.coordinator.schedule(self._join_key(), self.rebalance_timeout_ms(), self.complete_join_phase)
            return
        self.init_next_generation()
        if self.state == EMPTY:
            log.info("group %s is now empty (generation %d)", self.group_id, self.generation_id)
            self.coordinator.spawn(self.coordinator.persist_group, self)
            return
        log.info("group %s: generation %d with %d members, protocol %s, leader %s", self.group_id,
                 self.generation_id, len(self.members), self.protocol_name, self.leader_id)
        for member in self.members.values():
            members = self.current_members_metadata() if self.is_leader(member.member_id) else []
            self.complete_join(member, JoinResult(
                ErrorCode.none, member.member_id, self.generation_id, self.protocol_type_, self.protocol_name,
                self.leader_id or "", False, members))
            self.reschedule_heartbeat(member)
            member.is_new = False
            self.pending_sync.add(member.member_id)
        generation = self.generation_id
        self.coordinator.schedule(self._sync_key(), self.rebalance_timeout_ms(),
                                  lambda: self.expire_pending_sync(generation))

    def expire_pending_sync(self, generation: int) -> None:
        if not self._is_current() or generation != self.generation_id:
            return
        if self.state in (COMPLETING_REBALANCE, STABLE) and self.pending_sync:
            missing = sorted(self.pending_sync)
            for member_id in missing:
                member = self.members.get(member_id)
                if member is not None:
                    self.complete_sync(member, SyncResult(ErrorCode.unknown_member_id))
                self.coordinator.cancel(self._hb_key(member_id))
                self.remove_member(member_id)
            self.prepare_rebalance(f"removing {missing} on pending sync request expiration")

    def reset_and_propagate_assignment(self, error: ErrorCode) -> None:
        for member in self.members.values():
            member.assignment = b""
        self.propagate_assignment(error)

    def propagate_assignment(self, error: ErrorCode) -> None:
        for member in self.members.values():
            result = SyncResult(error, member.assignment if error == ErrorCode.none else b"",
                                self.protocol_type_, self.protocol_name)
            if self.complete_sync(member, result):
                # Restart the session clock: an expiry that fired while the member waited was ignored.
                self.reschedule_heartbeat(member)

    # -- JoinGroup -------------------------------------------------------------------------------------
    def accept_joining_member(self, member_id: str) -> bool:
        max_size = int(self.coordinator.config("group.max.size"))
        if self.state in (EMPTY, DEAD):
            return True
        if self.state == PREPARING_REBALANCE:
            member = self.members.get(member_id)
            return (member is not None and member.awaiting_join) or self.num_awaiting_join() < max_size
        return member_id in self.members or len(self.members) < max_size

    def join(self, request: JoinRequest) -> Future:
        """Handle a JoinGroup; the returned future completes with a JoinResult."""
        future = Future()
        if self.state == DEAD:
            future.set(JoinResult(ErrorCode.coordinator_not_available, request.member_id))
            return future
        if not self.supports_protocols(request.protocol_type, [n for n, _ in request.protocols]):
            future.set(JoinResult(ErrorCode.inconsistent_group_protocol, request.member_id))
            return future
        if not self.accept_joining_member(request.member_id):
            member = self.members.get(request.member_id)
            if member is not None:
                self.coordinator.cancel(self._hb_key(member.member_id))
            self.remove_member(request.member_id)
            future.set(JoinResult(ErrorCode.group_max_size_reached, UNKNOWN_MEMBER_ID))
            if self.state == PREPARING_REBALANCE:
                self.maybe_complete_join()
            return future
        if request.member_id == UNKNOWN_MEMBER_ID:
            self._join_new_member(request, future)
        else:
            self._join_existing_member(request, future)
        return future

    def _join_new_member(self, request: JoinRequest, future: Future) -> None:
        new_member_id = self.generate_member_id(request.client_id, request.group_instance_id)
        if request.group_instance_id is not None:
            existing = self.static_members.get(request.group_instance_id)
            if existing is not None:
                self._update_static_member(request, existing, new_member_id, future)
            else:
                self._add_member_and_rebalance(request, new_member_id, future)
        elif request.api_version >= 4:
            # KIP-394: give the member its id first, so retries do not leave orphaned members behind.
            self.pending_join.add(new_member_id)
            pending = ClassicMember(new_member_id, None, request.client_id, request.client_host,
                                    request.rebalance_timeout_ms, request.session_timeout_ms,
                                    request.protocol_type, [])
            self.reschedule_heartbeat(pending, request.session_timeout_ms)
            future.set(JoinResult(ErrorCode.member_id_required, new_member_id))
        else:
            self._add_member_and_rebalance(request, new_member_id, future)

    def _add_member_and_rebalance(self, request: JoinRequest, member_id: str, future: Future) -> None:
        member = ClassicMember(member_id, request.group_instance_id, request.client_id, request.client_host,
                               request.rebalance_timeout_ms, request.session_timeout_ms, request.protocol_type,
                               request.protocols)
        member.is_new = True
        if self.state == PREPARING_REBALANCE and self.generation_id == 0:
            self.new_member_added = True  # extends the initial-rebalance delay
        self.add_member(member, future)
        # New members cannot heartbeat yet; their parked JoinGroup is dropped after a long timeout instead.
        self.reschedule_heartbeat(member, NEW_MEMBER_JOIN_TIMEOUT_MS)
        self.maybe_prepare_rebalance_or_complete_join(f"Adding new member {member_id}"
                                                      + (f" with group instance id {request.group_instance_id}"
                                                         if request.group_instance_id else ""))

    def _update_static_member(self, request: JoinRequest, old_member_id: str, new_member_id: str,
                              future: Future) -> None:
        current_leader = self.leader_id
        member = self.replace_static_member(request.group_instance_id, old_member_id, new_member_id)  # type: ignore[arg-type]
        self.reschedule_heartbeat(member)
        self.update_member(member, request.protocols, request.rebalance_timeout_ms, request.session_timeout_ms, future)
        if self.state == STABLE:
            if self.protocol_name == self.select_protocol():
                log.info("group %s: static member %s (instance %s) rejoined without changing the protocol: "
                         "no rebalance", self.group_id, new_member_id, request.group_instance_id)
                skip = request.api_version >= 9 and self.is_leader(new_member_id)
                generation = self.generation_id

                async def persist_then_answer() -> None:
                    try:
                        await self.coordinator.persist_group(self)
                    except KafkaError as exc:
                        # The runtime put the group back to its durable record (the old member id).
                        future.set(JoinResult(_append_error(exc.code), UNKNOWN_MEMBER_ID))
                        return
                    if member.join_future is future:
                        self.complete_join(member, JoinResult(
                            ErrorCode.none, new_member_id, generation, self.protocol_type_, self.protocol_name,
                            (new_member_id if skip else current_leader) or "", skip,
                            self.current_members_metadata() if skip else []))

                self.coordinator.spawn(persist_then_answer)
            else:
                self.prepare_rebalance(f"static member {new_member_id} (instance {request.group_instance_id}) "
                                       "rejoined with a change of protocol")
        elif self.state == COMPLETING_REBALANCE:
            # The leader may already be assigning to the old member id: rebalance again.
            self.prepare_rebalance(f"updating metadata for static member {new_member_id} "
                                   f"(instance {request.group_instance_id})")
        elif self.state == PREPARING_REBALANCE:
            self.maybe_complete_join()

    def _join_existing_member(self, request: JoinRequest, future: Future) -> None:
        member_id = request.member_id
        if member_id in self.pending_join:
            if request.group_instance_id is not None:
                future.set(JoinResult(ErrorCode.unknown_member_id, member_id))
                return
            self._add_member_and_rebalance(request, member_id, future)
            return
        error = self.validate_member(member_id, request.group_instance_id)
        if error != ErrorCode.none:
            future.set(JoinResult(error, member_id))
            return
        member = self.members[member_id]
        if self.state == PREPARING_REBALANCE:
            self._update_member_and_rebalance(request, member, future, "Member joined during rebalance")
        elif self.state == COMPLETING_REBALANCE:
            if member.matches(request.protocols):
                # Same metadata (it probably missed the JoinGroup response): answer with the current generation.
                future.set(JoinResult(
                    ErrorCode.none, member_id, self.generation_id, self.protocol_type_, self.protocol_name,
                    self.leader_id or "", False, self.current_members_metadata() if self.is_leader(member_id) else []))
            else:
                self._update_member_and_rebalance(request, member, future,
                                                  "Updating metadata for member during CompletingRebalance")
        elif self.state == STABLE:
            if self.is_leader(member_id):
                self._update_member_and_rebalance(request, member, future, "Leader rejoining during Stable")
            elif not member.matches(request.protocols):
                self._update_member_and_rebalance(request, member, future, "Updating metadata for member")
            else:
                future.set(JoinResult(ErrorCode.none, member_id, self.generation_id, self.protocol_type_,
                                      self.protocol_name, self.leader_id or "", False, []))
        else:
            future.set(JoinResult(ErrorCode.unknown_member_id, member_id))

    def _update_member_and_rebalance(self, request: JoinRequest, member: ClassicMember, future: Future,
                                     reason: str) -> None:
        self.update_member(member, request.protocols, request.rebalance_timeout_ms, request.session_timeout_ms, future)
        self.maybe_prepare_rebalance_or_complete_join(reason)

    # -- SyncGroup --------------------------------------------------------------------------------------
    def sync(self, member_id: str, generation_id: int, group_instance_id: str | None,
             protocol_type: str | None, protocol_name: str | None, assignments: dict[str, bytes]) -> Future:
        future = Future()
        if self.state == DEAD:
            future.set(SyncResult(ErrorCode.coordinator_not_available))
            return future
        error = self.validate_member(member_id, group_instance_id)
        if error == ErrorCode.none and generation_id != self.generation_id:
            error = ErrorCode.illegal_generation
        if error == ErrorCode.none and (
            (protocol_type is not None and protocol_type != self.protocol_type_)
            or (protocol_name is not None and protocol_name != self.protocol_name)
        ):
            error = ErrorCode.inconsistent_group_protocol
        if error != ErrorCode.none:
            future.set(SyncResult(error))
            return future
        member = self.members[member_id]
        if self.state == PREPARING_REBALANCE:
            future.set(SyncResult(ErrorCode.rebalance_in_progress))
        elif self.state == COMPLETING_REBALANCE:
            member.sync_future = future
            self.pending_sync.discard(member_id)
            if self.is_leader(member_id):
                log.info("group %s: assignment received from leader %s for generation %d",
                         self.group_id, member_id, self.generation_id)
                for m in self.members.values():
                    m.assignment = bytes(assignments.get(m.member_id, b""))
                self.coordinator.spawn(self._persist_assignment, self.generation_id)
        elif self.state == STABLE:
            self.pending_sync.discard(member_id)
            future.set(SyncResult(ErrorCode.none, member.assignment, self.protocol_type_, self.protocol_name))
        else:
            future.set(SyncResult(ErrorCode.unknown_member_id))
        return future

    async def _persist_assignment(self, generation: int) -> None:
        error = ErrorCode.none
        try:
            await self.coordinator.persist_group(self)
        except KafkaError as exc:
            error = _append_error(exc.code)
        if not self._is_current() or self.state != COMPLETING_REBALANCE or self.generation_id != generation:
            return  # the group moved on while the write was in flight
        if error != ErrorCode.none:
            self.reset_and_propagate_assignment(error)
            self.maybe_prepare_rebalance_or_complete_join(f"failed to persist the assignment: {error.name}")
            return
        self.propagate_assignment(ErrorCode.none)
        self.transition_to(STABLE)
        log.info("group %s is stable (generation %d)", self.group_id, self.generation_id)

    # -- Heartbeat ----------------------------------------------------------------------------------------
    def heartbeat(self, member_id: str, generation_id: int, group_instance_id: str | None) -> ErrorCode:
        if self.state == DEAD:
            return ErrorCode.coordinator_not_available
        error = self.validate_member(member_id, group_instance_id)
        if error != ErrorCode.none:
            return error
        if generation_id != self.generation_id:
            return ErrorCode.illegal_generation
        member = self.members[member_id]
        if self.state == EMPTY:
            return ErrorCode.unknown_member_id
        self.reschedule_heartbeat(member)
        if self.state == PREPARING_REBALANCE:
            return ErrorCode.rebalance_in_progress
        return ErrorCode.none

    # -- LeaveGroup ------------------------------------------------------------------------------------------
    def leave(self, members: list[tuple[str, str | None, str | None]]) -> tuple[ErrorCode, list[ErrorCode]]:
        """members: (member_id, group_instance_id, reason). Returns (top-level error, per-member errors)."""
        if self.state == DEAD:
            return ErrorCode.coordinator_not_available, []
        results = []
        removed = False
        for member_id, instance_id, reason in members:
            why = reason or "not provided"
            if member_id == UNKNOWN_MEMBER_ID:
                # Administrative removal of a static member by its instance id.
                existing = self.static_members.get(instance_id) if instance_id is not None else None
                if existing is None:
                    results.append(ErrorCode.unknown_member_id)
                    continue
                self._remove_current_member(existing, why)
                results.append(ErrorCode.none)
                removed = True
            elif member_id in self.pending_join:
                self.remove_member(member_id)
                self.coordinator.cancel(self._hb_key(member_id))
                results.append(ErrorCode.none)
                removed = True
            else:
                error = self.validate_member(member_id, instance_id)
                if error != ErrorCode.none:
                    results.append(error)
                    continue
                self._remove_current_member(member_id, why)
                results.append(ErrorCode.none)
                removed = True
        if removed:
            if self.state in (STABLE, COMPLETING_REBALANCE):
                self.maybe_prepare_rebalance_or_complete_join("members left the group")
            elif self.state == PREPARING_REBALANCE:
                self.maybe_complete_join()
        return ErrorCode.none, results

    def _remove_current_member(self, member_id: str, reason: str) -> None:
        member = self.members[member_id]
        log.info("group %s: member %s left (reason: %s)", self.group_id, member_id, reason)
        self.coordinator.cancel(self._hb_key(member_id))
        self.complete_join(member, JoinResult(ErrorCode.unknown_member_id, UNKNOWN_MEMBER_ID))
        self.complete_sync(member, SyncResult(ErrorCode.unknown_member_id))
        self.remove_member(member_id)


GROUP_TYPES["classic"] = ClassicGroup


def _append_error(code: ErrorCode) -> ErrorCode:
    """Kafka's mapping of a failed __consumer_offsets append to what the client is told."""
    if code in (ErrorCode.unknown_topic_or_partition, ErrorCode.not_enough_replicas,
                ErrorCode.not_enough_replicas_after_append, ErrorCode.request_timed_out):
        return ErrorCode.coordinator_not_available
    if code in (ErrorCode.not_leader_or_follower, ErrorCode.kafka_storage_error):
        return ErrorCode.not_coordinator
    if code in (ErrorCode.message_too_large, ErrorCode.record_list_too_large, ErrorCode.invalid_fetch_size):
        return ErrorCode.unknown_server_error
    return code


# -- coordinator-level entry points (the handlers call these) ------------------------------------------------


def validate_session_timeout(coordinator: "GroupCoordinator", session_timeout_ms: int) -> ErrorCode:
    low = int(coordinator.config("group.min.session.timeout.ms"))
    high = int(coordinator.config("group.max.session.timeout.ms"))
    return ErrorCode.none if low <= session_timeout_ms <= high else ErrorCode.invalid_session_timeout


async def join_group(coordinator: "GroupCoordinator", request: JoinRequest) -> JoinResult:
    if not request.group_id:
        return JoinResult(ErrorCode.invalid_group_id, request.member_id)
    try:
        await coordinator.ensure_loaded(request.group_id)
    except KafkaError as exc:
        return JoinResult(exc.code, request.member_id)
    error = validate_session_timeout(coordinator, request.session_timeout_ms)
    if error != ErrorCode.none:
        return JoinResult(error, request.member_id)
    group = coordinator.groups.get(request.group_id)
    if group is not None and group.group_type != "classic":
        if not group.is_empty():
            # Kafka 4 lets classic members join consumer groups (KIP-848 migration); not supported here.
            return JoinResult(ErrorCode.inconsistent_group_protocol, request.member_id)
        log.info("group %s: converting the empty %s group to a classic group", request.group_id, group.group_type)
        if hasattr(group, "on_deleted"):
            group.on_deleted()
        group = None
    if group is None:
        if request.member_id != UNKNOWN_MEMBER_ID:
            return JoinResult(ErrorCode.unknown_member_id, request.member_id)
        group = coordinator.add_group(ClassicGroup(coordinator, request.group_id))
    return await group.join(request).get()


def _classic(coordinator: "GroupCoordinator", group_id: str) -> ClassicGroup | None:
    group = coordinator.groups.get(group_id)
    return group if isinstance(group, ClassicGroup) else None


async def sync_group(coordinator: "GroupCoordinator", group_id: str, member_id: str, generation_id: int,
                     group_instance_id: str | None, protocol_type: str | None, protocol_name: str | None,
                     assignments: dict[str, bytes]) -> SyncResult:
    if not group_id:
        return SyncResult(ErrorCode.invalid_group_id)
    try:
        await coordinator.ensure_loaded(group_id)
    except KafkaError as exc:
        return SyncResult(exc.code)
    group = _classic(coordinator, group_id)
    if group is None:
        return SyncResult(ErrorCode.unknown_member_id)
    return await group.sync(member_id, generation_id, group_instance_id, protocol_type, protocol_name,
                            assignments).get()


async def heartbeat(coordinator: "GroupCoordinator", group_id: str, member_id: str, generation_id: int,
                    group_instance_id: str | None) -> ErrorCode:
    if not group_id:
        return ErrorCode.invalid_group_id
    try:
        await coordinator.ensure_loaded(group_id)
    except KafkaError as exc:
        return exc.code
    group = _classic(coordinator, group_id)
    if group is None:
        return ErrorCode.unknown_member_id
    return group.heartbeat(member_id, generation_id, group_instance_id)


async def leave_group(coordinator: "GroupCoordinator", group_id: str,
                      members: list[tuple[str, str | None, str | None]]) -> tuple[ErrorCode, list[ErrorCode]]:
    if not group_id:
        return ErrorCode.invalid_group_id, []
    try:
        await coordinator.ensure_loaded(group_id)
    except KafkaError as exc:
        return exc.code, []
    group = _classic(coordinator, group_id)
    if group is None:
        return ErrorCode.none, [ErrorCode.unknown_member_id for _ in members]
    return group.leave(members)
