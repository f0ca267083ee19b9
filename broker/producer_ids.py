"""Producer ids, reserved in blocks through the metadata log.

Each block of BLOCK_SIZE ids is one ProducerIdsRecord, so an id is never
handed out twice, across restarts and (later) across brokers; ids of a block
not used before a restart are simply skipped, as in Kafka.
"""

from __future__ import annotations

from typing import Awaitable, Callable

import trio

from lodestream.consensus.image import MetadataImage
from lodestream.consensus.records import MetadataRecord, ProducerIdsRecord

BLOCK_SIZE = 1000  # Kafka's ProducerIdsBlock size


class ProducerIdManager:
    def __init__(self, node_id: int, image: Callable[[], MetadataImage],
                 propose: Callable[[list[MetadataRecord]], Awaitable[MetadataImage]]) -> None:
        self._node_id = node_id
        self._image = image
        self._propose = propose
        self._next = 0
        self._end = 0  # exclusive end of the current block
        self._lock = trio.Lock()

    async def allocate(self) -> int:
        """A producer id no one has had before."""
        async with self._lock:  # one reservation at a time; callers behind it use the new block
            if self._next >= self._end:
                # Single writer of these records for now (one broker); with several brokers the
                # controller must hand out blocks (Kafka's AllocateProducerIds).
                start = self._image().next_producer_id
                await self._propose([ProducerIdsRecord(self._node_id, start + BLOCK_SIZE)])
                self._next, self._end = start, start + BLOCK_SIZE
            producer_id = self._next
            self._next += 1
            return producer_id
