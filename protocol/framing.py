"""Sans-IO splitting of a byte stream into Kafka request frames.

Every Kafka message is a 4-byte big-endian length followed by that many bytes.
The decoder checks the length against a limit *before* buffering the body, so a
client announcing a 2 GiB frame costs us nothing (CVE-2022-34917 class).
"""

from __future__ import annotations

import struct

_LENGTH = struct.Struct(">i")


class FrameError(Exception):
    """The peer sent a length prefix we refuse; the connection must be closed."""


class FrameDecoder:
    """Feed bytes with receive_data(); take whole frames with next_frame()."""

    def __init__(self, max_frame_bytes: int) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._buffer = bytearray()
        self._expected: int | None = None

    def receive_data(self, data: bytes) -> None:
        self._buffer += data

    @property
    def buffered_bytes(self) -> int:
        return len(self._buffer)

    def next_frame(self) -> bytes | None:
        """Return the next complete frame body, or None if more bytes are needed.

        Raises FrameError for a negative or oversized length prefix.
        """
        if self._expected is None:
            if len(self._buffer) < 4:
                return None
            (length,) = _LENGTH.unpack_from(self._buffer, 0)
            if length < 0:
                raise FrameError(f"negative frame length {length}")
            if length > self.max_frame_bytes:
                raise FrameError(
                    f"frame of {length} bytes exceeds the limit of {self.max_frame_bytes}"
                )
            self._expected = length
            del self._buffer[:4]
        if len(self._buffer) < self._expected:
            return None
        frame = bytes(self._buffer[: self._expected])
        del self._buffer[: self._expected]
        self._expected = None
        return frame


def frame(payload: bytes) -> bytes:
    """Prefix a payload with its length."""
    return _LENGTH.pack(len(payload)) + payload
