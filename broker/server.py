"""Listeners and connections: frames in, handler calls, responses out in order."""

from __future__ import annotations

import collections
import functools
import itertools
import logging
import os
import socket
import time
from dataclasses import dataclass
from typing import Any, Awaitable

import trio

from lodestream.protocol.codec import DecodeError, decode_request, encode_response_chunks, peek_preamble
from lodestream.protocol.errors import KafkaError
from lodestream.protocol.framing import FrameDecoder, FrameError

from lodestream.broker.broker import BoundListener, Broker
from lodestream.broker.config import StartupError
from lodestream.broker.handlers import REGISTRY, RequestContext
from lodestream.broker.handlers import api_versions, sasl_authenticate
from lodestream.broker.limits import PRODUCE_CHARGE_FACTOR
from lodestream.broker.quotas import BusyTime, apply_throttle
from lodestream.broker.sasl import AuthenticationFailed
from lodestream.broker import tls
from lodestream.broker.session import Session

log = logging.getLogger(__name__)

# Between frames (many small requests per read). It is also what a connection waiting for the pool
# holds unreserved (the start of its next frame), so it is kept small (docs/limits.md).
RECEIVE_CHUNK = 64 * 1024
MAX_RECEIVE = 1024 * 1024  # the largest read inside a frame
MAX_IN_FLIGHT_PER_CONNECTION = 16
IOV_MAX = os.sysconf("SC_IOV_MAX")  # buffers one sendmsg takes
TLS_HANDSHAKE_TIMEOUT_S = 10.0  # a client that opens a TLS connection and stalls is closed
# Fetch responses reference stored batches (up to the request's max_bytes each): a client that does
# not read its socket can pin at most this many of them per connection (docs/limits.md).
MAX_IN_FLIGHT_FETCHES_PER_CONNECTION = 2
FETCH_API_KEY = 1
PRODUCE_API_KEY = 0
SASL_API_KEYS = frozenset({17, 36})  # SaslHandshake, SaslAuthenticate
# All a SASL listener serves before authentication (Kafka's SaslServerAuthenticator): with ApiVersions.
PRE_AUTHENTICATION_API_KEYS = SASL_API_KEYS | {18}


class CloseConnection(Exception):
    """The client sent something we cannot answer; Kafka closes the socket then."""


class AnsweredThenClosed(CloseConnection):
    """The last response says why (a failed authentication): closed once it is written, logged by its handler."""


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
    reserved: int = 0  # request-pool bytes held for this request (released when the handler is done)
    fetch_permit: bool = False  # holds one of the connection's fetch slots until written
    ctx: Any = None  # the RequestContext: its throttle_ms is the quota throttle (broker/quotas.py)
    busy: float = -1.0  # seconds of this thread spent on it, when request_percentage quotas exist (-1: not measured)


