"""Replay from offset snapshots (docs/replay.md) with confluent-kafka against a `lodestream serve` process:
a group consumes 10,000 records, its offsets are snapshotted, it consumes 10,000 more, is reset to the
snapshot (the `lodestream` command's dry run first, its printed plan checked) and reads exactly the second
10,000 again, byte for byte; a new group seeded from the snapshot reads the same; a consumer-protocol group
is reset online while its member keeps polling, and that member reads them once more."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from broker_process import BrokerProcess

CLI = str(Path(sys.executable).parent / "lodestream")
TOPIC = "replayed"
HALF = 10_000
DEADLINE_S = 60


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    process = BrokerProcess(tmp_path_factory.mktemp("replay"), {"admin.listeners": "http://127.0.0.1:0"})
    process.start()
    yield process
    process.stop()


def rest(broker: BrokerProcess) -> str:
    listeners = json.loads(broker.ready_path.read_text())["listeners"]
    address = next(a for name, a in listeners.items() if name.upper() in ("REST", "ADMIN", "HTTP"))
    return address if "://" in address else f"http://{address}"


def cluster_path(http: httpx.Client) -> str:
    return f"/v3/clusters/{http.get('/v3/clusters').json()['data'][0]['cluster_id']}"


def produce_all(bootstrap: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(TOPIC, 2)])[TOPIC].result(DEADLINE_S)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for i in range(2 * HALF):
        producer.produce(TOPIC, value=b"%06d-" % i + os.urandom(24), key=b"%d" % (i % 7))
        if i % 1000 == 0:
            producer.poll(0)
    assert producer.flush(DEADLINE_S) == 0


def consumer(bootstrap: str, group: str, **extra) -> Consumer:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
                  "enable.auto.commit": False, **extra})
    c.subscribe([TOPIC])
    return c


def read(c: Consumer, count: int) -> list[tuple[int, int, bytes]]:
    """Exactly `count` records (partition, offset, value), then their positions committed."""
    got: list[tuple[int, int, bytes]] = []
    deadline = time.monotonic() + DEADLINE_S
    while len(got) < count:
        assert time.monotonic() < deadline, f"read {len(got)} of {count}"
        for message in c.consume(min(500, count - len(got)), timeout=0.5):
            assert message.error() is None, message.error()
            got.append((message.partition(), message.offset(), message.value()))
    positions: dict[int, int] = {}
    for partition, offset, _ in got:
        positions[partition] = max(positions.get(partition, 0), offset + 1)
    c.commit(offsets=[TopicPartition(TOPIC, p, o) for p, o in positions.items()], asynchronous=False)
    return got


def read_in_group(bootstrap: str, group: str, count: int) -> list[tuple[int, int, bytes]]:
    c = consumer(bootstrap, group)
    try:
        return read(c, count)
    finally:
        c.close()


def cli(broker: BrokerProcess, *args: str) -> str:
    """The `lodestream` command against the broker's REST API; its standard output."""
    result = subprocess.run([CLI, *args, "--rest", rest(broker)], capture_output=True, text=True, timeout=DEADLINE_S)
    assert result.returncode == 0, f"{args}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def committed(http: httpx.Client, path: str, group: str) -> dict[int, int]:
    lags = http.get(f"{path}/consumer-groups/{group}/lags").json()["data"]
    return {lag["partition_id"]: lag["current_offset"] for lag in lags}


def test_a_group_reset_to_a_snapshot_reads_the_same_records_again(broker):
    produce_all(broker.bootstrap)
    with httpx.Client(base_url=rest(broker), timeout=DEADLINE_S) as http:
        path = cluster_path(http)
        read_in_group(broker.bootstrap, "features", HALF)
        taken = json.loads(cli(broker, "groups", "snapshot", "create", "before-v2", "--group", "features",
                               "--output", "json"))
        snapshot = {o["partition"]: o["offset"] for o in taken["offsets"] if o["offset"] >= 0}
        assert sum(snapshot.values()) == HALF
        second = read_in_group(broker.bootstrap, "features", HALF)
        after_second = committed(http, path, "features")

        printed = cli(broker, "groups", "reset-offsets", "features", "--all-topics", "--to-snapshot", "before-v2")
        plan = {tuple(line.split()) for line in printed.splitlines() if line.startswith("features ")}
        assert plan == {("features", TOPIC, str(p), str(after_second.get(p, "-")), str(snapshot.get(p, "-")))
                        for p in (0, 1)}, printed
        assert "Dry run: nothing was committed" in printed
        assert committed(http, path, "features") == after_second  # a dry run changes nothing
        cli(broker, "groups", "reset-offsets", "features", "--all-topics", "--to-snapshot", "before-v2", "--execute")
        assert committed(http, path, "features") == snapshot
        assert sorted(read_in_group(broker.bootstrap, "features", HALF)) == sorted(second)

        # A new group seeded from the snapshot: a re-processing job beside the live one.
        seeded = http.post(f"{path}/consumer-groups/features-rerun/offset-resets", json={
            "to": "snapshot", "snapshot": "before-v2", "dry_run": False})
        assert seeded.status_code == 200, seeded.text
        assert sorted(read_in_group(broker.bootstrap, "features-rerun", HALF)) == sorted(second)


