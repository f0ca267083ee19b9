"""A loopback TCP proxy in front of one broker that can cut a connection between a request and its response.

The proxy reads Kafka frames in both directions (4-byte size, then the request
header ``api_key, api_version, correlation_id`` or the response header
``correlation_id``), so it knows which response belongs to which request.

With ``cut_every = N`` (settable at any time), every N-th request of each API key
in ``cut_api_keys`` (Produce by default) is forwarded to the broker and then
the connection is cut before the client sees the response, alternating between
two ways (``cut_modes``):

* ``"response"``: wait until the broker's response to that request arrives,
  drop it and close both sides. The broker has certainly handled the request,
  the client cannot know: the textbook case for a retry that would write a
  duplicate without idempotence.
* ``"request"``: close both sides right after forwarding the request, so the
  broker may or may not get to handle it.

Requests pipelined behind the cut one on the same connection lose their
responses too, as with a real network failure.

``hold_responses()`` makes every connection hold back the next response it
reads from the broker (``held()`` counts those held for Produce); ``cut_held()``
then drops the held responses and cuts those connections. With a broker
SIGKILL in between, that is "the broker wrote the batch, acknowledged it and
crashed before the client heard": the retry goes to the restarted broker.

The proxy also gives a broker a stable address across restarts: start the
broker with ``advertised.listeners=PLAINTEXT://<proxy.address>`` and call
``set_upstream`` with its new port after each restart (conftest's
``proxied_broker`` does both). While no upstream accepts connections, clients
are accepted and closed at once.

Plain threads: the tests that use it are sync functions driving blocking
clients, so a trio proxy would need a thread of its own anyway.
"""

from __future__ import annotations

import itertools
import socket
import struct
import threading

from compat_tansu_proxy import _read_frame

PRODUCE = 0


class _Link:
    """One client connection and its upstream connection."""

    def __init__(self, client: socket.socket, server: socket.socket):
        self.client = client
        self.server = server
        self.swallow: dict[int, int] = {}  # correlation id -> api key: drop that response, then cut
        self.requests: dict[int, int] = {}  # correlation id -> api key, forwarded and not answered yet
        self.held_key: int | None = None  # api key of the response held back (hold_responses)
        self.drop_held = False
        self._lock = threading.Lock()
        self._open_pumps = 2

    def shutdown(self) -> None:
        for s in (self.client, self.server):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def pump_done(self) -> None:
        self.shutdown()
        with self._lock:
            self._open_pumps -= 1
            last = self._open_pumps == 0
        if last:
            self.client.close()
            self.server.close()


