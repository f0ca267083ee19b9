"""An offloaded segment's bytes: its batches in offset order, then a batch index (docs/tiered-storage.md).

The whole is erasure-coded as one blob (striped_segment.py), so a read first loads the index (the blob's
tail, `index_position` onwards: usually one or two stripes) and then only the stripes holding the batches
it wants. The index has one entry per batch, so a fetch starting inside a batch gets that whole batch, as
from a local segment.

Index layout: magic b"LSIX", u32 version, u32 count, then per batch
(i64 base offset, i64 last offset, i64 max timestamp, i64 position), big-endian.
"""

from __future__ import annotations

import bisect
import struct
from dataclasses import dataclass
from typing import Iterable

_HEAD = struct.Struct(">4sII")
_ENTRY = struct.Struct(">qqqq")
_MAGIC = b"LSIX"
_VERSION = 1


class SegmentFormatError(Exception):
    """An index that cannot be read: the bytes are not what was written (a bug, or a wrong segment)."""


def encode_segment(batches: Iterable[bytes], entries: Iterable[tuple[int, int, int, int]]) -> tuple[bytes, int]:
    """(blob, index position) of a segment from its batches and their (base offset, last offset, max
    timestamp, size) entries, in the same order."""
    parts: list[bytes] = []
    index: list[bytes] = []
    position = 0
    for batch, (base, last, max_timestamp, size) in zip(batches, entries, strict=True):
        if len(batch) != size:
            raise SegmentFormatError(f"batch at {base}: {len(batch)} bytes, the index says {size}")
        parts.append(batch)
        index.append(_ENTRY.pack(base, last, max_timestamp, position))
        position += size
    parts.append(_HEAD.pack(_MAGIC, _VERSION, len(index)))
    parts.extend(index)
    return b"".join(parts), position


@dataclass(frozen=True, slots=True)
class SegmentIndex:
    bases: tuple[int, ...]
    lasts: tuple[int, ...]
    max_timestamps: tuple[int, ...]
    positions: tuple[int, ...]  # plus the index position at the end: batch i is positions[i]:positions[i+1]

    @classmethod
    def decode(cls, blob: bytes, index_position: int) -> "SegmentIndex":
        if len(blob) < _HEAD.size:
            raise SegmentFormatError("segment index too short")
        magic, version, count = _HEAD.unpack_from(blob)
        if magic != _MAGIC or version != _VERSION or len(blob) != _HEAD.size + count * _ENTRY.size:
            raise SegmentFormatError(f"not a segment index (magic {magic!r}, version {version}, {len(blob)} bytes)")
        rows = [_ENTRY.unpack_from(blob, _HEAD.size + i * _ENTRY.size) for i in range(count)]
        return cls(tuple(r[0] for r in rows), tuple(r[1] for r in rows), tuple(r[2] for r in rows),
                   tuple(r[3] for r in rows) + (index_position,))

    def __len__(self) -> int:
        return len(self.bases)

    def batch_range(self, offset: int, max_bytes: int, upper_offset: int) -> tuple[int, int, list[int]]:
        """(start, end, batch sizes) of the bytes to read for a fetch from `offset`: the batch holding it
        (whole, even if larger than max_bytes), then the following ones while they fit in max_bytes and
        start below upper_offset. (0, 0, []) when no batch ends at or after `offset`."""
        first = bisect.bisect_left(self.lasts, offset)
        if first >= len(self.bases) or self.bases[first] >= upper_offset:
            return 0, 0, []
        end = first + 1
        while (end < len(self.bases) and self.bases[end] < upper_offset
               and self.positions[end + 1] - self.positions[first] <= max_bytes):
            end += 1
        sizes = [self.positions[i + 1] - self.positions[i] for i in range(first, end)]
        return self.positions[first], self.positions[end], sizes

    def first_with_timestamp(self, timestamp: int) -> int | None:
        """The base offset of the first batch whose max timestamp is >= timestamp (ListOffsets by time)."""
        for base, max_timestamp in zip(self.bases, self.max_timestamps):
            if max_timestamp >= timestamp:
                return base
        return None


def split_batches(data: bytes, sizes: list[int]) -> list[bytes]:
    """The batches of a byte range read with batch_range."""
    batches, position = [], 0
    for size in sizes:
        batches.append(data[position:position + size])
        position += size
    return batches
