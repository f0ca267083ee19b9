"""Pure protocol tests: kio codec round trips and record-batch header handling.

No sockets, no disk. Record batches are built by tests/record_batches.py, which
has its own varint/CRC/compression code, so nothing here checks the code under
test against itself.
"""

from __future__ import annotations

import datetime
import struct
import uuid

import pytest
from crc32c import crc32c
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kio.index import load_request_schema, load_response_schema
from kio.static.primitive import Records
from lodestream.protocol.codec import (
    DecodeError,
    RecordChunks,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
    encode_response_chunks,
    peek_preamble,
    schema_versions,
)
from lodestream.protocol.errors import ErrorCode
from lodestream.protocol.messages import has_field, request_builder, response_builder
from lodestream.protocol.record_batch import (
    CRC_START,
    HEADER_SIZE,
    TIMESTAMP_TYPE_BIT,
    InvalidBatch,
    decompress_records,
    parse_header,
    record_timestamps,
    split_batches,
    stamp_for_append,
)

import record_batches as rb

# kio registers hypothesis strategies for its primitives; `records` fields need one.
st.register_type_strategy(Records, st.binary(max_size=64).map(Records))

FAST = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))

PRODUCE, FETCH, LIST_OFFSETS, METADATA, API_VERSIONS = 0, 1, 2, 3, 18

REQUEST_CASES = [
    (METADATA, 0), (METADATA, 1), (METADATA, 4), (METADATA, 9), (METADATA, 12), (METADATA, 13),
    (PRODUCE, 3), (PRODUCE, 8), (PRODUCE, 9), (PRODUCE, 12), (PRODUCE, 13),
    (FETCH, 4), (FETCH, 11), (FETCH, 12), (FETCH, 13), (FETCH, 17),
    (LIST_OFFSETS, 1), (LIST_OFFSETS, 8),
]

RESPONSE_CASES = [
    (METADATA, 0), (METADATA, 12), (PRODUCE, 3), (PRODUCE, 9), (PRODUCE, 12),
    (FETCH, 4), (FETCH, 12), (FETCH, 13), (FETCH, 17), (API_VERSIONS, 0), (API_VERSIONS, 3),
]


# -- codec ------------------------------------------------------------------------


@pytest.mark.parametrize(("api_key", "version"), REQUEST_CASES, ids=lambda x: str(x))
def test_request_encode_decode_round_trip(api_key, version):
    cls = load_request_schema(api_key, version)

    @FAST
    @given(request=st.from_type(cls), correlation_id=st.integers(-(2**31), 2**31 - 1),
           client_id=st.one_of(st.none(), st.text(max_size=20)))
    def check(request, correlation_id, client_id):
        frame = encode_request(correlation_id, request, client_id)
        (length,) = struct.unpack_from(">i", frame)
        assert length == len(frame) - 4
        preamble = peek_preamble(frame[4:])
        assert (preamble.api_key, preamble.api_version, preamble.correlation_id) == (api_key, version, correlation_id)
        decoded = decode_request(frame[4:])
        assert decoded.api_key == api_key and decoded.api_version == version
        assert decoded.header.correlation_id == correlation_id
        assert decoded.header.client_id == client_id
        assert decoded.body == request

    check()


@pytest.mark.parametrize(("api_key", "version"), RESPONSE_CASES, ids=lambda x: str(x))
def test_response_chunks_join_to_encode_response_and_decode_back(api_key, version):
    cls = load_response_schema(api_key, version)

    @FAST
    @given(response=st.from_type(cls), correlation_id=st.integers(-(2**31), 2**31 - 1))
    def check(response, correlation_id):
        whole = encode_response(correlation_id, response)
        chunks = encode_response_chunks(correlation_id, response)
        assert b"".join(chunks) == whole
        (length,) = struct.unpack_from(">i", whole)
        assert length == len(whole) - 4
        decoded_correlation, decoded = decode_response(whole[4:], cls)
        assert decoded_correlation == correlation_id
        assert decoded == response

    check()


def _fetch_response(version: int, records):
    build = response_builder(FETCH, version)
    uses_ids = version >= 13
    partition = build.PartitionData(
        partition_index=3, error_code=ErrorCode.none, high_watermark=42, last_stable_offset=42, log_start_offset=0,
        aborted_transactions=None, preferred_read_replica=-1, records=records)
    topic = build.FetchableTopicResponse(
        topic=None if uses_ids else "t", topic_id=uuid.UUID(int=7) if uses_ids else None, partitions=(partition,))
    return build.FetchResponse(throttle_time=datetime.timedelta(0), error_code=ErrorCode.none, session_id=0,
                               responses=(topic,), node_endpoints=())


