"""Record batch (magic v2) header handling without touching individual records.

Layout of the 61-byte header (offsets in bytes):
  0 base_offset i64 | 8 batch_length i32 | 12 partition_leader_epoch i32 |
  16 magic i8 | 17 crc u32 | 21 attributes i16 | 23 last_offset_delta i32 |
  27 base_timestamp i64 | 35 max_timestamp i64 | 43 producer_id i64 |
  51 producer_epoch i16 | 53 base_sequence i32 | 57 records_count i32
The CRC32C covers bytes 21..end, so base_offset and the leader epoch can be
patched without recomputing it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from crc32c import crc32c

HEADER = struct.Struct(">qiibIhiqqqhii")
HEADER_SIZE = HEADER.size  # 61
LOG_OVERHEAD = 12  # base_offset + batch_length precede the length-counted part
CRC_START = 21

COMPRESSION_MASK = 0x07
TIMESTAMP_TYPE_BIT = 0x08  # 1 = LogAppendTime
TRANSACTIONAL_BIT = 0x10
CONTROL_BIT = 0x20

_BASE_OFFSET = struct.Struct(">q")
_LEADER_EPOCH = struct.Struct(">i")
_CRC = struct.Struct(">I")
_ATTRIBUTES = struct.Struct(">h")
_MAX_TIMESTAMP = struct.Struct(">q")
_CONTROL_KEY = struct.Struct(">hh")  # control record key: version, type (0 abort, 1 commit)


class InvalidBatch(Exception):
    """A produced record set is malformed (maps to CORRUPT_MESSAGE / INVALID_RECORD)."""


@dataclass(frozen=True, slots=True)
class BatchHeader:
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

    @property
    def size(self) -> int:
        return self.batch_length + LOG_OVERHEAD

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def compression(self) -> int:
        return self.attributes & COMPRESSION_MASK

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & CONTROL_BIT)

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & TRANSACTIONAL_BIT)


def parse_header(data: bytes | bytearray | memoryview, offset: int = 0) -> BatchHeader:
    return BatchHeader(*HEADER.unpack_from(data, offset))


def split_batches(records: bytes) -> list[tuple[BatchHeader, memoryview]]:
    """Split a produced record set into validated batches.

    Checks framing, magic and CRC32C of each batch; raises InvalidBatch on any
    problem. Records inside a batch are never decoded.
    """
    view = memoryview(records)
    batches: list[tuple[BatchHeader, memoryview]] = []
    position = 0
    total = len(view)
    if total == 0:
        raise InvalidBatch("empty record set")
    while position < total:
        if total - position < HEADER_SIZE:
            raise InvalidBatch(f"truncated batch header at byte {position}")
        header = parse_header(view, position)
        if header.magic != 2:
            raise InvalidBatch(f"unsupported record batch magic {header.magic}")
        end = position + header.size
        if header.batch_length < HEADER_SIZE - LOG_OVERHEAD or end > total:
            raise InvalidBatch(f"batch length {header.batch_length} does not fit the record set")
        if header.last_offset_delta < 0 or header.records_count < 0:
            raise InvalidBatch("negative record count or offset delta")
        if crc32c(view[position + CRC_START : end]) != header.crc:
            raise InvalidBatch("record batch CRC32C mismatch")
        batches.append((header, view[position:end]))
        position = end
    return batches


def stamp_for_append(
    batch: memoryview,
    base_offset: int,
    leader_epoch: int,
    log_append_time_ms: int | None,
) -> bytes:
    """Copy a batch with the broker-assigned base offset and leader epoch.

    base_offset and the leader epoch lie before the CRC'd region, so patching
    them is one copy and no CRC work. For LogAppendTime topics, the timestamp
    type bit and max timestamp lie inside the CRC, so it is recomputed.
    """
    if log_append_time_ms is None:
        prefix = bytearray(batch[:CRC_START])
        _BASE_OFFSET.pack_into(prefix, 0, base_offset)
        _LEADER_EPOCH.pack_into(prefix, 12, leader_epoch)
        return b"".join((prefix, batch[CRC_START:]))
    stamped = bytearray(batch)
    _BASE_OFFSET.pack_into(stamped, 0, base_offset)
    _LEADER_EPOCH.pack_into(stamped, 12, leader_epoch)
    (attributes,) = _ATTRIBUTES.unpack_from(stamped, 21)
    _ATTRIBUTES.pack_into(stamped, 21, attributes | TIMESTAMP_TYPE_BIT)
    _MAX_TIMESTAMP.pack_into(stamped, 35, log_append_time_ms)
    _CRC.pack_into(stamped, 17, crc32c(memoryview(stamped)[CRC_START:]))
    return bytes(stamped)


# -- record-level reads (ListOffsets by timestamp only; never on the produce/fetch path) --

_XERIAL_MAGIC = b"\x82SNAPPY\x00"


def _decompress_snappy(data: bytes) -> bytes:
    import cramjam

    if data[:8] != _XERIAL_MAGIC:
        return bytes(cramjam.snappy.decompress_raw(data))
    # Java clients frame snappy the xerial way: 16-byte header, then [length][block]...
    out = bytearray()
    position = 16
    while position < len(data):
        (length,) = struct.unpack_from(">i", data, position)
        position += 4
        out += bytes(cramjam.snappy.decompress_raw(data[position : position + length]))
        position += length
    return bytes(out)


def decompress_records(codec: int, data: bytes) -> bytes:
    import cramjam

    if codec == 0:
        return data
    if codec == 1:
        return bytes(cramjam.gzip.decompress(data))
    if codec == 2:
        return _decompress_snappy(data)
    if codec == 3:
        return bytes(cramjam.lz4.decompress(data))
    if codec == 4:
        return bytes(cramjam.zstd.decompress(data))
    raise InvalidBatch(f"unknown compression codec {codec}")


def _read_varint(data: bytes, position: int) -> tuple[int, int]:
    shift = 0
    raw = 0
    while True:
        byte = data[position]
        position += 1
        raw |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (raw >> 1) ^ -(raw & 1), position
        shift += 7
        if shift > 63:
            raise InvalidBatch("varint too long")


def record_timestamps(batch: bytes) -> list[tuple[int, int]]:
    """(offset, timestamp) of every record in a stored batch."""
    header = parse_header(batch)
    if header.attributes & TIMESTAMP_TYPE_BIT:  # LogAppendTime: every record has the batch's time
        return [(header.base_offset + i, header.max_timestamp) for i in range(header.last_offset_delta + 1)]
    return [(offset, timestamp) for offset, timestamp, _, _ in iter_records(batch)]


# -- building and reading whole records (internal topics: __consumer_offsets, markers) --


def _write_varint(out: bytearray, value: int) -> None:
    raw = (value << 1) ^ (value >> 63)
    while True:
        byte = raw & 0x7F
        raw >>= 7
        if raw:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return


def _write_varbytes(out: bytearray, data: bytes | None) -> None:
    if data is None:
        _write_varint(out, -1)
    else:
        _write_varint(out, len(data))
        out += data


def build_batch(
    records: list[tuple[bytes | None, bytes | None]] | list[tuple[bytes | None, bytes | None, list]],
    timestamp_ms: int,
    *,
    attributes: int = 0,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
) -> bytes:
    """An uncompressed magic-v2 batch of (key, value) or (key, value, headers) records, base
    offset 0, valid CRC. headers: [(name: str, value: bytes | None), ...]."""
    body = bytearray()
    for delta, fields in enumerate(records):
        key, value = fields[0], fields[1]
        headers = fields[2] if len(fields) > 2 else ()
        record = bytearray(b"\x00")  # record attributes
        _write_varint(record, 0)  # timestamp delta
        _write_varint(record, delta)
        _write_varbytes(record, key)
        _write_varbytes(record, value)
        _write_varint(record, len(headers))
        for name, header_value in headers:
            _write_varbytes(record, name.encode())
            _write_varbytes(record, header_value)
        _write_varint(body, len(record))
        body += record
    header = bytearray(HEADER.pack(
        0, HEADER_SIZE - LOG_OVERHEAD + len(body), -1, 2, 0, attributes, len(records) - 1,
        timestamp_ms, timestamp_ms, producer_id, producer_epoch, base_sequence, len(records),
    ))
    batch = header + body
    _CRC.pack_into(batch, 17, crc32c(memoryview(batch)[CRC_START:]))
    return bytes(batch)


def build_control_batch(producer_id: int, producer_epoch: int, commit: bool, coordinator_epoch: int,
                        timestamp_ms: int) -> bytes:
    """A transaction marker: one control record, key = (version 0, type 0 abort / 1 commit),
    value = (version 0, coordinator epoch)."""
    key = _CONTROL_KEY.pack(0, 1 if commit else 0)
    value = struct.pack(">hi", 0, coordinator_epoch)
    return build_batch([(key, value)], timestamp_ms, attributes=CONTROL_BIT | TRANSACTIONAL_BIT,
                       producer_id=producer_id, producer_epoch=producer_epoch)


def control_marker_commit(key: bytes | None) -> bool | None:
    """Of a control record's key: True for a COMMIT marker, False for ABORT, None for anything else."""
    if key is None or len(key) < _CONTROL_KEY.size:
        return None
    version, kind = _CONTROL_KEY.unpack_from(key)
    return {0: False, 1: True}.get(kind) if version == 0 else None


