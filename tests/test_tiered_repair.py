"""Scrub and repair of offloaded segments through `lodestream tiering` and the REST API (docs/tiered-storage.md):
a deleted fragment and a corrupted one are found and rebuilt in place; a store that refuses writes has its
fragments rebuilt onto a spare store, and the manifests record the move; reads stay byte-identical."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from broker_process import BrokerProcess
from kafka_reads import read_values

TOPIC = "scrubbed"
RECORDS = 1000
DEADLINE_S = 60.0


def lodestream(*args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "lodestream"
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=120)


def status(broker: BrokerProcess) -> list[dict]:
    done = lodestream("tiering", "status", "--rest", broker.admin_url, "--output", "json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def consume(bootstrap: str, count: int) -> list[bytes]:
    return read_values({"bootstrap.servers": bootstrap, "group.id": "check"}, TOPIC, count)


def test_scrub_finds_bad_fragments_and_repair_rebuilds_them_in_place_or_on_a_spare(tmp_path):
    stores = [tmp_path / f"store{i}" for i in range(7)]  # rs:4+2 on six, one spare
    broker = BrokerProcess(tmp_path / "broker", {
        "remote.log.storage.system.enable": "true",
        "remote.fragment.stores": ",".join(f"file://{store}" for store in stores),
        "remote.erasure.code": "rs:4+2", "remote.stripe.bytes": "16384", "remote.cache.bytes": "0",
        "remote.log.manager.task.interval.ms": "100"})
    broker.start()
    try:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        admin.create_topics([NewTopic(TOPIC, 1, 1, config={
            "remote.storage.enable": "true", "segment.bytes": "100000", "local.retention.ms": "0"})])[TOPIC].result(15)
        producer = Producer({"bootstrap.servers": broker.bootstrap, "batch.num.messages": 20})
        expected = [(b"%08d" % i) * 50 for i in range(RECORDS)]
        for value in expected:
            producer.produce(TOPIC, value)
            producer.poll(0)
        assert producer.flush(15) == 0
        deadline = time.monotonic() + DEADLINE_S
        while len(segments := status(broker)) < 3:
            assert time.monotonic() < deadline, broker.log_tail()
            time.sleep(0.2)  # poll interval inside a deadline loop

        # Damage: fragment 0 of the first segment deleted, fragment 5 of the second corrupted.
        first, second = segments[0], segments[1]

        def fragment_path(segment: dict, index: int) -> Path:
            key = f"{segment['topic_id']}/{segment['partition']}/{segment['base_offset']:020d}-{segment['segment_id']}"
            return Path(segment["stores"][index].removeprefix("file://")) / f"{key}.{index}"

        fragment_path(first, 0).unlink()
        corrupt = fragment_path(second, 5)
        data = bytearray(corrupt.read_bytes())
        data[100] ^= 0xFF
        corrupt.write_bytes(bytes(data))

        scrub = lodestream("tiering", "scrub", "--rest", broker.admin_url)
        assert scrub.returncode == 0, scrub.stderr
        assert "2 bad" in scrub.stdout and "segments" in scrub.stderr  # totals, and progress lines
        bad = {s["segment_id"]: s["bad_fragments"] for s in status(broker) if s["bad_fragments"]}
        assert set(bad) == {first["segment_id"], second["segment_id"]}
        assert list(bad[first["segment_id"]]) == ["0"] and list(bad[second["segment_id"]]) == ["5"]
        assert not fragment_path(first, 0).exists()  # a scrub only checks

        repair = lodestream("tiering", "repair", "--rest", broker.admin_url)
        assert repair.returncode == 0, repair.stderr
        assert "2 repaired" in repair.stdout
        assert fragment_path(first, 0).exists() and fragment_path(second, 5).read_bytes() != bytes(data)
        assert all(not s["bad_fragments"] for s in status(broker))

        # A store that refuses writes (its directory replaced by a file): its fragments go to the spare.
        lost = first["stores"][1]
        lost_dir = Path(lost.removeprefix("file://"))
        holding = [s for s in status(broker) if lost in s["stores"]]
        subprocess.run(["rm", "-rf", str(lost_dir)], check=True)
        lost_dir.write_bytes(b"not a directory")
        repair = lodestream("tiering", "repair", "--rest", broker.admin_url)
        assert repair.returncode == 0, repair.stderr
        after = {s["segment_id"]: s for s in status(broker)}
        for segment in holding:
            moved = after[segment["segment_id"]]
            assert lost not in moved["stores"] and f"file://{stores[6]}" in moved["stores"]
        assert all(not s["bad_fragments"] for s in after.values())

        assert consume(broker.bootstrap, RECORDS) == expected
        with urllib.request.urlopen(f"{broker.admin_url}/metrics", timeout=10) as response:
            metrics = {line.split(" ")[0]: float(line.split(" ")[1]) for line in response.read().decode().splitlines()
                       if line.startswith("lodestream_remote_")}
        assert metrics["lodestream_remote_offloaded_segments_total"] >= len(segments)
        assert metrics['lodestream_remote_stripe_reads_total{source="stores"}'] > 0
        assert metrics["lodestream_remote_read_errors_total"] == 0
    finally:
        broker.stop()


def test_tiering_commands_say_when_tiered_storage_is_off(tmp_path):
    broker = BrokerProcess(tmp_path / "broker")
    broker.start()
    try:
        done = lodestream("tiering", "repair", "--rest", broker.admin_url)
        assert done.returncode == 1 and "remote.log.storage.system.enable=false" in done.stderr
        listed = lodestream("tiering", "status", "--rest", broker.admin_url)
        assert listed.returncode == 0 and "tiered storage off: 0 segments" in listed.stdout
    finally:
        broker.stop()

