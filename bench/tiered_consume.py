"""Consume MB/s of an offloaded topic through a real broker, against the same data read from the local log:

    .venv/bin/python bench/tiered_consume.py [--megabytes 200] [--scheme rs:4+2]

One `lodestream serve` process with tiered storage on six (k+m) `file://` stores. Two topics get the same
records (1 KiB values): `local` keeps them in the LevelDB log; `tiered` offloads every closed segment and
deletes it locally (local.retention.ms=0). A confluent-kafka consumer then reads each from offset 0 and
MB/s of values is printed for:

  local         the local LevelDB log (the baseline)
  cold          the fragment stores (broker restarted, caches empty; with Redis configured, it fills Redis)
  redis-warm    every stripe in a real redis-server (the broker's own cache off)
  memory-warm   every stripe in the broker's in-process cache (read twice, the second is measured)
  degraded      m stores deleted, caches empty: every stripe decoded from parity

All on this machine (2 cores, shared): compare the ratios, not the absolute figures.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from confluent_kafka import Consumer, Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

from broker_process import BrokerProcess  # noqa: E402
from lodestream.storage.erasure import Scheme  # noqa: E402
from redis_server import start_redis  # noqa: E402

VALUE = 1024
SEGMENT_BYTES = 16 << 20


def produce(bootstrap: str, topic: str, count: int) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.size": 1 << 20,
                         "queue.buffering.max.kbytes": 262144})
    for index in range(count):
        while True:
            try:
                producer.produce(topic, index.to_bytes(8, "big") * (VALUE // 8))
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    assert producer.flush(120) == 0


def consume_mb_s(bootstrap: str, topic: str, count: int) -> float:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{time.monotonic_ns()}",
                         "enable.auto.commit": False, "fetch.max.bytes": 8 << 20})
    consumer.assign([TopicPartition(topic, 0, 0)])
    read = size = 0
    started = None
    deadline = time.monotonic() + 600
    while read < count and time.monotonic() < deadline:
        message = consumer.poll(1.0)
        if message is None or message.error() is not None:
            continue
        if started is None:
            started = time.perf_counter()
        read += 1
        size += len(message.value())
    seconds = time.perf_counter() - started
    consumer.close()
    assert read == count, f"read {read} of {count} records of {topic}"
    return size / seconds / 1e6


def offloaded_to(broker: BrokerProcess) -> int:
    done = subprocess.run([str(Path(sys.executable).parent / "lodestream"), "tiering", "status", "--rest",
                           broker.admin_url, "--output", "json"], capture_output=True, text=True, check=True)
    return max((s["end_offset"] for s in json.loads(done.stdout)), default=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--megabytes", type=int, default=200)
    parser.add_argument("--scheme", default="rs:4+2")
    args = parser.parse_args()
    scheme = Scheme.parse(args.scheme)
    count = args.megabytes * 1_000_000 // VALUE
    directory = Path(tempfile.mkdtemp(prefix="tiered-consume-"))
    redis, redis_url = start_redis(directory)
    stores = [directory / f"store{i}" for i in range(scheme.width)]
    settings = {"remote.log.storage.system.enable": "true", "remote.erasure.code": str(scheme),
                "remote.fragment.stores": ",".join(f"file://{store}" for store in stores),
                "remote.log.manager.task.interval.ms": "200"}
    broker = BrokerProcess(directory / "broker", settings)
    try:
        broker.start()
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        for topic, configs in (("local", {}), ("tiered", {"remote.storage.enable": "true", "local.retention.ms": "0"})):
            admin.create_topics([NewTopic(topic, 1, 1, config={"segment.bytes": str(SEGMENT_BYTES), **configs})])[
                topic].result(30)
            produce(broker.bootstrap, topic, count)
        deadline = time.monotonic() + 600
        while offloaded_to(broker) < count - 2 * SEGMENT_BYTES // VALUE:
            assert time.monotonic() < deadline, broker.log_tail()
            time.sleep(0.5)  # poll interval inside a deadline loop
        # What the tiered topic still holds locally is read locally: count only the offloaded part.
        remote_count = offloaded_to(broker)
        figures = {"local": consume_mb_s(broker.bootstrap, "local", remote_count)}

        def restart(**overrides: str) -> None:
            broker.stop()
            broker.overrides = {**settings, **overrides}
            broker.start()

        restart(**{"remote.cache.bytes": "0", "remote.cache.redis.url": redis_url})
        figures["cold"] = consume_mb_s(broker.bootstrap, "tiered", remote_count)
        figures["redis-warm"] = consume_mb_s(broker.bootstrap, "tiered", remote_count)
        restart(**{"remote.cache.bytes": str(4 << 30)})
        consume_mb_s(broker.bootstrap, "tiered", remote_count)
        figures["memory-warm"] = consume_mb_s(broker.bootstrap, "tiered", remote_count)
        for store in stores[:scheme.m]:
            shutil.rmtree(store)
        restart(**{"remote.cache.bytes": "0"})
        figures["degraded"] = consume_mb_s(broker.bootstrap, "tiered", remote_count)
    finally:
        broker.stop()
        redis.kill()
        redis.wait()
        shutil.rmtree(directory, ignore_errors=True)
    print(f"{remote_count} records of {VALUE} B ({remote_count * VALUE / 1e6:.0f} MB) offloaded with {scheme}, "
          f"consumed from offset 0 with confluent-kafka:")
    for name, mb_s in figures.items():
        print(f"  {name:12s} {mb_s:8.1f} MB/s   {mb_s / figures['local']:.2f}x local")


if __name__ == "__main__":
    main()
