"""Sans-IO splitting of a byte stream into Kafka request frames.

Every Kafka message is a 4-byte big-endian length followed by that many bytes.
The decoder checks the length against a limit *before* buffering the body, so a
client announcing a 2 GiB frame costs us nothing (CVE-2022-34917 class).
"""

from __future__ import annotations

import struct

_LENGTH = struct.Struct(">i")
_KEEP_BUFFER_BELOW = 64 * 1024  # after a larger frame, the rest moves to a buffer of its own


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

    def next_length(self) -> int | None:
        """The length of the next frame once its 4-byte prefix is buffered, else None.

        Lets the caller reserve memory for the body before reading it.
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
        return self._expected

    def next_frame(self) -> bytes | None:
        """Return the next complete frame body, or None if more bytes are needed.

        Raises FrameError for a negative or oversized length prefix.
        """
        expected = self.next_length()
        if expected is None or len(self._buffer) < expected:
            return None
        if len(self._buffer) == expected:
            frame = bytes(self._buffer)
            self._buffer = bytearray()  # drop the grown buffer: idle connections keep no capacity
        else:
            frame = bytes(self._buffer[:expected])
            if expected >= _KEEP_BUFFER_BELOW:
                # `del buffer[:expected]` would keep the frame-sized allocation behind the few
                # bytes of the next frame for as long as the connection waits: copy them out.
                self._buffer = self._buffer[expected:]
            else:
                del self._buffer[:expected]  # small frames: cheap, no copy of the rest
        self._expected = None
        return frame

    @property
    def missing_bytes(self) -> int | None:
        """Bytes still to receive for the frame whose length is known, else None."""
        if self._expected is None:
            return None
        return max(self._expected - len(self._buffer), 0)


def frame(payload: bytes) -> bytes:
    """Prefix a payload with its length."""
    return _LENGTH.pack(len(payload)) + payload
