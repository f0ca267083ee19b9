"""Hostile and malformed input against a real `lodestream serve` process.

Issue requirement: truncated frames, a 2 GiB length prefix, random bytes after
a valid header, an unknown API key and an unsupported version; afterwards the
broker still serves a well-behaved client on another connection and its RSS
has not grown by more than 50 MB.

The broker runs as a subprocess (one per module) so its RSS can be measured
with psutil. Raw connections use the plain `socket` module with timeouts;
every wait is bounded by a deadline. The FrameDecoder unit tests at the end
need no broker.
"""

from __future__ import annotations

import datetime
import io
import os
import random
import selectors
import socket
import struct
import time
import uuid
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kio.index import load_request_schema
from kio.schema.api_versions.v0.response import ApiVersionsResponse as ApiVersionsResponseV0
from kio.serial import entity_writer
from lodestream.protocol.codec import decode_response, encode_request, response_type
from lodestream.protocol.framing import FrameDecoder, FrameError, frame
from lodestream.protocol.messages import request_builder
from broker_process import BrokerProcess
from record_batches import value_batch

IO_TIMEOUT_S = 10.0
RSS_LIMIT_BYTES = 50 * 1024 * 1024

UNSUPPORTED_VERSION = 35
CORRUPT_MESSAGE = 2
INVALID_RECORD = 87


# -- a synchronous raw client -------------------------------------------------------


class Closed(Exception):
    """The broker closed the connection."""


class RawConnection:
    def __init__(self, address: tuple[str, int], timeout: float = IO_TIMEOUT_S) -> None:
        self.sock = socket.create_connection(address, timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = bytearray()
        self.correlation = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "RawConnection":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self, count: int) -> None:
        while len(self.buffer) < count:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                raise Closed()
            self.buffer += chunk

    def read_frame(self) -> bytes:
        self._fill(4)
        (length,) = struct.unpack_from(">i", self.buffer)
        assert 0 <= length < 64 * 1024 * 1024, f"broker sent a frame length of {length}"
        self._fill(4 + length)
        payload = bytes(self.buffer[4:4 + length])
        del self.buffer[:4 + length]
        return payload

    def request(self, body, client_id: str | None = "bad-input-test"):
        self.correlation += 1
        self.send(encode_request(self.correlation, body, client_id))
        correlation, response = decode_response(self.read_frame(), response_type(body.__api_key__, body.__version__))
        assert correlation == self.correlation
        return response

    def outcome(self) -> str:
        """After sending something bad: 'closed' if the broker closes the connection,
        'response' if it answers with a frame. A timeout (neither) fails the test."""
        try:
            self.read_frame()
        except Closed:
            return "closed"
        except socket.timeout:
            raise AssertionError("broker neither answered nor closed the connection") from None
        return "response"

    def expect_closed(self, what: str) -> None:
        try:
            payload = self.read_frame()
        except Closed:
            return
        except socket.timeout:
            raise AssertionError(f"{what}: broker did not close the connection within {IO_TIMEOUT_S}s") from None
        raise AssertionError(f"{what}: expected the connection to be closed, got a {len(payload)}-byte response")


def request_header(api_key: int, version: int, correlation: int, client_id: str | None = "bad-input-test") -> bytes:
    """The encoded request header of a served (api_key, version), without length prefix or body."""
    header_type = load_request_schema(api_key, version).__header_schema__
    buffer = io.BytesIO()
    entity_writer(header_type)(buffer, header_type(
        request_api_key=api_key, request_api_version=version, correlation_id=correlation, client_id=client_id))
    return buffer.getvalue()


def with_version(encoded: bytes, version: int) -> bytes:
    """Patch the api_version of a length-prefixed encoded request."""
    patched = bytearray(encoded)
    struct.pack_into(">h", patched, 6, version)
    return bytes(patched)


# -- requests ----------------------------------------------------------------------------


