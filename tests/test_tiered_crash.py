"""Tiered storage survives a SIGKILL anywhere between an offload's first fragment and its last manifest, and
in the middle of a deletion (docs/tiered-storage.md, "Crash safety").

A real `lodestream serve` process with six `file://` stores kills itself with SIGKILL at a named point
(LODESTREAM_TIERING_CRASH_AT, read by broker/remote_log.py) while a producer writes with acks=all. After
a restart without it: no manifest points at missing fragments, every fragment object belongs to a manifest
(the unfinished copy's or deletion's objects are collected), offload resumes until only the active segment
is local, and every acknowledged record at or after the log start reads back, byte-identical.
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from broker_process import BrokerProcess

TOPIC = "crashy"
DEADLINE_S = 60.0
RECORDS = 1500


def value_of(sequence: int) -> bytes:
    return (b"%08d" % sequence) * 50  # 400 bytes


def rest(broker: BrokerProcess, path: str) -> dict:
    with urllib.request.urlopen(f"{broker.admin_url}/v3/clusters", timeout=10) as response:
        cluster = json.loads(response.read())["data"][0]["cluster_id"]
    with urllib.request.urlopen(f"{broker.admin_url}/v3/clusters/{cluster}{path}", timeout=10) as response:
        return json.loads(response.read())


def produce(bootstrap: str, count: int) -> dict[int, bytes]:
    """Produce until done or the broker dies; the acknowledged records by offset."""
    acked: dict[int, bytes] = {}

    def delivered(error, message):
        if error is None:
            acked[message.offset()] = message.value()

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 2,
                         "message.timeout.ms": 5000, "retries": 0, "batch.num.messages": 20})
    for sequence in range(count):
        producer.produce(TOPIC, value_of(sequence), on_delivery=delivered)
        producer.poll(0)
    producer.flush(10)
    return acked


def consume(bootstrap: str, start: int, end: int) -> dict[int, bytes]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "check", "enable.auto.commit": False})
    read: dict[int, bytes] = {}
    try:
        consumer.assign([TopicPartition(TOPIC, 0, start)])
        deadline = time.monotonic() + DEADLINE_S
        while (not read or max(read) < end - 1) and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                read[message.offset()] = message.value()
    finally:
        consumer.close()
    return read


def stored_objects(stores: list[Path]) -> set[tuple[str, str]]:
    return {(f"file://{store}", str(path.relative_to(store))) for store in stores
            for path in store.rglob("*") if path.is_file() and not path.name.startswith(".")}


def manifest_objects(segments: list[dict]) -> set[tuple[str, str]]:
    objects = set()
    for segment in segments:
        topic_id = segment["topic_id"]
        key = f"{topic_id}/{segment['partition']}/{segment['base_offset']:020d}-{segment['segment_id']}"
        objects |= {(url, f"{key}.{index}") for index, url in enumerate(segment["stores"])}
    return objects


def wait_for(check, what: str, broker: BrokerProcess, timeout: float = DEADLINE_S):
    """check()'s first truthy answer, asked until `timeout` (then the test fails with the broker's log)."""
    deadline = time.monotonic() + timeout
    while not (found := check()):
        if time.monotonic() > deadline:
            pytest.fail(f"not {what} within {timeout}s; broker log:\n{broker.log_tail()}")
        time.sleep(0.1)  # poll interval inside a deadline loop
    return found


@pytest.mark.parametrize("point", ["copy-started", "fragment-written", "fragments-written", "delete-started",
                                   "fragment-deleted"])
def test_a_sigkill_during_offload_or_deletion_loses_nothing_and_leaves_no_orphans(tmp_path, point):
    stores = [tmp_path / f"store{i}" for i in range(6)]
    broker = BrokerProcess(tmp_path / "broker", {
        "remote.log.storage.system.enable": "true",
        "remote.fragment.stores": ",".join(f"file://{store}" for store in stores),
        "remote.erasure.code": "rs:4+2", "remote.stripe.bytes": "16384",
        "remote.log.manager.task.interval.ms": "100"}, env={"LODESTREAM_TIERING_CRASH_AT": point})
    broker.start()
    try:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        admin.create_topics([NewTopic(TOPIC, 1, 1, config={
            "remote.storage.enable": "true", "segment.bytes": "60000", "local.retention.ms": "0",
            # Deletion points: remote retention deletes the oldest offloaded segments as more arrive.
            **({"retention.bytes": "250000"} if point.startswith(("delete", "fragment-deleted")) else {}),
        })])[TOPIC].result(15)
        acked = produce(broker.bootstrap, RECORDS)
        assert broker.wait_dead(DEADLINE_S), f"the broker did not reach {point}; log:\n{broker.log_tail()}"
        assert f"LODESTREAM_TIERING_CRASH_AT={point}" in broker.log_tail(200)
        broker.proc = None

        broker.start()  # the same data and stores, no crash point
        if len(acked) < RECORDS:  # produced while the broker died: the rest now
            acked.update({offset: value for offset, value in produce(broker.bootstrap, 200).items()})

        def settled():
            listed = rest(broker, "/tiering/segments")["data"]
            if any(s["state"] != "COPY_SEGMENT_FINISHED" for s in listed):
                return None  # an unfinished copy or deletion not yet cleaned up
            offloaded_to = max((s["end_offset"] for s in listed), default=0)
            caught_up = offloaded_to >= max(acked) + 1 - 300  # all but the active segment (~150 records)
            return listed if caught_up and stored_objects(stores) == manifest_objects(listed) else None

        segments = wait_for(settled, "settled with every object known to a finished manifest", broker)
        hidden = [path for store in stores for path in store.rglob(".*")]
        assert not hidden, f"temporary files left on the stores: {hidden}"
        consumer_start = min(s["base_offset"] for s in segments)
        end = max(acked) + 1
        read = consume(broker.bootstrap, consumer_start, end)
        missing = [offset for offset in acked if offset >= consumer_start and read.get(offset) != acked[offset]]
        assert not missing, f"{len(missing)} acknowledged records not read back, e.g. {missing[:5]}"
        assert sorted(read) == list(range(consumer_start, max(read) + 1))  # contiguous from the log start
    finally:
        broker.stop()
