"""Tiered storage end to end with real clients and real storage nodes (issue: erasure-coded tiered storage,
Show 3): six SeaweedFS processes are the fragment stores of `rs:4+2`; confluent-kafka produces 200 MB
(LODESTREAM_TIERED_E2E_MB) to a topic that then turns remote storage on with a short local retention; once
offloaded and gone locally, confluent-kafka and kcat read it all back byte-identical; with two storage
nodes SIGKILLed, still; with a third, a Fetch gets KAFKA_STORAGE_ERROR; after the nodes come back,
`lodestream tiering repair` finds every fragment healthy.

Figures (local bytes before and after, bytes on the stores against segment bytes, timings) are printed;
run with -s to see them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import trio
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic

from broker_process import BrokerProcess
from lodestream.protocol.errors import ErrorCode
from lodestream.storage.fragment_store import FragmentStoreError
from lodestream.storage.store_urls import open_store
from seaweedfs import SeaweedFS
from test_produce_fetch import fetch_one
from test_tiered_crash import wait_for
from test_tiered_repair import lodestream, status
from wire_client import WireClient

TOPIC = "offloaded"
MEGABYTES = int(os.environ.get("LODESTREAM_TIERED_E2E_MB", "200"))
VALUE_BYTES = 10_000
RECORDS = MEGABYTES * 1_000_000 // VALUE_BYTES
DEADLINE_S = 300.0


def value_of(index: int) -> bytes:
    return index.to_bytes(8, "big") * (VALUE_BYTES // 8)


def expected_digest() -> str:
    digest = hashlib.sha256()
    for index in range(RECORDS):
        digest.update(value_of(index))
    return digest.hexdigest()


def local_size(broker: BrokerProcess) -> int:
    done = lodestream("topics", "describe", TOPIC, "--bootstrap-server", broker.bootstrap, "--output", "json")
    assert done.returncode == 0, done.stderr
    return sum(p["size_bytes"] or 0 for p in json.loads(done.stdout)[0]["partitions"])


def consume_digest(bootstrap: str) -> tuple[str, int]:
    """sha256 of every value from offset 0, in order, read with confluent-kafka; and the count."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"e2e-{time.monotonic_ns()}",
                         "enable.auto.commit": False, "fetch.max.bytes": 8 << 20})
    digest, count = hashlib.sha256(), 0
    try:
        consumer.assign([TopicPartition(TOPIC, 0, 0)])
        deadline = time.monotonic() + DEADLINE_S
        while count < RECORDS and time.monotonic() < deadline:
            message = consumer.poll(1.0)
            if message is None or message.error() is not None:
                continue
            assert message.offset() == count, f"offset {message.offset()} where {count} was expected"
            digest.update(message.value())
            count += 1
    finally:
        consumer.close()
    return digest.hexdigest(), count


def kcat_digest(bootstrap: str) -> str:
    """sha256 of every value from offset 0 as kcat prints them (no delimiter)."""
    kcat = shutil.which("kcat") or shutil.which("kafkacat")
    assert kcat, "kcat is installed by .ci/run"
    process = subprocess.Popen([kcat, "-C", "-b", bootstrap, "-t", TOPIC, "-p", "0", "-o", "beginning", "-e",
                                "-q", "-f", "%s"], stdout=subprocess.PIPE)
    digest = hashlib.sha256()
    assert process.stdout is not None
    while chunk := process.stdout.read(1 << 20):
        digest.update(chunk)
    assert process.wait(DEADLINE_S) == 0
    return digest.hexdigest()


def stored_bytes(nodes: list[SeaweedFS]) -> int:
    """Bytes of the objects in every node's `lodestream` bucket (S3 ListObjectsV2 sizes)."""
    total = 0
    for node in nodes:
        token = None
        while True:
            params = {"list-type": "2", **({"continuation-token": token} if token else {})}
            listing = httpx.get(f"{node.endpoint}/lodestream", params=params, timeout=30).text
            total += sum(int(size) for size in re.findall(r"<Size>(\d+)</Size>", listing))
            found = re.search(r"<NextContinuationToken>([^<]+)</NextContinuationToken>", listing)
            if found is None:
                break
            token = found.group(1)
    return total


def all_readable(store) -> bool:
    try:
        return all(store.get(key, 0, 1) for key in store.keys())
    except FragmentStoreError:
        return False


async def first_fetch_error(port: int) -> int:
    client = await WireClient.connect(port)
    try:
        return int((await fetch_one(client, TOPIC, 0)).error_code)
    finally:
        await client.aclose()


