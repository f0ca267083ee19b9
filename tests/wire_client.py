"""A minimal Kafka client for tests: send one kio request, read its response."""

from __future__ import annotations

import struct

import trio

from lodestream.protocol.codec import decode_response, encode_request, response_type


class WireClient:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self._correlation = 0
        self._buffer = bytearray()

    @classmethod
    async def connect(cls, port: int, host: str = "127.0.0.1") -> "WireClient":
        return cls(await trio.open_tcp_stream(host, port))

    async def _read_exactly(self, count: int) -> bytes:
        while len(self._buffer) < count:
            chunk = await self.stream.receive_some(65536)
            if not chunk:
                raise EOFError("connection closed by broker")
            self._buffer += chunk
        data = bytes(self._buffer[:count])
        del self._buffer[:count]
        return data

    async def read_frame(self) -> bytes:
        (length,) = struct.unpack(">i", await self._read_exactly(4))
        return await self._read_exactly(length)

    async def request(self, body, client_id: str | None = "test"):
        await self.send(body, client_id)
        return await self.receive(body)

    async def send(self, body, client_id: str | None = "test") -> None:
        """The request alone (its answer is read by receive): for a request that must wait in the socket."""
        self._correlation += 1
        await self.stream.send_all(encode_request(self._correlation, body, client_id))

    async def receive(self, body):
        """The answer to the last request sent, `body`."""
        correlation, response = decode_response(await self.read_frame(), response_type(body.__api_key__, body.__version__))
        assert correlation == self._correlation
        return response

    async def send_raw(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def aclose(self) -> None:
        await self.stream.aclose()
