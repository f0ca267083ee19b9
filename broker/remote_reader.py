"""Reads of offloaded segments for the broker (docs/tiered-storage.md): stripes through two cache tiers, each
stripe fetched once however many readers want it at the same time.

1. The in-process stripe cache (storage/stripe_cache.py), bounded in bytes.
2. Optionally Redis (`remote.cache.redis.url`), shared by the brokers. Stripes are kept there for a TTL and
   within Redis's own memory limit. Redis down or slow (each call is bounded by a short timeout) is a miss:
   reads go on from the fragments, and `redis_errors` counts it for the metrics.
3. The fragment stores. From network stores (S3) the k data pieces of the stripe are fetched in parallel
   (worker threads behind the fetch limiter); a parity piece is asked for each missing or corrupt one, and
   one more whenever `hedge_s` passes with no piece arriving (a slow store); the stripe is decoded (when
   needed) from the first k good pieces behind the io limiter. From local directories one worker thread reads
   the stripe (a thread per piece costs more than it saves there).

A segment's batch index is kept per segment after its first read.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Callable

import trio

from lodestream.storage.erasure import Codec
from lodestream.storage.fragment_store import FragmentStore
from lodestream.storage.remote_segment import SegmentIndex, split_batches
from lodestream.storage.striped_segment import SegmentLayout, read_piece, read_stripe
from lodestream.storage.stripe_cache import StripeCache

log = logging.getLogger(__name__)

INDEXES_KEPT = 1024  # segment indexes kept in memory (a few KiB to a few MiB each)


class RedisStripeCache:
    """The shared stripe tier on Redis (coredis, on trio). `run()` holds the client open; until it does, and
    whenever Redis fails or is slower than `timeout_s`, get is a miss and put does nothing."""

    def __init__(self, url: str, ttl_s: int, timeout_s: float = 0.1) -> None:
        self.url = url
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self.errors = 0
        self._client = None
        self._last_error_logged = float("-inf")

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        import coredis  # only brokers with a Redis tier need it
        from coredis.retry import NoRetryPolicy

        client = coredis.Redis.from_url(self.url, connect_timeout=self.timeout_s, stream_timeout=self.timeout_s,
                                        retry_policy=NoRetryPolicy())
        async with client:  # connects lazily, and again after Redis comes back
            self._client = client
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._client = None

    async def get(self, key: str) -> bytes | None:
        if self._client is None:
            return None
        with trio.move_on_after(self.timeout_s):
            try:
                return await self._client.get(key)
            except Exception as exc:  # coredis's connection and protocol errors: a miss
                self._failed(exc)
                return None
        self._failed(TimeoutError(f"slower than {self.timeout_s}s"))
        return None

    async def put(self, key: str, stripe: bytes) -> None:
        if self._client is None:
            return
        with trio.move_on_after(self.timeout_s):
            try:
                await self._client.set(key, stripe, ex=self.ttl_s)
            except Exception as exc:
                self._failed(exc)

    def _failed(self, exc: Exception) -> None:
        self.errors += 1
        now = trio.current_time()
        if now - self._last_error_logged > 60:  # once a minute: Redis down must not flood the log
            self._last_error_logged = now
            log.warning("Redis stripe cache %s: %s (reads go on from the fragment stores)", self.url, exc)


class RemoteSegmentReader:
    def __init__(self, stores: Callable[[], dict[str, FragmentStore]], limiter: trio.CapacityLimiter,
                 cache: StripeCache, redis: RedisStripeCache | None = None,
                 fetch_limiter: trio.CapacityLimiter | None = None, hedge_s: float = 0.1) -> None:
        self.stores = stores  # store URL -> store (the broker's configured ones)
        self.limiter = limiter  # decoding (CPU)
        self.fetch_limiter = fetch_limiter or trio.CapacityLimiter(16)  # piece reads (waiting on stores)
        self.cache = cache
        self.redis = redis
        self.redis_hits = 0
        self.store_reads = 0  # stripes read from the fragment stores
        self.hedge_s = hedge_s  # no piece for this long: ask one more store (a slow one is not waited for)
        self.hedged = 0  # extra piece requests sent because of hedge_s
        self._in_flight: dict[tuple[str, int], trio.Event] = {}
        self._indexes: OrderedDict[str, SegmentIndex] = OrderedDict()

    async def stripe(self, codec: Codec, layout: SegmentLayout, stripe: int) -> bytes:
        """One decoded stripe. Raises NotEnoughFragments when it cannot be rebuilt."""
        key = (layout.key, stripe)
        while True:
            data = self.cache.get(key)
            if data is not None:
                return data
            pending = self._in_flight.get(key)
            if pending is None:
                break
            await pending.wait()  # another reader is fetching it: take theirs (or fetch it if they failed)
        done = self._in_flight[key] = trio.Event()
        try:
            redis_key = f"lodestream:stripe:{layout.key}:{stripe}"
            data = await self.redis.get(redis_key) if self.redis is not None else None
            if data is not None:
                self.redis_hits += 1
            else:
                data = await self._fetch_stripe(codec, layout, stripe)
                self.store_reads += 1
                if self.redis is not None:
                    await self.redis.put(redis_key, data)
            self.cache.put(key, data)
            return data
        finally:
            del self._in_flight[key]
            done.set()

    async def _fetch_stripe(self, codec: Codec, layout: SegmentLayout, stripe: int) -> bytes:
        """The k data pieces in parallel, with hedging: a parity piece for each one that comes back missing
        or corrupt, and one more whenever `hedge_s` passes without a piece arriving (a slow store). The
        stripe is decoded from the first k good pieces; requests still out are abandoned.
        NotEnoughFragments when fewer than k are good."""
        stores = self.stores()
        if not any(getattr(stores.get(url), "network", False) for url in layout.stores):
            return await trio.to_thread.run_sync(read_stripe, codec, layout, stores, stripe, limiter=self.limiter)
        k = layout.scheme.k
        pieces: dict[int, bytes | None] = {}
        spare = list(range(k, layout.scheme.width))
        arrived_send, arrived = trio.open_memory_channel(layout.scheme.width)

        def read_checked(index: int) -> tuple[int, bytes | None, bool]:
            piece = read_piece(layout, stores, index, stripe)
            return index, piece, codec.good(piece) is not None

        async def fetch(index: int) -> None:
            # abandon_on_cancel: once k pieces are good, a slow store's answer is not waited for.
            await arrived_send.send(await trio.to_thread.run_sync(read_checked, index, limiter=self.fetch_limiter,
                                                                  abandon_on_cancel=True))

        good = out = 0
        async with trio.open_nursery() as nursery:
            for index in range(k):
                nursery.start_soon(fetch, index)
            out = k
            while good < k and out:
                with trio.move_on_after(self.hedge_s) as waited:
                    index, piece, ok = await arrived.receive()
                    out -= 1
                    pieces[index] = piece
                    good += ok
                if (waited.cancelled_caught or not ok) and spare:
                    self.hedged += waited.cancelled_caught
                    nursery.start_soon(fetch, spare.pop(0))
                    out += 1
            nursery.cancel_scope.cancel()
        return await trio.to_thread.run_sync(codec.decode_stripe, pieces, limiter=self.limiter)

    async def read_range(self, codec: Codec, layout: SegmentLayout, start: int, end: int) -> bytes:
        end = min(end, layout.length)
        if start >= end:
            return b""
        first, last = start // layout.stripe_bytes, (end - 1) // layout.stripe_bytes
        data = b"".join([await self.stripe(codec, layout, s) for s in range(first, last + 1)])
        offset = first * layout.stripe_bytes
        return data[start - offset:end - offset]

    async def index(self, codec: Codec, layout: SegmentLayout, index_position: int) -> SegmentIndex:
        index = self._indexes.get(layout.key)
        if index is None:
            blob = await self.read_range(codec, layout, index_position, layout.length)
            index = self._indexes[layout.key] = SegmentIndex.decode(blob, index_position)
            while len(self._indexes) > INDEXES_KEPT:
                self._indexes.popitem(last=False)
        else:
            self._indexes.move_to_end(layout.key)
        return index

    async def read_batches(self, codec: Codec, layout: SegmentLayout, index_position: int, offset: int,
                           max_bytes: int, upper_offset: int) -> list[bytes]:
        """The whole batches a fetch from `offset` gets from this segment (SegmentIndex.batch_range)."""
        index = await self.index(codec, layout, index_position)
        start, end, sizes = index.batch_range(offset, max_bytes, upper_offset)
        return split_batches(await self.read_range(codec, layout, start, end), sizes) if sizes else []
