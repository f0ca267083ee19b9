"""kcat (the CLI, librdkafka 2.0.x bundled) against a real broker subprocess.

kcat has no admin API (no CreateTopics), so topics are created with
confluent-kafka's AdminClient; everything else goes through the ``kcat``
binary, run as a subprocess with a timeout.

Per codec (none, gzip, snappy, lz4, zstd: all in kcat's builtin.features),
2,000 messages (10,000 in total) are produced with three kcat invocations:

A. line mode ``-K '\\t' -l file`` with a fixed header set (duplicate header
   names, a null header value ``-H name``, an empty one ``-H name=``): keyed
   lines, key-less lines (null key), ``\\tvalue`` lines (empty key) and
   ``key\\t`` lines (empty value);
B. the same with ``-Z`` (empty key/value sent as NULL) and no headers: null
   values (tombstones) and null keys;
C. file mode (each file argument is one message) for the 1 MiB values, with
   a fixed key ``-k`` and headers.

Limitations of kcat that shape the workload (all covered by the library
clients instead): input is line-based and output is JSON text, so values and
keys are UTF-8 text without tabs/newlines rather than arbitrary bytes (the
1 MiB values are ASCII text); headers are per invocation, not per message; an
empty line or an empty file produces *no* message, so empty values only come
from ``key\\t`` lines; there is no way to set a per-message timestamp, so
timestamps are checked to be CreateTime within the invocation's wall-clock
window, identical when read back by confluent-kafka, and consistent with
ListOffsets-by-timestamp (``kcat -Q``).

Consumption is ``kcat -C -p 0 -o beginning -e -J`` (and ``-o <offset> -c N``
for a seek into the middle), compared byte for byte with what was produced,
offsets included.
"""

from __future__ import annotations

import base64
import json
import random
import shutil
import subprocess
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from compat_util import (
    ALL_CODECS,
    BIG_VALUE_SIZE,
    CLIENT_MAX_FETCH,
    CLIENT_MAX_REQUEST,
    TOTAL_MESSAGES,
    WORKLOAD_TOPIC_CONFIG,
    Deadline,
    Record,
    ck_create_topics,
    compare_records,
    now_ms,
    unique_topic,
)

KCAT = shutil.which("kcat") or "/usr/bin/kcat"
KCAT_TIMEOUT = 60
PER_CODEC = TOTAL_MESSAGES // len(ALL_CODECS)
N_BIG = 3
N_LINES_A = PER_CODEC // 2
N_LINES_B = PER_CODEC - N_LINES_A - N_BIG

HEADERS_A = [("h", "1"), ("dup", "a"), ("dup", "b"), ("nullh", None), ("empty", ""), ("ünï", "cödé €")]
HEADERS_C = [("big", "yes"), ("dup", "x"), ("dup", "x")]

WORDS = ["alpha", "beta", "gamma", "delta", "kafka", "lode", "stream", "ü€", "日本", "{\"json\": [1,2]}", "\\back"]
# kcat writes timestamps at produce() time; allow for clock granularity.
TS_SLACK_MS = 2000


def kcat(*args: str, input: bytes | None = None, timeout: float = KCAT_TIMEOUT) -> subprocess.CompletedProcess:
    cmd = [KCAT, *args]
    try:
        cp = subprocess.run(cmd, input=input, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"kcat timed out after {timeout}s: {cmd}\nstderr: {e.stderr!r}") from None
    if cp.returncode != 0 or b"ERROR" in cp.stderr:
        raise AssertionError(f"kcat failed (rc={cp.returncode}): {' '.join(cmd)}\nstderr:\n{cp.stderr.decode(errors='replace')}")
    return cp


def _header_args(headers) -> list[str]:
    out = []
    for k, v in headers:
        out += ["-H", k if v is None else f"{k}={v}"]
    return out


def _enc_headers(headers) -> tuple:
    return tuple((k, None if v is None else v.encode()) for k, v in headers)