def test_200_mb_offloaded_to_six_seaweedfs_nodes_read_back_through_two_lost_and_repaired(tmp_path):
    nodes = [SeaweedFS(tmp_path / f"node{i}") for i in range(6)]
    broker = None
    try:
        with ThreadPoolExecutor(6) as pool:
            list(pool.map(SeaweedFS.start, nodes))
        broker = BrokerProcess(tmp_path / "broker", {
            "remote.log.storage.system.enable": "true",
            "remote.fragment.stores": ",".join(node.store_url("lodestream") for node in nodes),
            "remote.erasure.code": "rs:4+2", "remote.cache.bytes": "0",
            "remote.log.manager.task.interval.ms": "500", "remote.scrub.max.bytes.per.second": "500000000"})
        broker.start()
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        admin.create_topics([NewTopic(TOPIC, 1, 1, config={"segment.bytes": str(16 << 20)})])[TOPIC].result(30)

        started = time.monotonic()
        producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 20, "batch.size": 1 << 20,
                             "queue.buffering.max.kbytes": 262144})
        for index in range(RECORDS):
            while True:
                try:
                    producer.produce(TOPIC, value_of(index))
                    break
                except BufferError:
                    producer.poll(0.1)
            producer.poll(0)
        assert producer.flush(120) == 0
        produced_s = time.monotonic() - started
        local_before = local_size(broker)

        # Remote storage on, local copies kept no longer than it takes to offload them.
        started = time.monotonic()
        resource = ConfigResource("topic", TOPIC, incremental_configs=[
            ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)
            for key, value in {"remote.storage.enable": "true", "local.retention.ms": "1000"}.items()])
        for future in admin.incremental_alter_configs([resource]).values():
            future.result(30)
        def offloaded():
            """Every closed segment offloaded (the same list before and after measuring the stores), and
            the local log down to its active segment."""
            listed = status(broker)
            if not listed or max(s["end_offset"] for s in listed) < RECORDS - 2 * (16 << 20) // VALUE_BYTES:
                return None
            size, on_stores = local_size(broker), stored_bytes(nodes)
            return (listed, size, on_stores) if size < local_before / 4 and status(broker) == listed else None

        segments, local_after, on_stores = wait_for(offloaded, "offloaded and deleted locally", broker, DEADLINE_S)
        offload_s = time.monotonic() - started
        segment_bytes = sum(s["size"] for s in segments)
        print(f"\n{MEGABYTES} MB produced in {produced_s:.1f} s; offloaded in {offload_s:.1f} s: "
              f"{len(segments)} segments, {segment_bytes} bytes; on the stores {on_stores} bytes "
              f"({on_stores / segment_bytes:.3f}x); local {local_before} -> {local_after} bytes")
        assert 1.45 < on_stores / segment_bytes < 1.6  # rs:4+2: 1.5x, plus piece headers and stripe padding
        assert local_after < local_before / 4

        digest = expected_digest()
        started = time.monotonic()
        assert consume_digest(broker.bootstrap) == (digest, RECORDS)
        consume_s = time.monotonic() - started
        assert kcat_digest(broker.bootstrap) == digest

        nodes[0].kill()
        nodes[3].kill()
        started = time.monotonic()
        assert consume_digest(broker.bootstrap) == (digest, RECORDS)
        degraded_s = time.monotonic() - started
        print(f"consumed from 0 in {consume_s:.1f} s ({MEGABYTES / consume_s:.1f} MB/s); with two nodes down "
              f"in {degraded_s:.1f} s ({MEGABYTES / degraded_s:.1f} MB/s)")

        nodes[5].kill()
        assert trio.run(first_fetch_error, broker.port) == ErrorCode.kafka_storage_error
        assert "cannot be read" in broker.log_tail(400)

        started = time.monotonic()
        restarted = [nodes[0], nodes[3], nodes[5]]
        with ThreadPoolExecutor(3) as pool:  # the same directories and ports: their fragments are back
            list(pool.map(SeaweedFS.start, restarted))
        for node in restarted:  # once its volumes are registered again, a node serves every object it has
            store = open_store(node.store_url("lodestream"))
            wait_for(lambda: all_readable(store), f"{node.endpoint} serving its objects again", broker, DEADLINE_S)
        restarted_s = time.monotonic() - started
        repair = lodestream("tiering", "repair", "--rest", broker.admin_url)
        assert repair.returncode == 0, repair.stderr
        print(f"three nodes restarted in {restarted_s:.1f} s; {repair.stdout.strip()} in "
              f"{time.monotonic() - started - restarted_s:.1f} s")
        assert all(s["checked"] and not s["bad_fragments"] for s in status(broker))
        assert trio.run(first_fetch_error, broker.port) == ErrorCode.none
    finally:
        if broker is not None:
            broker.stop()
        for node in nodes:
            node.stop()
