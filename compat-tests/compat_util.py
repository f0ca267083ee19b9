"""Shared helpers for the client compatibility suite (workload, comparison, admin).

The workload is deterministic (seeded ``random.Random``) so a failure can be
reproduced; only the "now"-relative timestamps differ between runs.
"""

from __future__ import annotations

import hashlib
import os
import random
import time
import uuid
from dataclasses import dataclass
from typing import Iterable, Sequence

# Topics the tests create get this many replicas: 3 against a cluster (LODESTREAM_COMPAT_BROKER=cluster,
# whose conftest sets it, so the Java and Go checks read it too), else 1.
REPLICATION_FACTOR = int(os.environ.get("LODESTREAM_COMPAT_REPLICATION_FACTOR", "1"))
CLUSTER = os.environ.get("LODESTREAM_COMPAT_BROKER", "").strip().lower() == "cluster"

# ~10,000 messages per client, split evenly over the codecs that client can do.
TOTAL_MESSAGES = 10_000
BIG_VALUE_SIZE = 1 << 20  # 1 MiB
BIG_PER_CODEC = 3
ALL_CODECS = ("none", "gzip", "snappy", "lz4", "zstd")

# Kafka's default max.message.bytes (1048588) is too small for a 1 MiB value plus
# key/headers/batch overhead, so workload topics are created with 2 MiB.
WORKLOAD_TOPIC_CONFIG = {"max.message.bytes": str(2 * 1024 * 1024)}

# Client-side limits large enough for the 1 MiB values.
CLIENT_MAX_REQUEST = 4 * 1024 * 1024
CLIENT_MAX_FETCH = 16 * 1024 * 1024

HEADER_KEYS = ("h", "dup", "trace-id", "ünïcödé-key", "")


class Deadline:
    """A monotonic deadline; every wait in the suite is bounded by one."""

    def __init__(self, seconds: float, what: str = "operation"):
        self.seconds = seconds
        self.what = what
        self.end = time.monotonic() + seconds

    def remaining(self) -> float:
        return max(0.0, self.end - time.monotonic())

    def expired(self) -> bool:
        return time.monotonic() >= self.end

    def check(self, detail: str = "") -> None:
        if self.expired():
            raise AssertionError(f"{self.what} did not finish within {self.seconds}s {detail}".rstrip())


def unique_topic(prefix: str) -> str:
    return f"compat-{prefix}-{uuid.uuid4().hex[:10]}"


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class Msg:
    """One message to produce. ``timestamp`` None means "let the client stamp it"."""

    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()
    timestamp: int | None = None


@dataclass(frozen=True)
class Record:
    """A record as observed (from a delivery report, or from a consumer)."""

    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()
    timestamp_type: str | None = None  # "create" / "log_append" when the client reports it