class DropProxy:
    def __init__(self, upstream: str | None = None, *, cut_every: int = 0,
                 cut_api_keys=frozenset({PRODUCE}), cut_modes=("response", "request")):
        self.cut_every = cut_every
        self.cut_api_keys = frozenset(cut_api_keys)
        self._modes = itertools.cycle(cut_modes)
        self._lock = threading.Lock()
        self._upstream: tuple[str, int] | None = None
        if upstream:
            self.set_upstream(upstream)
        # figures
        self.connections = 0
        self.refused = 0  # client connections closed because the upstream did not accept
        self.matching_requests = 0  # requests with an API key in cut_api_keys
        # Counted per API key, so every kind is cut however the kinds interleave (a cluster spreads them
        # over several proxies, and retries shift a shared count).
        self._matching_by_key: dict[int, int] = {}
        self.cuts: list[tuple[str, int, int]] = []  # (mode, api_key, correlation_id), when done
        self._links: set[_Link] = set()
        self._closed = False
        self._hold_cv = threading.Condition()
        self._holding = False
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.port = self.listener.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self._accept_thread = threading.Thread(target=self._accept_loop, name="drop-proxy-accept", daemon=True)
        self._accept_thread.start()

    def set_upstream(self, upstream: str) -> None:
        host, port = upstream.rsplit(":", 1)
        self._upstream = (host, int(port))

    def cut_counts(self) -> dict[str, int]:
        with self._lock:
            out: dict[str, int] = {}
            for mode, _, _ in self.cuts:
                out[mode] = out.get(mode, 0) + 1
            return out

    def hold_responses(self) -> None:
        """From now on, responses are read from the broker but not passed on (see ``cut_held``)."""
        with self._hold_cv:
            self._holding = True

    def held(self, api_key: int = PRODUCE) -> int:
        """How many connections hold back a response to a request with ``api_key``."""
        with self._lock:
            links = list(self._links)
        return sum(1 for link in links if link.held_key == api_key)

    def cut_held(self) -> int:
        """Stop holding: every connection that holds a response drops it and is cut (the client
        never learns that the broker handled the request); the others carry on. Returns how many
        connections were cut."""
        with self._lock:
            links = list(self._links)
        with self._hold_cv:
            self._holding = False
            cut = 0
            for link in links:
                if link.held_key is not None:
                    link.drop_held = True
                    cut += 1
            self._hold_cv.notify_all()
        return cut

    # -- internals ----------------------------------------------------------

    def _connect_upstream(self) -> socket.socket | None:
        if self._upstream is None:
            return None
        try:
            server = socket.create_connection(self._upstream, timeout=5)
        except OSError:
            return None
        server.settimeout(None)
        server.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return server

    def _accept_loop(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:  # the listener was closed
                return
            server = self._connect_upstream()
            if server is None:
                self.refused += 1
                client.close()
                continue
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link = _Link(client, server)
            with self._lock:
                if self._closed:
                    link.shutdown()
                    client.close()
                    server.close()
                    return
                self._links.add(link)
                self.connections += 1
            threading.Thread(target=self._client_to_server, args=(link,), daemon=True).start()
            threading.Thread(target=self._server_to_client, args=(link,), daemon=True).start()

    def _cut_decision(self, api_key: int) -> str | None:
        if api_key not in self.cut_api_keys:
            return None
        with self._lock:
            self.matching_requests += 1
            seen = self._matching_by_key[api_key] = self._matching_by_key.get(api_key, 0) + 1
            if self.cut_every > 0 and seen % self.cut_every == 0:
                return next(self._modes)
        return None

    def _record_cut(self, mode: str, api_key: int, corr: int) -> None:
        with self._lock:
            self.cuts.append((mode, api_key, corr))

    def _client_to_server(self, link: _Link) -> None:
        try:
            while (frame := _read_frame(link.client)) is not None:
                api_key, _version, corr = struct.unpack(">hhi", frame[:8])
                mode = self._cut_decision(api_key)
                if mode == "response":
                    link.swallow[corr] = api_key  # before forwarding: the response may come back at once
                link.requests[corr] = api_key
                link.server.sendall(struct.pack(">i", len(frame)) + frame)
                if mode == "request":
                    self._record_cut(mode, api_key, corr)
                    return
        except (OSError, struct.error):
            pass
        finally:
            link.pump_done()

    def _server_to_client(self, link: _Link) -> None:
        try:
            while (frame := _read_frame(link.server)) is not None:
                (corr,) = struct.unpack(">i", frame[:4])
                api_key = link.requests.pop(corr, None)
                if corr in link.swallow:
                    self._record_cut("response", api_key, corr)
                    return
                with self._hold_cv:
                    if self._holding:
                        link.held_key = api_key
                        while self._holding:
                            self._hold_cv.wait()
                        link.held_key = None
                if link.drop_held:
                    self._record_cut("held", api_key, corr)
                    return
                link.client.sendall(struct.pack(">i", len(frame)) + frame)
        except (OSError, struct.error):
            pass
        finally:
            link.pump_done()
            with self._lock:
                self._links.discard(link)

    def close(self) -> None:
        self.cut_held()
        with self._lock:
            self._closed = True
            links = list(self._links)
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes accept() on Linux
        except OSError:
            pass
        self.listener.close()
        self._accept_thread.join(timeout=5)
        for link in links:
            link.shutdown()

    def __repr__(self) -> str:
        return f"<DropProxy {self.address} -> {self._upstream} cut_every={self.cut_every} cuts={len(self.cuts)}>"
