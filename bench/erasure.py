"""Erasure coding speed on one core (storage/erasure.py), per scheme:

    .venv/bin/python bench/erasure.py [--megabytes 64] [--stripe-kib 1024]

Best of three passes. encode: segment bytes in -> k+m framed fragment objects (checksums included); read healthy: every stripe from its k data pieces
(checksums checked, no decoding); read degraded: every stripe with m fragments lost (checksums + decoding).
Figures are MB/s of segment data on one core; docs/benchmarks.md records them.
"""

from __future__ import annotations

import argparse
import os
import time

from lodestream.storage.erasure import Scheme, codec_for

SCHEMES = ["rs:4+2", "rs:6+3", "rs:8+4", "rs:10+4", "rs:8+5"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--megabytes", type=int, default=64)
    parser.add_argument("--stripe-kib", type=int, default=1024)
    args = parser.parse_args()
    data = os.urandom(args.megabytes << 20)
    stripe = args.stripe_kib << 10
    megabytes = len(data) / 1e6
    print(f"{args.megabytes} MiB of random bytes, {args.stripe_kib} KiB stripes, one core")
    print(f"{'scheme':8} {'backend':16} {'overhead':>8} {'encode MB/s':>12} {'read healthy MB/s':>18} "
          f"{'read m lost MB/s':>17}")
    for text in SCHEMES:
        scheme = Scheme.parse(text)
        codec = codec_for(scheme)
        encode = 0.0
        for _ in range(3):  # the best of three: the first pass also pays for page faults
            started = time.perf_counter()
            objects = codec.encode(data, stripe)
            encode = max(encode, megabytes / (time.perf_counter() - started))
        stripes = -(-len(data) // stripe)
        piece = len(objects[0]) // stripes
        views = [memoryview(blob) for blob in objects]

        def read(lost: set[int]) -> float:
            best = 0.0
            for _ in range(3):
                started = time.perf_counter()
                for j in range(stripes):
                    codec.decode_stripe({i: bytes(views[i][j * piece:(j + 1) * piece])
                                         for i in range(scheme.width) if i not in lost})
                best = max(best, megabytes / (time.perf_counter() - started))
            return best

        healthy = read(set())
        degraded = read(set(range(scheme.m)))  # data fragments lost: every stripe is decoded
        overhead = sum(map(len, objects)) / len(data)
        print(f"{text:8} {codec.backend:16} {overhead:7.2f}x {encode:12.0f} {healthy:18.0f} {degraded:17.0f}")


if __name__ == "__main__":
    main()
