"""A sealed segment stored as erasure-coded fragment objects, one per fragment store (docs/tiered-storage.md).

`write_segment` encodes the segment's bytes (its batches, in offset order) and puts fragment i on store i;
`read_range` reads bytes back stripe by stripe, fetching only the pieces of the stripes the range covers:
the k data pieces first, then as many others as missing or corrupt ones need. `check_fragments` and
`repair` are the scrubber's: which pieces fail their checksum, and rebuilding them onto a store.

Synchronous (file and network I/O, coding): callers run it on a worker thread behind a CapacityLimiter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from lodestream.storage.erasure import Codec, Scheme
from lodestream.storage.fragment_store import FragmentStore, FragmentStoreError


@dataclass(frozen=True, slots=True)
class SegmentLayout:
    """Where a segment's fragments are and how to cut them: what its manifest records."""

    key: str  # the objects are `<key>.<fragment index>`
    scheme: Scheme
    length: int  # the segment's bytes
    stripe_bytes: int
    piece_size: int  # framed piece of one stripe in a fragment object
    stores: tuple[str, ...]  # store URL of fragment i

    @property
    def stripes(self) -> int:
        return max(1, -(-self.length // self.stripe_bytes))

    def object_key(self, index: int) -> str:
        return f"{self.key}.{index}"


def write_segment(codec: Codec, stores: list[FragmentStore], key: str, data: bytes, stripe_bytes: int,
                  written: Callable[[int], None] = lambda index: None) -> SegmentLayout:
    """Encode `data` and put fragment i on stores[i] (k+m distinct stores), calling `written(i)` after each;
    durable and checked whole on return. Raises FragmentStoreError if a store refuses (the caller deletes what was written
    and retries later)."""
    width = codec.scheme.width
    if len(stores) != width or len({store.url for store in stores}) != width:
        raise FragmentStoreError(f"{codec.scheme} needs {width} distinct stores, got {[s.url for s in stores]}")
    objects = codec.encode(data, stripe_bytes)
    stripes = max(1, -(-len(data) // stripe_bytes))  # as SegmentLayout.stripes: every piece has one size
    layout = SegmentLayout(key, codec.scheme, len(data), stripe_bytes, len(objects[0]) // stripes,
                           tuple(store.url for store in stores))
    for index, (store, blob) in enumerate(zip(stores, objects)):
        store.put(layout.object_key(index), blob)
        written(index)
    for index, (store, blob) in enumerate(zip(stores, objects)):  # each store has all of it (S3: HEAD)
        if store.size(layout.object_key(index)) != len(blob):
            raise FragmentStoreError(f"{store.url}: {layout.object_key(index)} is not the {len(blob)} bytes written")
    return layout


def read_range(codec: Codec, layout: SegmentLayout, stores: dict[str, FragmentStore], start: int, end: int) -> bytes:
    """The segment's bytes [start, end), stripe by stripe (the broker reads through its caches instead:
    broker/remote_reader.py). NotEnoughFragments when a stripe has fewer than k good pieces."""
    end = min(end, layout.length)
    if start >= end:
        return b""
    first, last = start // layout.stripe_bytes, (end - 1) // layout.stripe_bytes
    data = b"".join(read_stripe(codec, layout, stores, stripe) for stripe in range(first, last + 1))
    offset = first * layout.stripe_bytes
    return data[start - offset:end - offset]


def read_stripe(codec: Codec, layout: SegmentLayout, stores: dict[str, FragmentStore], stripe: int) -> bytes:
    """One stripe: the k data pieces, then parity pieces one by one while fewer than k are good."""
    k = layout.scheme.k
    pieces: dict[int, bytes | None] = {}
    good = 0
    for index in range(layout.scheme.width):
        if index >= k and good >= k:
            break
        piece = read_piece(layout, stores, index, stripe)
        pieces[index] = piece
        good += codec.good(piece) is not None
    return codec.decode_stripe(pieces)


def read_piece(layout: SegmentLayout, stores: dict[str, FragmentStore], index: int, stripe: int) -> bytes | None:
    """Fragment `index`'s framed piece of one stripe; None when it or its store is missing or unreachable."""
    store = stores.get(layout.stores[index])
    if store is None:
        return None
    try:
        return store.get(layout.object_key(index), stripe * layout.piece_size, layout.piece_size)
    except FragmentStoreError:  # missing, or its store unreachable: another fragment replaces it
        return None


def check_fragments(codec: Codec, layout: SegmentLayout, stores: dict[str, FragmentStore]) -> dict[int, list[int]]:
    """{fragment index: stripes whose piece is missing or fails its checksum} (empty when healthy)."""
    bad: dict[int, list[int]] = {}
    for index in range(layout.scheme.width):
        stripes = check_fragment(codec, layout, stores, index)
        if stripes:
            bad[index] = stripes
    return bad


def check_fragment(codec: Codec, layout: SegmentLayout, stores: dict[str, FragmentStore], index: int) -> list[int]:
    """The stripes of fragment `index` whose piece is missing, cut short or fails its checksum (the scrubber's
    check: the whole object in one read)."""
    store = stores.get(layout.stores[index])
    try:
        blob = store.get(layout.object_key(index)) if store is not None else b""
    except FragmentStoreError:
        blob = b""
    size = layout.piece_size
    return [stripe for stripe in range(layout.stripes)
            if codec.good(blob[stripe * size:(stripe + 1) * size]) is None]


def repair(codec: Codec, layout: SegmentLayout, stores: dict[str, FragmentStore], index: int,
           target: FragmentStore) -> SegmentLayout:
    """Rebuild fragment `index` from the others, every stripe, and put it on `target` (its old store or a
    new one); returns the layout with that fragment's store. NotEnoughFragments if a stripe cannot be."""
    rebuilt = []
    for stripe in range(layout.stripes):
        pieces = {i: read_piece(layout, stores, i, stripe) for i in range(layout.scheme.width) if i != index}
        rebuilt.append(codec.rebuild(pieces, [index])[index])
    target.put(layout.object_key(index), b"".join(rebuilt))
    moved = list(layout.stores)
    moved[index] = target.url
    return SegmentLayout(layout.key, layout.scheme, layout.length, layout.stripe_bytes, layout.piece_size,
                         tuple(moved))