class Connection:
    """One client connection on any trio Stream (a TCP socket today; a trio.SSLStream drops in)."""

    def __init__(self, broker: Broker, stream: trio.abc.Stream, session: Session) -> None:
        self.broker = broker
        self.stream = stream
        self._socket = stream.socket if isinstance(stream, trio.SocketStream) else None  # gathered writes
        self.session = session
        self.peer = session.peer
        self.max_request_bytes = int(broker.config.get("socket.request.max.bytes"))
        # Before a SASL client has authenticated its requests are small (the CVE-2022-34917 class).
        self.max_unauthenticated_bytes = min(int(broker.config.get("sasl.server.max.receive.size")),
                                             self.max_request_bytes)
        self.decoder = FrameDecoder(self.max_request_bytes if session.authenticated else self.max_unauthenticated_bytes)
        self.slots_send, self.slots_receive = trio.open_memory_channel[ResponseSlot](MAX_IN_FLIGHT_PER_CONNECTION)
        self.metrics = broker.metrics
        self.in_flight = 0  # requests read, response not yet written
        self.pool = broker.request_pool
        self.reserved = 0  # request-pool bytes this connection holds
        self._frame_reserved = 0  # what the frame being read holds in the pool (0: nothing yet)
        self.fetch_slots = trio.Semaphore(MAX_IN_FLIGHT_FETCHES_PER_CONNECTION)
        self.idle_s = int(broker.config.get("connections.max.idle.ms")) / 1000
        self.muted_until = 0.0  # quota throttle: nothing is read before this trio time (KIP-219)

    async def run(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write_responses)
                try:
                    await self._read_requests(nursery)
                finally:
                    await self.slots_send.aclose()
        finally:
            self._release(self.reserved)

    def _release(self, size: int) -> None:
        if size:
            self.reserved -= size
            self.pool.release(size)

    async def _reserve(self, size: int) -> None:
        """Take `size` bytes from the broker's request pool, waiting (not reading) while it is used up."""
        if not self.pool.try_acquire(size):
            self.broker.limits.hit(
                "queued.max.request.bytes",
                "request pool of %s bytes in use (%d used); not reading from %s until a %d-byte request fits",
                self.pool.capacity, self.pool.used, self.peer, size)
            await self.pool.acquire(size)
        self.reserved += size

    async def _receive(self) -> bytes | None:
        """The next bytes from the socket; None at EOF, on error, or when idle for connections.max.idle.ms.

        Inside a frame whose length is known, reads no further than its end, so a large frame's
        buffer holds exactly that frame (reserved in the pool) and nothing unreserved behind it."""
        missing = self.decoder.missing_bytes
        size = RECEIVE_CHUNK if not missing else min(missing, MAX_RECEIVE)
        while True:
            with trio.move_on_after(self.idle_s) as idle:
                try:
                    data = await self.stream.receive_some(size)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return None
                return data or None
            if idle.cancelled_caught and self.in_flight == 0:
                self.broker.limits.hit("connections.max.idle.ms", "closing connection from %s, idle for %d ms",
                                       self.peer, int(self.idle_s * 1000), level=logging.INFO)
                return None

    async def _read_requests(self, nursery: trio.Nursery) -> None:
        # One frame at a time: its length, then its bytes reserved in the pool, then its body.
        # At most RECEIVE_CHUNK bytes beyond the current frame are buffered unreserved.
        received = time.perf_counter()
        while True:
            if self.muted_until > trio.current_time():
                await trio.sleep_until(self.muted_until)
            self.decoder.max_frame_bytes = self.max_request_bytes if self.session.authenticated \
                else self.max_unauthenticated_bytes
            try:
                length = self.decoder.next_length()
            except FrameError as exc:
                log.warning("closing connection from %s: %s", self.peer, exc)
                return
            if length is not None:
                if not self._frame_reserved:
                    charge = max(length * PRODUCE_CHARGE_FACTOR, 1)
                    await self._reserve(charge)
                    self._frame_reserved = charge
                if self.decoder.missing_bytes == 0:
                    reserved, self._frame_reserved = self._frame_reserved, 0
                    try:
                        await self._dispatch(nursery, received, reserved)
                    except AnsweredThenClosed:
                        return
                    except CloseConnection as exc:
                        log.warning("closing connection from %s: %s", self.peer, exc)
                        return
                    continue
            data = await self._receive()
            if data is None:
                return
            received = time.perf_counter()
            self.decoder.receive_data(data)

    async def _dispatch(self, nursery: trio.Nursery, received: float, reserved: int = 0) -> None:
        frame = self.decoder.next_frame()
        assert frame is not None
        if self.session.sasl_raw_tokens:
            await self._raw_sasl_token(frame, received, reserved)
            return
        try:
            preamble = peek_preamble(frame)
        except DecodeError as exc:
            raise CloseConnection(str(exc)) from None
        if preamble.api_key != PRODUCE_API_KEY and reserved > len(frame):
            # Only a Produce's records are copied while it is handled: keep one copy's worth.
            self._release(reserved - len(frame))
            reserved = len(frame)
        session = self.session
        if not session.authenticated and preamble.api_key not in PRE_AUTHENTICATION_API_KEYS:
            raise CloseConnection(f"api key {preamble.api_key} on {session.listener_name} before SASL authentication")
        if session.session_expires_at is not None and preamble.api_key not in SASL_API_KEYS \
                and trio.current_time() >= session.session_expires_at:
            raise CloseConnection(f"the SASL session of {session.principal} expired without re-authentication "
                                  "(connections.max.reauth.ms, or the token's expiry)")
        handler = REGISTRY.get(preamble.api_key)
        if handler is None:
            raise CloseConnection(f"unknown api key {preamble.api_key}")
        if not handler.served_on(self.session.controller):
            kind = "a controller" if self.session.controller else "a broker"
            raise CloseConnection(f"api key {preamble.api_key} is not served on {kind} listener")
        if preamble.api_version not in handler.parseable:
            if preamble.api_key == api_versions.API_KEY and preamble.api_version > handler.versions.stop - 1:
                # A newer client: answer v0 with UNSUPPORTED_VERSION and our ranges (KIP-511).
                await self._respond_now(preamble, api_versions.unsupported_version_response(self.session.controller), received, reserved)
                return
            raise CloseConnection(
                f"unsupported version {preamble.api_version} of api key {preamble.api_key} "
                f"(supported {handler.versions.start}-{handler.versions.stop - 1})"
            )
        timing = self.broker.quotas.request_time_quotas()
        decode_started = time.perf_counter()
        try:
            request = decode_request(frame)
        except DecodeError as exc:
            raise CloseConnection(str(exc)) from None
        decode_s = time.perf_counter() - decode_started
        del frame  # the decoded request holds what it needs; a produce's frame is not kept twice
        ctx = RequestContext(
            broker=self.broker,
            api_key=preamble.api_key,
            api_version=preamble.api_version,
            correlation_id=preamble.correlation_id,
            client_id=request.header.client_id,
            session=self.session,
        )
        slot = ResponseSlot(preamble.correlation_id, trio.Event(), api_key=preamble.api_key,
                            api_version=preamble.api_version, received=received, reserved=reserved, ctx=ctx)
        if preamble.api_key == FETCH_API_KEY:
            if self.fetch_slots.value == 0:
                self._slow_reader("fetches", MAX_IN_FLIGHT_FETCHES_PER_CONNECTION)
            await self.fetch_slots.acquire()
            slot.fetch_permit = True
        if self.slots_send.statistics().current_buffer_used >= MAX_IN_FLIGHT_PER_CONNECTION:
            self._slow_reader("requests", MAX_IN_FLIGHT_PER_CONNECTION)
        self.in_flight += 1
        await self.slots_send.send(slot)
        slot.started = time.perf_counter()
        if timing:
            slot.busy = decode_s
        if handler.forwarded and not self.session.controller and self.broker.forwards_to_controller:
            # Metadata changes are the active controller's: it gets the request as the client sent it.
            await self._complete(slot, self._forward(ctx, handler, request.body))
        elif handler.admit is not None:
            completion = await handler.admit(ctx, request.body)
            if timing:
                slot.busy += time.perf_counter() - slot.started
            nursery.start_soon(self._complete, slot, completion)
        else:
            await self._complete(slot, handler.handle(ctx, request.body))
        if ctx.close_after_response:
            raise AnsweredThenClosed()

    async def _forward(self, ctx: RequestContext, handler, body):
        try:
            return await self.broker.controller_client.forward_for(ctx.session, ctx.correlation_id, ctx.client_id, body)
        except KafkaError:  # no controller reachable: answered here, each change with NOT_CONTROLLER
            return await handler.handle(ctx, body)

    def _slow_reader(self, what: str, limit: int) -> None:
        self.broker.limits.hit("in.flight.per.connection",
                               "%s has %d %s unanswered or unread; not reading more from it until one is written",
                               self.peer, limit, what, level=logging.INFO)

    async def _complete(self, slot: ResponseSlot, response: Awaitable[Any]) -> None:
        try:
            if slot.busy < 0:
                result = await response
            else:  # request_percentage: charge the time spent on it (not its waits) before answering
                timed = BusyTime(response)
                result = await timed
                slot.ctx.throttle(self.broker.quotas.record_request_time(slot.ctx.usage, slot.busy + timed.seconds))
            body = apply_throttle(result, slot.ctx)
            slot.completed = time.perf_counter()
            slot.body = body
            slot.payload = None if body is None else encode_response_chunks(slot.correlation_id, body)
            if slot.busy >= 0:  # encoding is charged too; its debt throttles the next request
                self.broker.quotas.record_request_time(slot.ctx.usage, time.perf_counter() - slot.completed)
        except Exception:
            log.exception("request from %s failed; closing the connection", self.peer)
            self.metrics.request_failed(slot.api_key)
            slot.close_after = True
        finally:
            # The request's bytes are garbage once the handler is done (as Kafka releases the
            # buffer after KafkaApis.handle): a client that does not read cannot pin the pool.
            reserved, slot.reserved = slot.reserved, 0
            self._release(reserved)
            slot.ready.set()

    async def _raw_sasl_token(self, token: bytes, received: float, reserved: int) -> None:
        """After a SaslHandshake v0 the frame is a bare SASL message, answered as one: length, then bytes. A
        failure has no way to say why: the connection closes after the delay."""
        self._release(reserved)
        ctx = RequestContext(broker=self.broker, api_key=sasl_authenticate.API_KEY, api_version=0, correlation_id=-1,
                             client_id=None, session=self.session)
        try:
            answer, _ = await sasl_authenticate.step(ctx, token)
        except AuthenticationFailed:
            raise AnsweredThenClosed() from None
        now = time.perf_counter()
        slot = ResponseSlot(-1, trio.Event(), [len(answer).to_bytes(4, "big"), answer], api_key=ctx.api_key,
                            api_version=0, received=received, started=now, completed=now)
        slot.ready.set()
        self.in_flight += 1
        await self.slots_send.send(slot)

    async def _respond_now(self, preamble, body: Any, received: float, reserved: int = 0) -> None:
        self._release(reserved)
        now = time.perf_counter()
        slot = ResponseSlot(preamble.correlation_id, trio.Event(), encode_response_chunks(preamble.correlation_id, body),
                            api_key=preamble.api_key, api_version=preamble.api_version, received=received,
                            started=now, completed=now, body=body)
        slot.ready.set()
        self.in_flight += 1
        await self.slots_send.send(slot)

    async def _write_responses(self) -> None:
        """Answers in request order. The answers already done behind the first leave in the same write
        (a pipelining producer's acks): one syscall for several responses."""
        waiting: ResponseSlot | None = None
        while True:
            if waiting is None:
                try:
                    waiting = await self.slots_receive.receive()
                except trio.EndOfChannel:
                    return
            await waiting.ready.wait()
            batch, waiting = [waiting], None
            while not (batch[-1].close_after or _closes_after(batch[-1])):
                try:
                    following = self.slots_receive.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
                if not following.ready.is_set():
                    waiting = following
                    break
                batch.append(following)
            closing = batch[-1].close_after  # the handler failed: closed without its answer
            written = batch[:-1] if closing else batch
            chunks = [chunk for slot in written if slot.payload is not None for chunk in slot.payload]
            if chunks and not await self._send(chunks):
                return
            for slot in written:
                slot.payload = None
                self._answered(slot)
            if closing or (written and _closes_after(written[-1])):
                await self.stream.aclose()
                return

    async def _send(self, chunks: list) -> bool:
        """Write the buffers with as few syscalls as the kernel allows: on a plain socket a gathered
        sendmsg (not a send per buffer), through TLS one send_all of their concatenation. False: the
        peer is gone."""
        try:
            if self._socket is None:
                await self.stream.send_all(chunks[0] if len(chunks) == 1 else b"".join(chunks))
                return True
            buffers = collections.deque(memoryview(chunk).cast("B") for chunk in chunks if len(chunk))
            while buffers:
                sent = await self._socket.sendmsg(list(itertools.islice(buffers, IOV_MAX)))
                while sent:
                    head = buffers[0]
                    if sent < len(head):
                        buffers[0] = head[sent:]
                        break
                    sent -= len(head)
                    buffers.popleft()
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        return True

    def _answered(self, slot: ResponseSlot) -> None:
        if slot.ctx is not None and slot.ctx.throttle_ms > 0:  # over quota: pause reading (KIP-219)
            self.muted_until = max(self.muted_until, trio.current_time() + slot.ctx.throttle_ms / 1000)
        if slot.fetch_permit:
            slot.fetch_permit = False
            self.fetch_slots.release()
        self.in_flight -= 1
        self.metrics.request_done(slot.api_key, slot.api_version, slot.body,
                                  slot.received, slot.started, slot.completed, time.perf_counter())


