"""Go clients against `lodestream serve`: franz-go (kgo and kadm) and IBM/sarama.

compat-tests/go/franz and compat-tests/go/sarama do the work, one check per run (built by
compat-tests/go/build.sh, which `make test` runs first): each asserts what it reads back and prints
"OK <check>: ..."; a mismatch prints "FAIL <check>: <reason>" and exits 1, which this test shows.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

BIN = Path(__file__).resolve().parent / "go" / "bin"


@pytest.mark.parametrize("client, check, expected", [
    ("franz", "admin", "topic created/listed/altered/extended/deleted, group offsets"),
    ("franz", "produce", "10000 records, none/gzip/snappy/lz4/zstd, read back in order"),
    ("franz", "group", "600 records over 3 partitions in a group, committed"),
    ("franz", "transactions", "GroupTransactSession transactions, an aborted one, read_committed exact"),
    ("sarama", "admin", "cluster described, topic created/listed/altered/extended/deleted"),
    ("sarama", "produce", "10000 records, none/gzip/snappy/lz4/zstd, idempotent, read back in order"),
    ("sarama", "group", "500 records in a consumer group, committed"),
    ("sarama", "transactions", "4 committed and 2 aborted transactions, read_committed exact"),
])
def test_go_client(broker, client, check, expected):
    program = BIN / client
    assert program.exists(), f"{program} is missing: run compat-tests/go/build.sh (make test does)"
    done = subprocess.run([str(program), broker.bootstrap, check], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0 and f"OK {check}: " in done.stdout and expected in done.stdout, (
        f"exit {done.returncode}\nstdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}")