def generate_workload(
    seed: int,
    count: int,
    *,
    big: int = BIG_PER_CODEC,
    null_values: bool = True,
    null_header_values: bool = True,
    null_key_and_value: bool = True,
    ts_base: int | None = None,
) -> list[Msg]:
    """Deterministic mix of keyed / null-keyed / empty / binary / 1 MiB messages.

    * ~15% null keys, some empty keys, some binary keys;
    * ~5% empty values, ~2% null values (tombstones) if ``null_values``;
    * ``big`` values of exactly 1 MiB (one incompressible, the rest compressible);
    * ~60% of messages carry 1-4 headers, with duplicate keys, an empty key,
      empty values and (if ``null_header_values``) null values;
    * ~30% carry an explicit CreateTime timestamp (an hour in the past, increasing),
      the rest are stamped by the client at send time.
    """
    rng = random.Random(seed)
    if ts_base is None:
        ts_base = now_ms() - 3_600_000
    big_at = set(rng.sample(range(count), big)) if count >= big else set(range(count))
    words = [b"alpha", b"beta", b"gamma", b"delta", b"kafka", b"lode", b"stream", "ü€".encode()]
    out: list[Msg] = []
    for i in range(count):
        r = rng.random()
        if r < 0.15:
            key = None
        elif r < 0.18:
            key = b""
        elif r < 0.40:
            key = rng.randbytes(rng.randint(1, 64))
        else:
            key = b"key-%d" % rng.randint(0, 500)

        if i in big_at:
            if len([j for j in big_at if j <= i]) == 1:
                value = rng.randbytes(BIG_VALUE_SIZE)  # incompressible
            else:
                chunk = b" ".join(rng.choice(words) for _ in range(64)) + b"\n"
                value = (chunk * (BIG_VALUE_SIZE // len(chunk) + 1))[:BIG_VALUE_SIZE]
        else:
            r = rng.random()
            if r < 0.05:
                value = b""
            elif r < 0.07 and null_values:
                value = None
            elif r < 0.55:
                value = b" ".join(rng.choice(words) for _ in range(rng.randint(1, 60)))
            elif r < 0.97:
                value = rng.randbytes(rng.randint(1, 512))
            else:
                value = rng.randbytes(rng.randint(1024, 20_000))

        if key is None and value is None and not null_key_and_value:
            value = b""  # some clients refuse a record with neither key nor value

        headers: list[tuple[str, bytes | None]] = []
        if rng.random() < 0.6:
            for _ in range(rng.randint(1, 4)):
                hk = rng.choice(HEADER_KEYS)
                hr = rng.random()
                if hr < 0.1:
                    hv: bytes | None = b""
                elif hr < 0.2 and null_header_values:
                    hv = None
                else:
                    hv = rng.randbytes(rng.randint(1, 40))
                headers.append((hk, hv))
            if rng.random() < 0.2:
                headers.append(headers[0])  # exact duplicate header

        ts = ts_base + i * 3 if rng.random() < 0.3 else None
        out.append(Msg(key, value, tuple(headers), ts))
    return out


def _describe_bytes(b: bytes | None) -> str:
    if b is None:
        return "None"
    if len(b) <= 48:
        return repr(b)
    return f"<{len(b)} bytes sha1={hashlib.sha1(b).hexdigest()[:12]} head={b[:16]!r}>"


def _describe_headers(h) -> str:
    return "[" + ", ".join(f"({k!r}, {_describe_bytes(v)})" for k, v in h) + "]"


def compare_records(
    label: str,
    expected: Sequence[Record],
    got: Sequence[Record],
    *,
    check_timestamp_type: str | None = "create",
    max_report: int = 10,
) -> None:
    """Byte-for-byte comparison by offset of key, value, headers, offset, timestamp."""
    problems: list[str] = []
    exp_by_off = {r.offset: r for r in expected}
    if len(exp_by_off) != len(expected):
        problems.append(f"duplicate offsets in delivery reports ({len(expected)} reports, {len(exp_by_off)} offsets)")
    offs = sorted(exp_by_off)
    if offs and offs != list(range(offs[0], offs[0] + len(offs))):
        problems.append(f"delivered offsets are not contiguous: first={offs[0]} last={offs[-1]} n={len(offs)}")
    got_offsets = [r.offset for r in got]
    if got_offsets != sorted(got_offsets) or len(set(got_offsets)) != len(got_offsets):
        problems.append("consumed offsets not strictly increasing")
    got_by_off = {r.offset: r for r in got}
    missing = [o for o in offs if o not in got_by_off]
    extra = [o for o in got_by_off if o not in exp_by_off]
    if missing:
        problems.append(f"{len(missing)} delivered offsets never consumed, e.g. {missing[:10]}")
    if extra:
        problems.append(f"{len(extra)} consumed offsets never delivered, e.g. {sorted(extra)[:10]}")
    mismatches = 0
    for off in offs:
        g = got_by_off.get(off)
        if g is None:
            continue
        e = exp_by_off[off]
        diffs = []
        if g.key != e.key:
            diffs.append(f"key {_describe_bytes(g.key)} != expected {_describe_bytes(e.key)}")
        if g.value != e.value:
            diffs.append(f"value {_describe_bytes(g.value)} != expected {_describe_bytes(e.value)}")
        if tuple(g.headers) != tuple(e.headers):
            diffs.append(f"headers {_describe_headers(g.headers)} != expected {_describe_headers(e.headers)}")
        if g.timestamp != e.timestamp:
            diffs.append(f"timestamp {g.timestamp} != expected {e.timestamp}")
        if check_timestamp_type and g.timestamp_type != check_timestamp_type:
            diffs.append(f"timestamp_type {g.timestamp_type!r} != {check_timestamp_type!r}")
        if diffs:
            mismatches += 1
            if mismatches <= max_report:
                problems.append(f"offset {off}: " + "; ".join(diffs))
    if mismatches > max_report:
        problems.append(f"... {mismatches - max_report} more mismatching records")
    if problems:
        raise AssertionError(f"{label}: {len(expected)} produced, {len(got)} consumed:\n  " + "\n  ".join(problems))


# -- confluent-kafka admin helpers (used by several modules) -----------------


def ck_admin(bootstrap: str, **extra):
    from confluent_kafka.admin import AdminClient

    # socket.timeout.ms is also the default admin request timeout: keep it below the
    # 30 s the tests wait on result futures, so an unanswered request fails clearly.
    return AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 20000, **extra})


