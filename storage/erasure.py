"""Reed-Solomon erasure coding of sealed segments (issue 16, docs/tiered-storage.md).

A segment's bytes are cut into stripes of `stripe_bytes`; each stripe is encoded into k data and m parity
fragments (pyeclib over ISA-L, systematic: the data fragments hold the stripe as it is). Fragment i of every
stripe goes, in stripe order, into one *fragment object*, which is stored on its own fragment store. Each
stripe's piece of a fragment object is framed as

    crc32c (4 bytes, big-endian) | pyeclib fragment (its 80-byte header, then the payload)

and every piece has the same length (the last stripe is padded by pyeclib), so stripe j of any fragment
object is the byte range [j * piece, (j + 1) * piece): a read needs one stripe's pieces, not whole objects.

A piece whose checksum fails counts as missing. A stripe reads back from any k good pieces: the k data
pieces are joined as they are (no decoding) when they are all good, else pyeclib decodes. Fewer than k
good pieces raise NotEnoughFragments, never wrong bytes.

Synchronous and CPU-bound: callers run it on a worker thread behind a CapacityLimiter.
"""

from __future__ import annotations

import itertools
import os
import re
import struct
from dataclasses import dataclass
from functools import lru_cache

from crc32c import crc32c
from pyeclib.ec_iface import ECDriver

_CRC = struct.Struct(">I")
PIECE_HEADER = _CRC.size
DEFAULT_SCHEME = "rs:4+2"
DEFAULT_STRIPE_BYTES = 1 << 20
MAX_K, MAX_M = 16, 6  # ISA-L's Reed-Solomon handles more; these bound the decodability check below
# Tried in order; the first whose every loss pattern of up to m fragments decodes is used. isa_l_rs_vand's
# Vandermonde matrix is not invertible for some patterns once m >= 5 (intel/isa-l#46); Cauchy always is.
BACKENDS = ("isa_l_rs_vand", "isa_l_rs_cauchy")


class ErasureError(Exception):
    """A scheme that cannot be used, or a stripe that cannot be read back."""


class NotEnoughFragments(ErasureError):
    """Fewer than k good pieces of a stripe: the data cannot be rebuilt (the caller answers an error)."""


@dataclass(frozen=True, slots=True)
class Scheme:
    """A Reed-Solomon scheme: k data fragments plus m parity fragments; any k of the k+m rebuild the data."""

    k: int
    m: int

    @classmethod
    def parse(cls, text: str) -> "Scheme":
        """'rs:4+2' -> Scheme(4, 2); ErasureError naming what is wrong otherwise."""
        found = re.fullmatch(r"rs:(\d+)\+(\d+)", text.strip())
        if found is None:
            raise ErasureError(f"erasure code {text!r}: expected rs:K+M, e.g. {DEFAULT_SCHEME}")
        k, m = int(found.group(1)), int(found.group(2))
        if not (2 <= k <= MAX_K and 1 <= m <= MAX_M):
            raise ErasureError(f"erasure code {text!r}: K must be 2-{MAX_K} and M 1-{MAX_M}")
        return cls(k, m)

    @property
    def width(self) -> int:
        return self.k + self.m

    def __str__(self) -> str:
        return f"rs:{self.k}+{self.m}"


@lru_cache(maxsize=None)
def codec_for(scheme: Scheme) -> "Codec":
    """The codec of a scheme, its backend checked once per process (see BACKENDS)."""
    return Codec(scheme)


