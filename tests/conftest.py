"""Fixtures for the in-process tests; helpers live in importable modules beside this file."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import trio

sys.path.insert(0, str(Path(__file__).parent))

from inprocess_broker import start_broker  # noqa: E402


@pytest.fixture
async def running_broker(tmp_path):
    """A broker serving on 127.0.0.1:<random port>, stopped at the end of the test."""
    async with trio.open_nursery() as nursery:
        running = await start_broker(nursery, tmp_path / "data")
        yield running
        nursery.cancel_scope.cancel()
    running.broker.close()
