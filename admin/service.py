"""`serve_admin`: the REST API as a broker service (entry point `lodestream.services: admin`).

`lodestream serve` starts it with `nursery.start` once the Kafka listeners are
up. It serves `create_app(broker)` with Hypercorn's trio worker in the broker's
own trio loop, on every address of admin.listeners (port 0 = a free port), and
reports the bound URLs through task_status (they go to the ready file as
"ADMIN"). An empty admin.listeners disables it. A port that cannot be bound
stops start-up with a configuration error naming admin.listeners, as a busy
Kafka port does. `https://` listeners serve TLS with the broker's ssl.* settings;
a client certificate's principal reaches the app through admin/auth.PEER_CERTIFICATE.
"""

from __future__ import annotations

import logging
import ssl

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from lodestream.broker.config import StartupError

from lodestream.admin.auth import PEER_CERTIFICATE, Authenticator
from lodestream.broker import tls
from lodestream.admin.rest import create_app

log = logging.getLogger("lodestream.admin")


class _Started:
    """Forwards hypercorn's task_status.started(binds) as one comma-separated URL string."""

    def __init__(self, task_status, on_started) -> None:
        self.task_status = task_status
        self.on_started = on_started
        self.addresses: str | None = None

    def started(self, binds=None) -> None:
        self.addresses = ",".join(binds or [])
        self.task_status.started(self.addresses)
        self.on_started(self.addresses)


class _AdminConfig(Config):
    """Hypercorn's config with the broker's TLS context for the https:// listeners (Hypercorn would otherwise
    build one from its own certfile/keyfile settings)."""

    tls_context: ssl.SSLContext | None = None

    @property
    def ssl_enabled(self) -> bool:
        return self.tls_context is not None

    def create_ssl_context(self) -> ssl.SSLContext | None:
        return self.tls_context


def hypercorn_config(listeners, tls_context: ssl.SSLContext | None = None) -> Config:
    config = _AdminConfig()
    def address(host: str, port: int) -> str:
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    secure = [address(host, port) for host, port, scheme in listeners if scheme == "https"]
    plain = [address(host, port) for host, port, scheme in listeners if scheme != "https"]
    if secure:
        config.tls_context = tls_context
        config.bind, config.insecure_bind = secure, plain
    else:
        config.bind = plain
    config.accesslog = None
    config.errorlog = logging.getLogger("lodestream.admin.http")
    config.include_server_header = False
    config.graceful_timeout = 1.0
    return config


def admin_tls_context(broker) -> ssl.SSLContext:
    """The https:// listeners' context: the broker's ssl.* key, certificates and client auth; each connection's
    peer certificate is recorded for admin/auth.py (PeerRecordingSSLObject)."""
    context = tls.server_context(broker.config.get, context_class=_RecordingContext)
    context.set_alpn_protocols(["http/1.1"])
    return context


class PeerRecordingSSLObject(ssl.SSLObject):
    """Once the handshake is done, the client's certificate goes into the connection task's context
    (admin/auth.PEER_CERTIFICATE), which Hypercorn's request tasks inherit."""

    def do_handshake(self) -> None:
        super().do_handshake()
        PEER_CERTIFICATE.set(self.getpeercert() or None)


class _RecordingContext(ssl.SSLContext):
    sslobject_class = PeerRecordingSSLObject


async def serve_admin(broker, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    listeners = broker.broker_config_value("admin.listeners") or ()
    if not listeners:
        log.info("REST API disabled (admin.listeners is empty)")
        task_status.started(None)
        return
    authenticator = Authenticator.for_broker(broker)
    app = create_app(broker, authenticator)
    https = any(scheme == "https" for _, _, scheme in listeners)
    config = hypercorn_config(listeners, admin_tls_context(broker) if https else None)

    def announce(addresses: str) -> None:
        if authenticator.enabled:
            log.info("REST API on %s (authentication: %s)", addresses, authenticator.describe())
        else:
            log.warning("REST API on %s without authentication: bound to loopback only (set "
                        "admin.auth.bearer.token or admin.auth.basic.users to serve other addresses)", addresses)

    started = _Started(task_status, announce)
    try:
        await serve(app, config, task_status=started)  # type: ignore[arg-type]
    except BaseExceptionGroup as group:
        if started.addresses is not None:
            raise
        bind_errors, rest = group.split(OSError)
        if bind_errors is None or rest is not None:
            raise
        first = bind_errors
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise StartupError(f"admin.listeners: cannot bind {','.join(config.bind + config.insecure_bind)}: {first}") from None
    except OSError as exc:
        if started.addresses is not None:
            raise
        raise StartupError(f"admin.listeners: cannot bind {','.join(config.bind + config.insecure_bind)}: {exc}") from None
