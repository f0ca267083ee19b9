"""Three combined KRaft nodes as real processes on loopback: the active controller is SIGKILLed, all three
are SIGKILLed at once, and the leader is cut off from the others by a network partition."""

from __future__ import annotations

import pytest

from lodestream.protocol.errors import ErrorCode

from kraft_cluster import KRaftCluster

ELECTION_S = 0.5  # FAST_QUORUM's controller.quorum.election.timeout.ms


@pytest.fixture
def cluster(tmp_path):
    cluster = KRaftCluster(tmp_path)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def test_a_new_leader_takes_over_when_the_active_controller_is_killed(cluster):
    leader, epoch, _ = cluster.wait_for_leader(cluster.ids, timeout=15)
    assert cluster.create_topic(leader, "before") == ErrorCode.none
    cluster.nodes[leader].kill()
    survivors = [i for i in cluster.ids if i != leader]
    new_leader, new_epoch, waited = cluster.wait_for_leader(survivors, timeout=15, not_leader=leader,
                                                            min_epoch=epoch + 1)
    print(f"new leader {new_leader} (epoch {new_epoch}) {waited:.2f} s after SIGKILL of leader {leader} "
          f"({waited / ELECTION_S:.1f} election timeouts)")
    assert waited < 10 * ELECTION_S + 2  # fetch timeout, pre-vote, vote: a few election timeouts
    follower = next(i for i in survivors if i != new_leader)
    assert cluster.create_topic(follower, "after", partitions=4) == ErrorCode.none  # forwarded to the leader
    for i in survivors:
        assert {"before", "after"} <= set(cluster.topics(i))
    cluster.nodes[leader].start()  # the old leader rejoins as a follower and catches up
    assert cluster.wait_for_leader(cluster.ids, timeout=15)[0] == new_leader
    assert cluster.topics(leader)["after"] == 4


def test_committed_metadata_survives_sigkill_of_every_node(cluster):
    leader, _, _ = cluster.wait_for_leader(cluster.ids, timeout=15)
    names = [f"topic-{n}" for n in range(20)]
    for n, name in enumerate(names):
        assert cluster.create_topic(cluster.ids[n % 3], name, partitions=2) == ErrorCode.none
    for node in cluster.nodes.values():
        node.kill()  # all at once: only what each node fsynced survives
    cluster.start()
    cluster.wait_for_leader(cluster.ids, timeout=15)
    for i in cluster.ids:
        listed = cluster.topics(i)
        assert all(listed.get(name) == 2 for name in names), (i, listed)


def test_a_cut_off_leader_cannot_commit_and_the_majority_goes_on(cluster):
    leader, epoch, _ = cluster.wait_for_leader(cluster.ids, timeout=15)
    majority = [i for i in cluster.ids if i != leader]
    cluster.isolate(leader)
    # The cut-off leader steps down once a fetch timeout passes without a majority; what it is asked
    # meanwhile can never commit.
    assert cluster.create_topic(leader, "minority", timeout=3) != ErrorCode.none
    new_leader, new_epoch, _ = cluster.wait_for_leader(majority, timeout=15, not_leader=leader,
                                                       min_epoch=epoch + 1)
    assert cluster.create_topic(majority[0], "majority") == ErrorCode.none
    cluster.heal()
    final_leader, _, _ = cluster.wait_for_leader(cluster.ids, timeout=15)
    assert final_leader in majority
    images = {i: cluster.topics(i) for i in cluster.ids}
    assert all(image == images[final_leader] for image in images.values()), images
    assert "majority" in images[leader] and "minority" not in images[leader]
    ends = cluster.quorum(final_leader)["voters"]
    assert len(set(ends.values())) == 1, ends  # every voter's log ends where the leader's does