def test_a_consumer_protocol_group_is_reset_online_while_its_member_polls(broker):
    with httpx.Client(base_url=rest(broker), timeout=DEADLINE_S) as http:
        path = cluster_path(http)
        if "before-v2" not in {s["name"] for s in http.get(f"{path}/offset-snapshots").json()["data"]}:
            pytest.skip("needs the snapshot of the test before")
        live = consumer(broker.bootstrap, "online", **{"group.protocol": "consumer"})
        try:
            everything = read(live, 2 * HALF)
            # The member keeps polling (nothing new to read) while the group is reset under it.
            stop, again = threading.Event(), []

            def poll() -> None:
                while not stop.is_set():
                    for message in live.consume(500, timeout=0.2):
                        assert message.error() is None, message.error()
                        again.append((message.partition(), message.offset(), message.value()))

            poller = threading.Thread(target=poll, daemon=True)
            poller.start()
            refused = http.post(f"{path}/consumer-groups/online/offset-resets", json={
                "to": "snapshot", "snapshot": "before-v2", "dry_run": False})
            assert refused.status_code == 400 and "members" in refused.json()["message"], refused.text
            reset = http.post(f"{path}/consumer-groups/online/offset-resets", json={
                "to": "snapshot", "snapshot": "before-v2", "dry_run": False, "online": True})
            assert reset.status_code == 200, reset.text
            assert len(reset.json()["fenced_members"]) == 1
            deadline = time.monotonic() + DEADLINE_S
            while len(again) < HALF and time.monotonic() < deadline:
                poller.join(0.2)  # waits on the poller's progress, with a deadline
            stop.set()
            poller.join(DEADLINE_S)
            snapshot_start = {o["partition"]: max(0, o["offset"]) for o in
                              http.get(f"{path}/offset-snapshots/before-v2").json()["offsets"]}
            expected = sorted(r for r in everything if r[1] >= snapshot_start[r[0]])
            assert sorted(again) == expected
        finally:
            live.close()


def produce_more(bootstrap: str, topic: str, count: int) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "batch.num.messages": 1})
    for _ in range(count):
        producer.produce(topic, b"x" * 1000)
    assert producer.flush(DEADLINE_S) == 0


async def test_retention_keeps_what_a_snapshot_needs_when_asked_and_warns_otherwise(tmp_path, caplog):
    """A snapshot of a topic's end points into the middle of it once more is produced. With
    retention.keep.snapshots=true retention stops at the segment holding that offset; without it the log
    start passes it, and the log and /metrics say so."""
    import trio
    from test_retention import create_and_fill, set_topic_configs, wait_for_start_offset, watermarks

    from inprocess_broker import start_broker
    from lodestream.admin.rest import create_app

    async with trio.open_nursery() as nursery:
        running = await start_broker(nursery, tmp_path / "data", **{"log.retention.check.interval.ms": "200"})
        bootstrap = f"127.0.0.1:{running.port}"
        transport = httpx.ASGITransport(app=create_app(running.broker))
        async with httpx.AsyncClient(transport=transport, base_url="http://lodestream") as http:
            path = f"/v3/clusters/{running.broker.cluster_id}"
            await trio.to_thread.run_sync(create_and_fill, bootstrap, "kept", {
                "segment.bytes": "2500", "retention.keep.snapshots": "true"}, 10)
            taken = await http.post(f"{path}/offset-snapshots", json={"name": "middle", "topics": ["kept"]})
            assert taken.status_code == 201, taken.text
            assert [o["offset"] for o in taken.json()["offsets"]] == [10]
            admin = AdminClient({"bootstrap.servers": bootstrap})
            await trio.to_thread.run_sync(produce_more, bootstrap, "kept", 10)
            await trio.to_thread.run_sync(set_topic_configs, admin, "kept", {"retention.bytes": "1"})
            await wait_for_start_offset(bootstrap, "kept", 8)  # what retention may delete, it does
            await running.broker.replicas.apply_retention(running.broker.retention_config)  # once more, now
            low, _ = await trio.to_thread.run_sync(watermarks, bootstrap, "kept")
            assert 8 <= low <= 10, low
            described = (await http.get(f"{path}/offset-snapshots/middle")).json()
            assert described["below_log_start"] == 0

            await trio.to_thread.run_sync(set_topic_configs, admin, "kept", {"retention.keep.snapshots": "false"})
            low, _ = await wait_for_start_offset(bootstrap, "kept", 11)
            described = (await http.get(f"{path}/offset-snapshots/middle")).json()
            assert described["below_log_start"] == 1 and described["offsets"][0]["below_log_start"]
            metrics = (await http.get("/metrics")).text
            assert 'lodestream_offset_snapshot_partitions_below_log_start{snapshot="middle"} 1.0' in metrics
            # The log start moves before retention logs its pass (it gives the space back first): wait for it.
            with trio.fail_after(DEADLINE_S):
                while not any("offset snapshots middle point" in r.getMessage() for r in caplog.records):
                    await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    running.broker.close()