def api_versions_request(version: int = 3):
    return request_builder(18, version).ApiVersionsRequest(
        client_software_name="bad-input-test", client_software_version="1.0")


def metadata_request(topics: list[str] | None, version: int = 12):
    build = request_builder(3, version)
    return build.MetadataRequest(
        topics=None if topics is None else tuple(build.MetadataRequestTopic(topic_id=None, name=t) for t in topics),
        allow_auto_topic_creation=True, include_topic_authorized_operations=False)


def produce_request(topic: str, partition: int, records: bytes | None, version: int = 9, acks: int = -1):
    build = request_builder(0, version)
    return build.ProduceRequest(
        transactional_id=None, acks=acks, timeout=datetime.timedelta(seconds=10),
        topic_data=(build.TopicProduceData(name=topic, partition_data=(
            build.PartitionProduceData(index=partition, records=records),)),))


def fetch_request(topic: str, partition: int, offset: int, version: int = 12):
    build = request_builder(1, version)
    return build.FetchRequest(
        replica_id=-1, max_wait=datetime.timedelta(milliseconds=0), min_bytes=0, max_bytes=1 << 20,
        isolation_level=0, session_id=0, session_epoch=-1,
        topics=(build.FetchTopic(topic=topic, partitions=(build.FetchPartition(
            partition=partition, current_leader_epoch=-1, fetch_offset=offset, last_fetched_epoch=-1,
            log_start_offset=-1, partition_max_bytes=1 << 20),)),),
        forgotten_topics_data=(), rack_id="")


def ensure_topic(address: tuple[str, int], topic: str) -> None:
    """Auto-create a topic through Metadata and wait until it has a leader."""
    deadline = time.monotonic() + 20
    with RawConnection(address) as conn:
        while True:
            response = conn.request(metadata_request([topic]))
            (t,) = response.topics
            if t.error_code == 0 and t.partitions and all(p.leader_id >= 0 for p in t.partitions):
                return
            assert time.monotonic() < deadline, f"topic {topic} has no leader: {t}"
            time.sleep(0.05)  # poll interval inside a deadline loop


def well_behaved_raw_roundtrip(address: tuple[str, int], topic: str) -> None:
    """ApiVersions, Metadata, Produce and Fetch on a fresh connection."""
    ensure_topic(address, topic)
    with RawConnection(address) as conn:
        versions = conn.request(api_versions_request())
        assert versions.error_code == 0
        batch = value_batch([b"hello", b"world"])
        produced = conn.request(produce_request(topic, 0, batch))
        part = produced.responses[0].partition_responses[0]
        assert part.error_code == 0, part
        fetched = conn.request(fetch_request(topic, 0, part.base_offset))
        data = fetched.responses[0].partitions[0]
        assert data.error_code == 0 and data.high_watermark >= part.base_offset + 2, data
        assert b"hello" in bytes(data.records) and b"world" in bytes(data.records)


def confluent_roundtrip(bootstrap: str, topic: str, count: int = 200) -> None:
    """confluent-kafka Producer + Consumer: produce `count` messages, read them all back."""
    from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)],
                        operation_timeout=20, request_timeout=20)[topic].result(timeout=20)
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 2})
    reports = []
    for i in range(count):
        producer.produce(topic, value=b"v%d" % i, partition=0,
                         on_delivery=lambda err, msg: reports.append((err, msg.offset())))
    assert producer.flush(20) == 0, "producer did not deliver everything within 20s"
    errors = [err for err, _ in reports if err is not None]
    assert not errors, f"delivery errors: {errors[:5]}"
    assert sorted(offset for _, offset in reports) == list(range(count))

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bad-input-{uuid.uuid4().hex[:8]}",
                         "enable.auto.commit": False, "auto.offset.reset": "error",
                         "enable.partition.eof": True})
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        values = []
        deadline = time.monotonic() + 20
        while len(values) < count:
            assert time.monotonic() < deadline, f"consumed only {len(values)} of {count} messages"
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                assert msg.error().code() == KafkaError._PARTITION_EOF, msg.error()
                continue
            values.append(msg.value())
        assert values == [b"v%d" % i for i in range(count)]
    finally:
        consumer.close()


