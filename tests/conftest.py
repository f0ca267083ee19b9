"""In-process broker fixtures: a real Broker on a real loopback socket, port 0."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import trio

sys.path.insert(0, str(Path(__file__).parent))

from broker.broker import Broker  # noqa: E402
from broker.config import BrokerConfig  # noqa: E402
from broker.server import serve_listeners  # noqa: E402
from wire_client import WireClient  # noqa: E402


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
    nursery.start_soon(broker.replicas.run_committer)
    nursery.start_soon(broker.replicas.run_flusher)
    await nursery.start(serve_listeners, broker)
    return RunningBroker(broker)


@pytest.fixture
async def running_broker(tmp_path):
    """A broker serving on 127.0.0.1:<random port>, stopped at the end of the test."""
    async with trio.open_nursery() as nursery:
        running = await start_broker(nursery, tmp_path / "data")
        yield running
        nursery.cancel_scope.cancel()
    running.broker.close()
