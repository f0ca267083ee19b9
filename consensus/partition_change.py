"""How the controller changes a partition's leader, ISR and ELR: pure functions over PartitionImage.

The rules (Kafka's KRaft controller with Eligible Leader Replicas, KIP-966):

* A replica leaves the ISR when its broker is fenced, or when its leader reports it lagging
  (AlterPartition). If the ISR is then smaller than min.insync.replicas, the replicas that left join the
  ELR: the leader stops advancing the high watermark while the ISR is below min ISR, so they hold every
  committed record. An ISR back at min ISR clears the ELR.
* A leader is elected when the current one is fenced or there is none: the first live replica (in
  replica order) of the ISR; else of the ELR, which becomes the ISR; else, only with
  unclean.leader.election.enable, any live replica (committed records may be lost); else none (offline).
* The last replica of the ISR is never dropped without joining the ELR, so a partition never ends with
  no replica known to hold its committed records.
"""

from __future__ import annotations

from dataclasses import dataclass

from lodestream.consensus.image import PartitionImage


@dataclass(frozen=True, slots=True)
class Change:
    leader: int
    leader_epoch: int
    isr: tuple[int, ...]
    elr: tuple[int, ...]


def _ordered(replicas: tuple[int, ...], members) -> tuple[int, ...]:
    return tuple(r for r in replicas if r in members)


def with_isr(p: PartitionImage, isr: tuple[int, ...], min_isr: int, elr: tuple[int, ...] | None = None) -> Change:
    """The ISR becomes `isr` (leader unchanged); the ELR follows KIP-966's rule."""
    elr = p.elr if elr is None else elr
    left = set(p.isr) - set(isr)
    if len(isr) >= min(min_isr, len(p.replicas)):
        elr = ()
    else:
        elr = _ordered(p.replicas, (set(elr) | left) - set(isr))
    return Change(p.leader, p.leader_epoch, _ordered(p.replicas, isr), elr)


def elect(p: PartitionImage, change: Change, live: set[int], unclean: bool) -> Change:
    """A leader for `change` if its leader is not live: ISR first, then ELR, then (unclean) any live replica."""
    if change.leader in live and change.leader in change.isr:
        return change
    epoch = p.leader_epoch + 1
    for replica in p.replicas:
        if replica in change.isr and replica in live:
            return Change(replica, epoch, change.isr, change.elr)
    for replica in p.replicas:
        if replica in change.elr and replica in live:
            return Change(replica, epoch, (replica,), tuple(r for r in change.elr if r != replica))
    if unclean:
        for replica in p.replicas:
            if replica in live:
                return Change(replica, epoch, (replica,), ())
    return Change(-1, epoch if p.leader != -1 else p.leader_epoch, change.isr, change.elr)


def on_fenced(p: PartitionImage, broker_id: int, live: set[int], min_isr: int, unclean: bool) -> Change | None:
    """A broker was fenced: it leaves the ISR, and leads no more. None when the partition does not change."""
    if broker_id not in p.replicas:
        return None
    change = Change(p.leader, p.leader_epoch, p.isr, p.elr)
    if broker_id in p.isr:
        change = with_isr(p, tuple(r for r in p.isr if r != broker_id), min_isr)
    if change.leader == broker_id:
        change = elect(p, Change(-1, p.leader_epoch, change.isr, change.elr), live, unclean)
    return None if change == Change(p.leader, p.leader_epoch, p.isr, p.elr) else change


def on_unfenced(p: PartitionImage, live: set[int], unclean: bool) -> Change | None:
    """A broker came back: an offline partition may get a leader again."""
    if p.leader != -1:
        return None
    change = elect(p, Change(-1, p.leader_epoch, p.isr, p.elr), live, unclean)
    return None if change.leader == -1 else change


def preferred(p: PartitionImage, live: set[int]) -> Change | None:
    """Preferred-leader election: the first replica leads if it is live and in the ISR."""
    first = p.replicas[0]
    if p.leader == first or first not in live or first not in p.isr:
        return None
    return Change(first, p.leader_epoch + 1, p.isr, p.elr)


def reassign(p: PartitionImage, target: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(replicas, adding, removing) while `p` moves to `target` (Kafka's KRaft reassignment): the target
    first, then the replicas leaving, which stay until the new ones are in the ISR."""
    current = tuple(r for r in p.replicas if r not in p.adding)  # cancelling an earlier move starts from here
    adding = tuple(r for r in target if r not in current)
    removing = tuple(r for r in current if r not in target)
    return target + removing, adding, removing


def complete_reassignment(p: PartitionImage, live: set[int], unclean: bool) -> Change | None:
    """A reassignment whose new replicas are all in the ISR completes: the leaving ones go (from the ISR
    and the ELR too); a leaving leader hands over to the first live in-sync new replica. None: not yet.
    (A move with nothing to add, a cancelled one included, completes at once.)"""
    if not set(p.adding) <= set(p.isr):
        return None
    kept = tuple(r for r in p.replicas if r not in p.removing)
    isr = tuple(r for r in p.isr if r in kept)
    elr = tuple(r for r in p.elr if r in kept)
    remaining = PartitionImage(p.partition, kept, p.leader, p.leader_epoch, isr, elr, p.partition_epoch)
    change = Change(p.leader if p.leader in kept else -1, p.leader_epoch, isr, elr)
    return elect(remaining, change, live, unclean) if change.leader == -1 else change
