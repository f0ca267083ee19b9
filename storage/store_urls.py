"""The fragment store a `remote.fragment.stores` URL names (docs/tiered-storage.md)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

from lodestream.storage.fragment_store import FileFragmentStore, FragmentStore, FragmentStoreError
from lodestream.storage.s3_store import S3FragmentStore


def open_store(url: str) -> FragmentStore:
    """The store a `remote.fragment.stores` URL names; FragmentStoreError for an unknown scheme."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise FragmentStoreError(f"{url}: a file:// store is a local directory (file:///path)")
        return FileFragmentStore(url, Path(unquote(parsed.path)))
    if parsed.scheme == "s3":
        return S3FragmentStore(url)
    raise FragmentStoreError(f"{url}: unknown fragment store scheme {parsed.scheme!r} (file:// or s3://)")
