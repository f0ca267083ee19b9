"""One broker lifecycle, used by `lodestream serve` (broker/process.py) and by the in-process tests.

`Broker.open()` does the blocking start-up (data directory, metadata, logs,
coordinators' replay); `serve_broker` then runs everything the broker does
until it is cancelled: the log committer and flusher, retention and the log cleaner, the coordinators' task,
the Kafka listeners and, unless told not to, the services registered under the
`lodestream.services` entry-point group (the REST API). On cancellation it
finishes the queued appends and syncs the log; the caller closes the broker.
"""

from __future__ import annotations

import functools
from importlib.metadata import entry_points

import trio

from lodestream.broker.broker import Broker
from lodestream.broker.server import serve_listeners

SERVICES_GROUP = "lodestream.services"


async def _start_services(nursery: trio.Nursery, broker: Broker) -> dict[str, str]:
    """Each registered service is `async def(broker, *, task_status)` and reports its address (None when
    disabled) through task_status.started. The broker never imports them: the REST API registers itself."""
    addresses: dict[str, str] = {}
    for entry in sorted(entry_points(group=SERVICES_GROUP), key=lambda entry: entry.name):
        address = await nursery.start(entry.load(), broker)
        if address:
            addresses[entry.name.upper()] = address if isinstance(address, str) else ",".join(address)
    return addresses


async def serve_broker(broker: Broker, *, services: bool = True, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Run an opened broker until cancelled; reports {service name: address} once everything listens.

    The metadata quorum comes first: its controller listener, its loop and its connections to the other
    voters. A node of a larger quorum then waits until it has caught up with the metadata log before it
    opens its logs (Broker.open_logs) and serves clients."""
    assert broker.quorum is not None, "Broker.open() first"
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(functools.partial(serve_listeners, broker, controller=True))
            await nursery.start(broker.quorum.run)
            if broker.quorum_peers is not None:
                await nursery.start(broker.quorum_peers.run)
            await nursery.start(broker.controller.run)
            if not broker.is_broker:  # a controller-only node: the quorum and the controller's duties
                task_status.started({})
                return
            if broker.replicas is None:
                await broker.quorum.wait_caught_up()
                await trio.to_thread.run_sync(broker.open_logs)
            replicas, groups = broker.replicas, broker.groups
            broker.background = nursery
            broker.logs_opened()
            nursery.start_soon(replicas.run_committer)
            nursery.start_soon(replicas.run_flusher)
            nursery.start_soon(replicas.run_retention, broker.retention_config,
                               lambda: int(broker.config.get("log.retention.check.interval.ms")) / 1000)
            nursery.start_soon(broker.log_cleaner.run)
            await nursery.start(broker.fetchers.run)  # followers fetch from their leaders
            await nursery.start(broker.isr_manager.run)
            await nursery.start(groups.run)
            if broker.transactions is not None:
                await nursery.start(broker.transactions.run)
            if broker.jwks_refresher is not None:  # OAUTHBEARER's keys: loaded before the listeners open
                await nursery.start(broker.jwks_refresher.run)
            await nursery.start(serve_listeners, broker)
            await nursery.start(broker.controller_client.run)  # registered and unfenced: clients may come
            if broker.remote_log is not None:  # offloads through the controller: once registered
                await nursery.start(broker.remote_log.run)
            task_status.started(await _start_services(nursery, broker) if services else {})
    finally:
        if broker.replicas is not None:
            with trio.CancelScope(shield=True):
                await broker.replicas.close()  # queued appends are written and the log synced
