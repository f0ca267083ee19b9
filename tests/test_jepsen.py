"""The Jepsen-style check of replicated partitions (tests/kafka_history.py, tests/kafka_workload.py).

The checker is shown a history with each anomaly planted and must name it; then a short run of the real
workload against three brokers under faults must show none. The long run (300 s and more) and the run
against a broker with a planted bug are bench/jepsen.py."""

from __future__ import annotations

import pytest

from kafka_history import ANOMALIES, History, Send, check, summary
from kafka_workload import Settings, run
from kraft_cluster import KRaftCluster

CLUSTER_SETTINGS = {"replica.lag.time.max.ms": "2000", "replica.fetch.backoff.ms": "100"}


def clean_history() -> History:
    history = History()
    for offset, value in enumerate(["a", "b", "c", "d"]):
        history.sends.append(Send("p0", 0, value, "ok", offset))
    history.sends.append(Send("t0", 0, "x", "fail", 4))  # an aborted transaction's write
    history.sends.append(Send("p0", 0, "e", "ok", 6))  # after the abort marker at 5
    for consumer in ("c0", "c1"):
        for offset, value in [(0, "a"), (1, "b"), (2, "c"), (3, "d"), (6, "e")]:
            history.read(consumer, 0, offset, value)
    history.final = {0: [(0, "a"), (1, "b"), (2, "c"), (3, "d"), (6, "e")]}
    history.final_ends = {0: 7}
    return history


def test_a_clean_history_has_no_anomaly():
    found = check(clean_history())
    assert all(cases == [] for cases in found.values()), found


@pytest.mark.parametrize("anomaly", ANOMALIES)
def test_the_checker_names_each_planted_anomaly(anomaly):
    history = clean_history()
    if anomaly == "lost-write":
        history.final[0].remove((2, "c"))
    elif anomaly == "unseen":
        history.sends.append(Send("p0", 0, "f", "ok", 7))
    elif anomaly == "duplicate":
        history.final[0].append((7, "e"))
        history.final_ends[0] = 8
    elif anomaly == "inconsistent-offsets":
        history.read("c0", 0, 7, "z")
        history.sends.append(Send("p1", 0, "y", "ok", 7))
        history.final[0].append((7, "y"))
        history.final_ends[0] = 8
    elif anomaly == "G1a":
        history.read("c1", 0, 4, "x")
    elif anomaly == "poll-skip":
        del history.polls["c0"][0][2]
    elif anomaly == "nonmonotonic-poll":
        history.polls["c1"][0].append((1, "b"))
    elif anomaly == "nonmonotonic-send":
        history.sends.append(Send("p0", 0, "old", "ok", 2))
    found = check(history)
    assert found[anomaly], f"{anomaly} not found: {found}"


def test_three_brokers_under_faults_lose_duplicate_and_reorder_nothing(tmp_path):
    """SIGKILLed leaders, SIGSTOPped brokers and a node cut off, with idempotent and transactional producers
    and read_committed consumers; every acknowledged write is read once, at one offset, in order."""
    cluster = KRaftCluster(tmp_path, overrides=CLUSTER_SETTINGS, proxied_clients=True)
    try:
        cluster.start()
        cluster.wait_for_brokers(cluster.ids[0], set(cluster.ids), timeout=20)
        result = run(cluster, Settings(seconds=40, fault_every=(6.0, 9.0), fault_for=(2.0, 4.0), seed=15))
    finally:
        cluster.stop()
    found = check(result.history)
    print("\n".join(result.faults))
    print(summary(result.history, found))
    assert len(result.faults) >= 3
    assert sum(1 for send in result.history.sends if send.status == "ok") > 1000
    assert {name: cases[:3] for name, cases in found.items() if cases} == {}
