"""REST produce throughput: records/s through POST /v3/clusters/{id}/topics/{topic}/records.

    .venv/bin/python bench/rest_produce.py [--records 20000] [--size 1024] [--flush-messages 1]

Starts `lodestream serve` on loopback (port 0, REST API on a free port), creates
a 1-partition topic over REST, then produces `--records` records with a
`--size`-byte STRING value over ONE HTTP/1.1 connection (httpx, keep-alive), in
two ways:

* request: one record per POST, each answered before the next is sent;
* stream:  all records concatenated in one POST (REST Proxy v3 streaming mode),
           one result line per record.

Every result is checked (error_code 200, offsets consecutive). The broker runs
with its durable default (`log.flush.interval.messages=1`: a record is answered
once its fsynced write is done); `--flush-messages N` (N > 1) measures with
background fsync instead.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

VENV_BIN = Path(sys.executable).parent


def start_broker(workdir: Path, flush_messages: int) -> tuple[subprocess.Popen, str, str]:
    ready = workdir / "ready.json"
    log = open(workdir / "broker.log", "wb")
    process = subprocess.Popen(
        [str(VENV_BIN / "lodestream"), "serve", "--override", "listeners=PLAINTEXT://127.0.0.1:0",
         "--override", "admin.listeners=http://127.0.0.1:0", "--override", f"log.dirs={workdir / 'data'}",
         "--override", f"log.flush.interval.messages={flush_messages}",
         "--ready-file", str(ready), "--log-level", "WARNING"], stdout=log, stderr=log)
    deadline = time.monotonic() + 30
    while not ready.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"broker did not start; see {workdir / 'broker.log'}")
        time.sleep(0.05)
    info = json.loads(ready.read_text())
    return process, info["listeners"]["ADMIN"], info["cluster_id"]


def per_request(client: httpx.Client, path: str, record: dict, count: int) -> float:
    started = time.perf_counter()
    for expected in range(count):
        response = client.post(path, json=record)
        body = response.json()
        if response.status_code != 200 or body["offset"] != expected:
            raise RuntimeError(f"record {expected}: {response.status_code} {body}")
    return time.perf_counter() - started


def streamed(client: httpx.Client, path: str, record: dict, count: int, first_offset: int) -> float:
    line = json.dumps(record).encode()

    def body():
        for start in range(0, count, 256):
            yield line * min(256, count - start)

    started = time.perf_counter()
    results = 0
    with client.stream("POST", path, content=body(), headers={"content-type": "application/json"}) as response:
        if response.status_code != 200:
            raise RuntimeError(f"stream: {response.status_code} {response.read()[:300]!r}")
        for text in response.iter_lines():
            if not text:
                continue
            result = json.loads(text)
            if result["error_code"] != 200 or result["offset"] != first_offset + results:
                raise RuntimeError(f"stream record {results}: {result}")
            results += 1
    elapsed = time.perf_counter() - started
    if results != count:
        raise RuntimeError(f"stream: {results} results for {count} records")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--flush-messages", type=int, default=1)
    args = parser.parse_args()
    record = {"partition_id": 0, "value": {"type": "STRING", "data": "x" * args.size}}
    with tempfile.TemporaryDirectory() as tmp:
        process, base, cluster_id = start_broker(Path(tmp), args.flush_messages)
        try:
            with httpx.Client(base_url=base, timeout=120) as client:
                created = client.post(f"/v3/clusters/{cluster_id}/topics",
                                      json={"topic_name": "rest-bench", "partitions_count": 1})
                created.raise_for_status()
                path = f"/v3/clusters/{cluster_id}/topics/rest-bench/records"
                request_s = per_request(client, path, record, args.records)
                stream_s = streamed(client, path, record, args.records, args.records)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(30)
    mode = "fsync per write (default)" if args.flush_messages == 1 else f"log.flush.interval.messages={args.flush_messages}"
    print(f"{args.records} records of {args.size} B, one HTTP connection, {mode}")
    print(f"{'mode':<8} {'records/s':>10} {'MB/s':>7}")
    for name, seconds in (("request", request_s), ("stream", stream_s)):
        rate = args.records / seconds
        print(f"{name:<8} {rate:>10.0f} {rate * args.size / 1e6:>7.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