# -- the hostile inputs, as functions (used by the per-case tests and the barrage) ---------


def send_truncated_frame(address) -> None:
    """(a) length 100, then 10 bytes; once with a plain close, once with a half-close."""
    with RawConnection(address) as conn:
        conn.send(struct.pack(">i", 100) + os.urandom(10))
    with RawConnection(address) as conn:
        conn.send(struct.pack(">i", 100) + bytes(request_header(18, 3, 1)[:10]))
        conn.sock.shutdown(socket.SHUT_WR)
        conn.expect_closed("truncated frame followed by EOF")


def send_huge_lengths(address) -> None:
    """(b) 2^31-1 (max positive), 2^31 (negative as int32) and -1: closed without an answer."""
    for raw in (0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 104857601):
        with RawConnection(address) as conn:
            conn.send(struct.pack(">I", raw))
            conn.expect_closed(f"length prefix {raw:#x}")
    # The same, with part of a body: the broker must refuse on the length alone.
    with RawConnection(address) as conn:
        conn.send(struct.pack(">I", 0x7FFFFFFF) + request_header(3, 12, 1))
        conn.expect_closed("length prefix 0x7fffffff with a header after it")


RANDOM_BODY_TARGETS = [(3, 12), (3, 0), (18, 3), (18, 0), (2, 7), (0, 9), (19, 7)]


def _uvarint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if not value:
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)


# Valid header, then an array length far beyond the frame: the decoder must fail on
# "not enough bytes", not try to allocate the announced number of elements.
HUGE_ARRAY_LENGTHS = [
    ("Metadata v0 topics, int32 array length 2^31-1", 3, 0, struct.pack(">i", 0x7FFFFFFF)),
    ("Metadata v12 topics, compact array length 2^31", 3, 12, _uvarint((1 << 31) + 1)),
    ("Metadata v12 topics, compact array length 2^32", 3, 12, _uvarint((1 << 32) + 1)),
    ("Metadata v12 topics, compact array length 2^34", 3, 12, _uvarint((1 << 34) + 1)),
    ("ListOffsets v7 topics, compact array length 2^32", 2, 7, struct.pack(">ib", -1, 0) + _uvarint((1 << 32) + 1)),
    ("ApiVersions v3 software name, compact string length 2^34", 18, 3, _uvarint((1 << 34) + 1)),
]


def _send_and_expect_close(broker: "BrokerProcess", data: bytes, what: str, half_close: bool = True) -> int:
    """Send one connection's worth of bad bytes; the broker may answer, but must end by closing.

    Returns the number of responses seen. A dying process also "closes" the connection,
    so liveness is then checked with an ApiVersions round trip on a fresh connection;
    if the broker is dead, the failure names the exact input.
    """
    responses = 0
    try:
        with RawConnection(broker.address) as conn:
            conn.send(data)
            if half_close:
                conn.sock.shutdown(socket.SHUT_WR)
            while conn.outcome() == "response":
                responses += 1
        with RawConnection(broker.address) as conn:
            conn.request(api_versions_request())
    except (OSError, AssertionError, Closed) as exc:
        if not broker.wait_dead(5.0):
            raise
        raise AssertionError(
            f"broker died on {what}: {data.hex()}\n({exc!r}); log tail:\n{broker.log_tail(25)}") from None
    return responses


def send_huge_array_lengths(broker: "BrokerProcess") -> None:
    for label, api_key, version, body in HUGE_ARRAY_LENGTHS:
        responses = _send_and_expect_close(broker, frame(request_header(api_key, version, 9) + body), label)
        assert responses == 0, f"{label}: the broker answered a truncated request"


