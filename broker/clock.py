"""The broker's clock: one place that says what "now" is for deadlines and for timestamps.

Both readings advance with trio's clock, so tests under trio.testing.MockClock move
session timeouts, transaction timeouts and offset retention together.
"""

from __future__ import annotations

import time

import trio


class Clock:
    def __init__(self) -> None:
        self._wall_base: tuple[float, float] | None = None  # (trio time, wall ms) at the first wall reading

    def monotonic_ms(self) -> int:
        """The trio clock in ms: deadlines and timeouts."""
        return int(trio.current_time() * 1000)

    def wall_ms(self) -> int:
        """Epoch ms for stored timestamps (commit times, retention, transaction start), advancing with trio's clock."""
        try:
            now = trio.current_time()
        except RuntimeError:  # outside trio (tools, tests of pure logic)
            return int(time.time() * 1000)
        if self._wall_base is None:
            self._wall_base = (now, time.time() * 1000)
        return int(self._wall_base[1] + (now - self._wall_base[0]) * 1000)