@pytest.mark.parametrize("version", [4, 11, 12, 13, 17])
def test_record_chunks_are_passed_through_as_exact_bytes(version):
    batches = [
        rb.simple_batch(1),
        rb.simple_batch(5, value_size=300, compression=rb.GZIP),
        rb.build_batch([rb.Record(b"z" * 1000, key=None)], compression=rb.ZSTD),
    ]
    joined = b"".join(batches)
    chunked = encode_response_chunks(99, _fetch_response(version, RecordChunks(batches)))
    # The stored batches are handed to the socket as they are, not copied into a buffer.
    for batch in batches:
        assert any(chunk is batch for chunk in chunked)
    flat = encode_response(99, _fetch_response(version, joined))
    assert b"".join(chunked) == flat
    (length,) = struct.unpack_from(">i", chunked[0])
    assert length == sum(map(len, chunked)) - 4
    correlation_id, decoded = decode_response(flat[4:], load_response_schema(FETCH, version))
    assert correlation_id == 99
    assert bytes(decoded.responses[0].partitions[0].records) == joined
    assert len(RecordChunks(batches)) == len(joined)


@pytest.mark.parametrize("version", [4, 12, 13])
def test_empty_record_chunks_encode_like_empty_records(version):
    chunked = encode_response_chunks(1, _fetch_response(version, RecordChunks([])))
    assert b"".join(chunked) == encode_response(1, _fetch_response(version, b""))


def test_decode_request_rejects_truncated_bodies():
    build = request_builder(METADATA, 12)
    request = build.MetadataRequest(
        topics=(build.MetadataRequestTopic(name="some-topic", topic_id=None),),
        allow_auto_topic_creation=True, include_topic_authorized_operations=False)
    frame = encode_request(5, request)[4:]
    assert decode_request(frame).body == request
    with pytest.raises(DecodeError):
        peek_preamble(frame[:7])
    for cut in range(8, len(frame)):
        with pytest.raises(DecodeError):
            decode_request(frame[:cut])


def test_message_builder_drops_fields_a_version_lacks():
    old = response_builder(METADATA, 0).MetadataResponseTopic(
        error_code=ErrorCode.none, name="a", topic_id=uuid.uuid4(), is_internal=False, partitions=(),
        topic_authorized_operations=0)
    new_id = uuid.uuid4()
    new = response_builder(METADATA, 12).MetadataResponseTopic(
        error_code=ErrorCode.none, name="a", topic_id=new_id, is_internal=False, partitions=(), topic_authorized_operations=0)
    assert not has_field(old, "topic_id") and not has_field(old, "is_internal")
    assert new.topic_id == new_id
    assert schema_versions(FETCH).start == 4 and schema_versions(9999) == range(0)


# -- record batches: split_batches --------------------------------------------------

record_strategy = st.builds(
    rb.Record,
    value=st.one_of(st.none(), st.binary(max_size=40)),
    key=st.one_of(st.none(), st.binary(max_size=10)),
    headers=st.lists(st.tuples(st.text(max_size=5), st.one_of(st.none(), st.binary(max_size=5))), max_size=2).map(tuple),
    timestamp=st.one_of(st.none(), st.integers(0, 2**42)),
)
batch_strategy = st.builds(
    lambda records, codec: rb.build_batch(records, compression=codec),
    st.lists(record_strategy, min_size=1, max_size=6),
    st.sampled_from(rb.CODECS),
)


@FAST
@given(st.lists(batch_strategy, min_size=1, max_size=4))
def test_split_batches_accepts_concatenated_valid_batches(batches):
    split = split_batches(b"".join(batches))
    assert [bytes(view) for _, view in split] == batches
    for (header, _), raw in zip(split, batches):
        decoded = rb.decode_batch(raw)
        assert header.size == len(raw)
        assert header.records_count == len(decoded.records) == header.last_offset_delta + 1
        assert header.compression == decoded.compression
        assert header.max_timestamp == max(r.timestamp for r in decoded.records)


def test_split_batches_rejects_empty_record_set():
    with pytest.raises(InvalidBatch):
        split_batches(b"")