def marker_of(batch: bytes) -> tuple[bool, int] | None:
    """(commit, coordinator epoch) of a transaction marker batch; None for any other control batch."""
    for _offset, _timestamp, key, value in iter_records(batch):
        commit = control_marker_commit(key)
        if commit is not None and value is not None and len(value) >= 6:
            return commit, struct.unpack_from(">hi", value)[1]
    return None


def _read_varbytes(data: bytes, position: int) -> tuple[bytes | None, int]:
    length, position = _read_varint(data, position)
    if length < 0:
        return None, position
    return data[position : position + length], position + length


def keyless_records(batch) -> list[int]:
    """Positions (0-based, in the batch) of the records without a key; decompresses the batch."""
    return [position for position, (_offset, _timestamp, key, _value) in enumerate(iter_records(batch)) if key is None]


def iter_records(batch: bytes) -> list[tuple[int, int, bytes | None, bytes | None]]:
    """(offset, timestamp, key, value) of every record in a stored batch (headers skipped)."""
    return [(offset, timestamp, key, value) for offset, timestamp, key, value, _raw in _parse_records(batch)]


def _parse_records(batch: bytes) -> list[tuple[int, int, bytes | None, bytes | None, bytes]]:
    """(offset, timestamp, key, value, the record's bytes with its length prefix) of every record in a
    stored batch; decompresses it."""
    header = parse_header(batch)
    records = decompress_records(header.compression, bytes(batch[HEADER_SIZE : header.size]))
    result = []
    position = 0
    for _ in range(header.records_count):
        start = position
        length, position = _read_varint(records, position)
        end = position + length
        position += 1  # attributes
        timestamp_delta, position = _read_varint(records, position)
        offset_delta, position = _read_varint(records, position)
        key, position = _read_varbytes(records, position)
        value, position = _read_varbytes(records, position)
        timestamp = header.max_timestamp if header.attributes & TIMESTAMP_TYPE_BIT else header.base_timestamp + timestamp_delta
        result.append((header.base_offset + offset_delta, timestamp, key, value, records[start:end]))
        position = end
    return result