def _closes_after(slot: ResponseSlot) -> bool:
    return slot.ctx is not None and slot.ctx.close_after_response


def _socket_of(stream: trio.abc.Stream) -> socket.socket | None:
    """The socket under a stream (through TLS layers: trio.SSLStream.transport_stream)."""
    while not isinstance(stream, trio.SocketStream):
        stream = getattr(stream, "transport_stream", None)
        if stream is None:
            return None
    return stream.socket


async def _serve_connection(broker: Broker, stream: trio.abc.Stream, listener_name: str) -> None:
    sock = _socket_of(stream)
    try:
        host, port = sock.getpeername()[:2] if sock is not None else ("?", 0)
    except OSError:
        host, port = "?", 0
    protocol = broker.listener_security_protocols[listener_name]
    session = Session(listener_name, protocol, host, port, controller=listener_name in broker.controller_listener_names,
                      authenticated=not protocol.startswith("SASL_"))
    refused = _connection_refused(broker, host)
    if refused is not None:
        limit, allowed = refused
        broker.limits.hit(limit, "closing new connection from %s (%d allowed)", session.peer, allowed)
        await trio.aclose_forcefully(stream)
        return
    broker.connections_per_ip[host] = broker.connections_per_ip.get(host, 0) + 1
    try:
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        if isinstance(stream, trio.SSLStream) and not await _authenticate_tls(broker, stream, session):
            await trio.aclose_forcefully(stream)
            return
        await _run_connection(broker, stream, session)
    finally:
        remaining = broker.connections_per_ip.pop(host, 1) - 1
        if remaining > 0:
            broker.connections_per_ip[host] = remaining


