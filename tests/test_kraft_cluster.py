"""Three combined KRaft nodes as real processes on loopback: the active controller is SIGKILLed, all three
are SIGKILLed at once, and the leader is cut off from the others by a network partition; and
`lodestream dev-cluster` starts and stops such a cluster."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from confluent_kafka.admin import (AclBinding, AclOperation, AclPermissionType, AdminClient, ResourcePatternType,
                                   ResourceType)

from lodestream.broker.authorizer import AUTHORIZER_CLASS_NAMES
from lodestream.protocol.errors import ErrorCode

from kraft_cluster import KRaftCluster, wait_for_brokers

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
    # Brokers come and go: once its session times out the dead node is fenced, Metadata stops listing it
    # and its partitions have no leader; when it returns it is unfenced and leads them again.
    assert cluster.wait_for_brokers(follower, set(survivors), timeout=15)
    offline = cluster.partition_leaders(follower, "after")
    assert set(offline.values()) <= set(survivors) | {-1}
    cluster.nodes[leader].start()  # the old leader rejoins as a follower and catches up
    assert cluster.wait_for_leader(cluster.ids, timeout=15)[0] == new_leader
    assert cluster.topics(leader)["after"] == 4
    assert cluster.wait_for_brokers(follower, set(cluster.ids), timeout=15)
    back = cluster.partition_leaders(follower, "after")
    assert -1 not in back.values() and all(back[p] == offline[p] or offline[p] == -1 for p in back)


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


def test_lodestream_dev_cluster_starts_three_nodes_and_stops_them(tmp_path):
    exe = Path(sys.executable).parent / "lodestream"
    process = subprocess.Popen([str(exe), "dev-cluster", "--dir", str(tmp_path), "--base-port", "0",
                                "--controller-base-port", "0", "--admin-base-port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        line = process.stdout.readline()  # the ready line, or the reason it did not get there
        assert "3 nodes ready" in line, line + process.stdout.read() if process.poll() is not None else line
        bootstrap = line.split("bootstrap.servers=")[1].split(";")[0].split(",")
        port = int(bootstrap[1].rsplit(":", 1)[1])
        assert wait_for_brokers(port, {1, 2, 3}, timeout=10)
        pids = [json.loads((tmp_path / f"node{i}" / "ready.json").read_text())["pid"] for i in (1, 2, 3)]
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in pids)
    assert (tmp_path / "cluster.id").read_text().strip()





def test_a_controller_only_node_and_two_broker_only_nodes(tmp_path):
    """process.roles apart: node 1 is the quorum (its only voter) and the active controller; nodes 2 and 3
    are brokers that fetch the metadata log as observers, register, and host the partitions. What the brokers
    forward to node 1 (CreateTopics, CreateAcls) travels in Envelopes with the client's principal: an ACL
    denying that client is applied there, although the brokers' own controller-listener connections are
    trusted (docs/security.md)."""
    cluster = KRaftCluster(tmp_path, roles={1: "controller", 2: "broker", 3: "broker"}, overrides={
        "authorizer.class.name": AUTHORIZER_CLASS_NAMES[0], "allow.everyone.if.no.acl.found": "true"})
    try:
        cluster.start()
        leader, _, _ = cluster.wait_for_leader([1, 2, 3], timeout=15)
        assert leader == 1
        assert cluster.create_topic(3, "spread", partitions=4) == ErrorCode.none  # forwarded to node 1
        assert cluster.wait_for_brokers(2, {2, 3}, timeout=10)
        assert cluster.topics(2)["spread"] == 4
        quorum = cluster.quorum(1)
        assert set(quorum["voters"]) == {1} and set(quorum["observers"]) == {2, 3}
        assert all(end > 0 for end in quorum["observers"].values())

        admin = AdminClient({"bootstrap.servers": cluster.nodes[2].bootstrap})
        denials = [AclBinding(resource_type, name, ResourcePatternType.LITERAL, "User:ANONYMOUS", "*",
                              AclOperation.CREATE, AclPermissionType.DENY)
                   for resource_type, name in ((ResourceType.TOPIC, "*"), (ResourceType.BROKER, "kafka-cluster"))]
        for future in admin.create_acls(denials).values():
            future.result(30)
        assert cluster.create_topic(3, "closed") == ErrorCode.topic_authorization_failed
        assert "closed" not in cluster.topics(2)
    finally:
        cluster.stop()


def test_a_node_that_fell_behind_the_snapshot_catches_up_through_fetch_snapshot(tmp_path):
    """Snapshots every ~2 KB of records: while node 3 is down the others snapshot and drop their log
    prefix, so on its return it is sent the snapshot (FetchSnapshot), installs it, and fetches the rest."""
    cluster = KRaftCluster(tmp_path, overrides={"metadata.log.max.record.bytes.between.snapshots": "2000"})
    try:
        cluster.start()
        cluster.wait_for_leader(cluster.ids, timeout=15)
        cluster.nodes[3].stop()
        leader, _, _ = cluster.wait_for_leader([1, 2], timeout=15)
        names = [f"snap-{n}" for n in range(30)]
        for name in names:
            assert cluster.create_topic(leader, name) == ErrorCode.none
        snapshots = list((cluster.nodes[leader].data_dir / "__cluster_metadata-0").glob("*.checkpoint"))
        assert snapshots, "the leader took no snapshot"
        cluster.start([3])
        cluster.wait_for_leader(cluster.ids, timeout=15)
        assert set(names) <= set(cluster.topics(3))
        assert "installed the leader's snapshot" in cluster.nodes[3].log_path.read_text()
    finally:
        cluster.stop()