def send_random_bodies(broker: "BrokerProcess", seed: int, rounds: int = 3) -> dict[str, int]:
    """(c) a valid header of a served API followed by random bytes: closed or answered.

    Fetch is left out: random bytes make a legitimate long poll of up to 24 days.
    The connection is half-closed after the frame so acks=0 produce (no response)
    still ends with a close.
    """
    rng = random.Random(seed)
    seen = {"closed": 0, "response": 0}
    for api_key, version in RANDOM_BODY_TARGETS:
        for _ in range(rounds):
            body = rng.randbytes(rng.choice([0, 1, 2, 5, 17, 64, 300, 3000]))
            data = frame(request_header(api_key, version, 42) + body)
            seen["response"] += _send_and_expect_close(
                broker, data, f"api key {api_key} v{version} header + {len(body)} random bytes (seed {seed})")
            seen["closed"] += 1
    return seen


def send_unknown_api_key(address) -> None:
    """(d) api key 9999 (and a few other unknown keys) close the connection."""
    for key in (9999, 32767, -1, 1000):
        with RawConnection(address) as conn:
            conn.send(frame(struct.pack(">hhi", key, 0, 5) + struct.pack(">h", 4) + b"test"))
            conn.expect_closed(f"unknown api key {key}")


def send_unsupported_versions(address) -> None:
    """(e) Metadata v99 / v-1 and Produce v2 close; ApiVersions v99 gets a v0 UNSUPPORTED_VERSION answer."""
    for version in (99, -1, 32767):
        with RawConnection(address) as conn:
            conn.send(with_version(encode_request(1, metadata_request(["x"])), version))
            conn.expect_closed(f"Metadata v{version}")
    with RawConnection(address) as conn:
        conn.send(with_version(encode_request(1, produce_request("x", 0, b"")), 2))
        conn.expect_closed("Produce v2")


def check_api_versions_v99(address) -> None:
    with RawConnection(address) as conn:
        conn.send(with_version(encode_request(77, api_versions_request(3)), 99))
        correlation, response = decode_response(conn.read_frame(), ApiVersionsResponseV0)
        assert correlation == 77
        assert response.error_code == UNSUPPORTED_VERSION, response
        ranges = {int(k.api_key): (int(k.min_version), int(k.max_version)) for k in response.api_keys}
        assert 18 in ranges and ranges[18][0] == 0 and ranges[18][1] >= 3, ranges
        for key in (0, 1, 2, 3):
            assert key in ranges, f"api key {key} missing from {ranges}"
        # The connection stays open: the client retries with a version we listed.
        versions = conn.request(api_versions_request(ranges[18][1]))
        assert versions.error_code == 0


def corrupt_batches(topic: str) -> list[tuple[str, bytes, set[int]]]:
    good = value_batch([b"a", b"b", b"c"])
    bad_crc = bytearray(good)
    bad_crc[17] ^= 0xFF
    flipped_payload = bytearray(good)
    flipped_payload[-2] ^= 0x01  # a record byte: the CRC no longer matches
    bad_magic = bytearray(good)
    bad_magic[16] = 7
    too_long = bytearray(good)
    struct.pack_into(">i", too_long, 8, len(good) * 10)
    return [
        ("wrong CRC field", bytes(bad_crc), {CORRUPT_MESSAGE}),
        ("flipped record byte", bytes(flipped_payload), {CORRUPT_MESSAGE}),
        ("magic 7", bytes(bad_magic), {CORRUPT_MESSAGE, INVALID_RECORD}),
        ("batch_length beyond the record set", bytes(too_long), {CORRUPT_MESSAGE, INVALID_RECORD}),
        ("truncated batch", good[:40], {CORRUPT_MESSAGE, INVALID_RECORD}),
        ("good batch followed by garbage", good + b"\x00" * 7, {CORRUPT_MESSAGE, INVALID_RECORD}),
    ]


