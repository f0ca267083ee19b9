"""Reads of an offloaded segment against reads of the same batches from the local LevelDB log:

    .venv/bin/python bench/remote_reads.py [--megabytes 64] [--scheme rs:4+2] [--stores file|seaweedfs]

One segment of ~16 KiB batches is appended to a LevelDB partition log and also offloaded (batches plus
index, erasure-coded, 1 MiB stripes) to k+m stores: directories, or one SeaweedFS process per store. Then
the whole segment is read in 1 MiB fetches (broker/remote_reader.RemoteSegmentReader, the path Fetch will
take) in five ways, and MB/s of batch bytes is printed for each:

  local        PartitionLog.read (the LevelDB log)
  cold         from the fragment stores (the k data pieces of each stripe, no decoding)
  degraded     cold with m stores gone (every stripe decoded from parity)
  redis-warm   a fresh in-process cache, every stripe in a real redis-server
  memory-warm  every stripe in the in-process cache

All on this machine (2 cores, shared): compare the ratios, not the absolute figures.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import record_batches as rb  # noqa: E402
from redis_server import start_redis  # noqa: E402
from lodestream.broker.remote_reader import RedisStripeCache, RemoteSegmentReader  # noqa: E402
from lodestream.protocol.record_batch import split_batches, stamp_for_append  # noqa: E402
from lodestream.storage.erasure import Scheme, codec_for  # noqa: E402
from lodestream.storage.leveldb_log import LogStore  # noqa: E402
from lodestream.storage.remote_segment import encode_segment  # noqa: E402
from lodestream.storage.store_urls import open_store  # noqa: E402
from lodestream.storage.stripe_cache import StripeCache  # noqa: E402
from lodestream.storage.striped_segment import write_segment  # noqa: E402

FETCH_BYTES = 1 << 20


def build_batches(megabytes: int) -> list[bytes]:
    batches, offset, total = [], 0, 0
    while total < megabytes << 20:
        batch = rb.build_batch([rb.Record(value=os.urandom(1024)) for _ in range(16)], base_offset=offset)
        batches.append(batch)
        offset += 16
        total += len(batch)
    return batches


def local_read_mb_s(directory: Path, batches: list[bytes]) -> float:
    store = LogStore(directory / "log", sync_writes=False)
    log = store.partition(uuid.uuid4(), 0)
    for start in range(0, len(batches), 256):
        entries = [(h.last_offset_delta, h.max_timestamp, h.size, v)
                   for raw in batches[start:start + 256] for h, v in split_batches(raw)]
        pending = log.prepare_append(entries, lambda view, base: stamp_for_append(view, base, 0, None))
        store.write([pending])
        log.complete_append(pending)
    end, total, offset = log.log_end_offset, 0, 0
    started = time.perf_counter()
    while offset < end:
        read = log.read(offset, FETCH_BYTES, end)
        total += sum(map(len, read))
        offset = rb.decode_batch(read[-1]).last_offset + 1
    seconds = time.perf_counter() - started
    store.close()
    return total / 1e6 / seconds


async def remote_read_mb_s(reader, codec, layout, index_position, end_offset) -> float:
    offset, total = 0, 0
    started = time.perf_counter()
    while offset < end_offset:
        read = await reader.read_batches(codec, layout, index_position, offset, FETCH_BYTES, end_offset)
        total += sum(map(len, read))
        offset = rb.decode_batch(read[-1]).last_offset + 1
    return total / 1e6 / (time.perf_counter() - started)


async def main_async(args, directory: Path) -> None:
    batches = build_batches(args.megabytes)
    print(f"{len(batches)} batches, {sum(map(len, batches)) / 1e6:.1f} MB; {args.scheme}, 1 MiB stripes, "
          f"{args.stores} stores; 1 MiB fetches")
    print(f"local        {local_read_mb_s(directory, batches):8.0f} MB/s")
    scheme = Scheme.parse(args.scheme)
    codec = codec_for(scheme)
    nodes = []
    if args.stores == "seaweedfs":
        from seaweedfs import SeaweedFS
        nodes = [SeaweedFS(directory / f"node{i}") for i in range(scheme.width)]
        for node in nodes:
            node.start()
        urls = [node.store_url(f"domain{i}") for i, node in enumerate(nodes)]
    else:
        urls = [f"file://{directory}/store{i}" for i in range(scheme.width)]
    redis_proc = None
    try:
        stores = [open_store(url) for url in urls]
        entries = []
        for batch in batches:
            header = rb.decode_batch(batch)
            entries.append((header.base_offset, header.last_offset, header.max_timestamp, len(batch)))
        blob, index_position = encode_segment(batches, entries)
        layout = write_segment(codec, stores, "bench/0/00000000000000000000-s", blob, 1 << 20)
        by_url = {store.url: store for store in stores}
        end_offset = entries[-1][1] + 1
        limiter = trio.CapacityLimiter(2)
        cold = RemoteSegmentReader(lambda: by_url, limiter, StripeCache(0))
        print(f"cold         {await remote_read_mb_s(cold, codec, layout, index_position, end_offset):8.0f} MB/s")
        gone = {url: store for url, store in by_url.items() if url not in layout.stores[:scheme.m]}
        degraded = RemoteSegmentReader(lambda: gone, limiter, StripeCache(0))
        print(f"degraded     {await remote_read_mb_s(degraded, codec, layout, index_position, end_offset):8.0f} MB/s"
              f"  ({scheme.m} of {scheme.width} stores gone)")
        if shutil.which("redis-server"):
            redis_proc, url = start_redis(directory)
            redis = RedisStripeCache(url, ttl_s=600, timeout_s=1.0)
            async with trio.open_nursery() as nursery:
                await nursery.start(redis.run)
                fill = RemoteSegmentReader(lambda: by_url, limiter, StripeCache(0), redis)
                await remote_read_mb_s(fill, codec, layout, index_position, end_offset)
                warm = RemoteSegmentReader(lambda: by_url, limiter, StripeCache(0), redis)
                figure = await remote_read_mb_s(warm, codec, layout, index_position, end_offset)
                print(f"redis-warm   {figure:8.0f} MB/s  ({warm.redis_hits} Redis hits, "
                      f"{warm.store_reads} fragment reads)")
                nursery.cancel_scope.cancel()
        memory = RemoteSegmentReader(lambda: by_url, limiter, StripeCache(1 << 34))
        await remote_read_mb_s(memory, codec, layout, index_position, end_offset)
        print(f"memory-warm  {await remote_read_mb_s(memory, codec, layout, index_position, end_offset):8.0f} MB/s")
    finally:
        if redis_proc is not None:
            redis_proc.kill()
            redis_proc.wait()
        for node in nodes:
            node.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--megabytes", type=int, default=64)
    parser.add_argument("--scheme", default="rs:4+2")
    parser.add_argument("--stores", choices=["file", "seaweedfs"], default="file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        trio.run(main_async, args, Path(directory))


if __name__ == "__main__":
    main()