def test_split_batches_rejects_bad_crc_even_after_a_good_batch():
    good = rb.simple_batch(2)
    with pytest.raises(InvalidBatch, match="CRC"):
        split_batches(rb.corrupt_crc(good))
    with pytest.raises(InvalidBatch, match="CRC"):
        split_batches(good + rb.corrupt_crc(rb.simple_batch(3)))


@FAST
@given(data=st.data())
def test_any_flipped_byte_the_crc_or_length_covers_is_rejected(data):
    batch = data.draw(batch_strategy)
    position = data.draw(st.sampled_from([*range(8, 12), *range(16, len(batch))]))
    flip = data.draw(st.integers(1, 255))
    damaged = bytearray(batch)
    damaged[position] ^= flip
    with pytest.raises(InvalidBatch):
        split_batches(bytes(damaged))


@FAST
@given(data=st.data())
def test_base_offset_and_leader_epoch_are_outside_the_crc(data):
    batch = data.draw(batch_strategy)
    position = data.draw(st.sampled_from([*range(0, 8), *range(12, 16)]))
    damaged = bytearray(batch)
    damaged[position] ^= data.draw(st.integers(1, 255))
    ((header, view),) = split_batches(bytes(damaged))
    assert bytes(view[CRC_START:]) == batch[CRC_START:]


def test_split_batches_rejects_every_truncation():
    batches = rb.simple_batch(3) + rb.simple_batch(2, compression=rb.SNAPPY)
    first_size = len(rb.simple_batch(3))
    for cut in range(1, len(batches)):
        if cut == first_size:
            assert len(split_batches(batches[:cut])) == 1
            continue
        with pytest.raises(InvalidBatch):
            split_batches(batches[:cut])


@pytest.mark.parametrize("magic", [0, 1, 3, -1])
def test_split_batches_rejects_other_magic(magic):
    batch = rb.patch(rb.simple_batch(1), 16, ">b", magic)
    with pytest.raises(InvalidBatch, match="magic"):
        split_batches(batch)


@pytest.mark.parametrize("batch_length", [2**31 - 1, 10_000, -1, -(2**31), 0, 48])
def test_split_batches_rejects_lengths_that_do_not_fit(batch_length):
    batch = rb.patch(rb.simple_batch(2), 8, ">i", batch_length)
    with pytest.raises(InvalidBatch):
        split_batches(batch)
    with pytest.raises(InvalidBatch):
        split_batches(rb.simple_batch(1) + batch)


@pytest.mark.parametrize(("offset", "fmt"), [(23, ">i"), (57, ">i")], ids=["last_offset_delta", "records_count"])
def test_split_batches_rejects_negative_counts_even_with_a_valid_crc(offset, fmt):
    batch = rb.patch(rb.simple_batch(2), offset, fmt, -5, fix_crc=True)
    with pytest.raises(InvalidBatch, match="negative"):
        split_batches(batch)


# -- stamp_for_append ------------------------------------------------------------------


@FAST
@given(batch=batch_strategy, base_offset=st.integers(0, 2**62), epoch=st.integers(-1, 2**31 - 1))
def test_stamp_patches_offset_and_epoch_and_keeps_the_crc(batch, base_offset, epoch):
    ((_, view),) = split_batches(batch)
    stamped = stamp_for_append(view, base_offset, epoch, None)
    assert isinstance(stamped, bytes)
    header = parse_header(stamped)
    assert header.base_offset == base_offset
    assert header.partition_leader_epoch == epoch
    assert stamped[16:] == batch[16:]  # magic, crc and everything covered by it untouched
    assert stamped[8:12] == batch[8:12]
    ((again, _),) = split_batches(stamped)  # CRC still valid
    assert again.base_offset == base_offset
    original = rb.decode_batch(batch)
    assert [r.offset - base_offset for r in rb.decode_batch(stamped).records] == [r.offset for r in original.records]