async def _authenticate_tls(broker: Broker, stream: trio.SSLStream, session: Session) -> bool:
    """The TLS handshake (bounded by TLS_HANDSHAKE_TIMEOUT_S), then the principal of the client's certificate
    (broker/tls.py). False, logged, when either fails: the connection is closed after the failed-authentication
    delay, nothing was read from it."""
    try:
        with trio.fail_after(TLS_HANDSHAKE_TIMEOUT_S):
            await stream.do_handshake()
        session.principal = tls.principal_of(stream.getpeercert(), broker.ssl_rules)
    except (trio.BrokenResourceError, trio.TooSlowError, tls.AuthenticationFailed) as exc:
        reason = exc.__cause__ or exc
        log.info("TLS connection from %s on %s refused: %s", session.peer, session.listener_name,
                 reason if str(reason) else type(reason).__name__)
        # KIP-306: closed only after connection.failed.authentication.delay.ms, as a failed SASL login is.
        await trio.sleep(int(broker.config.get("connection.failed.authentication.delay.ms")) / 1000)
        return False
    return True


class TlsListener(trio.abc.Listener[trio.SSLStream]):
    """An SSL listener's accepting socket: each connection is wrapped in TLS with the listener's current
    context (broker.tls_contexts, which a certificate reload replaces); the handshake runs in the
    connection's own task (_authenticate_tls)."""

    def __init__(self, transport: trio.SocketListener, broker: Broker, name: str) -> None:
        self.transport, self.broker, self.name = transport, broker, name

    async def accept(self) -> trio.SSLStream:
        stream = await self.transport.accept()
        return trio.SSLStream(stream, self.broker.tls_contexts[self.name], server_side=True)

    async def aclose(self) -> None:
        await self.transport.aclose()


