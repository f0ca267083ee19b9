"""Request/response codec on kio: header + body parse, response serialisation."""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from functools import cache
from typing import Any

from kio.index import api_key_map, schema_name_map
from kio.index import load_request_schema, load_response_schema
from kio.serial import entity_reader, entity_writer

from lodestream.protocol.decode_guard import walk as check_lengths
from lodestream.protocol.lodestream_apis import SCHEMAS as LODESTREAM_SCHEMAS

_API_KEY_VERSION_CORRELATION = struct.Struct(">hhi")


class DecodeError(Exception):
    """A frame could not be parsed as the request it claims to be."""


@dataclass(frozen=True, slots=True)
class RequestPreamble:
    """The first 8 bytes of every request header, readable without a schema."""

    api_key: int
    api_version: int
    correlation_id: int


@dataclass(frozen=True, slots=True)
class DecodedRequest:
    header: Any
    body: Any

    @property
    def api_key(self) -> int:
        return int(self.header.request_api_key)

    @property
    def api_version(self) -> int:
        return int(self.header.request_api_version)


def peek_preamble(frame: bytes) -> RequestPreamble:
    if len(frame) < _API_KEY_VERSION_CORRELATION.size:
        raise DecodeError(f"request frame of {len(frame)} bytes is too short for a header")
    return RequestPreamble(*_API_KEY_VERSION_CORRELATION.unpack_from(frame, 0))


def schema_versions(api_key: int) -> range:
    """The versions kio (or protocol/lodestream_apis.py) has schemas for (empty range for an unknown key)."""
    if api_key in LODESTREAM_SCHEMAS:
        versions = sorted(LODESTREAM_SCHEMAS[api_key])
        return range(versions[0], versions[-1] + 1)
    name = api_key_map.get(api_key)
    if name is None:
        return range(0)
    versions = sorted(schema_name_map[name])
    return range(versions[0], versions[-1] + 1)


def request_type(api_key: int, api_version: int) -> type:
    """The request class of an API version: kio's, or one of Lodestream's own APIs."""
    if api_key in LODESTREAM_SCHEMAS:
        return LODESTREAM_SCHEMAS[api_key][api_version][0]
    return load_request_schema(api_key, api_version)


@cache
def _request_readers(api_key: int, api_version: int):
    body_type = request_type(api_key, api_version)
    header_type = body_type.__header_schema__
    return entity_reader(header_type), body_type, entity_reader(body_type)


@cache
def response_type(api_key: int, api_version: int) -> type:
    if api_key in LODESTREAM_SCHEMAS:
        return LODESTREAM_SCHEMAS[api_key][api_version][1]
    return load_response_schema(api_key, api_version)


@cache
def _response_writers(response_cls: type):
    header_type = response_cls.__header_schema__
    return header_type, entity_writer(header_type), entity_writer(response_cls)


def decode_request(frame: bytes) -> DecodedRequest:
    """Parse header and body. The caller has already checked the version is served."""
    preamble = peek_preamble(frame)
    read_header, body_type, read_body = _request_readers(preamble.api_key, preamble.api_version)
    try:
        header, header_size = read_header(frame, 0)
        check_lengths(body_type, frame, header_size, len(frame))  # before kio reserves memory
        body, body_size = read_body(frame, header_size)
    except Exception as exc:  # kio raises several types for malformed input
        raise DecodeError(
            f"malformed api_key={preamble.api_key} v{preamble.api_version} request: {exc}"
        ) from exc
    return DecodedRequest(header=header, body=body)


class RecordChunks:
    """Stored record batches given to kio as one `records` value without joining them.

    kio only asks a records value for len() and hands it to buffer.write();
    ChunkedBuffer recognises it and keeps the batches as separate chunks, so
    fetched data is never copied on its way to the socket.
    """

    __slots__ = ("batches", "_size")

    def __init__(self, batches: list[bytes]) -> None:
        self.batches = batches
        self._size = sum(map(len, batches))

    def __len__(self) -> int:
        return self._size


class ChunkedBuffer:
    """A kio Writable that collects small writes and passes record data through."""

    def __init__(self) -> None:
        self.chunks: list[bytes | bytearray] = []
        self._small = bytearray()
        self.size = 0

    def write(self, data) -> int:
        length = len(data)
        self.size += length
        if isinstance(data, RecordChunks):
            if data.batches:
                self._flush_small()
                self.chunks.extend(data.batches)
        else:
            self._small += data
        return length

    def _flush_small(self) -> None:
        if self._small:
            self.chunks.append(self._small)
            self._small = bytearray()

    def finish(self) -> list[bytes | bytearray]:
        self._flush_small()
        return self.chunks


def encode_response_chunks(correlation_id: int, response: Any) -> list[bytes | bytearray]:
    """Serialise header + body, length-prefixed, as a list of buffers for the socket."""
    header_type, write_header, write_body = _response_writers(type(response))
    buffer = ChunkedBuffer()
    buffer.write(b"\0\0\0\0")
    write_header(buffer, header_type(correlation_id=correlation_id))
    write_body(buffer, response)
    chunks = buffer.finish()
    struct.pack_into(">i", chunks[0], 0, buffer.size - 4)
    return chunks


def encode_response(correlation_id: int, response: Any) -> bytes:
    """Serialise header + body, length-prefixed, as one bytes object."""
    return b"".join(encode_response_chunks(correlation_id, response))


def encode_request(correlation_id: int, request: Any, client_id: str | None = "lodestream") -> bytes:
    """Serialise a request (used by tests and tools that speak to a broker)."""
    header_type = request.__header_schema__
    header = header_type(
        request_api_key=request.__api_key__,
        request_api_version=request.__version__,
        correlation_id=correlation_id,
        client_id=client_id,
    )
    buffer = io.BytesIO()
    buffer.write(b"\0\0\0\0")
    entity_writer(header_type)(buffer, header)
    entity_writer(type(request))(buffer, request)
    data = buffer.getbuffer()
    struct.pack_into(">i", data, 0, len(data) - 4)
    return bytes(data)


def decode_response(payload: bytes, response_cls: type) -> tuple[int, Any]:
    """Parse a response frame body (without length prefix); returns (correlation_id, body)."""
    header_type = response_cls.__header_schema__
    header, size = entity_reader(header_type)(payload, 0)
    body, _ = entity_reader(response_cls)(payload, size)
    return int(header.correlation_id), body
