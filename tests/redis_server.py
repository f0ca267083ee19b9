"""A real redis-server for tests and benches: loopback, a free port, no persistence."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from kraft_cluster import free_port

READY_TIMEOUT_S = 20


def start_redis(directory: Path) -> tuple[subprocess.Popen, str]:
    """(the process, its redis:// URL) once it answers PING; the caller kills it."""
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(directory)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).stdout.strip() != b"PONG":
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise AssertionError("redis-server did not start")
        time.sleep(0.05)  # poll interval inside the deadline
    return proc, f"redis://127.0.0.1:{port}"
