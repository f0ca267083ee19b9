"""Build and decode magic-v2 Kafka record batches for tests.

Independent of protocol/record_batch.py on purpose (its own varints, header
packing and decompression), so round-trip tests do not check the code under
test against itself.

Layout (KIP-98): base_offset i64 | batch_length i32 | partition_leader_epoch i32 |
magic i8 (=2) | crc u32 (CRC32C of everything from attributes to the end) |
attributes i16 | last_offset_delta i32 | base_timestamp i64 | max_timestamp i64 |
producer_id i64 | producer_epoch i16 | base_sequence i32 | records_count i32 |
records (compressed as a whole when attributes & 7 != 0).

Record: length varint | attributes i8 | timestamp_delta varlong |
offset_delta varint | key_length varint | key | value_length varint | value |
header_count varint | headers (key_length varint, key, value_length varint, value).
All varints are zigzag-encoded.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass, field

import cramjam
from crc32c import crc32c

NONE, GZIP, SNAPPY, LZ4, ZSTD = 0, 1, 2, 3, 4
CODECS = (NONE, GZIP, SNAPPY, LZ4, ZSTD)
CODEC_NAMES = {NONE: "none", GZIP: "gzip", SNAPPY: "snappy", LZ4: "lz4", ZSTD: "zstd"}

TIMESTAMP_TYPE_BIT = 0x08  # LogAppendTime

_HEADER = struct.Struct(">qiibIhiqqqhii")
HEADER_SIZE = _HEADER.size  # 61
CRC_START = 21
_XERIAL_MAGIC = b"\x82SNAPPY\x00"


# -- varints ------------------------------------------------------------------


def zigzag(value: int) -> int:
    return (value << 1) ^ (value >> 63)


def unzigzag(raw: int) -> int:
    return (raw >> 1) ^ -(raw & 1)


def encode_varint(value: int) -> bytes:
    """Zigzag + base-128 little-endian groups (Kafka varint / varlong)."""
    raw = zigzag(value) & 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while True:
        byte = raw & 0x7F
        raw >>= 7
        if raw:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def decode_varint(data: bytes, position: int) -> tuple[int, int]:
    shift = 0
    raw = 0
    while True:
        byte = data[position]
        position += 1
        raw |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return unzigzag(raw), position
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _bytes_field(value: bytes | None) -> bytes:
    if value is None:
        return encode_varint(-1)
    return encode_varint(len(value)) + value


# -- records -------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    value: bytes | None
    key: bytes | None = None
    headers: tuple[tuple[str, bytes | None], ...] = ()
    timestamp: int | None = None  # absolute ms; None = the batch's base timestamp


@dataclass(frozen=True)
class DecodedRecord:
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]


@dataclass(frozen=True)
class DecodedBatch:
    base_offset: int
    batch_length: int
    partition_leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    records_count: int
    records: list[DecodedRecord] = field(default_factory=list)
    crc_ok: bool = True

    @property
    def compression(self) -> int:
        return self.attributes & 0x07

    @property
    def log_append_time(self) -> bool:
        return bool(self.attributes & TIMESTAMP_TYPE_BIT)

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def size(self) -> int:
        return self.batch_length + 12


def _encode_record(record: Record, offset_delta: int, base_timestamp: int) -> bytes:
    timestamp = base_timestamp if record.timestamp is None else record.timestamp
    body = bytearray(b"\x00")  # record attributes (unused)
    body += encode_varint(timestamp - base_timestamp)
    body += encode_varint(offset_delta)
    body += _bytes_field(record.key)
    body += _bytes_field(record.value)
    body += encode_varint(len(record.headers))
    for header_key, header_value in record.headers:
        body += _bytes_field(header_key.encode())
        body += _bytes_field(header_value)
    return encode_varint(len(body)) + bytes(body)


def compress(codec: int, data: bytes, snappy_xerial: bool = False) -> bytes:
    if codec == NONE:
        return data
    if codec == GZIP:
        return bytes(cramjam.gzip.compress(data))
    if codec == SNAPPY:
        if not snappy_xerial:
            return bytes(cramjam.snappy.compress_raw(data))
        # Java clients' framing: magic, version 1, compatible version 1, then [len][raw block]...
        out = bytearray(_XERIAL_MAGIC + struct.pack(">ii", 1, 1))
        for start in range(0, max(len(data), 1), 32 * 1024):
            block = bytes(cramjam.snappy.compress_raw(data[start : start + 32 * 1024]))
            out += struct.pack(">i", len(block)) + block
        return bytes(out)
    if codec == LZ4:
        return bytes(cramjam.lz4.compress(data))  # LZ4 frame format, as KIP-57
    if codec == ZSTD:
        return bytes(cramjam.zstd.compress(data))
    raise ValueError(f"unknown codec {codec}")


def decompress(codec: int, data: bytes) -> bytes:
    if codec == NONE:
        return data
    if codec == GZIP:
        return bytes(cramjam.gzip.decompress(data))
    if codec == SNAPPY:
        if data[:8] != _XERIAL_MAGIC:
            return bytes(cramjam.snappy.decompress_raw(data))
        out = bytearray()
        position = 16
        while position < len(data):
            (length,) = struct.unpack_from(">i", data, position)
            position += 4
            out += bytes(cramjam.snappy.decompress_raw(data[position : position + length]))
            position += length
        return bytes(out)
    if codec == LZ4:
        return bytes(cramjam.lz4.decompress(data))
    if codec == ZSTD:
        return bytes(cramjam.zstd.decompress(data))
    raise ValueError(f"unknown codec {codec}")


def build_batch(
    records: list[Record],
    *,
    compression: int = NONE,
    base_offset: int = 0,
    base_timestamp: int | None = None,
    partition_leader_epoch: int = -1,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    extra_attributes: int = 0,
    snappy_xerial: bool = False,
    default_timestamp: int = 1_700_000_000_000,
) -> bytes:
    """One magic-v2 batch with a correct CRC32C (base_offset 0 unless told)."""
    if not records:
        raise ValueError("a batch needs at least one record")
    if base_timestamp is None:
        # Like the Java producer: the first record's timestamp is the base.
        base_timestamp = records[0].timestamp if records[0].timestamp is not None else default_timestamp
    max_timestamp = max(base_timestamp if r.timestamp is None else r.timestamp for r in records)
    body = b"".join(_encode_record(r, i, base_timestamp) for i, r in enumerate(records))
    payload = compress(compression, body, snappy_xerial)
    attributes = (compression & 0x07) | extra_attributes
    after_crc = struct.pack(
        ">hiqqqhii",
        attributes,
        len(records) - 1,
        base_timestamp,
        max_timestamp,
        producer_id,
        producer_epoch,
        base_sequence,
        len(records),
    ) + payload
    crc = crc32c(after_crc)
    batch_length = 4 + 1 + 4 + len(after_crc)  # leader epoch + magic + crc + rest
    return struct.pack(">qiibI", base_offset, batch_length, partition_leader_epoch, 2, crc) + after_crc


def simple_batch(count: int = 1, *, value_size: int = 10, prefix: bytes = b"v", timestamp: int | None = None,
                 compression: int = NONE) -> bytes:
    """`count` records with distinct values of about value_size bytes."""
    records = [
        Record(value=(prefix + b"-%d-" % i).ljust(value_size, b"x"), key=b"k%d" % i, timestamp=timestamp)
        for i in range(count)
    ]
    return build_batch(records, compression=compression)


def value_batch(values: list[bytes], timestamp_ms: int | None = None) -> bytes:
    """One uncompressed record per value (no key, no headers), all at `timestamp_ms`
    (now unless told), as a plain producer would send them."""
    timestamp = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
    return build_batch([Record(value=value, timestamp=timestamp) for value in values])


# -- decoding -------------------------------------------------------------------


def decode_batch(data: bytes, offset: int = 0) -> DecodedBatch:
    fields = _HEADER.unpack_from(data, offset)
    (base_offset, batch_length, epoch, magic, crc, attributes, last_delta, base_ts, max_ts,
     producer_id, producer_epoch, base_sequence, count) = fields
    if magic != 2:
        raise ValueError(f"magic {magic}")
    end = offset + batch_length + 12
    if end > len(data):
        raise ValueError("truncated batch")
    crc_ok = crc32c(bytes(data[offset + CRC_START : end])) == crc
    body = decompress(attributes & 0x07, bytes(data[offset + HEADER_SIZE : end]))
    log_append = bool(attributes & TIMESTAMP_TYPE_BIT)
    records = []
    position = 0
    for _ in range(count):
        length, position = decode_varint(body, position)
        record_end = position + length
        position += 1  # attributes
        ts_delta, position = decode_varint(body, position)
        offset_delta, position = decode_varint(body, position)
        key, position = _read_bytes(body, position)
        value, position = _read_bytes(body, position)
        header_count, position = decode_varint(body, position)
        headers = []
        for _ in range(header_count):
            header_key, position = _read_bytes(body, position)
            header_value, position = _read_bytes(body, position)
            headers.append((header_key.decode(), header_value))
        if position != record_end:
            raise ValueError(f"record length {length} does not match its fields")
        records.append(DecodedRecord(
            offset=base_offset + offset_delta,
            timestamp=max_ts if log_append else base_ts + ts_delta,
            key=key, value=value, headers=tuple(headers)))
    if position != len(body):
        raise ValueError("trailing bytes after the last record")
    return DecodedBatch(*fields, records=records, crc_ok=crc_ok)


def _read_bytes(data: bytes, position: int) -> tuple[bytes | None, int]:
    length, position = decode_varint(data, position)
    if length < 0:
        return None, position
    return bytes(data[position : position + length]), position + length


def decode_batches(data: bytes) -> list[DecodedBatch]:
    """Every batch in a concatenation of stored batches."""
    data = bytes(data)
    batches = []
    position = 0
    while position < len(data):
        batch = decode_batch(data, position)
        batches.append(batch)
        position += batch.size
    return batches


def decode_records(data: bytes) -> list[DecodedRecord]:
    return [record for batch in decode_batches(data) for record in batch.records]


# -- header surgery for negative tests ---------------------------------------------


def patch(batch: bytes, offset: int, fmt: str, value: int, fix_crc: bool = False) -> bytes:
    """Overwrite one header field (struct format `fmt` at byte `offset`)."""
    data = bytearray(batch)
    struct.pack_into(fmt, data, offset, value)
    if fix_crc:
        struct.pack_into(">I", data, 17, crc32c(bytes(data[CRC_START:])))
    return bytes(data)


def corrupt_crc(batch: bytes) -> bytes:
    (crc,) = struct.unpack_from(">I", batch, 17)
    return patch(batch, 17, ">I", crc ^ 0xDEADBEEF)