def _connection_refused(broker: Broker, ip: str) -> tuple[str, int] | None:
    """(limit, allowed) when a new connection from `ip` is over max.connections or max.connections.per.ip."""
    allowed = int(broker.broker_config_value("max.connections"))
    if len(broker.connections) >= allowed:
        return "max.connections", allowed
    overrides = broker.broker_config_value("max.connections.per.ip.overrides") or {}
    allowed = int(overrides.get(ip, broker.broker_config_value("max.connections.per.ip")))
    if broker.connections_per_ip.get(ip, 0) >= allowed:
        return "max.connections.per.ip", allowed
    return None


async def _run_connection(broker: Broker, stream: trio.abc.Stream, session: Session) -> None:
    log.debug("connection from %s on %s", session.peer, session.listener_name)
    connection = Connection(broker, stream, session)
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
        log.debug("connection from %s closed", session.peer)


async def serve_listeners(broker: Broker, *, controller: bool = False, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Bind every client listener (or, with `controller`, every controller listener), report the bound
    addresses, then accept forever."""
    bound_by_name: list[tuple[str, list]] = []
    specs = broker.controller_specs if controller else broker.kafka_listener_specs
    bound_listeners = broker.bound_controller_listeners if controller else broker.bound_listeners
    for spec in specs:
        try:
            bound = await trio.open_tcp_listeners(spec.port, host=spec.host or None)
        except OSError as exc:
            raise StartupError(f"listeners: cannot listen on {spec.name}://{spec.host}:{spec.port}: "
                               f"{exc.strerror or exc}") from None
        port = bound[0].socket.getsockname()[1]
        advertised = broker.advertised_specs.get(spec.name)
        advertised_host = advertised.host if advertised else spec.host
        if not advertised_host or advertised_host in ("0.0.0.0", "::"):
            advertised_host = socket.gethostname()
        bound_listeners.append(
            BoundListener(spec.name, spec.host, port, advertised_host, advertised.port if advertised and advertised.port else port)
        )
        bound_by_name.append((spec.name, bound))
        log.info("listening on %s://%s:%d", spec.name, spec.host, port)

    async with trio.open_nursery() as nursery:
        for name, bound in bound_by_name:  # each listener's connections know its name (their Session)
            if name in broker.tls_contexts:
                bound = [TlsListener(listener, broker, name) for listener in bound]
            await nursery.start(trio.serve_listeners, functools.partial(_serve_connection, broker, listener_name=name),
                                bound)
        task_status.started(bound_listeners)
