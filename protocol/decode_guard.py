"""A pre-pass over a request body that rejects impossible array lengths.

kio's native decoder reserves memory for an array before reading its items,
so a compact array length of 2^32 in a 20-byte frame makes it abort the whole
process (a Rust out-of-memory abort, not an exception). This pass walks the
same schema with kio's primitive readers and checks every array length
against the bytes that remain (each item takes at least one byte) before the
native decoder sees the frame. It reads lengths and skips values; it builds
nothing.
"""

from __future__ import annotations

import dataclasses
from functools import cache

from kio.serial._introspect import (
    EntityField,
    EntityTupleField,
    PrimitiveField,
    PrimitiveTupleField,
    classify_field,
    get_schema_field_type,
    is_optional,
)
from kio.serial._parse import get_reader
from kio.serial.readers import (
    read_compact_array_length,
    read_int8,
    read_legacy_array_length,
    read_unsigned_varint,
)


class ImpossibleLength(ValueError):
    """A length in the request cannot fit in the frame."""


@cache
def _plan(entity_type: type) -> tuple[list, dict]:
    """(untagged field steps, {tag: step}) for an entity type."""
    flexible = entity_type.__flexible__
    steps = []
    tagged = {}
    for field in dataclasses.fields(entity_type):
        kind = classify_field(field)
        optional = is_optional(field)
        tag = field.metadata.get("tag")
        match kind:
            case PrimitiveField():
                step = ("value", get_reader(get_schema_field_type(field), flexible, False if tag is not None else optional))
            case PrimitiveTupleField():
                step = ("values", get_reader(get_schema_field_type(field), flexible, False))
            case EntityField(type_=inner):
                step = ("entity", inner, optional and tag is None)
            case EntityTupleField(type_=inner):
                step = ("entities", inner)
        if tag is not None:
            tagged[tag] = step
        else:
            steps.append(step)
    return steps, tagged


def _array_length(flexible: bool, buffer: bytes, offset: int, end: int) -> tuple[int, int]:
    if flexible:
        length, size = read_compact_array_length(buffer, offset)
    else:
        length, size = read_legacy_array_length(buffer, offset)
    length = -1 if length is None else length
    if length > end - offset - size:
        raise ImpossibleLength(f"array of {length} items in {end - offset - size} remaining bytes")
    return length, size


def _walk_step(step, flexible: bool, buffer: bytes, offset: int, end: int) -> int:
    match step:
        case ("value", reader):
            _, size = reader(buffer, offset)
            return offset + size
        case ("values", reader):
            length, size = _array_length(flexible, buffer, offset, end)
            offset += size
            for _ in range(max(length, 0)):
                _, size = reader(buffer, offset)
                offset += size
            return offset
        case ("entity", inner, nullable):
            if nullable:
                marker, size = read_int8(buffer, offset)
                offset += size
                if marker < 0:
                    return offset
            return walk(inner, buffer, offset, end)
        case ("entities", inner):
            length, size = _array_length(flexible, buffer, offset, end)
            offset += size
            for _ in range(max(length, 0)):
                offset = walk(inner, buffer, offset, end)
            return offset
    raise AssertionError(step)


def walk(entity_type: type, buffer: bytes, offset: int, end: int) -> int:
    """Check `entity_type` encoded at buffer[offset:end]; return the offset after it."""
    flexible = entity_type.__flexible__
    steps, tagged = _plan(entity_type)
    for step in steps:
        offset = _walk_step(step, flexible, buffer, offset, end)
        if offset > end:
            raise ImpossibleLength("field runs past the end of the frame")
    if flexible:
        count, size = read_unsigned_varint(buffer, offset)
        offset += size
        for _ in range(count):
            tag, size = read_unsigned_varint(buffer, offset)
            offset += size
            length, size = read_unsigned_varint(buffer, offset)
            offset += size
            if length > end - offset:
                raise ImpossibleLength(f"tagged field of {length} bytes in {end - offset} remaining bytes")
            step = tagged.get(tag)
            if step is not None:
                _walk_step(step, flexible, buffer, offset, offset + length)
            offset += length
    return offset
