"""The broker's reads of offloaded segments (broker/remote_reader.py): the in-process stripe cache, a real
redis-server as the shared tier (killed mid-read: reads go on), and concurrent misses fetched once."""

from __future__ import annotations

import random
import shutil
import signal

import pytest
import trio

import record_batches as rb
from redis_server import start_redis
from lodestream.broker.remote_reader import RedisStripeCache, RemoteSegmentReader
from lodestream.storage.erasure import Scheme, codec_for
from lodestream.storage.store_urls import open_store
from lodestream.storage.remote_segment import encode_segment
from lodestream.storage.stripe_cache import StripeCache
from lodestream.storage.striped_segment import write_segment

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")


class CountingStore:
    """A real file store that counts ranged reads (how often the fragments were touched); `network` makes the
    reader take the path it takes for S3 stores (pieces fetched in parallel)."""

    def __init__(self, store, network: bool = False) -> None:
        self.store, self.url, self.gets, self.network = store, store.url, 0, network

    def get(self, key, offset=0, length=None):
        self.gets += 1
        return self.store.get(key, offset, length)


@pytest.fixture
def redis_server(tmp_path):
    proc, url = start_redis(tmp_path)
    try:
        yield proc, url
    finally:
        proc.kill()
        proc.wait()


def _segment(tmp_path, network: bool = False):
    rng = random.Random(3)
    batches, entries, offset = [], [], 0
    for _ in range(60):
        count = rng.randint(1, 10)
        batch = rb.build_batch([rb.Record(value=rng.randbytes(2000)) for _ in range(count)], base_offset=offset)
        batches.append(batch)
        entries.append((offset, offset + count - 1, 1_700_000_000_000, len(batch)))
        offset += count
    blob, index_position = encode_segment(batches, entries)
    codec = codec_for(Scheme(4, 2))
    stores = [open_store(f"file://{tmp_path}/store{i}") for i in range(6)]
    layout = write_segment(codec, stores, "t/0/00000000000000000000-r", blob, 32768)
    counting = {store.url: CountingStore(store, network) for store in stores}
    return codec, layout, index_position, batches, entries, counting


async def test_stripes_come_from_memory_then_redis_and_redis_dying_loses_nothing(tmp_path, redis_server):
    proc, url = redis_server
    codec, layout, index_position, batches, entries, stores = _segment(tmp_path)
    redis = RedisStripeCache(url, ttl_s=60)
    limiter = trio.CapacityLimiter(2)
    async with trio.open_nursery() as nursery:
        await nursery.start(redis.run)
        first = RemoteSegmentReader(lambda: stores, limiter, StripeCache(1 << 30), redis)
        expected = batches[5:]
        got = await first.read_batches(codec, layout, index_position, entries[5][0], 1 << 30, entries[-1][1] + 1)
        assert got == expected and 0 < first.store_reads <= layout.stripes and first.redis_hits == 0
        # A second broker (its own memory, the same Redis): every stripe from Redis, no fragment read.
        gets = sum(store.gets for store in stores.values())
        second = RemoteSegmentReader(lambda: stores, limiter, StripeCache(1 << 30), redis)
        assert await second.read_batches(codec, layout, index_position, entries[5][0], 1 << 30,
                                         entries[-1][1] + 1) == expected
        assert second.redis_hits == first.store_reads and second.store_reads == 0
        assert sum(store.gets for store in stores.values()) == gets
        hit_rate = second.redis_hits / (second.redis_hits + second.store_reads)
        print(f"second reader: {second.redis_hits} Redis hits, {second.store_reads} fragment reads "
              f"(hit rate {hit_rate:.0%})")
        # Redis SIGKILLed mid-consume: a third reader still gets identical bytes, from the fragments.
        third = RemoteSegmentReader(lambda: stores, limiter, StripeCache(1 << 30), redis)
        half = await third.read_batches(codec, layout, index_position, 0, 60_000, entries[-1][1] + 1)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        rest = await third.read_batches(codec, layout, index_position, entries[len(half)][0], 1 << 30,
                                        entries[-1][1] + 1)
        assert half + rest == batches
        assert redis.errors > 0 and third.store_reads > 0
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("network", [False, True])
async def test_concurrent_misses_for_a_stripe_read_the_fragments_once(tmp_path, network):
    """Also with two data fragments gone: on the network path, their parity pieces are fetched instead."""
    codec, layout, index_position, batches, entries, stores = _segment(tmp_path, network)
    for index in (0, 2):
        (tmp_path / f"store{index}" / layout.object_key(index)).unlink()
    reader = RemoteSegmentReader(lambda: stores, trio.CapacityLimiter(2), StripeCache(1 << 30))
    results = []

    async def read():
        results.append(await reader.read_batches(codec, layout, index_position, 0, 1 << 30, entries[-1][1] + 1))

    async with trio.open_nursery() as nursery:
        for _ in range(8):
            nursery.start_soon(read)
    assert results == [batches] * 8
    assert reader.store_reads == layout.stripes  # each stripe once, for eight readers
    if network:  # per stripe: the four data pieces asked in parallel, then the two parity ones
        assert sum(store.gets for store in stores.values()) == 6 * layout.stripes
