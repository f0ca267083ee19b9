"""Server-side partition assignors of the consumer group protocol (KIP-848).

Pure functions, no I/O and no clock: given every member's subscription and
its current *target* assignment, and the partition count of every existing
subscribed topic, compute the next target assignment. The coordinator only
moves a partition to its new owner once the old owner has revoked it
(see `broker.groups.consumer`), so an assignor never has to worry about
overlap during a transition.

Topics are identified by any sortable, hashable key (the coordinator uses
topic ids, the tests use names). Partitions are plain ints.

* ``uniform`` (the default): balanced over all members and sticky. With
  identical subscriptions every member ends with ⌊N/M⌋ or ⌈N/M⌉ partitions
  and only the partitions needed to reach that balance move; with differing
  subscriptions partitions move from the most loaded member to the least
  loaded member that may take them until no such move improves balance.
* ``range``: per topic, contiguous ranges in member-id order, so topics with
  the same partition count are co-partitioned (partition i of every topic goes
  to the same member); sticky like Kafka's server-side RangeAssignor: a member
  keeps up to its quota of the partitions it already had.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Callable, Hashable, Mapping

TopicKey = Hashable
MemberAssignment = dict[TopicKey, frozenset[int]]
GroupAssignment = dict[str, MemberAssignment]


@dataclass(frozen=True)
class MemberSpec:
    """What an assignor knows of one member."""

    subscribed: frozenset = frozenset()  # topic keys the member is subscribed to
    current: Mapping[TopicKey, frozenset[int]] = field(default_factory=dict)  # its current target assignment
    instance_id: str | None = None
    rack_id: str | None = None


Assignor = Callable[[Mapping[str, MemberSpec], Mapping[TopicKey, int]], GroupAssignment]


def _sort_key(topic: TopicKey) -> str:
    return str(topic)


def _freeze(assignment: dict[str, dict[TopicKey, list[int] | set[int]]], members) -> GroupAssignment:
    out: GroupAssignment = {}
    for member_id in members:
        topics = assignment.get(member_id, {})
        out[member_id] = {t: frozenset(ps) for t, ps in topics.items() if ps}
    return out


def _eligible_topics(spec: MemberSpec, partitions: Mapping[TopicKey, int]) -> set:
    return {t for t in spec.subscribed if partitions.get(t, 0) > 0}


# --------------------------------------------------------------------------------------
# uniform
# --------------------------------------------------------------------------------------


def uniform(members: Mapping[str, MemberSpec], partitions: Mapping[TopicKey, int]) -> GroupAssignment:
    """Balanced, sticky assignment of every subscribed partition."""
    member_ids = sorted(members)
    if not member_ids:
        return {}
    eligible = {m: _eligible_topics(members[m], partitions) for m in member_ids}
    all_topics = sorted(set().union(*eligible.values()), key=_sort_key)
    if not all_topics:
        return {m: {} for m in member_ids}

    # 1. Every member keeps what it had that is still valid (subscribed, existing);
    #    a partition claimed twice goes to the first claimant in member-id order.
    owned: dict[str, list[tuple[TopicKey, int]]] = {m: [] for m in member_ids}
    owner: dict[tuple[TopicKey, int], str] = {}
    for m in member_ids:
        for topic, parts in members[m].current.items():
            if topic not in eligible[m]:
                continue
            for p in sorted(parts):
                if 0 <= p < partitions[topic] and (topic, p) not in owner:
                    owner[(topic, p)] = m
                    owned[m].append((topic, p))
    unassigned = [(t, p) for t in all_topics for p in range(partitions[t]) if (t, p) not in owner]

    homogeneous = all(eligible[m] == eligible[member_ids[0]] for m in member_ids)
    if homogeneous:
        result = _uniform_homogeneous(member_ids, owned, unassigned)
    else:
        result = _uniform_heterogeneous(member_ids, eligible, owned, unassigned)
    grouped: dict[str, dict[TopicKey, set[int]]] = {m: {} for m in member_ids}
    for m, tps in result.items():
        for t, p in tps:
            grouped[m].setdefault(t, set()).add(p)
    return _freeze(grouped, member_ids)


def _uniform_homogeneous(member_ids, owned, unassigned):
    total = sum(len(v) for v in owned.values()) + len(unassigned)
    count = len(member_ids)
    base, extra = divmod(total, count)
    # The members that already hold the most keep the ⌈N/M⌉ slots: fewest moves.
    by_load = sorted(member_ids, key=lambda m: (-len(owned[m]), m))
    quota = {m: base + (1 if i < extra else 0) for i, m in enumerate(by_load)}
    pool = list(unassigned)
    kept: dict[str, list] = {}
    for m in member_ids:
        mine = sorted(owned[m], key=lambda tp: (_sort_key(tp[0]), tp[1]))
        kept[m] = mine[: quota[m]]
        pool.extend(mine[quota[m]:])
    pool.sort(key=lambda tp: (_sort_key(tp[0]), tp[1]))
    # Hand the pool out to the members below quota, least loaded first, so a
    # multi-topic pool is spread across members rather than in blocks.
    heap = [(len(kept[m]), m) for m in member_ids if len(kept[m]) < quota[m]]
    heapq.heapify(heap)
    for tp in pool:
        load, m = heapq.heappop(heap)
        kept[m].append(tp)
        if load + 1 < quota[m]:
            heapq.heappush(heap, (load + 1, m))
    return kept


def _uniform_heterogeneous(member_ids, eligible, owned, unassigned):
    assigned: dict[str, set] = {m: set(owned[m]) for m in member_ids}
    subscribers: dict[TopicKey, list[str]] = {}
    for m in member_ids:
        for t in eligible[m]:
            subscribers.setdefault(t, []).append(m)

    # 2. Unassigned partitions, most constrained topic first, each to the least
    #    loaded member that may take it.
    unassigned.sort(key=lambda tp: (len(subscribers[tp[0]]), _sort_key(tp[0]), tp[1]))
    for t, p in unassigned:
        m = min(subscribers[t], key=lambda x: (len(assigned[x]), x))
        assigned[m].add((t, p))

    # 3. Balance: the most loaded member gives one partition to the least loaded
    #    member eligible for one of its topics, while that narrows the gap by 2+.
    #    Each move lowers the sum of squared loads, so this terminates; a member
    #    never both gives and receives, so no partition moves twice.
    while True:
        moved = False
        for donor in sorted(member_ids, key=lambda x: (-len(assigned[x]), x)):
            load = len(assigned[donor])
            best = None
            for t in {tp[0] for tp in assigned[donor]}:
                for candidate in subscribers[t]:
                    if candidate == donor:
                        continue
                    key = (len(assigned[candidate]), candidate)
                    if load - key[0] >= 2 and (best is None or key < best[0]):
                        best = (key, t)
            if best is None:
                continue
            (_, receiver), topic = best
            partition = max(p for t, p in assigned[donor] if t == topic)
            assigned[donor].discard((topic, partition))
            assigned[receiver].add((topic, partition))
            moved = True
            break
        if not moved:
            return assigned


# --------------------------------------------------------------------------------------
# range
# --------------------------------------------------------------------------------------


def range_(members: Mapping[str, MemberSpec], partitions: Mapping[TopicKey, int]) -> GroupAssignment:
    """Per topic: each subscribed member gets a contiguous share (⌊n/k⌋, the first n%k one more)."""
    member_ids = sorted(members)
    result: dict[str, dict[TopicKey, set[int]]] = {m: {} for m in member_ids}
    members_per_topic: dict[TopicKey, list[str]] = {}
    for m in member_ids:
        for t in _eligible_topics(members[m], partitions):
            members_per_topic.setdefault(t, []).append(m)

    for topic in sorted(members_per_topic, key=_sort_key):
        subscribed = members_per_topic[topic]
        count = partitions[topic]
        quota, extra = divmod(count, len(subscribed))
        taken: set[int] = set()
        unfilled: list[tuple[str, int]] = []
        for m in subscribed:
            current = sorted(p for p in members[m].current.get(topic, ()) if 0 <= p < count and p not in taken)
            keep = current[: min(len(current), quota)]
            remaining = quota - len(current)
            if remaining < 0 and extra > 0:
                extra -= 1
                keep.append(current[quota])
            else:
                unfilled.append((m, remaining))
            if keep:
                result[m].setdefault(topic, set()).update(keep)
                taken.update(keep)
        free = [p for p in range(count) if p not in taken]
        cursor = 0
        for m, remaining in unfilled:
            if extra > 0:
                remaining += 1
                extra -= 1
            if remaining > 0:
                result[m].setdefault(topic, set()).update(free[cursor: cursor + remaining])
                cursor += remaining
    return _freeze(result, member_ids)


ASSIGNORS: dict[str, Assignor] = {"uniform": uniform, "range": range_}
DEFAULT_ASSIGNOR = "uniform"