# -- the log cleaner's rewrite: keep some records of a stored batch, as they are ---------------------


def raw_records(batch: bytes) -> list[tuple[int, bytes | None, bytes | None, bytes]]:
    """(offset, key, value, the record's own bytes with its length prefix) of every record in a stored
    batch; decompresses it. The raw bytes go back unchanged into rebuild_batch: a record's offset and
    timestamp are deltas from the batch's base, which a rebuilt batch keeps."""
    return [(offset, key, value, raw) for offset, _timestamp, key, value, raw in _parse_records(batch)]


_XERIAL_HEADER = _XERIAL_MAGIC + struct.pack(">ii", 1, 1)  # magic, version, compatible version
_XERIAL_BLOCK = 32 * 1024  # the Java client's (snappy-java's) default block size


def compress_records(codec: int, data: bytes) -> bytes:
    """Records compressed as Kafka's clients do: gzip, snappy in xerial framing (what the Java client
    reads), LZ4 frames with independent blocks (Kafka's KafkaLZ4BlockInputStream), zstd."""
    import cramjam

    if codec == 0:
        return data
    if codec == 1:
        return bytes(cramjam.gzip.compress(data))
    if codec == 2:
        chunks = [_XERIAL_HEADER]
        for start in range(0, len(data), _XERIAL_BLOCK):
            block = bytes(cramjam.snappy.compress_raw(data[start : start + _XERIAL_BLOCK]))
            chunks += [struct.pack(">i", len(block)), block]
        return b"".join(chunks)
    if codec == 3:
        import lz4.frame

        return lz4.frame.compress(data, block_size=lz4.frame.BLOCKSIZE_MAX64KB, block_linked=False,
                                  content_checksum=False)
    if codec == 4:
        return bytes(cramjam.zstd.compress(data))
    raise InvalidBatch(f"unknown compression codec {codec}")


def rebuild_batch(batch: bytes, kept: list[bytes]) -> bytes:
    """The stored batch with only the `kept` raw records (raw_records' last field, in order), as Kafka's
    cleaner writes it: same base offset, last offset delta, timestamps, producer fields and codec, CRC
    recomputed. With no record left it is an empty uncompressed batch, which Kafka keeps when it is the
    last batch of its producer (the producer's sequence and epoch survive)."""
    header = parse_header(batch)
    attributes = header.attributes if kept else header.attributes & ~COMPRESSION_MASK
    body = compress_records(attributes & COMPRESSION_MASK, b"".join(kept))
    rebuilt = bytearray(HEADER.pack(
        header.base_offset, HEADER_SIZE - LOG_OVERHEAD + len(body), header.partition_leader_epoch, 2, 0,
        attributes, header.last_offset_delta, header.base_timestamp, header.max_timestamp, header.producer_id,
        header.producer_epoch, header.base_sequence, len(kept),
    ))
    rebuilt += body
    _CRC.pack_into(rebuilt, 17, crc32c(memoryview(rebuilt)[CRC_START:]))
    return bytes(rebuilt)