def send_corrupt_produce(address, topic: str) -> None:
    """(f) corrupt record batches get a partition error; the connection stays usable."""
    ensure_topic(address, topic)
    with RawConnection(address) as conn:
        for label, records, expected in corrupt_batches(topic):
            response = conn.request(produce_request(topic, 0, records))
            part = response.responses[0].partition_responses[0]
            assert int(part.error_code) in expected, f"{label}: got error {part.error_code}, want {expected}"
            assert part.base_offset == -1, f"{label}: a rejected batch was given offset {part.base_offset}"
        # Same connection: a good batch is accepted at offset 0 (nothing corrupt was appended).
        response = conn.request(produce_request(topic, 0, value_batch([b"ok"])))
        part = response.responses[0].partition_responses[0]
        assert part.error_code == 0 and part.base_offset == 0, part
        fetched = conn.request(fetch_request(topic, 0, 0)).responses[0].partitions[0]
        assert fetched.error_code == 0 and fetched.high_watermark == 1, fetched


def _drain_until_closed(socks: list[socket.socket], deadline_s: float, what: str) -> None:
    """Wait until the broker has closed every socket (EOF or reset)."""
    selector = selectors.DefaultSelector()
    for s in socks:
        s.setblocking(False)
        selector.register(s, selectors.EVENT_READ)
    open_count = len(socks)
    deadline = time.monotonic() + deadline_s
    try:
        while open_count:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"{what}: {open_count} of {len(socks)} connections still open"
            for key, _ in selector.select(timeout=remaining):
                try:
                    data = key.fileobj.recv(65536)
                except ConnectionResetError:
                    data = b""
                except BlockingIOError:
                    continue
                if not data:
                    selector.unregister(key.fileobj)
                    open_count -= 1
    finally:
        selector.close()


def send_flood(address, seed: int, connections: int = 200, garbage_connections: int = 100,
               frames_per_connection: int = 20) -> None:
    """(g) 200 concurrent connections announcing ~2 GiB frames, plus random garbage frames."""
    rng = random.Random(seed)
    socks = []
    try:
        for _ in range(connections):
            socks.append(socket.create_connection(address, timeout=IO_TIMEOUT_S))
        for i, s in enumerate(socks):
            length = 0x7FFFFFFF if i % 2 else 0x80000000
            try:
                # The announced body never comes, apart from a little of it.
                s.sendall(struct.pack(">I", length) + rng.randbytes(1024))
            except (BrokenPipeError, ConnectionResetError):
                pass
        _drain_until_closed(socks, 30, "2 GiB length prefixes")
    finally:
        for s in socks:
            s.close()

    socks = []
    try:
        for _ in range(garbage_connections):
            socks.append(socket.create_connection(address, timeout=IO_TIMEOUT_S))
        for s in socks:
            stream = bytearray()
            for _ in range(frames_per_connection):
                kind = rng.random()
                if kind < 0.4:  # framed random bytes
                    stream += frame(rng.randbytes(rng.randint(0, 2000)))
                elif kind < 0.8:  # framed: served api key/version preamble + random rest
                    api_key, version = rng.choice(RANDOM_BODY_TARGETS)
                    stream += frame(struct.pack(">hhi", api_key, version, rng.randint(0, 1 << 30))
                                    + rng.randbytes(rng.randint(0, 500)))
                else:  # unframed random bytes (random length prefix)
                    stream += rng.randbytes(rng.randint(1, 500))
            try:
                s.sendall(bytes(stream))
                s.shutdown(socket.SHUT_WR)
            except (BrokenPipeError, ConnectionResetError):
                pass
        _drain_until_closed(socks, 30, "random garbage frames")
    finally:
        for s in socks:
            s.close()


