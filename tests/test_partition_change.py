"""The controller's leader, ISR and ELR rules (consensus/partition_change.py), as pure functions."""

from __future__ import annotations

from lodestream.consensus.image import PartitionImage
from lodestream.consensus.partition_change import Change, elect, on_fenced, on_unfenced, preferred, with_isr


def partition(leader=1, isr=(1, 2, 3), elr=(), epoch=5, replicas=(1, 2, 3)) -> PartitionImage:
    return PartitionImage(partition=0, replicas=replicas, leader=leader, leader_epoch=epoch, isr=isr, elr=elr)


def test_a_fenced_leader_is_replaced_by_the_first_live_in_sync_replica_in_a_new_epoch():
    change = on_fenced(partition(), 1, live={2, 3}, min_isr=2, unclean=False)
    assert change == Change(leader=2, leader_epoch=6, isr=(2, 3), elr=())


def test_a_fenced_follower_leaves_the_isr_and_the_leader_stays():
    assert on_fenced(partition(), 3, live={1, 2}, min_isr=1, unclean=False) == Change(1, 5, (1, 2), ())
    assert on_fenced(partition(isr=(1, 2)), 3, live={1, 2}, min_isr=1, unclean=False) is None  # nothing changes


def test_replicas_leaving_an_isr_below_min_isr_become_eligible_leaders():
    """KIP-966: with min ISR 2, the ISR {2,3} losing 3 keeps 3 in the ELR; then 2 dies too and the
    partition is offline with both in the ELR; whichever comes back first leads."""
    p = partition(leader=2, isr=(2, 3))
    change = on_fenced(p, 3, live={1, 2}, min_isr=2, unclean=False)
    assert change == Change(2, 5, (2,), (3,))
    p = partition(leader=2, isr=change.isr, elr=change.elr)
    offline = on_fenced(p, 2, live={1}, min_isr=2, unclean=False)
    assert offline == Change(-1, 6, (), (2, 3))  # replica 1 was never eligible: no leader
    p = partition(leader=-1, isr=offline.isr, elr=offline.elr, epoch=6)
    assert on_unfenced(p, live={1, 3}, unclean=False) == Change(3, 7, (3,), (2,))


def test_unclean_election_takes_any_live_replica_only_when_enabled():
    p = partition(leader=-1, isr=(), elr=(), epoch=6)
    assert on_unfenced(p, live={1}, unclean=False) is None
    assert on_unfenced(p, live={1}, unclean=True) == Change(1, 7, (1,), ())


def test_the_last_in_sync_replica_never_leaves_without_joining_the_elr():
    p = partition(leader=1, isr=(1,))
    change = on_fenced(p, 1, live={2, 3}, min_isr=1, unclean=False)
    assert change == Change(-1, 6, (), (1,))  # offline: nobody else holds every committed record
    assert elect(partition(leader=-1, isr=(), elr=(1,), epoch=6), Change(-1, 6, (), (1,)), {1}, False).leader == 1


def test_an_isr_back_at_min_isr_clears_the_elr():
    p = partition(leader=2, isr=(2,), elr=(3,))
    assert with_isr(p, (2, 1), min_isr=2) == Change(2, 5, (1, 2), ())


def test_preferred_leader_election_moves_leadership_to_the_first_replica_when_it_is_in_sync():
    assert preferred(partition(leader=2), live={1, 2, 3}) == Change(1, 6, (1, 2, 3), ())
    assert preferred(partition(leader=2, isr=(2, 3)), live={1, 2, 3}) is None
    assert preferred(partition(leader=1), live={1, 2, 3}) is None


def test_a_reassignment_keeps_the_leaving_replicas_until_the_new_ones_are_in_sync():
    from lodestream.consensus.partition_change import complete_reassignment, reassign

    p = partition(leader=1, isr=(1, 2), replicas=(1, 2))
    replicas, adding, removing = reassign(p, (2, 3))
    assert (replicas, adding, removing) == ((2, 3, 1), (3,), (1,))
    moving = PartitionImage(0, replicas, 1, 5, (1, 2), (), 0, adding, removing)
    assert complete_reassignment(moving, live={1, 2, 3}, unclean=False) is None  # 3 is still catching up
    caught_up = PartitionImage(0, replicas, 1, 5, (1, 2, 3), (), 0, adding, removing)
    # The leaving leader hands over to the first live in-sync replica of the new set, in a new epoch.
    assert complete_reassignment(caught_up, live={1, 2, 3}, unclean=False) == Change(2, 6, (2, 3), ())
    # Cancelling goes back to the replicas from before the move, and the added one leaves the ISR at once.
    assert reassign(caught_up, (1, 2)) == ((1, 2), (), ())
    cancelled = PartitionImage(0, (1, 2), 1, 5, (1, 2, 3), (), 0, (), ())
    assert complete_reassignment(cancelled, live={1, 2, 3}, unclean=False) == Change(1, 5, (1, 2), ())
