"""The metadata quorum's connections to the other voters' controller listeners.

Each peer has two lanes, each one connection with one request in flight: `fetch` (Fetch and
FetchSnapshot, which the leader may hold up to its fetch wait) and `control` (Vote, BeginQuorumEpoch,
EndQuorumEpoch), so a parked fetch never delays a vote. A lane sends the machine's requests in order and
hands each answer back to the machine; a request that fails (peer down, connection cut, timeout) is
dropped, and the machine sends it again on its own timers. A lane's queue keeps only fresh requests.
"""

from __future__ import annotations

import logging
import ssl
import math
import struct
import time

import trio

from lodestream.consensus import kraft
from lodestream.protocol.codec import DecodeError, decode_response, encode_request, response_type
from lodestream.protocol.framing import FrameDecoder, FrameError

from lodestream.broker.quorum_wire import QuorumWireError, from_response, to_request

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 1.0
MAX_RESPONSE_BYTES = 64 << 20  # a snapshot of the image comes in one FetchSnapshot answer
STALE_AFTER_S = 2.0  # a queued request older than this is dropped: the machine has sent a newer one


class PeerConnection:
    """One Kafka-protocol client connection: a request, then its response."""

    def __init__(self, stream: trio.abc.Stream, client_id: str) -> None:
        self.stream = stream
        self.client_id = client_id
        self.decoder = FrameDecoder(MAX_RESPONSE_BYTES)
        self.correlation = 0

    @classmethod
    async def connect(cls, host: str, port: int, client_id: str,
                      tls: ssl.SSLContext | None = None) -> "PeerConnection":
        """Connected (and, with `tls`, past the TLS handshake) within CONNECT_TIMEOUT_S."""
        with trio.fail_after(CONNECT_TIMEOUT_S):
            stream: trio.abc.Stream = await trio.open_tcp_stream(host, port)
            if tls is not None:
                stream = trio.SSLStream(stream, tls, server_hostname=host)
                try:
                    await stream.do_handshake()
                except BaseException:
                    await trio.aclose_forcefully(stream)
                    raise
            return cls(stream, client_id)

    async def request(self, body, timeout: float):
        self.correlation += 1
        with trio.fail_after(timeout):
            await self.stream.send_all(encode_request(self.correlation, body, self.client_id))
            while True:
                frame = self.decoder.next_frame()
                if frame is not None:
                    break
                data = await self.stream.receive_some(1 << 16)
                if not data:
                    raise EOFError("connection closed by the peer")
                self.decoder.receive_data(data)
        correlation, response = decode_response(bytes(frame), response_type(body.__api_key__, body.__version__))
        if correlation != self.correlation:
            raise DecodeError(f"correlation id {correlation}, expected {self.correlation}")
        return response

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)


CONNECTION_FAILURES = (OSError, EOFError, trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError,
             DecodeError, FrameError, QuorumWireError, struct.error)


class QuorumPeers:
    def __init__(self, quorum, node_id: int, cluster_id: str, addresses: dict[int, tuple[str, int]],
                 request_timeout_s: float) -> None:
        self.quorum = quorum
        self.node_id = node_id
        self.cluster_id = cluster_id
        self.addresses = addresses  # every other voter's controller listener
        self.request_timeout_s = request_timeout_s
        self._lanes: dict[tuple[int, str], trio.MemorySendChannel] = {}
        self._receivers = {}
        for peer in addresses:
            for lane in ("fetch", "control"):
                send, receive = trio.open_memory_channel[tuple](math.inf)
                self._lanes[(peer, lane)] = send
                self._receivers[(peer, lane)] = receive
        quorum.send_to_peer = self.send

    def send(self, to: int, message: kraft.Message) -> None:
        lane = "fetch" if isinstance(message, (kraft.FetchRequest, kraft.FetchSnapshotRequest)) else "control"
        channel = self._lanes.get((to, lane))
        if channel is not None:
            channel.send_nowait((time.monotonic(), message))

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            for (peer, lane), receive in self._receivers.items():
                nursery.start_soon(self._lane, peer, lane, receive)
            task_status.started()

    async def _lane(self, peer: int, lane: str, receive: trio.MemoryReceiveChannel) -> None:
        host, port = self.addresses[peer]
        connection: PeerConnection | None = None
        try:
            async for queued_at, message in receive:
                if time.monotonic() - queued_at > STALE_AFTER_S:
                    continue
                try:
                    if connection is None:
                        connection = await PeerConnection.connect(host, port, f"lodestream-quorum-{self.node_id}")
                    request = to_request(message, self.cluster_id, self.node_id, peer)
                    response = await connection.request(request, self.request_timeout_s)
                    reply = from_response(message, response)
                except CONNECTION_FAILURES as exc:
                    log.debug("quorum %s lane to node %d: %r", lane, peer, exc)
                    if connection is not None:
                        await connection.aclose()
                        connection = None
                    continue
                if reply is not None:
                    self.quorum.deliver(peer, reply)
        finally:
            if connection is not None:
                await connection.aclose()


class ControllerConnection:
    """This broker's requests to the active controller (the quorum's leader), over its controller listener:
    one connection, re-opened when the leader changes or the connection fails. Requests go one at a time."""

    def __init__(self, quorum, node_id: int, addresses: dict[int, tuple[str, int]], request_timeout_s: float) -> None:
        self.quorum = quorum
        self.node_id = node_id
        self.addresses = addresses
        self.request_timeout_s = request_timeout_s
        self._connection: PeerConnection | None = None
        self._connected_to = -1
        self._lock = trio.Lock()

    async def request(self, body):
        """The leader's answer, or None when no leader is known or it cannot be reached in time."""
        async with self._lock:
            leader = self.quorum.leader
            if leader < 0 or leader not in self.addresses:
                return None
            try:
                if self._connection is None or self._connected_to != leader:
                    await self.close()
                    self._connection = await PeerConnection.connect(*self.addresses[leader],
                                                                    f"lodestream-broker-{self.node_id}")
                    self._connected_to = leader
                return await self._connection.request(body, self.request_timeout_s)
            except CONNECTION_FAILURES as exc:
                log.debug("request to the active controller %d failed: %r", leader, exc)
                await self.close()
                return None

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.aclose()
            self._connection = None
