"""KIP-848 consumer groups: the ConsumerGroupHeartbeat protocol, served by the coordinator.

The broker owns the assignment. Each group has

* a **group epoch**, bumped whenever something that changes the assignment
  changes: a member joins, leaves or is fenced, a subscription changes, or the
  partitions of a subscribed topic change (new topic matching a subscription,
  CreatePartitions, deletion);
* a **target assignment** computed by a server-side assignor
  (`broker.groups.assignors`, 'uniform' by default, or 'range') each time the
  group epoch moves past the **assignment epoch**;
* per member, a **current assignment** and **member epoch**, reconciled towards
  the target one heartbeat at a time: a member first gets the partitions it must
  give up removed from its assignment (they stay *pending revocation*, and the
  member stays in its epoch, until its heartbeat no longer reports them as
  owned); then it moves to the target epoch and gets the new partitions that no
  other member still owns. A partition is never handed to a new owner before its
  previous owner has revoked it.

Timeouts run on the coordinator's trio timers (`coordinator.schedule`), so they
follow `trio.testing.MockClock`: a member whose heartbeats stop for
``group.consumer.session.timeout.ms`` is fenced (removed, group epoch bumped);
a member that does not revoke partitions within its rebalance timeout is fenced.

State is persisted as one JSON record per group (``to_record``) through
``coordinator.persist_group`` after every change that matters (membership,
epochs, assignments), and rebuilt by ``from_record`` on replay; sessions restart
on load (``on_loaded``), as in Kafka after a coordinator fail-over.

Where this differs from Kafka 4.x (deliberately, for now):

* regular expressions (``subscribed_topic_regex``, v1) are Python ``re`` with a
  full match (RE2J's ``matches``), resolved on the heartbeat against the current
  metadata image rather than asynchronously; RE2-only syntax may be rejected
  with INVALID_REGULAR_EXPRESSION;
* subscription metadata (partition counts) is compared on every heartbeat, not
  on a refresh interval, so CreatePartitions and new matching topics rebalance
  on the next heartbeat;
* a non-empty classic group is never upgraded online (GROUP_ID_NOT_FOUND, as
  Kafka answers when the upgrade is disabled); an empty one is replaced;
* a static member rejoining with the *same* member id and instance id is a
  rejoin, not UNRELEASED_INSTANCE_ID; a static replacement never counts
  against group.consumer.max.size;
* a failed ``__consumer_offsets`` write is reported to the member
  (COORDINATOR_NOT_AVAILABLE / NOT_COORDINATOR) and the coordinator runtime
  reloads the group from its last durable record (Kafka reverts to its last
  committed snapshot; here the group's timers restart as after a reload);
* the OffsetCommit "v9+ for consumer-protocol members" rule is not enforced
  (the coordinator's validate_offset_commit has no API version).
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import re
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import trio

from lodestream.protocol.errors import ErrorCode, KafkaError

from lodestream.broker.groups.assignors import ASSIGNORS, DEFAULT_ASSIGNOR, MemberSpec
from lodestream.broker.groups.coordinator import GROUP_TYPES
from lodestream.broker.internal_topics import INTERNAL_TOPICS

log = logging.getLogger(__name__)

LEAVE_GROUP_MEMBER_EPOCH = -1
LEAVE_GROUP_STATIC_MEMBER_EPOCH = -2

# Member reconciliation states (Kafka's MemberState).
STABLE = "stable"
UNREVOKED_PARTITIONS = "unrevoked_partitions"
UNRELEASED_PARTITIONS = "unreleased_partitions"


# Kafka's defaults, used when the broker config does not declare the key.
DEFAULT_SETTINGS: dict[str, Any] = {
    "group.consumer.heartbeat.interval.ms": 5000,
    "group.consumer.session.timeout.ms": 45000,
    "group.consumer.max.size": 2147483647,
    "group.consumer.assignors": "uniform,range",
}

Assignment = dict[uuid.UUID, frozenset[int]]


def setting(coordinator, key: str):
    """A group.consumer.* setting: the broker config if it declares the key, else Kafka's default."""
    try:
        value = coordinator.config(key)
    except (KeyError, AttributeError):
        value = None
    if value is None:
        return DEFAULT_SETTINGS[key]
    return value


def supported_assignors(coordinator) -> list[str]:
    """group.consumer.assignors: short names ('uniform', 'range') or Kafka's class names; first is the default."""
    raw = setting(coordinator, "group.consumer.assignors")
    items = raw if isinstance(raw, (list, tuple)) else str(raw).split(",")
    names = []
    for item in (str(i).strip() for i in items):
        if not item:
            continue
        short = item.rsplit(".", 1)[-1]
        short = {"UniformAssignor": "uniform", "RangeAssignor": "range"}.get(short, short)
        if short in ASSIGNORS and short not in names:
            names.append(short)
    return names or [DEFAULT_ASSIGNOR]


