"""A real `lodestream serve` subprocess for tests that need one (bad input, durability).

Port 0 and its own data dir; ready once the broker writes its --ready-file.
Restartable on the same data dir (a new port each time). Every wait is bounded
by a deadline.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

READY_TIMEOUT_S = 30.0
STOP_GRACE_S = 10.0


class BrokerProcess:
    """`lodestream serve` on port 0; stopped by the test's fixture.

    fail_on_ignored_sigterm: if the broker is still running STOP_GRACE_S after
    SIGTERM, stop() kills it and fails the test (otherwise it returns the
    SIGKILL exit status and leaves the verdict to the caller).
    """

    def __init__(self, base_dir: Path, overrides: dict[str, str] | None = None, *,
                 fail_on_ignored_sigterm: bool = False, config: Path | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.base_dir = base_dir
        self.config = config  # a server.properties file; the overrides win over it
        self.data_dir = base_dir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.ready_path = self.data_dir / "ready.json"
        self.log_path = base_dir / "broker.log"
        self.overrides = overrides or {}
        self.env = env or {}  # extra environment of the next start (cleared after it)
        self.fail_on_ignored_sigterm = fail_on_ignored_sigterm
        self.proc: subprocess.Popen | None = None
        self.host = "127.0.0.1"
        self.port = 0
        self.admin_url: str | None = None
        self.starts = 0

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the broker log, without native stack-frame lines (a Rust
        or C backtrace would push the message that matters out of the tail)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "<no broker log>"
        kept = [line for line in text.splitlines() if not line.lstrip().startswith("at ")
                and not line[:6].strip().rstrip(":").isdigit()]
        return "\n".join(kept[-lines:])

    def start(self) -> None:
        assert self.proc is None
        self.ready_path.unlink(missing_ok=True)
        exe = Path(sys.executable).parent / "lodestream"
        cmd = [str(exe), "serve",
               "--override", "listeners=PLAINTEXT://127.0.0.1:0",
               "--override", "admin.listeners=http://127.0.0.1:0",
               "--override", f"log.dirs={self.data_dir}",
               *(["--config", str(self.config)] if self.config else []),
               "--ready-file", str(self.ready_path),
               "--log-level", "INFO"]
        for key, value in self.overrides.items():
            cmd += ["--override", f"{key}={value}"]
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== test: start #{self.starts}\n".encode())
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         env=dict(os.environ, PYTHONUNBUFFERED="1", **self.env),
                                         start_new_session=True)
        self.env = {}
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                rc, self.proc = self.proc.returncode, None
                pytest.fail(f"broker exited with {rc} before becoming ready; log tail:\n{self.log_tail()}")
            if self.ready_path.exists():
                info = json.loads(self.ready_path.read_text())
                assert info["pid"] == self.proc.pid
                kafka = {name: address for name, address in info["listeners"].items() if name != "ADMIN"}
                host, port = kafka.get("PLAINTEXT", next(iter(kafka.values()))).rsplit(":", 1)
                self.host, self.port = host, int(port)
                self.admin_url = info["listeners"].get("ADMIN")  # http://host:port, None if disabled
                return
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"broker not ready within {READY_TIMEOUT_S}s; log tail:\n{self.log_tail()}")
            time.sleep(0.05)  # poll interval inside a deadline loop

    def kill(self) -> None:
        """SIGKILL and reap."""
        proc, self.proc = self.proc, None
        assert proc is not None and proc.poll() is None, f"broker was not running; log tail:\n{self.log_tail()}"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=STOP_GRACE_S)

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after a grace period. Returns the exit status."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                return proc.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = proc.wait(timeout=STOP_GRACE_S)
                if self.fail_on_ignored_sigterm:
                    pytest.fail(f"broker ignored SIGTERM for {STOP_GRACE_S}s; log tail:\n{self.log_tail()}")
                return rc
        return proc.returncode

    def wait_dead(self, timeout: float) -> bool:
        """True if the process exits within `timeout` (used after a refused connection)."""
        if self.proc is None:
            return True
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def rss(self) -> int:
        assert self.proc is not None
        return psutil.Process(self.proc.pid).memory_info().rss

    def assert_alive(self, after: str) -> None:
        assert self.alive(), f"broker died after {after}; log tail:\n{self.log_tail()}"