def ck_create_topics(
    bootstrap: str,
    names: Iterable[str],
    *,
    partitions: int = 1,
    config: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> None:
    """CreateTopics through confluent-kafka's AdminClient, then wait for leaders."""
    from confluent_kafka.admin import NewTopic

    names = list(names)
    admin = ck_admin(bootstrap)
    futs = admin.create_topics(
        [NewTopic(n, num_partitions=partitions, replication_factor=REPLICATION_FACTOR, config=dict(config or {}))
         for n in names],
        operation_timeout=timeout,
        request_timeout=timeout,
    )
    for n, f in futs.items():
        f.result(timeout=timeout)
    ck_wait_for_leaders(admin, names, partitions, timeout=timeout)


def ck_wait_for_leaders(admin, names: Iterable[str], partitions: int, timeout: float = 30.0) -> None:
    deadline = Deadline(timeout, "metadata for created topics")
    names = list(names)
    while True:
        md = admin.list_topics(timeout=max(1.0, deadline.remaining()))
        ok = True
        for n in names:
            t = md.topics.get(n)
            if t is None or t.error is not None or len(t.partitions) != partitions:
                ok = False
                break
            if any(p.leader < 0 or p.error is not None for p in t.partitions.values()):
                ok = False
                break
        if ok:
            return
        deadline.check(f"(topics {names}; last metadata: { {n: md.topics.get(n) for n in names} })")
        time.sleep(0.1)  # polling interval


def wait_until(predicate, seconds: float, what: str, describe=lambda: "", interval: float = 0.05):
    """Poll ``predicate`` until it returns something truthy (returned) or ``seconds`` pass (AssertionError
    with ``describe()``). The sleep is the polling interval, not synchronisation."""
    deadline = Deadline(seconds, what)
    while True:
        result = predicate()
        if result:
            return result
        if deadline.expired():
            raise AssertionError(f"{what}: not reached within {seconds}s\n{describe()}")
        time.sleep(interval)


def api_versions(bootstrap: str, timeout: float = 10.0) -> dict[int, tuple[int, int]]:
    """ApiVersions v0 over a plain socket: {api_key: (min_version, max_version)}."""
    import socket
    import struct

    host, port = bootstrap.split(",")[0].rsplit(":", 1)  # the first broker of a list
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        client_id = b"compat-tests"
        body = struct.pack(">hhih", 18, 0, 1, len(client_id)) + client_id
        s.sendall(struct.pack(">i", len(body)) + body)
        buf = b""
        while len(buf) < 4 or len(buf) < 4 + struct.unpack(">i", buf[:4])[0]:
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError("broker closed the connection during ApiVersions")
            buf += chunk
    data = buf[4:]
    _corr, err, count = struct.unpack(">ihi", data[:10])
    if err:
        raise AssertionError(f"ApiVersions v0 returned error {err}")
    out = {}
    for i in range(count):
        key, lo, hi = struct.unpack(">hhh", data[10 + 6 * i:16 + 6 * i])
        out[key] = (lo, hi)
    return out
