"""`serve_admin`: the REST API as a broker service (entry point `lodestream.services: admin`).

`lodestream serve` starts it with `nursery.start` once the Kafka listeners are
up. It serves `create_app(broker)` with Hypercorn's trio worker in the broker's
own trio loop, on every address of admin.listeners (port 0 = a free port), and
reports the bound URLs through task_status (they go to the ready file as
"ADMIN"). An empty admin.listeners disables it. A port that cannot be bound
stops start-up with a configuration error naming admin.listeners, as a busy
Kafka port does.
"""

from __future__ import annotations

import logging

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from lodestream.broker.config import StartupError

from lodestream.admin.auth import Authenticator
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


def hypercorn_config(listeners) -> Config:
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}" for host, port in listeners]
    config.accesslog = None
    config.errorlog = logging.getLogger("lodestream.admin.http")
    config.include_server_header = False
    config.graceful_timeout = 1.0
    return config


async def serve_admin(broker, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    listeners = broker.broker_config_value("admin.listeners") or ()
    if not listeners:
        log.info("REST API disabled (admin.listeners is empty)")
        task_status.started(None)
        return
    authenticator = Authenticator.for_broker(broker)
    app = create_app(broker, authenticator)

    def announce(addresses: str) -> None:
        if authenticator.enabled:
            log.info("REST API on %s (authentication: %s)", addresses, authenticator.describe())
        else:
            log.warning("REST API on %s without authentication: bound to loopback only (set "
                        "admin.auth.bearer.token or admin.auth.basic.users to serve other addresses)", addresses)

    started = _Started(task_status, announce)
    try:
        await serve(app, hypercorn_config(listeners), task_status=started)  # type: ignore[arg-type]
    except BaseExceptionGroup as group:
        if started.addresses is not None:
            raise
        bind_errors, rest = group.split(OSError)
        if bind_errors is None or rest is not None:
            raise
        first = bind_errors
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise StartupError(f"admin.listeners: cannot bind {','.join(hypercorn_config(listeners).bind)}: {first}") from None
    except OSError as exc:
        if started.addresses is not None:
            raise
        raise StartupError(f"admin.listeners: cannot bind {','.join(hypercorn_config(listeners).bind)}: {exc}") from None
