"""kafka-metadata-quorum (Kafka 4.1.1 and the newer 4.x) against a 3-node Lodestream cluster: DescribeQuorum
answers as Kafka's controllers do, through a broker (--bootstrap-server, forwarded to the active controller)
and through a controller listener (--bootstrap-controller, which first asks DescribeCluster for the
controllers)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the process-cluster helper

from kraft_cluster import CLUSTER_ID, KRaftCluster  # noqa: E402
from kafka_tools import VERSIONS, KafkaTools  # noqa: E402
from lodestream.protocol.errors import ErrorCode  # noqa: E402


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cluster = KRaftCluster(tmp_path_factory.mktemp("kraft"))
    try:
        cluster.start()
        cluster.wait_for_leader(cluster.ids, timeout=15)
        assert cluster.create_topic(1, "quorum-probe", partitions=3) == ErrorCode.none
        yield cluster
    finally:
        cluster.stop()


def status(text: str) -> dict[str, str]:
    return {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in text.splitlines())
            if value}


@pytest.mark.parametrize("version", VERSIONS)
def test_describe_status_and_replication(cluster, version):
    tools = KafkaTools.load(version)
    leader, epoch, _ = cluster.wait_for_leader(cluster.ids, timeout=15)
    for bootstrap in (["--bootstrap-server", cluster.nodes[1].bootstrap],
                      ["--bootstrap-controller", f"127.0.0.1:{cluster.controller_ports[2]}"]):
        shown = status(tools.run("kafka-metadata-quorum", *bootstrap, "describe", "--status").stdout)
        assert shown["ClusterId"] == CLUSTER_ID
        assert (int(shown["LeaderId"]), int(shown["LeaderEpoch"])) == (leader, epoch)
        assert int(shown["HighWatermark"]) > 0 and int(shown["MaxFollowerLag"]) >= 0
        voters = json.loads(shown["CurrentVoters"])
        assert [v["id"] for v in voters] == cluster.ids
        # Node 2's controller listener as the answering leader knows it: its own port, or the proxy the
        # leader reaches it through (the test cluster puts one on every link).
        reaching_2 = {cluster.controller_ports[2]} | {link.port for (_, to), link in cluster.links.items() if to == 2}
        (endpoint,) = voters[1]["endpoints"]
        assert endpoint.startswith("CONTROLLER://127.0.0.1:") and int(endpoint.rsplit(":", 1)[1]) in reaching_2
        assert json.loads(shown["CurrentObservers"]) == []

        table = tools.run("kafka-metadata-quorum", *bootstrap, "describe", "--replication").stdout
        header, *rows = [line.split() for line in table.splitlines() if line.strip()]
        assert header == ["NodeId", "DirectoryId", "LogEndOffset", "Lag", "LastFetchTimestamp",
                          "LastCaughtUpTimestamp", "Status"]
        by_node = {int(row[0]): row for row in rows}
        assert sorted(by_node) == cluster.ids
        assert by_node[leader][-1] == "Leader"
        assert all(row[-1] == "Follower" for node, row in by_node.items() if node != leader)
        assert all(int(row[2]) >= int(shown["HighWatermark"]) - 5 and int(row[4]) > 0 for row in rows)
