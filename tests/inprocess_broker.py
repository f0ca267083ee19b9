"""A real Broker on a real loopback socket (port 0), inside the test's trio run."""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import trio

from lodestream.broker.broker import Broker
from lodestream.broker.config import BrokerConfig
from lodestream.broker.lifecycle import serve_broker
from wire_client import WireClient


class RunningBroker:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    @property
    def port(self) -> int:
        return self.broker.bound_listeners[0].port

    async def client(self) -> WireClient:
        return await WireClient.connect(self.port)


async def start_broker(nursery: trio.Nursery, data_dir: Path, **overrides: str) -> RunningBroker:
    settings = {"listeners": "PLAINTEXT://127.0.0.1:0", "log.dirs": str(data_dir), **overrides}
    broker = Broker(BrokerConfig(settings))
    broker.open()
    await nursery.start(functools.partial(serve_broker, broker, services=False))  # the CLI's lifecycle
    return RunningBroker(broker)


@contextlib.asynccontextmanager
async def broker_at(data_dir: Path, with_transactions: bool = True, **overrides: str):
    """A broker on data_dir and a client; leaving the block stops it (the next one on the dir is a restart).

    with_transactions=False runs the partition layer alone (no transaction coordinator)."""
    async with trio.open_nursery() as nursery:
        running = await start_broker(nursery, data_dir, **overrides)
        if not with_transactions:
            running.broker.transactions = None
        client = await running.client()
        try:
            yield running, client
        finally:
            await client.aclose()
            nursery.cancel_scope.cancel()
    running.broker.close()
