"""Issue 4's memory check: 50 confluent-kafka producers send ~1 MB batches as fast as they can to a
`lodestream serve` process with a 64 MiB request pool (queued.max.request.bytes=67108864).

The broker's RSS, sampled throughout, stays under pool + 150 MB (absolute RSS, baseline included),
every message is acknowledged and stored (log end offset = messages sent), and every producer finishes.
"""

from __future__ import annotations

import threading
import time

import psutil
import pytest

confluent_kafka = pytest.importorskip("confluent_kafka")
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

from broker_process import BrokerProcess  # noqa: E402

POOL_BYTES = 64 * 1024 * 1024
RSS_ALLOWANCE = 150 * 1000 * 1000  # "pool + 150 MB"
PRODUCERS = 50
VALUE_BYTES = 240 * 1024  # four values fill one ~1 MB batch
MESSAGES_PER_PRODUCER = 32  # 8 batches, ~7.7 MB per producer, ~385 MB in all
DEADLINE_S = 120.0
SAMPLE_EVERY_S = 0.05


@pytest.fixture
def broker(tmp_path):
    process = BrokerProcess(tmp_path, {"queued.max.request.bytes": str(POOL_BYTES), "num.partitions": "1"},
                            fail_on_ignored_sigterm=True)
    process.start()
    yield process
    process.stop()


def test_fifty_producers_of_1mb_batches_stay_within_the_request_pool(broker):
    topic = "memory-pressure"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(timeout=30)

    baseline = broker.rss()
    samples: list[int] = []
    stop_sampling = threading.Event()

    def sample() -> None:
        process = psutil.Process(broker.proc.pid)
        while not stop_sampling.is_set():
            samples.append(process.memory_info().rss)
            stop_sampling.wait(SAMPLE_EVERY_S)  # the sampling period, not a synchronisation

    delivered = [0] * PRODUCERS
    failed: list[str] = []
    finished = [False] * PRODUCERS
    value = b"v" * VALUE_BYTES
    deadline = time.monotonic() + DEADLINE_S

    def produce(index: int) -> None:
        producer = confluent_kafka.Producer({
            "bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 5,
            "batch.size": 1_000_000, "message.max.bytes": 1_000_000, "compression.type": "none",
            "enable.idempotence": False, "max.in.flight.requests.per.connection": 5,
            "message.timeout.ms": int(DEADLINE_S * 1000), "request.timeout.ms": 60_000,
        })

        def on_delivery(err, msg) -> None:
            if err is None:
                delivered[index] += 1
            else:
                failed.append(f"producer {index}: {err}")

        for _ in range(MESSAGES_PER_PRODUCER):
            while True:
                try:
                    producer.produce(topic, value, on_delivery=on_delivery)
                    break
                except BufferError:
                    producer.poll(0.05)
            producer.poll(0)
        remaining = producer.flush(max(deadline - time.monotonic(), 0))
        finished[index] = remaining == 0

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.monotonic()
    threads = [threading.Thread(target=produce, args=(i,), daemon=True) for i in range(PRODUCERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(deadline - time.monotonic(), 0))
    elapsed = time.monotonic() - started
    stop_sampling.set()
    sampler.join(5)

    peak = max(samples)
    total = PRODUCERS * MESSAGES_PER_PRODUCER
    print(f"\n{PRODUCERS} producers, {total} x {VALUE_BYTES} B in {elapsed:.1f} s; broker RSS baseline "
          f"{baseline / 1e6:.1f} MB, peak {peak / 1e6:.1f} MB over {len(samples)} samples "
          f"(limit {(POOL_BYTES + RSS_ALLOWANCE) / 1e6:.1f} MB)")
    broker.assert_alive("the producers")
    assert not failed, failed[:5]
    assert all(finished), f"{finished.count(False)} producers did not finish within {DEADLINE_S} s"
    assert sum(delivered) == total

    consumer = confluent_kafka.Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "memory-check"})
    try:
        low, high = consumer.get_watermark_offsets(confluent_kafka.TopicPartition(topic, 0), timeout=30)
    finally:
        consumer.close()
    assert (low, high) == (0, total), "messages lost"
    log = broker.log_path.read_text()
    assert "limit queued.max.request.bytes reached" in log, "the pool was never exhausted: no pressure tested"
    assert peak < POOL_BYTES + RSS_ALLOWANCE, (
        f"broker RSS peaked at {peak / 1e6:.1f} MB (baseline {baseline / 1e6:.1f} MB), over pool + 150 MB = "
        f"{(POOL_BYTES + RSS_ALLOWANCE) / 1e6:.1f} MB")
