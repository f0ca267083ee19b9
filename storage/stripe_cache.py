"""The in-process read cache of offloaded segments' stripes (docs/tiered-storage.md): decoded stripes by
(segment key, stripe), least recently used first out, bounded in bytes. Thread-safe: reads fill it from
worker threads."""

from __future__ import annotations

import threading
from collections import OrderedDict

StripeKey = tuple[str, int]  # (the segment's SegmentLayout.key, stripe index)


class StripeCache:
    def __init__(self, capacity_bytes: int) -> None:
        self.capacity_bytes = capacity_bytes
        self.size_bytes = 0
        self.hits = 0
        self.misses = 0
        self._stripes: OrderedDict[StripeKey, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: StripeKey) -> bytes | None:
        with self._lock:
            stripe = self._stripes.get(key)
            if stripe is None:
                self.misses += 1
                return None
            self._stripes.move_to_end(key)
            self.hits += 1
            return stripe

    def put(self, key: StripeKey, stripe: bytes) -> None:
        """Keep a stripe (one larger than the whole cache is not kept), evicting the least recently used."""
        if len(stripe) > self.capacity_bytes:
            return
        with self._lock:
            previous = self._stripes.pop(key, None)
            if previous is not None:
                self.size_bytes -= len(previous)
            self._stripes[key] = stripe
            self.size_bytes += len(stripe)
            while self.size_bytes > self.capacity_bytes:
                _, evicted = self._stripes.popitem(last=False)
                self.size_bytes -= len(evicted)

    def drop_segment(self, segment_key: str) -> None:
        """Forget a deleted segment's stripes."""
        with self._lock:
            for key in [key for key in self._stripes if key[0] == segment_key]:
                self.size_bytes -= len(self._stripes.pop(key))
