"""A TCP proxy used only when the suite runs against Tansu (LODESTREAM_COMPAT_BROKER=tansu).

kcat 1.7.1 bundles librdkafka 2.0.2, which cannot parse Tansu 0.6's
ApiVersions v3 response: Tansu writes the top-level tagged fields
(SupportedFeatures, FinalizedFeaturesEpoch=-1, FinalizedFeatures,
ZkMigrationReady) even at their default values, and librdkafka 2.0.2 fails with
"Protocol read buffer underflow for ApiVersion v3".  (Real Kafka omits tagged
fields that hold their default.)  This proxy strips the top-level tagged
fields from ApiVersions v3+ responses so the kcat test code can be exercised
against Tansu.  In Tansu mode the fixture fronts Tansu with this proxy and has
Tansu advertise the proxy's address, so every client goes through it.  It is
never used against lodestream.
"""

from __future__ import annotations

import socket
import struct
import threading

API_VERSIONS = 18


def _read_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def _read_frame(sock: socket.socket) -> bytes | None:
    head = _read_exact(sock, 4)
    if head is None:
        return None
    (size,) = struct.unpack(">i", head)
    return _read_exact(sock, size)


def _uvarint(buf: bytes, pos: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _skip_tags(buf: bytes, pos: int) -> int:
    n, pos = _uvarint(buf, pos)
    for _ in range(n):
        _, pos = _uvarint(buf, pos)
        size, pos = _uvarint(buf, pos)
        pos += size
    return pos


def strip_api_versions_tags(frame: bytes) -> bytes:
    # response header v0: correlation_id; body: error_code, compact array, throttle, tags
    pos = 4 + 2
    n, pos = _uvarint(frame, pos)
    for _ in range(max(0, n - 1)):
        pos += 6
        pos = _skip_tags(frame, pos)
    pos += 4  # throttle_time_ms
    return frame[:pos] + b"\x00"


class TagStripProxy:
    def __init__(self, upstream: str | None = None):
        self.upstream = None
        if upstream:
            self.set_upstream(upstream)
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self._closed = False
        self._socks: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    def set_upstream(self, upstream: str) -> None:
        host, port = upstream.rsplit(":", 1)
        self.upstream = (host, int(port))

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=10)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            self._socks += [client, server]
            pending: dict[int, tuple[int, int]] = {}
            threading.Thread(target=self._c2s, args=(client, server, pending), daemon=True).start()
            threading.Thread(target=self._s2c, args=(server, client, pending), daemon=True).start()

    @staticmethod
    def _c2s(client, server, pending) -> None:
        try:
            while (frame := _read_frame(client)) is not None:
                api_key, api_version, corr = struct.unpack(">hhi", frame[:8])
                pending[corr] = (api_key, api_version)
                server.sendall(struct.pack(">i", len(frame)) + frame)
        except OSError:
            pass
        finally:
            for s in (client, server):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    @staticmethod
    def _s2c(server, client, pending) -> None:
        try:
            while (frame := _read_frame(server)) is not None:
                (corr,) = struct.unpack(">i", frame[:4])
                api_key, api_version = pending.pop(corr, (None, None))
                if api_key == API_VERSIONS and api_version is not None and api_version >= 3:
                    frame = strip_api_versions_tags(frame)
                client.sendall(struct.pack(">i", len(frame)) + frame)
        except OSError:
            pass
        finally:
            for s in (client, server):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._closed = True
        try:
            self.listener.close()
        except OSError:
            pass
        for s in self._socks:
            try:
                s.close()
            except OSError:
                pass