class Codec:
    def __init__(self, scheme: Scheme) -> None:
        self.scheme = scheme
        for backend in BACKENDS:
            driver = ECDriver(k=scheme.k, m=scheme.m, ec_type=backend)
            if _decodes_every_loss(driver, scheme):
                self.backend, self._driver = backend, driver
                break
        else:
            raise ErasureError(f"{scheme}: no backend decodes every loss of up to {scheme.m} fragments")

    # -- writing ---------------------------------------------------------------------------------------
    def encode(self, data: bytes | memoryview, stripe_bytes: int = DEFAULT_STRIPE_BYTES) -> list[bytes]:
        """The k+m fragment objects of `data` (fragment i of every stripe, framed, in stripe order). The
        last stripe is padded to `stripe_bytes` so every piece has one size."""
        if stripe_bytes <= 0:
            raise ErasureError("stripe size must be positive")
        view = memoryview(data)
        objects: list[list[bytes]] = [[] for _ in range(self.scheme.width)]
        for start in range(0, max(len(view), 1), stripe_bytes):
            stripe = bytes(view[start:start + stripe_bytes])
            if len(stripe) < stripe_bytes:
                stripe += bytes(stripe_bytes - len(stripe))
            for index, fragment in enumerate(self._driver.encode(stripe)):
                objects[index].append(_CRC.pack(crc32c(fragment)) + fragment)
        return [b"".join(pieces) for pieces in objects]

    # -- reading ---------------------------------------------------------------------------------------
    @staticmethod
    def good(piece: bytes | None) -> bytes | None:
        """The pyeclib fragment inside a framed piece, None if the piece is missing or its checksum fails."""
        if piece is None or len(piece) <= PIECE_HEADER:
            return None
        fragment = piece[PIECE_HEADER:]
        return fragment if crc32c(fragment) == _CRC.unpack_from(piece)[0] else None

    def decode_stripe(self, pieces: dict[int, bytes | None]) -> bytes:
        """One stripe (padded to the stripe size) from its pieces by fragment index; missing or corrupt ones
        are skipped. NotEnoughFragments when fewer than k are good."""
        k = self.scheme.k
        fragments = {index: fragment for index, piece in pieces.items()
                     if 0 <= index < self.scheme.width and (fragment := self.good(piece)) is not None}
        if len(fragments) < k:
            raise NotEnoughFragments(f"{len(fragments)} good fragments of {self.scheme.width}, {k} needed")
        if all(index in fragments for index in range(k)):  # systematic: the data fragments are the stripe
            return _join_data([fragments[index] for index in range(k)])
        try:
            return self._driver.decode([fragments[index] for index in sorted(fragments)[:k]])
        except Exception as exc:  # pyeclib raises its own error types; a checksummed piece should not get here
            raise NotEnoughFragments(f"decoding failed: {exc}") from None

    def rebuild(self, pieces: dict[int, bytes | None], missing: list[int]) -> dict[int, bytes]:
        """The framed pieces of fragments `missing`, rebuilt from the good ones (repair)."""
        fragments = [fragment for index, piece in sorted(pieces.items())
                     if index not in missing and (fragment := self.good(piece)) is not None]
        if len(fragments) < self.scheme.k:
            raise NotEnoughFragments(f"{len(fragments)} good fragments of {self.scheme.width}, "
                                     f"{self.scheme.k} needed")
        rebuilt = self._driver.reconstruct(fragments[:self.scheme.k], list(missing))
        return {index: _CRC.pack(crc32c(fragment)) + fragment for index, fragment in zip(missing, rebuilt)}


# liberasurecode's fragment header (fragment_header_t, 80 bytes) starts with the fragment index, the payload
# size and the backend metadata size (uint32 each), then the stripe's original size (uint64), little-endian.
_FRAGMENT_HEADER = 80
_HEADER_SIZES = struct.Struct("<IIIQ")


def _join_data(fragments: list[bytes]) -> bytes:
    """A stripe from its k data fragments (systematic code): their payloads in order, cut to its size."""
    _, _, _, original = _HEADER_SIZES.unpack_from(fragments[0])
    joined = b"".join(fragment[_FRAGMENT_HEADER:_FRAGMENT_HEADER + _HEADER_SIZES.unpack_from(fragment)[1]]
                      for fragment in fragments)
    return joined[:original]


def _decodes_every_loss(driver: ECDriver, scheme: Scheme) -> bool:
    """Whether every loss of up to m of the k+m fragments still decodes a test stripe exactly."""
    sample = os.urandom(scheme.k * 64)
    fragments = driver.encode(sample)
    for lost in range(1, scheme.m + 1):
        for gone in itertools.combinations(range(scheme.width), lost):
            kept = [fragment for index, fragment in enumerate(fragments) if index not in gone]
            try:
                if driver.decode(kept[:scheme.k]) != sample:
                    return False
            except Exception:  # pyeclib's errors for a matrix it cannot invert
                return False
    return True
