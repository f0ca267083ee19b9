"""Fragment stores: where the erasure-coded fragment objects of sealed segments live (docs/tiered-storage.md).

Each store is one failure domain. `remote.fragment.stores` lists them as URLs (store_urls.open_store):

* `file:///path`: a directory (the embedded default; a mounted disk or network file system per domain).
* `s3://bucket?endpoint=http://host:port`: any S3-compatible object store (SeaweedFS, MinIO, Ceph RGW,
  a cloud bucket): s3_store.py.

A store keeps objects by key (`<topic id>/<partition>/<base offset>-<segment id>.<fragment index>`), and
answers whole and ranged reads. A put is durable when it returns. Synchronous: callers run it on a worker
thread behind a CapacityLimiter.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Iterator, Protocol


class FragmentStoreError(Exception):
    """A store that cannot be reached, or an object it does not have (see MissingFragment)."""


class MissingFragment(FragmentStoreError):
    pass


class FragmentStore(Protocol):
    url: str
    network: bool  # its reads wait on a network round trip: worth issuing in parallel

    def put(self, key: str, data: bytes) -> None:
        """Store the object durably (replacing one with the same key)."""

    def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        """The object's bytes [offset, offset + length) (to its end when length is None). MissingFragment if
        it is not there."""

    def size(self, key: str) -> int:
        """The object's length in bytes; MissingFragment if it is not there."""

    def delete(self, key: str) -> None:
        """Remove the object; a missing one is not an error."""

    def keys(self, prefix: str = "") -> Iterator[str]:
        """Every stored key starting with prefix (orphan collection, scrub)."""


class FileFragmentStore:
    """A directory: one file per object, written to a temporary name, fsynced and renamed into place."""

    network = False

    def __init__(self, url: str, root: Path) -> None:
        self.url = url
        self.root = root
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise FragmentStoreError(f"{url}: cannot create {root}: {exc}") from None

    def _path(self, key: str) -> Path:
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise FragmentStoreError(f"{self.url}: invalid object key {key!r}")
        return self.root / key

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(temporary, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, path)
            directory = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)  # the rename itself survives a crash
            finally:
                os.close(directory)
        except OSError as exc:
            try:
                temporary.unlink(missing_ok=True)
            except OSError:
                pass  # the directory itself is what failed
            raise FragmentStoreError(f"{self.url}: writing {key}: {exc}") from None

    def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        try:
            with open(self._path(key), "rb") as source:
                source.seek(offset)
                return source.read() if length is None else source.read(length)
        except FileNotFoundError:
            raise MissingFragment(f"{self.url}: no object {key}") from None
        except OSError as exc:
            raise FragmentStoreError(f"{self.url}: reading {key}: {exc}") from None

    def size(self, key: str) -> int:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            raise MissingFragment(f"{self.url}: no object {key}") from None
        except OSError as exc:
            raise FragmentStoreError(f"{self.url}: {key}: {exc}") from None

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink(missing_ok=True)
        except OSError as exc:
            raise FragmentStoreError(f"{self.url}: deleting {key}: {exc}") from None

    def keys(self, prefix: str = "") -> Iterator[str]:
        for directory, _, files in os.walk(self.root):
            for name in files:
                if name.startswith("."):
                    continue  # an interrupted put's temporary file
                key = os.path.relpath(os.path.join(directory, name), self.root).replace(os.sep, "/")
                if key.startswith(prefix):
                    yield key
