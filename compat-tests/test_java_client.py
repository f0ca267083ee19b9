"""The Java client (kafka-clients 4.1.1, the reference implementation) against `lodestream serve`.

compat-tests/java/src/main/java/dev/lodestream/JavaClientCheck.java does the work, one check per JVM
(built by `make kafka-java`): it asserts what it reads back and prints "OK <check>: ..."; a mismatch
exits non-zero with the reason, which this test shows.
"""

from __future__ import annotations

import pytest

from kafka_tools import KafkaTools

CHECK = "dev.lodestream.JavaClientCheck"


@pytest.mark.parametrize("check, expected", [
    ("admin", "topic created/described/altered/extended/deleted, group offsets"),
    ("produce", "10000 records, none/gzip/snappy/lz4/zstd, read back in order"),  # idempotent, acks=all
    ("classic", "600 records over 3 partitions, group.protocol=classic, committed"),
    ("consumer", "600 records over 3 partitions, group.protocol=consumer, committed"),  # KIP-848
    ("transactions", "read_committed exact, offsets committed with the output"),  # consume-transform-produce
])
def test_java_client(broker, check, expected):
    done = KafkaTools.load().run(CHECK, broker.bootstrap, check, timeout=180)
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("OK ")]
    assert line.startswith(f"OK {check}: ") and expected in line, done.stdout
