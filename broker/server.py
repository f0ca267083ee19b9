"""Listeners and connections: frames in, handler calls, responses out in order."""

from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass
from typing import Any, Awaitable

import trio

from protocol.codec import DecodeError, decode_request, encode_response_chunks, peek_preamble
from protocol.framing import FrameDecoder, FrameError

from .broker import BoundListener, Broker
from .handlers import REGISTRY, RequestContext
from .handlers import api_versions

log = logging.getLogger(__name__)

RECEIVE_CHUNK = 256 * 1024
MAX_IN_FLIGHT_PER_CONNECTION = 16


class CloseConnection(Exception):
    """The client sent something we cannot answer; Kafka closes the socket then."""


@dataclass(slots=True)
class ResponseSlot:
    """A response position in the connection's order, filled when ready."""

    correlation_id: int
    ready: trio.Event
    payload: list | None = None  # buffers to send, in order
    close_after: bool = False
    # For metrics (perf_counter seconds): frame complete, handler started, response ready.
    api_key: int = -1
    api_version: int = -1
    received: float = 0.0
    started: float = 0.0
    completed: float = 0.0
    body: Any = None


class Connection:
    def __init__(self, broker: Broker, stream: trio.SocketStream, peer: str) -> None:
        self.broker = broker
        self.stream = stream
        self.peer = peer
        self.decoder = FrameDecoder(int(broker.config.get("socket.request.max.bytes")))
        self.slots_send, self.slots_receive = trio.open_memory_channel[ResponseSlot](MAX_IN_FLIGHT_PER_CONNECTION)
        self.metrics = broker.metrics
        self.in_flight = 0  # requests read, response not yet written

    @property
    def buffered_bytes(self) -> int:
        return self.decoder.buffered_bytes

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._write_responses)
            try:
                await self._read_requests(nursery)
            finally:
                await self.slots_send.aclose()

    async def _read_requests(self, nursery: trio.Nursery) -> None:
        while True:
            try:
                data = await self.stream.receive_some(RECEIVE_CHUNK)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            if not data:
                return
            received = time.perf_counter()
            self.decoder.receive_data(data)
            while True:
                try:
                    frame = self.decoder.next_frame()
                except FrameError as exc:
                    log.warning("closing connection from %s: %s", self.peer, exc)
                    return
                if frame is None:
                    break
                try:
                    await self._dispatch(frame, nursery, received)
                except CloseConnection as exc:
                    log.warning("closing connection from %s: %s", self.peer, exc)
                    return

    async def _dispatch(self, frame: bytes, nursery: trio.Nursery, received: float) -> None:
        try:
            preamble = peek_preamble(frame)
        except DecodeError as exc:
            raise CloseConnection(str(exc)) from None
        handler = REGISTRY.get(preamble.api_key)
        if handler is None:
            raise CloseConnection(f"unknown api key {preamble.api_key}")
        if preamble.api_version not in handler.parseable:
            if preamble.api_key == api_versions.API_KEY and preamble.api_version > handler.versions.stop - 1:
                # A newer client: answer v0 with UNSUPPORTED_VERSION and our ranges (KIP-511).
                await self._respond_now(preamble, api_versions.unsupported_version_response(), received)
                return
            raise CloseConnection(
                f"unsupported version {preamble.api_version} of api key {preamble.api_key} "
                f"(supported {handler.versions.start}-{handler.versions.stop - 1})"
            )
        try:
            request = decode_request(frame)
        except DecodeError as exc:
            raise CloseConnection(str(exc)) from None
        ctx = RequestContext(
            broker=self.broker,
            api_key=preamble.api_key,
            api_version=preamble.api_version,
            correlation_id=preamble.correlation_id,
            client_id=request.header.client_id,
            peer=self.peer,
        )
        slot = ResponseSlot(preamble.correlation_id, trio.Event(), api_key=preamble.api_key,
                            api_version=preamble.api_version, received=received)
        self.in_flight += 1
        await self.slots_send.send(slot)
        slot.started = time.perf_counter()
        if handler.admit is not None:
            completion = handler.admit(ctx, request.body)
            nursery.start_soon(self._complete, slot, completion)
        else:
            await self._complete(slot, handler.handle(ctx, request.body))

    async def _complete(self, slot: ResponseSlot, response: Awaitable[Any]) -> None:
        try:
            body = await response
            slot.completed = time.perf_counter()
            slot.body = body
            slot.payload = None if body is None else encode_response_chunks(slot.correlation_id, body)
        except Exception:
            log.exception("request from %s failed; closing the connection", self.peer)
            self.metrics.request_failed(slot.api_key)
            slot.close_after = True
        finally:
            slot.ready.set()

    async def _respond_now(self, preamble, body: Any, received: float) -> None:
        now = time.perf_counter()
        slot = ResponseSlot(preamble.correlation_id, trio.Event(), encode_response_chunks(preamble.correlation_id, body),
                            api_key=preamble.api_key, api_version=preamble.api_version, received=received,
                            started=now, completed=now, body=body)
        slot.ready.set()
        self.in_flight += 1
        await self.slots_send.send(slot)

    async def _write_responses(self) -> None:
        async for slot in self.slots_receive:
            await slot.ready.wait()
            if slot.close_after:
                await self.stream.aclose()
                return
            if slot.payload is not None:
                try:
                    for chunk in slot.payload:
                        await self.stream.send_all(chunk)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return
            self.in_flight -= 1
            self.metrics.request_done(slot.api_key, slot.api_version, slot.body,
                                      slot.received, slot.started, slot.completed, time.perf_counter())


async def _serve_connection(broker: Broker, stream: trio.SocketStream) -> None:
    try:
        host, port = stream.socket.getpeername()[:2]
        peer = f"{host}:{port}"
    except OSError:
        peer = "?"
    try:
        stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass
    log.debug("connection from %s", peer)
    connection = Connection(broker, stream, peer)
    broker.connections.add(connection)
    broker.metrics.connection_opened()
    try:
        await connection.run()
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        broker.connections.discard(connection)
        broker.metrics.connection_closed()
        await trio.aclose_forcefully(stream)
        log.debug("connection from %s closed", peer)


async def serve_listeners(broker: Broker, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Bind every client listener, report the bound addresses, then accept forever."""
    listeners = []
    for spec in broker.kafka_listener_specs:
        bound = await trio.open_tcp_listeners(spec.port, host=spec.host or None)
        port = bound[0].socket.getsockname()[1]
        advertised = broker.advertised_specs.get(spec.name)
        advertised_host = advertised.host if advertised else spec.host
        if not advertised_host or advertised_host in ("0.0.0.0", "::"):
            advertised_host = socket.gethostname()
        broker.bound_listeners.append(
            BoundListener(spec.name, spec.host, port, advertised_host, advertised.port if advertised and advertised.port else port)
        )
        listeners.extend(bound)
        log.info("listening on %s://%s:%d", spec.name, spec.host, port)

    async def handler(stream: trio.SocketStream) -> None:
        await _serve_connection(broker, stream)

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, handler, listeners)
        task_status.started(broker.bound_listeners)