def _text(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


def _lines_workload(rng: random.Random, n: int, nulls: bool):
    """Returns (input lines, expected (key, value) pairs)."""
    lines, expected = [], []
    for _ in range(n):
        r = rng.random()
        v = _text(rng, 1, 40)
        if r < 0.15:
            # no delimiter: null key, whole line is the value
            lines.append(v)
            expected.append((None, v.encode()))
        elif r < 0.20:
            # "\tvalue": empty key (NULL with -Z)
            lines.append("\t" + v)
            expected.append((None if nulls else b"", v.encode()))
        elif r < 0.30:
            # "key\t": empty value (NULL with -Z)
            k = f"key-{rng.randint(0, 99)}"
            lines.append(k + "\t")
            expected.append((k.encode(), None if nulls else b""))
        else:
            k = f"key-{rng.randint(0, 999)}-{_text(rng, 0, 2)}"
            lines.append(f"{k}\t{v}")
            expected.append((k.encode(), v.encode()))
    return lines, expected


def _big_values(rng: random.Random) -> list[bytes]:
    vals = [base64.b64encode(rng.randbytes(BIG_VALUE_SIZE))[:BIG_VALUE_SIZE]]  # barely compressible ASCII
    for _ in range(N_BIG - 1):
        chunk = (_text(rng, 30, 60) + "\n").encode()
        vals.append((chunk * (BIG_VALUE_SIZE // len(chunk) + 1))[:BIG_VALUE_SIZE])
    return vals


def _parse_json_lines(out: bytes) -> list[Record]:
    recs = []
    for line in out.decode("utf-8").splitlines():
        if not line.strip():
            continue
        j = json.loads(line)
        h = j.get("headers") or []
        headers = tuple((h[i], None if h[i + 1] is None else h[i + 1].encode()) for i in range(0, len(h), 2))
        key = None if j["key"] is None else j["key"].encode()
        val = None if j["payload"] is None else j["payload"].encode()
        tstype = {"create": "create", "logappend": "log_append"}.get(j.get("tstype"), j.get("tstype"))
        recs.append(Record(j["offset"], j["ts"], key, val, headers, tstype))
    return recs


def _consume_kcat(bootstrap: str, topic: str, *extra: str) -> list[Record]:
    cp = kcat(
        "-C", "-b", bootstrap, "-t", topic, "-p", "0", "-e", "-J", "-q",
        "-X", f"fetch.message.max.bytes={CLIENT_MAX_REQUEST}",
        "-X", f"fetch.max.bytes={CLIENT_MAX_FETCH}",
        "-X", f"receive.message.max.bytes={CLIENT_MAX_FETCH + 1024 * 1024}",
        *extra,
    )
    return _parse_json_lines(cp.stdout)


def _consume_confluent(bootstrap: str, topic: str, n: int) -> list[Record]:
    c = Consumer({
        "bootstrap.servers": bootstrap, "group.id": unique_topic("kcat-xcheck"), "enable.auto.commit": False,
        "auto.offset.reset": "error", "fetch.max.bytes": CLIENT_MAX_FETCH,
        "max.partition.fetch.bytes": CLIENT_MAX_REQUEST, "receive.message.max.bytes": CLIENT_MAX_FETCH + 2**20,
    })
    out: list[Record] = []
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        deadline = Deadline(60, "confluent-kafka cross-check consume")
        while len(out) < n:
            deadline.check(f"(have {len(out)} of {n})")
            for m in c.consume(1000, timeout=1.0):
                assert m.error() is None, m.error()
                ts_type, ts = m.timestamp()
                out.append(Record(m.offset(), ts, m.key(), m.value(), tuple(m.headers() or ()),
                                  {1: "create", 2: "log_append"}.get(ts_type)))
    finally:
        c.close()
    return out


PRODUCE_X = [
    "-X", f"message.max.bytes={CLIENT_MAX_REQUEST}",
    # keep delivery order == input order even if a request is retried
    "-X", "max.in.flight.requests.per.connection=1",
    "-X", "acks=all",
]


@pytest.mark.parametrize("codec", ALL_CODECS)
def test_roundtrip(broker, codec, tmp_path: Path):
    b = broker.bootstrap
    topic = unique_topic(f"kcat-{codec}")
    ck_create_topics(b, [topic], partitions=1, config=WORKLOAD_TOPIC_CONFIG)

    # Metadata via kcat -L
    md = json.loads(kcat("-L", "-b", b, "-t", topic, "-J").stdout)
    [t] = [t for t in md["topics"] if t["topic"] == topic]
    assert [p["partition"] for p in t["partitions"]] == [0] and t["partitions"][0]["leader"] >= 0, md

    rng = random.Random(4000 + ALL_CODECS.index(codec))
    z = [] if codec == "none" else ["-z", codec]
    expected: list[tuple] = []  # (key, value, headers, ts_lo, ts_hi)

    # A: line mode with headers.
    lines, kv = _lines_workload(rng, N_LINES_A, nulls=False)
    fa = tmp_path / "a.txt"
    fa.write_text("\n".join(lines) + "\n", encoding="utf-8")
    t0 = now_ms()
    kcat("-P", "-b", b, "-t", topic, "-p", "0", "-K", "\t", *z, *PRODUCE_X, *_header_args(HEADERS_A), "-l", str(fa))
    t1 = now_ms()
    expected += [(k, v, _enc_headers(HEADERS_A), t0, t1) for k, v in kv]

    # B: line mode with -Z (empty -> NULL), no headers.
    lines, kv = _lines_workload(rng, N_LINES_B, nulls=True)
    fb = tmp_path / "b.txt"
    fb.write_text("\n".join(lines) + "\n", encoding="utf-8")
    t0 = now_ms()
    kcat("-P", "-b", b, "-t", topic, "-p", "0", "-K", "\t", "-Z", *z, *PRODUCE_X, "-l", str(fb))
    t1 = now_ms()
    expected += [(k, v, (), t0, t1) for k, v in kv]

    # C: file mode, one message per file: the 1 MiB values.
    bigs = _big_values(rng)
    files = []
    for i, v in enumerate(bigs):
        f = tmp_path / f"big{i}.txt"
        f.write_bytes(v)
        files.append(str(f))
    t0 = now_ms()
    kcat("-P", "-b", b, "-t", topic, "-p", "0", "-k", "big-key", *z, *PRODUCE_X, *_header_args(HEADERS_C), *files)
    t1 = now_ms()
    expected += [(b"big-key", v, _enc_headers(HEADERS_C), t0, t1) for v in bigs]
    assert len(expected) == PER_CODEC

    got = _consume_kcat(b, topic, "-o", "beginning")
    assert len(got) == len(expected), f"kcat consumed {len(got)} of {len(expected)} records"

    # Offsets follow input order (single partition, one in-flight request).  Timestamps:
    # CreateTime inside the producing invocation's wall-clock window.
    bad_ts = [
        (r.offset, r.timestamp, lo, hi) for r, (_, _, _, lo, hi) in zip(got, expected)
        if not (lo - TS_SLACK_MS <= r.timestamp <= hi + TS_SLACK_MS)
    ]
    assert not bad_ts, f"timestamps outside the producing window (offset, ts, lo, hi): {bad_ts[:5]}"
    want = [Record(i, g.timestamp, k, v, h, "create") for i, ((k, v, h, _, _), g) in enumerate(zip(expected, got))]
    compare_records(f"kcat codec={codec} topic={topic}", want, got)

    # The same records read by a second client agree byte for byte (offsets, timestamps too).
    other = _consume_confluent(b, topic, len(got))
    compare_records(f"kcat-produced, confluent-kafka-consumed codec={codec}", got, other)

    # Seek: start in the middle (-o <offset>) and read a window (-c).
    mid = len(got) // 2
    window = _consume_kcat(b, topic, "-o", str(mid), "-c", "25")
    compare_records(f"kcat seek to {mid}", got[mid: mid + 25], window)

    # ListOffsets by timestamp via kcat query mode: the first offset with ts >= T.
    probe_ts = got[N_LINES_A].timestamp  # first record of invocation B
    want_off = next(r.offset for r in got if r.timestamp >= probe_ts)
    out = kcat("-Q", "-b", b, "-t", f"{topic}:0:{probe_ts}").stdout.decode()
    assert f"[0] offset {want_off}" in out, f"kcat -Q {topic}:0:{probe_ts} -> {out!r}, expected offset {want_off}"
