"""Producer ids, reserved in blocks by the active controller (AllocateProducerIds).

Each block is one ProducerIdsRecord in the metadata log, so an id is never handed out twice, across
restarts and across brokers; ids of a block not used before a restart are simply skipped, as in Kafka.
"""

from __future__ import annotations

from typing import Awaitable, Callable

import trio


class ProducerIdManager:
    def __init__(self, allocate_block: Callable[[], Awaitable[tuple[int, int]]]) -> None:
        self._allocate_block = allocate_block  # -> (first id, count), from the controller
        self._next = 0
        self._end = 0  # exclusive end of the current block
        self._lock = trio.Lock()

    async def allocate(self) -> int:
        """A producer id no one has had before."""
        async with self._lock:  # one reservation at a time; callers behind it use the new block
            if self._next >= self._end:
                start, count = await self._allocate_block()
                self._next, self._end = start, start + count
            producer_id = self._next
            self._next += 1
            return producer_id