def consumer_protocol_enabled(coordinator) -> bool:
    """group.coordinator.rebalance.protocols lists 'consumer' (Kafka answers UNSUPPORTED_VERSION otherwise)."""
    try:
        raw = coordinator.config("group.coordinator.rebalance.protocols")
    except (KeyError, AttributeError):
        return True
    if raw is None:
        return True
    items = raw if isinstance(raw, (list, tuple)) else str(raw).split(",")
    return "consumer" in {str(item).strip().lower() for item in items}


def new_member_id() -> str:
    """Like Kafka's Uuid.randomUuid().toString(): 22 characters of URL-safe base64."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def _sorted_assignment(assignment: Mapping[uuid.UUID, Iterable[int]]) -> list[tuple[uuid.UUID, list[int]]]:
    return [(t, sorted(ps)) for t, ps in sorted(assignment.items(), key=lambda kv: str(kv[0])) if ps]


def _show(assignment: Mapping[uuid.UUID, Iterable[int]]) -> str:
    return "{" + ", ".join(f"{t}: {ps}" for t, ps in _sorted_assignment(assignment)) + "}"


def _assignment_to_json(assignment: Mapping[uuid.UUID, Iterable[int]]) -> dict[str, list[int]]:
    return {str(t): ps for t, ps in _sorted_assignment(assignment)}


def _assignment_from_json(data: Mapping[str, Iterable[int]] | None) -> Assignment:
    return {uuid.UUID(t): frozenset(int(p) for p in ps) for t, ps in (data or {}).items() if ps}


def _clean(assignment: Mapping[uuid.UUID, Iterable[int]]) -> Assignment:
    return {t: frozenset(ps) for t, ps in assignment.items() if ps}


Partitions = Mapping[uuid.UUID, frozenset[int]]


def _contains_any(owned: Partitions | None, partitions: Partitions) -> bool:
    """Does the member still report owning one of these partitions? Unknown (None) counts as yes."""
    if owned is None:
        return True
    return any(owned.get(t, frozenset()) & ps for t, ps in partitions.items())


def _is_subset(owned: Partitions | None, assigned: Partitions) -> bool:
    if owned is None:
        return False
    return all(ps <= assigned.get(t, frozenset()) for t, ps in owned.items())


@dataclass(frozen=True)
class ConsumerGroupMember:
    member_id: str
    instance_id: str | None = None
    rack_id: str | None = None
    client_id: str = ""
    client_host: str = ""
    rebalance_timeout_ms: int = -1
    subscribed_topic_names: tuple[str, ...] = ()
    subscribed_topic_regex: str | None = None
    server_assignor: str | None = None
    member_epoch: int = 0
    previous_member_epoch: int = 0
    state: str = STABLE
    assigned: Mapping[uuid.UUID, frozenset[int]] = field(default_factory=dict)
    pending_revocation: Mapping[uuid.UUID, frozenset[int]] = field(default_factory=dict)

    def is_reconciled_to(self, epoch: int) -> bool:
        return self.state == STABLE and self.member_epoch == epoch

    def to_record(self) -> dict:
        return {
            "member_id": self.member_id,
            "instance_id": self.instance_id,
            "rack_id": self.rack_id,
            "client_id": self.client_id,
            "client_host": self.client_host,
            "rebalance_timeout_ms": self.rebalance_timeout_ms,
            "subscribed_topic_names": list(self.subscribed_topic_names),
            "subscribed_topic_regex": self.subscribed_topic_regex,
            "server_assignor": self.server_assignor,
            "member_epoch": self.member_epoch,
            "previous_member_epoch": self.previous_member_epoch,
            "state": self.state,
            "assigned": _assignment_to_json(self.assigned),
            "pending_revocation": _assignment_to_json(self.pending_revocation),
        }

    @classmethod
    def from_record(cls, data: Mapping[str, Any]) -> "ConsumerGroupMember":
        return cls(
            member_id=data["member_id"],
            instance_id=data.get("instance_id"),
            rack_id=data.get("rack_id"),
            client_id=data.get("client_id", ""),
            client_host=data.get("client_host", ""),
            rebalance_timeout_ms=int(data.get("rebalance_timeout_ms", -1)),
            subscribed_topic_names=tuple(data.get("subscribed_topic_names", ())),
            subscribed_topic_regex=data.get("subscribed_topic_regex"),
            server_assignor=data.get("server_assignor"),
            member_epoch=int(data.get("member_epoch", 0)),
            previous_member_epoch=int(data.get("previous_member_epoch", 0)),
            state=data.get("state", STABLE),
            assigned=_assignment_from_json(data.get("assigned")),
            pending_revocation=_assignment_from_json(data.get("pending_revocation")),
        )


@dataclass(frozen=True)
class Heartbeat:
    """One ConsumerGroupHeartbeat request, version-independent (None = not provided / unchanged)."""

    group_id: str
    member_id: str
    member_epoch: int
    instance_id: str | None = None
    rack_id: str | None = None
    rebalance_timeout_ms: int = -1
    subscribed_topic_names: tuple[str, ...] | None = None
    subscribed_topic_regex: str | None = None
    server_assignor: str | None = None
    owned: Mapping[uuid.UUID, frozenset[int]] | None = None
    client_id: str = ""
    client_host: str = ""
    api_version: int = 1


@dataclass
class HeartbeatResult:
    error: ErrorCode = ErrorCode.none
    message: str | None = None
    member_id: str | None = None
    member_epoch: int = 0
    heartbeat_interval_ms: int = 0
    assignment: Assignment | None = None  # None: not sent (unchanged)


def _error(code: ErrorCode, message: str | None = None) -> KafkaError:
    return KafkaError(code, message)


# --------------------------------------------------------------------------------------------
# Reconciliation (Kafka's CurrentAssignmentBuilder)
# --------------------------------------------------------------------------------------------


def reconcile(
    member: ConsumerGroupMember,
    target_epoch: int,
    target: Mapping[uuid.UUID, frozenset[int]],
    subscribed_topic_ids: set[uuid.UUID],
    owned_by_others: Mapping[tuple[uuid.UUID, int], str],
    owned: Mapping[uuid.UUID, frozenset[int]] | None,
) -> ConsumerGroupMember:
    """The member's next state towards (target_epoch, target). Pure.

    owned: the partitions the member reported in this heartbeat (None = not reported).
    owned_by_others: (topic id, partition) -> member id, for partitions still assigned
    to or pending revocation from other members.
    """
    if member.state == STABLE:
        if member.member_epoch == target_epoch:
            return member
    elif member.state == UNREVOKED_PARTITIONS:
        if _contains_any(owned, member.pending_revocation):
            return member  # still waiting for the member to revoke
    # UNRELEASED_PARTITIONS (or revocation done): move towards the target.
    return _next_assignment(member, target_epoch, target, subscribed_topic_ids, owned_by_others, owned)


def _next_assignment(member, target_epoch, target, subscribed_topic_ids, owned_by_others, owned):
    new_assigned: dict[uuid.UUID, frozenset[int]] = {}
    revoking: dict[uuid.UUID, frozenset[int]] = {}
    pending_assignment: dict[uuid.UUID, frozenset[int]] = {}
    unreleased = False
    for topic in set(target) | set(member.assigned):
        wanted = target.get(topic, frozenset()) if topic in subscribed_topic_ids else frozenset()
        current = member.assigned.get(topic, frozenset())
        keep = current & wanted
        revoke = current - keep
        pending = wanted - keep
        blocked = frozenset(p for p in pending if (topic, p) in owned_by_others)
        if blocked:
            unreleased = True
            pending -= blocked
        if keep:
            new_assigned[topic] = keep
        if revoke:
            revoking[topic] = revoke
        if pending:
            pending_assignment[topic] = pending

    def moved(**changes) -> ConsumerGroupMember:
        epoch = changes.pop("epoch")
        if epoch != member.member_epoch:
            changes["previous_member_epoch"] = member.member_epoch
        return dataclasses.replace(member, member_epoch=epoch, **changes)

    if revoking and _contains_any(owned, revoking):
        # Give up partitions first: stay in the current epoch until they are revoked.
        return moved(epoch=member.member_epoch, state=UNREVOKED_PARTITIONS, assigned=new_assigned,
                     pending_revocation=revoking)
    for topic, partitions in pending_assignment.items():
        new_assigned[topic] = new_assigned.get(topic, frozenset()) | partitions
    return moved(epoch=target_epoch, state=UNRELEASED_PARTITIONS if unreleased else STABLE,
                 assigned=new_assigned, pending_revocation={})


# --------------------------------------------------------------------------------------------
# The group
# --------------------------------------------------------------------------------------------


class ConsumerGroup:
    group_type = "consumer"
    protocol_type = "consumer"

    def __init__(self, coordinator, group_id: str) -> None:
        self.coordinator = coordinator
        self.group_id = group_id
        self.group_epoch = 0
        self.assignment_epoch = 0
        self.members: dict[str, ConsumerGroupMember] = {}
        self.target: dict[str, Assignment] = {}
        # topic name -> (topic id, partition count) of every existing topic some member subscribes to
        self.subscription_metadata: dict[str, tuple[uuid.UUID, int]] = {}
        # regex -> topic names it matched when last resolved
        self.resolved_regexes: dict[str, tuple[str, ...]] = {}
        self.dead = False
        self.lock = trio.Lock()
        # (metadata image, subscriptions version) the subscription metadata was last computed for
        self._metadata_key: tuple[Any, int] | None = None
        self._subscriptions_version = 0

    # -- the shared group interface --------------------------------------------------------------
    @property
    def state_name(self) -> str:
        if self.dead:
            return "Dead"
        if not self.members:
            return "Empty"
        if self.group_epoch > self.assignment_epoch:
            return "Assigning"
        if any(not m.is_reconciled_to(self.assignment_epoch) for m in self.members.values()):
            return "Reconciling"
        return "Stable"

    def is_empty(self) -> bool:
        return not self.members

    def transition_to_dead(self) -> None:
        self.on_deleted()

    def subscribed_topics(self) -> set[str]:
        return self._subscribed_names(self.members.values())

    def is_subscribed_to_topic(self, topic: str) -> bool:
        """OffsetDelete refuses a topic the members consume (GROUP_SUBSCRIBED_TO_TOPIC), as Kafka does."""
        return topic in self.subscribed_topics()

    def validate_offset_commit(self, member_id: str, generation_or_member_epoch: int,
                               group_instance_id: str | None, is_transactional: bool = False) -> ErrorCode:
        epoch = generation_or_member_epoch
        if epoch < 0 and not self.members:
            return ErrorCode.none  # admin client / manual assignment on an empty group
        if is_transactional and epoch == -1 and not member_id and group_instance_id is None:
            return ErrorCode.none  # TxnOffsetCommit without group metadata
        member = self.members.get(member_id)
        if member is None:
            return ErrorCode.unknown_member_id
        if epoch != member.member_epoch:
            return ErrorCode.stale_member_epoch
        return ErrorCode.none

    def validate_offset_fetch(self, member_id: str | None, member_epoch: int | None) -> ErrorCode:
        epoch = -1 if member_epoch is None else member_epoch
        if member_id is None and epoch < 0:
            return ErrorCode.none
        member = self.members.get(member_id or "")
        if member is None:
            return ErrorCode.unknown_member_id
        if epoch != member.member_epoch:
            return ErrorCode.stale_member_epoch
        return ErrorCode.none

    def to_record(self) -> dict:
        return {
            "group_epoch": self.group_epoch,
            "assignment_epoch": self.assignment_epoch,
            "members": [m.to_record() for _, m in sorted(self.members.items())],
            "target": {mid: _assignment_to_json(a) for mid, a in sorted(self.target.items())},
            "subscription_metadata": {
                name: [str(tid), count] for name, (tid, count) in sorted(self.subscription_metadata.items())
            },
            "resolved_regexes": {regex: list(names) for regex, names in sorted(self.resolved_regexes.items())},
        }

    @classmethod
    def from_record(cls, coordinator, group_id: str, record: Mapping[str, Any]) -> "ConsumerGroup":
        group = cls(coordinator, group_id)
        group.group_epoch = int(record.get("group_epoch", 0))
        group.assignment_epoch = int(record.get("assignment_epoch", 0))
        for data in record.get("members", ()):
            member = ConsumerGroupMember.from_record(data)
            group.members[member.member_id] = member
        group.target = {mid: _assignment_from_json(a) for mid, a in record.get("target", {}).items()}
        group.subscription_metadata = {
            name: (uuid.UUID(tid), int(count)) for name, (tid, count) in record.get("subscription_metadata", {}).items()
        }
        group.resolved_regexes = {regex: tuple(names) for regex, names in record.get("resolved_regexes", {}).items()}
        return group

    def on_loaded(self) -> None:
        """After a replay: every member gets a fresh session (and rebalance timeout if revoking)."""
        for member in self.members.values():
            self._schedule_session_timeout(member.member_id)
            if member.state == UNREVOKED_PARTITIONS:
                self._schedule_rebalance_timeout(member)

    def on_deleted(self) -> None:
        """The coordinator removes (or converts) this group: stop its timers; it is Dead from now on."""
        for member_id in list(self.members):
            self._cancel_timers(member_id)
        self.dead = True

    # -- lookups ------------------------------------------------------------------------------
    def static_member(self, instance_id: str) -> ConsumerGroupMember | None:
        for member in self.members.values():
            if member.instance_id == instance_id:
                return member
        return None

    def preferred_assignor(self, default: str) -> str:
        """The server assignor most members asked for (ties: first in name order); else the default."""
        counts: dict[str, int] = {}
        for member in self.members.values():
            if member.server_assignor:
                counts[member.server_assignor] = counts.get(member.server_assignor, 0) + 1
        if not counts:
            return default
        return max(sorted(counts), key=lambda name: counts[name])

    def _subscribed_names(self, members: Iterable[ConsumerGroupMember]) -> set[str]:
        names: set[str] = set()
        for member in members:
            names.update(member.subscribed_topic_names)
            if member.subscribed_topic_regex:
                names.update(self.resolved_regexes.get(member.subscribed_topic_regex, ()))
        return names

    def _member_topic_ids(self, member: ConsumerGroupMember) -> set[uuid.UUID]:
        names = set(member.subscribed_topic_names)
        if member.subscribed_topic_regex:
            names.update(self.resolved_regexes.get(member.subscribed_topic_regex, ()))
        return {self.subscription_metadata[n][0] for n in names if n in self.subscription_metadata}

    def _owners(self, excluding: str | None = None) -> dict[tuple[uuid.UUID, int], str]:
        owners: dict[tuple[uuid.UUID, int], str] = {}
        for member in self.members.values():
            if member.member_id == excluding:
                continue
            for assignment in (member.assigned, member.pending_revocation):
                for topic, partitions in assignment.items():
                    for p in partitions:
                        owners[(topic, p)] = member.member_id
        return owners

    # -- metadata -----------------------------------------------------------------------------
    def _refresh_metadata(self, image) -> bool:
        """Re-resolve regexes and recompute the subscription metadata if the image or a
        subscription changed since the last time. True if the subscription metadata changed."""
        key = (image, self._subscriptions_version)
        if self._metadata_key is not None and self._metadata_key[0] is image and self._metadata_key[1] == key[1]:
            return False
        regexes = {m.subscribed_topic_regex for m in self.members.values() if m.subscribed_topic_regex}
        resolved: dict[str, tuple[str, ...]] = {}
        for regex in regexes:
            pattern = re.compile(regex)
            resolved[regex] = tuple(sorted(
                name for name in image.topics_by_name if name not in INTERNAL_TOPICS and pattern.fullmatch(name)
            ))
        self.resolved_regexes = resolved
        self._metadata_key = key
        metadata = self._compute_subscription_metadata(image, self.members.values())
        if metadata == self.subscription_metadata:
            return False
        self.subscription_metadata = metadata
        return True

    def _compute_subscription_metadata(self, image, members: Iterable[ConsumerGroupMember]
                                       ) -> dict[str, tuple[uuid.UUID, int]]:
        metadata: dict[str, tuple[uuid.UUID, int]] = {}
        for name in self._subscribed_names(members):
            topic = image.topics_by_name.get(name)
            if topic is not None:
                metadata[name] = (topic.topic_id, len(topic.partitions))
        return metadata

    # -- timers -------------------------------------------------------------------------------
    def _session_key(self, member_id: str):
        return ("consumer-group-session", self.group_id, member_id)

    def _rebalance_key(self, member_id: str):
        return ("consumer-group-rebalance", self.group_id, member_id)

    def _schedule_session_timeout(self, member_id: str) -> None:
        timeout = int(setting(self.coordinator, "group.consumer.session.timeout.ms"))
        self.coordinator.schedule(self._session_key(member_id), timeout, lambda: self._session_expired(member_id))

    def _schedule_rebalance_timeout(self, member: ConsumerGroupMember) -> None:
        member_id, epoch = member.member_id, member.member_epoch
        timeout = member.rebalance_timeout_ms if member.rebalance_timeout_ms >= 0 else 300_000
        self.coordinator.schedule(self._rebalance_key(member_id), timeout,
                                  lambda: self._rebalance_expired(member_id, epoch, timeout))

    def _cancel_timers(self, member_id: str) -> None:
        self.coordinator.cancel(self._session_key(member_id))
        self.coordinator.cancel(self._rebalance_key(member_id))

    def _is_current(self) -> bool:
        return not self.dead and self.coordinator.groups.get(self.group_id) is self

    async def _session_expired(self, member_id: str) -> None:
        async with self.lock:
            if not self._is_current() or member_id not in self.members:
                return
            log.info("[GroupId %s] member %s fenced: its session expired", self.group_id, member_id)
            self._fence(member_id)
            await self.coordinator.persist_group(self)

    async def _rebalance_expired(self, member_id: str, epoch: int, timeout: int) -> None:
        async with self.lock:
            member = self.members.get(member_id)
            if not self._is_current() or member is None or member.member_epoch != epoch \
                    or member.state != UNREVOKED_PARTITIONS:
                return
            log.info("[GroupId %s] member %s fenced: it did not revoke its partitions within %d ms (epoch %d)",
                     self.group_id, member_id, timeout, epoch)
            self._fence(member_id)
            await self.coordinator.persist_group(self)

    # -- mutations ----------------------------------------------------------------------------
    def _fence(self, member_id: str) -> None:
        """Remove a member (left, or fenced by a timeout) and bump the group epoch."""
        self.members.pop(member_id, None)
        self.target.pop(member_id, None)
        self._cancel_timers(member_id)
        remaining = self._subscribed_names(self.members.values())
        self.subscription_metadata = {n: v for n, v in self.subscription_metadata.items() if n in remaining}
        live_regexes = {m.subscribed_topic_regex for m in self.members.values() if m.subscribed_topic_regex}
        self.resolved_regexes = {r: v for r, v in self.resolved_regexes.items() if r in live_regexes}
        self._subscriptions_version += 1
        self.group_epoch += 1

    def fence_all_members(self) -> list[str]:
        """An online offset reset (GroupCoordinator.reset_offsets): every member leaves the group; their next
        heartbeat answers UNKNOWN_MEMBER_ID, so they drop their partitions and rejoin, reading the group's
        committed offsets anew. Returns their ids."""
        fenced = sorted(self.members)
        for member_id in fenced:
            self._fence(member_id)
        log.info("[GroupId %s] members %s fenced for an offset reset", self.group_id, fenced)
        return fenced

    def _update_target_assignment(self, assignor_name: str) -> None:
        partitions = {tid: count for tid, count in self.subscription_metadata.values()}
        specs = {
            mid: MemberSpec(
                subscribed=frozenset(self._member_topic_ids(member)),
                current=self.target.get(mid, {}),
                instance_id=member.instance_id,
                rack_id=member.rack_id,
            )
            for mid, member in self.members.items()
        }
        result = ASSIGNORS[assignor_name](specs, partitions)
        self.target = {mid: _clean(result.get(mid, {})) for mid in self.members}
        self.assignment_epoch = self.group_epoch
        log.info("[GroupId %s] computed a new target assignment for epoch %d with the '%s' assignor",
                 self.group_id, self.group_epoch, assignor_name)

    def heartbeat(self, hb: Heartbeat, image) -> tuple[HeartbeatResult, bool]:
        """A joining or heartbeating member (epoch >= 0). Returns (result, state changed).

        Raises KafkaError before touching any state when the request is refused.
        """
        coordinator = self.coordinator
        interval = int(setting(coordinator, "group.consumer.heartbeat.interval.ms"))
        joining = hb.member_epoch == 0
        max_size = int(setting(coordinator, "group.consumer.max.size"))

        # 1. Find (or admit) the member. Nothing is mutated until every check passed.
        replaced: ConsumerGroupMember | None = None
        member_id = hb.member_id or new_member_id()
        if hb.instance_id is None:
            member = self.members.get(member_id)
            if member is None:
                if not joining:
                    raise _error(ErrorCode.unknown_member_id,
                                 f"Member {member_id} is not a member of group {self.group_id}.")
            else:
                self._check_epoch(member, hb)
        else:
            existing = self.static_member(hb.instance_id)
            if joining:
                member = None
                if existing is not None and existing.member_id == member_id:
                    member = existing  # the same process rejoining (e.g. after being fenced)
                elif existing is not None:
                    if existing.member_epoch != LEAVE_GROUP_STATIC_MEMBER_EPOCH:
                        raise _error(ErrorCode.unreleased_instance_id,
                                     f"Static member {member_id} with instance id {hb.instance_id} cannot join the "
                                     f"group because the instance id is owned by {existing.member_id} member.")
                    replaced = existing
                else:
                    member = self.members.get(member_id)
            else:
                if existing is None:
                    raise _error(ErrorCode.unknown_member_id, f"Instance id {hb.instance_id} is unknown.")
                if existing.member_id != member_id:
                    raise _error(ErrorCode.fenced_instance_id,
                                 f"Static member {member_id} with instance id {hb.instance_id} was fenced by "
                                 f"member {existing.member_id}.")
                self._check_epoch(existing, hb)
                member = existing
        if member is None and replaced is None and len(self.members) >= max_size:
            raise _error(ErrorCode.group_max_size_reached,
                         f"The consumer group has reached its maximum capacity of {max_size} members.")
        regex = hb.subscribed_topic_regex

        changed = False
        if replaced is not None:
            # A static member comes back under a new member id: it takes over the old
            # member's assignment (current and target) without a rebalance.
            member = dataclasses.replace(replaced, member_id=member_id, member_epoch=0, previous_member_epoch=0)
            self.members.pop(replaced.member_id)
            self._cancel_timers(replaced.member_id)
            self.target[member_id] = self.target.pop(replaced.member_id, {})
            log.info("[GroupId %s] static member %s re-joins as %s", self.group_id, hb.instance_id, member_id)
            changed = True
        if member is None:
            member = ConsumerGroupMember(member_id=member_id)
            log.info("[GroupId %s] member %s joins the consumer group", self.group_id, member_id)
            changed = True
        before = member

        # 2. Update the member's subscription and metadata.
        updated = dataclasses.replace(
            member,
            instance_id=hb.instance_id if hb.instance_id is not None else member.instance_id,
            rack_id=hb.rack_id if hb.rack_id is not None else member.rack_id,
            rebalance_timeout_ms=(hb.rebalance_timeout_ms if hb.rebalance_timeout_ms != -1
                                  else member.rebalance_timeout_ms),
            server_assignor=hb.server_assignor if hb.server_assignor is not None else member.server_assignor,
            subscribed_topic_names=(tuple(sorted(set(hb.subscribed_topic_names)))
                                    if hb.subscribed_topic_names is not None else member.subscribed_topic_names),
            subscribed_topic_regex=((regex or None) if regex is not None else member.subscribed_topic_regex),
            client_id=hb.client_id,
            client_host=hb.client_host,
        )
        subscription_changed = (updated.subscribed_topic_names != member.subscribed_topic_names
                                or updated.subscribed_topic_regex != member.subscribed_topic_regex)
        self.members[member_id] = updated
        bump = self.group_epoch == 0 or subscription_changed

        if subscription_changed:
            self._subscriptions_version += 1
        if self._refresh_metadata(image):
            bump = True
        if bump:
            self.group_epoch += 1
            log.info("[GroupId %s] bumped the group epoch to %d", self.group_id, self.group_epoch)
            changed = True

        # 3. A new target assignment when the group epoch moved past it.
        if self.group_epoch > self.assignment_epoch:
            default = supported_assignors(coordinator)[0]
            name = self.preferred_assignor(default)
            if name not in ASSIGNORS:
                name = default
            self._update_target_assignment(name)
            changed = True

        # 4. Reconcile this member towards its target.
        reconciled = reconcile(
            updated,
            self.assignment_epoch,
            self.target.get(member_id, {}),
            self._member_topic_ids(updated),
            self._owners(excluding=member_id),
            hb.owned,
        )
        if reconciled != updated:
            log.info("[GroupId %s] member %s: epoch %d (previous %d), state %s, assigned %s, revoking %s",
                     self.group_id, member_id, reconciled.member_epoch, reconciled.previous_member_epoch,
                     reconciled.state, _show(reconciled.assigned), _show(reconciled.pending_revocation))
            self.members[member_id] = reconciled
            if reconciled.state == UNREVOKED_PARTITIONS:
                self._schedule_rebalance_timeout(reconciled)
        if reconciled.state != UNREVOKED_PARTITIONS:
            coordinator.cancel(self._rebalance_key(member_id))
        if reconciled != before:
            changed = True
        self._schedule_session_timeout(member_id)

        full_request = (hb.rebalance_timeout_ms != -1 and hb.owned is not None
                        and (hb.subscribed_topic_names is not None or hb.subscribed_topic_regex is not None))
        send_assignment = joining or full_request or reconciled.assigned != before.assigned
        return HeartbeatResult(
            member_id=member_id,
            member_epoch=reconciled.member_epoch,
            heartbeat_interval_ms=interval,
            assignment=dict(reconciled.assigned) if send_assignment else None,
        ), changed

    def _check_epoch(self, member: ConsumerGroupMember, hb: Heartbeat) -> None:
        received = hb.member_epoch
        if received == 0:
            return  # (re)joining with the same member id is allowed
        if received > member.member_epoch:
            raise _error(ErrorCode.fenced_member_epoch,
                         f"The consumer group member has a greater member epoch ({received}) than the one known by "
                         f"the group coordinator ({member.member_epoch}). The member must abandon all its partitions "
                         "and rejoin.")
        if received < member.member_epoch and (
                received != member.previous_member_epoch or not _is_subset(hb.owned, member.assigned)):
            raise _error(ErrorCode.fenced_member_epoch,
                         f"The consumer group member has a smaller member epoch ({received}) than the one known by "
                         f"the group coordinator ({member.member_epoch}). The member must abandon all its partitions "
                         "and rejoin.")

    def leave(self, hb: Heartbeat) -> HeartbeatResult:
        """member_epoch -1 (leave) or -2 (a static member leaves for now and keeps its assignment)."""
        if hb.instance_id is None:
            member = self.members.get(hb.member_id)
            if member is None:
                raise _error(ErrorCode.unknown_member_id,
                             f"Member {hb.member_id} is not a member of group {self.group_id}.")
            log.info("[GroupId %s] member %s left the consumer group", self.group_id, hb.member_id)
            self._fence(member.member_id)
        else:
            member = self.static_member(hb.instance_id)
            if member is None:
                raise _error(ErrorCode.unknown_member_id, f"Instance id {hb.instance_id} is unknown.")
            if member.member_id != hb.member_id:
                raise _error(ErrorCode.fenced_instance_id,
                             f"Static member {hb.member_id} with instance id {hb.instance_id} was fenced by member "
                             f"{member.member_id}.")
            if hb.member_epoch == LEAVE_GROUP_STATIC_MEMBER_EPOCH:
                log.info("[GroupId %s] static member %s (%s) left temporarily", self.group_id, hb.member_id,
                         hb.instance_id)
                self.members[member.member_id] = dataclasses.replace(
                    member, member_epoch=LEAVE_GROUP_STATIC_MEMBER_EPOCH, pending_revocation={})
                self.coordinator.cancel(self._rebalance_key(member.member_id))
            else:
                log.info("[GroupId %s] static member %s (%s) left", self.group_id, hb.member_id, hb.instance_id)
                self._fence(member.member_id)
        return HeartbeatResult(member_id=hb.member_id, member_epoch=hb.member_epoch)

    # -- describe ------------------------------------------------------------------------------
    def describe(self, image) -> dict:
        """ConsumerGroupDescribe's view of the group (topic names from the image)."""

        def named(assignment: Mapping[uuid.UUID, frozenset[int]]) -> list[tuple[uuid.UUID, str, list[int]]]:
            out = []
            for topic_id, partitions in _sorted_assignment(assignment):
                topic = image.topics_by_id.get(topic_id)
                if topic is not None:
                    out.append((topic_id, topic.name, partitions))
            return out

        default = supported_assignors(self.coordinator)[0]
        return {
            "group_id": self.group_id,
            "group_state": self.state_name,
            "group_epoch": self.group_epoch,
            "assignment_epoch": self.assignment_epoch,
            "assignor_name": self.preferred_assignor(default),
            "members": [
                {
                    "member_id": m.member_id,
                    "instance_id": m.instance_id,
                    "rack_id": m.rack_id,
                    "member_epoch": m.member_epoch,
                    "client_id": m.client_id,
                    "client_host": m.client_host,
                    "subscribed_topic_names": m.subscribed_topic_names,
                    "subscribed_topic_regex": m.subscribed_topic_regex,
                    "assignment": named(m.assigned),
                    "target_assignment": named(self.target.get(m.member_id, {})),
                }
                for _, m in sorted(self.members.items())
            ],
        }


