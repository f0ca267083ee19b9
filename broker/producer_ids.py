"""Producer ids, reserved in blocks through the metadata log.

Each block of BLOCK_SIZE ids is one ProducerIdsRecord, so an id is never
handed out twice, across restarts and (later) across brokers; ids of a block
not used before a restart are simply skipped, as in Kafka.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from lodestream.consensus.records import ProducerIdsRecord

if TYPE_CHECKING:
    from lodestream.broker.broker import Broker

BLOCK_SIZE = 1000  # Kafka's ProducerIdsBlock size


class ProducerIdManager:
    def __init__(self, broker: "Broker") -> None:
        self._broker = broker
        self._next = 0
        self._end = 0  # exclusive end of the current block
        self._lock = trio.Lock()

    async def allocate(self) -> int:
        """A producer id no one has had before."""
        async with self._lock:  # one reservation at a time; callers behind it use the new block
            if self._next >= self._end:
                # Single writer of these records for now (one broker); with several brokers the
                # controller must hand out blocks (Kafka's AllocateProducerIds).
                start = self._broker.image.next_producer_id
                await self._broker.propose([ProducerIdsRecord(self._broker.node_id, start + BLOCK_SIZE)])
                self._next, self._end = start, start + BLOCK_SIZE
            producer_id = self._next
            self._next += 1
            return producer_id
