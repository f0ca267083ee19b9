"""Back-pressure and resource limits (docs/limits.md).

* MemoryPool: the broker-wide budget for request bytes (queued.max.request.bytes).
  A connection reserves a frame's size as soon as its 4-byte length is known,
  before reading the body; while the pool is exhausted it simply stops reading
  its socket (TCP flow control pushes back on the client).
* LimitReporter: every limit hit is counted (lodestream_limit_hits_total{limit})
  and logged at most once per interval per limit, with the number suppressed.
* parse_ip_overrides: max.connections.per.ip.overrides, "ip:n,ip:n".
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Callable

import trio

log = logging.getLogger(__name__)

LOG_INTERVAL_S = 60.0

# What the pool charges per request byte. A frame's API is unknown until its body is read, so every
# frame is charged as a Produce: its record bytes exist up to three times at once while it is
# handled (kio's decoded copy, held until the response is built; the batch stamped with its offsets;
# the group commit's LevelDB WriteBatch, both made while its group is written). Other requests give
# back all but one copy as soon as their header is decoded (docs/limits.md).
PRODUCE_CHARGE_FACTOR = 3


class MemoryPool:
    """A trio byte budget with FIFO waiters.

    acquire(n) returns at once when n fits (and nobody is queued before it),
    otherwise waits its turn. A single request larger than the whole pool is
    admitted when the pool is empty (as Kafka does), so it cannot wait forever.
    capacity None = unbounded (only counts usage).
    """

    def __init__(self, capacity: int | None) -> None:
        self.capacity = capacity
        self.used = 0
        self._waiters: deque[list] = deque()  # [size, trio.Event, granted]

    @property
    def available(self) -> int | None:
        return None if self.capacity is None else self.capacity - self.used

    def _fits(self, size: int) -> bool:
        return self.capacity is None or self.used + size <= self.capacity or self.used == 0

    def try_acquire(self, size: int) -> bool:
        if not self._waiters and self._fits(size):
            self.used += size
            return True
        return False

    async def acquire(self, size: int) -> None:
        if self.try_acquire(size):
            await trio.lowlevel.checkpoint()
            return
        waiter = [size, trio.Event(), False]
        self._waiters.append(waiter)
        try:
            await waiter[1].wait()
        except BaseException:
            if waiter[2]:  # granted, but we were cancelled: give it back
                self.release(size)
            else:
                self._waiters.remove(waiter)
                self._wake()  # a smaller waiter behind us may fit now
            raise

    def release(self, size: int) -> None:
        if size <= 0:
            return
        self.used -= size
        assert self.used >= 0, "pool released more than acquired"
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self._fits(self._waiters[0][0]):
            waiter = self._waiters.popleft()
            self.used += waiter[0]
            waiter[2] = True
            waiter[1].set()

    @property
    def waiting(self) -> int:
        return len(self._waiters)


class OncePerInterval:
    """Logs a recurring event at most once per interval per key, with how many were not logged since."""

    def __init__(self, logger: logging.Logger, interval_s: float = LOG_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self.clock = clock
        self._last_logged: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def log(self, key: str, level: int, message: str, *args: object) -> bool:
        """Returns True if this one was logged."""
        now = self.clock()
        last = self._last_logged.get(key)
        if last is not None and now - last < self.interval_s:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return False
        suppressed = self._suppressed.pop(key, 0)
        self._last_logged[key] = now
        suffix = f" ({suppressed} more since the last report)" if suppressed else ""
        self.logger.log(level, message + suffix, *args)
        return True


class LimitReporter:
    """Counts limit hits; logs each limit at most once per interval."""

    def __init__(self, interval_s: float = LOG_INTERVAL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.hits: dict[str, int] = {}
        self._reporter = OncePerInterval(log, interval_s, clock)

    def hit(self, limit: str, message: str, *args: object, level: int = logging.WARNING) -> bool:
        """Record one hit of `limit`; returns True if it was logged."""
        self.hits[limit] = self.hits.get(limit, 0) + 1
        return self._reporter.log(limit, level, "limit %s reached: " + message, limit, *args)


def parse_ip_overrides(value: str) -> dict[str, int]:
    """max.connections.per.ip.overrides: `ip:n[,ip:n]` (IPv6 addresses may be in brackets)."""
    result: dict[str, int] = {}
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        host, sep, count = item.rpartition(":")
        host = host.strip().strip("[]")
        if not sep or not host or not count.strip().isdigit():
            raise ValueError(f"expected ip:count, got {item!r}")
        result[host] = int(count)
    return result