def run_barrage(broker: BrokerProcess, seed: int) -> None:
    address = broker.address
    send_truncated_frame(address)
    send_huge_lengths(address)
    send_huge_array_lengths(broker)
    send_random_bodies(broker, seed)
    send_unknown_api_key(address)
    send_unsupported_versions(address)
    check_api_versions_v99(address)
    send_corrupt_produce(address, f"corrupt-{uuid.uuid4().hex[:8]}")
    send_flood(address, seed)
    broker.assert_alive("the bad-input barrage")


# -- fixtures -----------------------------------------------------------------------------


class Harness:
    """One broker for the module; restarted (same data dir) if a test killed it."""

    def __init__(self, base_dir: Path) -> None:
        self.process = BrokerProcess(base_dir)
        self.baseline_rss = 0

    def start(self) -> None:
        self.process.start()
        # Warm-up with good traffic, then the RSS baseline.
        well_behaved_raw_roundtrip(self.process.address, f"warmup-raw-{uuid.uuid4().hex[:8]}")
        confluent_roundtrip(self.process.bootstrap, f"warmup-ck-{uuid.uuid4().hex[:8]}")
        self.baseline_rss = self.process.rss()


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    harness = Harness(tmp_path_factory.mktemp("bad-input-broker"))
    try:
        harness.start()
        yield harness
    finally:
        was_alive = harness.process.alive()
        rc = harness.process.stop()
        if was_alive:
            assert rc == 0, f"broker exited with {rc} on SIGTERM; log tail:\n{harness.process.log_tail()}"


@pytest.fixture
def broker(harness):
    if not harness.process.alive():  # an earlier test crashed it (and failed); start afresh
        harness.process.stop()
        harness.start()
    process = harness.process
    process.baseline_rss = harness.baseline_rss
    return process


def _assert_serving(broker: BrokerProcess, what: str) -> None:
    broker.assert_alive(what)
    with RawConnection(broker.address) as conn:
        assert conn.request(api_versions_request()).error_code == 0, f"ApiVersions failed after {what}"


# -- per-case tests ------------------------------------------------------------------------


def test_truncated_frame(broker):
    send_truncated_frame(broker.address)
    _assert_serving(broker, "a truncated frame")


def test_huge_and_negative_length_prefix(broker):
    send_huge_lengths(broker.address)
    _assert_serving(broker, "2 GiB / negative length prefixes")


def test_random_bytes_after_valid_header(broker):
    outcomes = send_random_bodies(broker, seed=1234, rounds=6)
    assert outcomes["closed"] == 6 * len(RANDOM_BODY_TARGETS)
    _assert_serving(broker, "random bytes after a valid header")


def test_huge_array_length_after_valid_header(broker):
    send_huge_array_lengths(broker)
    _assert_serving(broker, "huge array lengths")


def test_unknown_api_key(broker):
    send_unknown_api_key(broker.address)
    _assert_serving(broker, "unknown api keys")


def test_unsupported_version(broker):
    send_unsupported_versions(broker.address)
    _assert_serving(broker, "unsupported versions")


def test_api_versions_unsupported_version_answers_v0(broker):
    check_api_versions_v99(broker.address)


def test_corrupt_record_batch(broker):
    send_corrupt_produce(broker.address, f"corrupt-{uuid.uuid4().hex[:8]}")
    _assert_serving(broker, "corrupt record batches")


def test_flood(broker):
    send_flood(broker.address, seed=99)
    _assert_serving(broker, "the connection flood")


def test_still_serving_with_bounded_rss_after_everything(broker):
    """The issue's test: all of the above, then a well-behaved client on other connections."""
    run_barrage(broker, seed=2024)
    run_barrage(broker, seed=2025)
    well_behaved_raw_roundtrip(broker.address, f"after-raw-{uuid.uuid4().hex[:8]}")
    confluent_roundtrip(broker.bootstrap, f"after-ck-{uuid.uuid4().hex[:8]}")
    broker.assert_alive("the well-behaved client")
    growth = broker.rss() - broker.baseline_rss
    print(f"broker RSS: baseline {broker.baseline_rss / 2**20:.1f} MiB, growth {growth / 2**20:+.1f} MiB")
    assert growth < RSS_LIMIT_BYTES, (
        f"broker RSS grew by {growth / 2**20:.1f} MiB (baseline {broker.baseline_rss / 2**20:.1f} MiB)")
    log = broker.log_path.read_text(errors="replace")
    assert "Traceback" not in log, f"the broker logged an unexpected exception:\n{broker.log_tail(120)}"