@pytest.mark.parametrize("codec", rb.CODECS, ids=rb.CODEC_NAMES.get)
def test_stamp_log_append_time_sets_bit_and_max_timestamp_and_recomputes_crc(codec):
    records = [rb.Record(b"a", timestamp=1000), rb.Record(b"b", timestamp=900), rb.Record(b"c", timestamp=1100)]
    batch = rb.build_batch(records, compression=codec)
    ((_, view),) = split_batches(batch)
    stamped = stamp_for_append(view, 77, 4, 5_000_000)
    header = parse_header(stamped)
    assert header.attributes & TIMESTAMP_TYPE_BIT
    assert header.compression == codec
    assert header.max_timestamp == 5_000_000
    assert header.base_offset == 77 and header.partition_leader_epoch == 4
    assert header.crc == crc32c(stamped[CRC_START:]) != parse_header(batch).crc
    split_batches(stamped)
    # Records and base timestamp are unchanged; every record reads as the append time.
    assert stamped[HEADER_SIZE:] == batch[HEADER_SIZE:]
    assert header.base_timestamp == 1000
    decoded = rb.decode_batch(stamped)
    assert decoded.log_append_time and decoded.crc_ok
    assert [(r.offset, r.timestamp, r.value) for r in decoded.records] == [
        (77, 5_000_000, b"a"), (78, 5_000_000, b"b"), (79, 5_000_000, b"c")]
    assert record_timestamps(stamped) == [(77, 5_000_000), (78, 5_000_000), (79, 5_000_000)]


# -- record_timestamps / decompress_records -------------------------------------------------


@pytest.mark.parametrize(
    ("codec", "xerial"),
    [*((codec, False) for codec in rb.CODECS), (rb.SNAPPY, True)],
    ids=[*(rb.CODEC_NAMES[codec] for codec in rb.CODECS), "snappy-xerial"],
)
def test_record_timestamps_for_every_codec(codec, xerial):
    stamps = [5_000, 4_000, 9_000, 5_001, 1]  # deltas from the first are negative as well as positive
    records = [rb.Record(b"value-%d" % i * 20, key=b"k", headers=(("h", b"x"),), timestamp=ts)
               for i, ts in enumerate(stamps)]
    batch = rb.build_batch(records, compression=codec, snappy_xerial=xerial)
    assert record_timestamps(batch) == list(enumerate(stamps))
    ((_, view),) = split_batches(batch)
    stamped = stamp_for_append(view, 1000, 0, None)
    assert record_timestamps(stamped) == [(1000 + i, ts) for i, ts in enumerate(stamps)]


@pytest.mark.parametrize("codec", rb.CODECS, ids=rb.CODEC_NAMES.get)
def test_decompress_records_matches_the_helper(codec):
    body = bytes(range(256)) * 50
    assert decompress_records(codec, rb.compress(codec, body)) == body


def test_decompress_records_rejects_unknown_codec():
    with pytest.raises(InvalidBatch):
        decompress_records(5, b"abc")


def test_helper_batches_read_back_with_kafka_python():
    """Guards the test helper itself against an independent implementation."""
    import warnings

    with warnings.catch_warnings():  # kafka-python's import uses deprecated importlib APIs
        warnings.simplefilter("ignore", DeprecationWarning)
        from kafka.record.default_records import DefaultRecordBatch

    records = [rb.Record(b"a", key=b"k", headers=(("h", b"v"),), timestamp=5), rb.Record(None, timestamp=3)]
    for codec in (rb.NONE, rb.GZIP):
        parsed = DefaultRecordBatch(rb.build_batch(records, compression=codec))
        assert parsed.validate_crc()
        assert [(r.offset, r.timestamp, r.key, r.value, list(r.headers)) for r in parsed] == [
            (0, 5, b"k", b"a", [("h", b"v")]), (1, 3, None, None, [])]


@given(st.integers(-(2**63), 2**63 - 1))
def test_helper_varints_round_trip(value):
    encoded = rb.encode_varint(value)
    assert rb.decode_varint(encoded + b"\xff", 0) == (value, len(encoded))


def test_consumer_protocol_subscription_and_assignment_prefixes():
    import struct

    from lodestream.protocol.consumer_protocol import assignment_partitions, subscription_topics

    def string(text: str) -> bytes:
        return struct.pack(">h", len(text)) + text.encode()

    # v3 subscription: the v0 prefix (topics) followed by user data, owned partitions, generation, rack.
    subscription = struct.pack(">hi", 3, 2) + string("a") + string("b") + b"\xff\xff\xff\xff" + b"\x00" * 9
    assert subscription_topics(subscription) == {"a", "b"}
    with pytest.raises(ValueError):
        subscription_topics(struct.pack(">hi", 0, 1) + struct.pack(">h", 40) + b"ab")
    assignment = (struct.pack(">hi", 1, 1) + string("a") + struct.pack(">iii", 2, 0, 5)
                  + b"\xff\xff\xff\xff")  # v1: user data after the partitions
    assert assignment_partitions(assignment) == [("a", 0), ("a", 5)]
    assert assignment_partitions(b"") == [] and assignment_partitions(assignment[:9]) == []
