"""Server-side assignors (KIP-848 'uniform' and 'range'): properties with hypothesis, plus examples."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from lodestream.broker.groups.assignors import ASSIGNORS, MemberSpec, range_, uniform

TOPICS = ["a", "b", "c", "d"]


def flat(assignment):
    return {(t, p) for topics in assignment.values() for t, ps in topics.items() for p in ps}


def sizes(assignment):
    return {m: sum(len(ps) for ps in topics.values()) for m, topics in assignment.items()}


@st.composite
def groups(draw, identical: bool = False, with_current: bool = True):
    partitions = draw(st.dictionaries(st.sampled_from(TOPICS), st.integers(1, 12), min_size=1))
    member_ids = draw(st.lists(st.text("mnopq", min_size=1, max_size=3), min_size=1, max_size=7, unique=True))
    universe = TOPICS + ["missing"]
    common = frozenset(draw(st.sets(st.sampled_from(universe), min_size=1)))
    members = {}
    for m in member_ids:
        subscribed = common if identical else frozenset(draw(st.sets(st.sampled_from(universe))))
        current = {}
        if with_current:
            # Arbitrary, possibly stale or overlapping previous assignments (deleted topics, shrunk counts).
            for t in draw(st.sets(st.sampled_from(universe))):
                current[t] = frozenset(draw(st.sets(st.integers(0, 14), max_size=6)))
        members[m] = MemberSpec(subscribed=subscribed, current=current)
    return members, partitions


def check_valid(members, partitions, result):
    assert set(result) == set(members)
    seen = []
    for m, topics in result.items():
        for t, ps in topics.items():
            assert t in members[m].subscribed, f"{m} got {t} without subscribing"
            assert ps, "empty partition sets are omitted"
            for p in ps:
                assert 0 <= p < partitions[t]
                seen.append((t, p))
    assert len(seen) == len(set(seen)), "a partition is assigned twice"
    subscribed = set().union(*(s.subscribed for s in members.values()))
    expected = {(t, p) for t, n in partitions.items() if t in subscribed for p in range(n)}
    assert set(seen) == expected, "every subscribed partition is assigned exactly once"


@settings(max_examples=300, deadline=None)
@given(groups())
def test_every_subscribed_partition_assigned_exactly_once(group):
    members, partitions = group
    for assign in ASSIGNORS.values():
        check_valid(members, partitions, assign(members, partitions))


@settings(max_examples=300, deadline=None)
@given(groups(identical=True))
def test_uniform_balances_within_one_with_identical_subscriptions(group):
    members, partitions = group
    counts = sizes(uniform(members, partitions)).values()
    assert max(counts) - min(counts) <= 1


@settings(max_examples=200, deadline=None)
@given(groups())
def test_uniform_is_stable(group):
    """Feeding the result back in changes nothing."""
    members, partitions = group
    first = uniform(members, partitions)
    again = {m: MemberSpec(subscribed=s.subscribed, current=first[m]) for m, s in members.items()}
    assert uniform(again, partitions) == first


@settings(max_examples=300, deadline=None)
@given(groups(identical=True, with_current=False), st.text("xyz", min_size=1, max_size=2))
def test_uniform_adding_a_member_moves_only_what_balance_needs(group, newcomer):
    members, partitions = group
    before = uniform(members, partitions)
    settled = {m: MemberSpec(subscribed=s.subscribed, current=before[m]) for m, s in members.items()}
    common = next(iter(members.values())).subscribed
    settled[newcomer] = MemberSpec(subscribed=common)
    after = uniform(settled, partitions)
    check_valid(settled, partitions, after)
    moved = sum(len(ps - before[m].get(t, frozenset())) for m in members for t, ps in after[m].items())
    assert moved == 0, "old members never gain partitions when a member joins"
    total = len(flat(after))
    # The newcomer takes exactly its fair share, nothing more moves.
    assert sizes(after)[newcomer] == total // len(settled)
    lost = sum(len(before[m].get(t, frozenset()) - after[m].get(t, frozenset())) for m in members for t in before[m])
    assert lost == sizes(after)[newcomer]


@settings(max_examples=200, deadline=None)
@given(groups(identical=True, with_current=False))
def test_uniform_removing_a_member_moves_only_its_partitions(group):
    members, partitions = group
    if len(members) < 2:
        return
    before = uniform(members, partitions)
    leaving = sorted(members)[0]
    rest = {m: MemberSpec(subscribed=s.subscribed, current=before[m]) for m, s in members.items() if m != leaving}
    after = uniform(rest, partitions)
    for m in rest:
        for t, ps in before[m].items():
            assert ps <= after[m].get(t, frozenset()), "survivors keep everything they had"


@settings(max_examples=200, deadline=None)
@given(groups())
def test_heterogeneous_uniform_no_single_move_improves_balance(group):
    members, partitions = group
    result = uniform(members, partitions)
    load = sizes(result)
    for donor, topics in result.items():
        for t in topics:
            for other, spec in members.items():
                if other != donor and t in spec.subscribed:
                    assert load[donor] - load[other] <= 1


def test_uniform_three_members_six_partitions():
    members = {m: MemberSpec(subscribed=frozenset({"t"})) for m in ("a", "b", "c")}
    result = uniform(members, {"t": 6})
    assert sizes(result) == {"a": 2, "b": 2, "c": 2}
    assert flat(result) == {("t", p) for p in range(6)}


def test_uniform_partition_count_growth_keeps_existing():
    members = {m: MemberSpec(subscribed=frozenset({"t"})) for m in ("a", "b")}
    before = uniform(members, {"t": 4})
    grown = {m: MemberSpec(subscribed=frozenset({"t"}), current=before[m]) for m in members}
    after = uniform(grown, {"t": 6})
    for m in members:
        assert before[m]["t"] <= after[m]["t"]
    assert sizes(after) == {"a": 3, "b": 3}


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 6), st.integers(1, 20), st.integers(1, 3))
def test_range_copartitions_topics_with_equal_partition_counts(member_count, partition_count, topic_count):
    topics = TOPICS[:topic_count]
    members = {f"m{i}": MemberSpec(subscribed=frozenset(topics)) for i in range(member_count)}
    result = range_(members, {t: partition_count for t in topics})
    for m, assigned in result.items():
        per_topic = {t: assigned.get(t, frozenset()) for t in topics}
        assert len(set(per_topic.values())) == 1, f"{m} does not own the same partitions of every topic"


def test_range_contiguous_ranges_in_member_order():
    members = {m: MemberSpec(subscribed=frozenset({"t"})) for m in ("a", "b", "c")}
    result = range_(members, {"t": 7})
    assert result == {"a": {"t": frozenset({0, 1, 2})}, "b": {"t": frozenset({3, 4})}, "c": {"t": frozenset({5, 6})}}


@settings(max_examples=200, deadline=None)
@given(groups())
def test_range_per_topic_balance(group):
    members, partitions = group
    result = range_(members, partitions)
    for t, n in partitions.items():
        subscribers = [m for m, s in members.items() if t in s.subscribed]
        if not subscribers:
            continue
        counts = [len(result[m].get(t, ())) for m in subscribers]
        assert max(counts) - min(counts) <= 1


def test_range_is_sticky_when_a_member_joins():
    members = {m: MemberSpec(subscribed=frozenset({"t"})) for m in ("a", "b")}
    before = range_(members, {"t": 6})
    joined = {m: MemberSpec(subscribed=frozenset({"t"}), current=before[m]) for m in members}
    joined["c"] = MemberSpec(subscribed=frozenset({"t"}))
    after = range_(joined, {"t": 6})
    for m in members:
        assert after[m]["t"] <= before[m]["t"]
    assert sizes(after) == {"a": 2, "b": 2, "c": 2}


def test_no_members_and_no_topics():
    assert uniform({}, {"t": 3}) == {}
    assert range_({}, {"t": 3}) == {}
    members = {"a": MemberSpec(subscribed=frozenset({"missing"}))}
    assert uniform(members, {"t": 3}) == {"a": {}}
    assert range_(members, {"t": 3}) == {"a": {}}