# -- FrameDecoder unit tests (no broker) -------------------------------------------------------


def _drain(decoder: FrameDecoder) -> list[bytes]:
    frames = []
    while (f := decoder.next_frame()) is not None:
        frames.append(f)
    return frames


payload_lists = st.lists(st.binary(max_size=64), max_size=6)


@settings(max_examples=60, deadline=None)
@given(payload_lists)
def test_frame_decoder_split_at_every_byte_boundary(payloads):
    stream = b"".join(frame(p) for p in payloads)
    for cut in range(len(stream) + 1):
        decoder = FrameDecoder(max_frame_bytes=1024)
        got = []
        for piece in (stream[:cut], stream[cut:]):
            decoder.receive_data(piece)
            got += _drain(decoder)
        assert got == payloads, f"split at {cut}"
        assert decoder.buffered_bytes == 0


@settings(max_examples=60, deadline=None)
@given(payload_lists, st.data())
def test_frame_decoder_arbitrary_chunking(payloads, data):
    stream = b"".join(frame(p) for p in payloads)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=20)))
    decoder = FrameDecoder(max_frame_bytes=1024)
    got = []
    previous = 0
    for cut in cuts + [len(stream)]:
        decoder.receive_data(stream[previous:cut])
        previous = cut
        got += _drain(decoder)
    assert got == payloads


def test_frame_decoder_byte_by_byte():
    payloads = [b"", b"x", b"hello world", bytes(range(256)), b""]
    stream = b"".join(frame(p) for p in payloads)
    decoder = FrameDecoder(max_frame_bytes=1024)
    got = []
    for i in range(len(stream)):
        decoder.receive_data(stream[i:i + 1])
        got += _drain(decoder)
    assert got == payloads


@pytest.mark.parametrize("length", [1025, 0x7FFFFFFF])
def test_frame_decoder_rejects_oversize_before_body(length):
    decoder = FrameDecoder(max_frame_bytes=1024)
    decoder.receive_data(struct.pack(">i", length)[:3])
    assert decoder.next_frame() is None  # an incomplete length prefix is not an error yet
    decoder.receive_data(struct.pack(">i", length)[3:])
    with pytest.raises(FrameError):
        decoder.next_frame()  # no body byte has arrived: refused on the length alone


@pytest.mark.parametrize("raw", [0x80000000, 0xFFFFFFFF, 0x80000001])
def test_frame_decoder_rejects_negative_length_before_body(raw):
    decoder = FrameDecoder(max_frame_bytes=1024)
    decoder.receive_data(struct.pack(">I", raw))
    with pytest.raises(FrameError):
        decoder.next_frame()


def test_frame_decoder_accepts_exactly_the_limit():
    decoder = FrameDecoder(max_frame_bytes=1024)
    decoder.receive_data(struct.pack(">i", 1024))
    assert decoder.next_frame() is None
    decoder.receive_data(b"z" * 1023)
    assert decoder.next_frame() is None
    decoder.receive_data(b"z")
    assert decoder.next_frame() == b"z" * 1024


def test_frame_decoder_good_frame_then_oversize():
    decoder = FrameDecoder(max_frame_bytes=16)
    decoder.receive_data(frame(b"ok") + struct.pack(">i", 17))
    assert decoder.next_frame() == b"ok"
    with pytest.raises(FrameError):
        decoder.next_frame()