GROUP_TYPES["consumer"] = ConsumerGroup


# --------------------------------------------------------------------------------------------
# Entry points for the handlers
# --------------------------------------------------------------------------------------------


def validate_heartbeat(hb: Heartbeat, assignors: list[str]) -> None:
    """The request checks Kafka does before touching the group (INVALID_REQUEST, UNSUPPORTED_ASSIGNOR)."""

    def invalid(message: str) -> KafkaError:
        return KafkaError(ErrorCode.invalid_request, message)

    if (hb.api_version >= 1 or hb.member_epoch > 0 or hb.member_epoch == LEAVE_GROUP_MEMBER_EPOCH) and not hb.member_id:
        raise invalid("MemberId can't be empty.")
    if not hb.group_id:
        raise invalid("GroupId can't be empty.")
    if hb.instance_id == "":
        raise invalid("InstanceId can't be empty.")
    if hb.rack_id == "":
        raise invalid("RackId can't be empty.")
    if hb.member_epoch == 0:
        if hb.rebalance_timeout_ms == -1:
            raise invalid("RebalanceTimeoutMs must be provided in first request.")
        if hb.owned is None or hb.owned:
            raise invalid("TopicPartitions must be empty when (re-)joining.")
        if hb.subscribed_topic_names is None and hb.subscribed_topic_regex is None:
            raise invalid("Either SubscribedTopicNames or SubscribedTopicRegex must be non-null when (re-)joining.")
    elif hb.member_epoch == LEAVE_GROUP_STATIC_MEMBER_EPOCH:
        if hb.instance_id is None:
            raise invalid("InstanceId can't be null.")
    elif hb.member_epoch < LEAVE_GROUP_STATIC_MEMBER_EPOCH:
        raise invalid("MemberEpoch is invalid.")
    if hb.subscribed_topic_regex:
        try:
            re.compile(hb.subscribed_topic_regex)
        except re.error as exc:
            raise KafkaError(ErrorCode.invalid_regular_expression,
                             f"SubscribedTopicRegex {hb.subscribed_topic_regex!r} is invalid: {exc}") from None
    if hb.server_assignor is not None and hb.server_assignor not in assignors:
        raise KafkaError(ErrorCode.unsupported_assignor,
                         f"ServerAssignor {hb.server_assignor} is not supported. Supported assignors: "
                         f"{', '.join(assignors)}.")


def _group_for(coordinator, group_id: str, create: bool) -> ConsumerGroup:
    """The consumer group; a joining member (create) creates it, replacing an empty classic group."""
    group = coordinator.groups.get(group_id)
    if group is not None and getattr(group, "state_name", None) == "Dead":
        group = None
    if isinstance(group, ConsumerGroup):
        return group
    if group is None and not create:
        raise KafkaError(ErrorCode.group_id_not_found, f"Consumer group {group_id} not found.")
    if group is not None and not create:
        raise KafkaError(ErrorCode.group_id_not_found, f"Group {group_id} is not a consumer group.")
    if group is not None and not group.is_empty():
        raise KafkaError(ErrorCode.group_id_not_found,
                         f"Cannot upgrade classic group {group_id} to consumer group because it has members "
                         "(online upgrade is not supported).")
    if group is not None:
        log.info("[GroupId %s] converting the empty classic group to a consumer group", group_id)
        hook = getattr(group, "on_deleted", None)
        if hook is not None:
            hook()
    # Registered at once so that concurrent joiners queue on the same group. The join
    # cannot fail after validate_heartbeat, so no empty group is left behind.
    return coordinator.add_group(ConsumerGroup(coordinator, group_id))


async def heartbeat(coordinator, image, hb: Heartbeat) -> HeartbeatResult:
    """Serve one ConsumerGroupHeartbeat; returns once any state change is durable."""
    try:
        if not consumer_protocol_enabled(coordinator):
            raise KafkaError(ErrorCode.unsupported_version,
                             "The consumer group protocol is disabled (group.coordinator.rebalance.protocols).")
        validate_heartbeat(hb, supported_assignors(coordinator))
        await coordinator.ensure_loaded(hb.group_id)
        for _attempt in range(3):
            group = _group_for(coordinator, hb.group_id, create=hb.member_epoch == 0)
            async with group.lock:
                if coordinator.groups.get(hb.group_id) is not group:
                    continue  # deleted or replaced while we waited: look again
                if hb.member_epoch < 0:
                    result, changed = group.leave(hb), True
                else:
                    result, changed = group.heartbeat(hb, image)
                if changed:
                    await coordinator.persist_group(group)
                return result
        raise KafkaError(ErrorCode.coordinator_not_available, f"Group {hb.group_id} is changing; retry.")
    except KafkaError as exc:
        return HeartbeatResult(error=exc.code, message=exc.message)


def describe(coordinator, image, group_id: str) -> tuple[ErrorCode, str | None, dict | None]:
    if not consumer_protocol_enabled(coordinator):
        return ErrorCode.unsupported_version, "The consumer group protocol is disabled.", None
    if not group_id:
        return ErrorCode.invalid_group_id, "The group id can't be empty.", None
    group = coordinator.groups.get(group_id)
    if group is None or getattr(group, "state_name", None) == "Dead":
        return ErrorCode.group_id_not_found, f"Group {group_id} not found.", None
    if not isinstance(group, ConsumerGroup):
        return ErrorCode.group_id_not_found, f"Group {group_id} is not a consumer group.", None
    return ErrorCode.none, None, group.describe(image)
