"""The s3:// fragment store (storage/s3_store.py) against real SeaweedFS processes, and its AWS Signature
Version 4 against AWS's documented examples."""

from __future__ import annotations

import datetime
import os

import pytest

from lodestream.storage.erasure import NotEnoughFragments, Scheme, codec_for
from lodestream.storage.fragment_store import FragmentStoreError, MissingFragment
from lodestream.storage.store_urls import open_store
from lodestream.storage.s3_store import sign_v4
from lodestream.storage.striped_segment import read_range, write_segment

from seaweedfs import SeaweedFS

EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
AWS_EXAMPLE = ("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")


@pytest.mark.parametrize("path, query, headers, signature", [
    # "Example: GET Object" and "Example: GET Bucket (List Objects)" of AWS's SigV4 documentation for S3
    ("/test.txt", {}, {"range": "bytes=0-9"}, "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"),
    ("/", {"max-keys": "2", "prefix": "J"}, {}, "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"),
])
def test_signature_v4_matches_aws_examples(path, query, headers, signature):
    signed = sign_v4("GET", "examplebucket.s3.amazonaws.com", path, query,
                     {**headers, "x-amz-content-sha256": EMPTY_SHA256}, "us-east-1", *AWS_EXAMPLE,
                     datetime.datetime(2013, 5, 24, tzinfo=datetime.timezone.utc))
    assert signed["authorization"].endswith(f"Signature={signature}")


@pytest.fixture
def seaweed(tmp_path):
    node = SeaweedFS(tmp_path / "seaweed", credentials=("lodestream-key", "lodestream-secret"))
    try:
        node.start()
        yield node
    finally:
        node.stop()


def test_objects_on_a_seaweedfs_node_with_signed_requests(seaweed):
    store = open_store(seaweed.store_url("fragments"))
    store.put("t/0/0-a.0", b"0123456789")
    assert store.get("t/0/0-a.0") == b"0123456789"
    assert store.get("t/0/0-a.0", 2, 4) == b"2345"
    assert store.get("t/0/0-a.0", 6) == b"6789"
    store.put("t/0/0-a.1", b"x" * 100_000)
    assert sorted(store.keys("t/0/")) == ["t/0/0-a.0", "t/0/0-a.1"]
    with pytest.raises(MissingFragment):
        store.get("t/0/none")
    store.delete("t/0/0-a.0")
    store.delete("t/0/0-a.0")
    assert list(store.keys("t/")) == ["t/0/0-a.1"]
    # Without credentials, or with a wrong secret, the node refuses, and the error says so.
    anonymous = open_store(f"s3://fragments?endpoint={seaweed.endpoint}")
    with pytest.raises(FragmentStoreError, match="HTTP 403"):
        anonymous.put("t/0/1-b.0", b"nope")
    forged = open_store(f"s3://fragments?endpoint={seaweed.endpoint}&access_key=lodestream-key&secret_key=wrong")
    with pytest.raises(FragmentStoreError, match="HTTP 403"):
        forged.get("t/0/0-a.1")


def test_store_urls_are_checked():
    for url, message in (("s3://fragments", "needs \\?endpoint"), ("s3://Bad_Bucket?endpoint=http://h:1", "bucket"),
                         ("s3://fragments?endpoint=ftp://h:1", "needs \\?endpoint")):
        with pytest.raises(FragmentStoreError, match=message):
            open_store(url)
    with pytest.raises(FragmentStoreError, match="127.0.0.1:9"):  # nothing listens: a clear error, no hang
        open_store("s3://fragments?endpoint=http://127.0.0.1:9").put("k", b"v")


def test_a_segment_on_two_storage_nodes_survives_one_of_them_dying(tmp_path):
    """rs:4+2 with fragments 0-3 on one SeaweedFS node and 4-5 on another: SIGKILL the second and the
    segment still reads back byte-identical; kill the first too and the read fails clearly."""
    nodes = [SeaweedFS(tmp_path / f"node{i}") for i in range(2)]
    try:
        for node in nodes:
            node.start()
        urls = [nodes[0].store_url(f"domain{i}") for i in range(4)] + [nodes[1].store_url(f"domain{i}") for i in (4, 5)]
        stores = {url.split("&")[0]: open_store(url) for url in urls}
        codec = codec_for(Scheme(4, 2))
        data = os.urandom(700_000)
        layout = write_segment(codec, list(stores.values()), "topic/0/00000000000000000000-s", data, 131072)
        by_url = {store.url: store for store in stores.values()}
        nodes[1].kill()
        assert read_range(codec, layout, by_url, 0, len(data)) == data
        assert read_range(codec, layout, by_url, 300_001, 500_000) == data[300_001:500_000]
        nodes[0].kill()
        with pytest.raises(NotEnoughFragments):
            read_range(codec, layout, by_url, 0, 10)
    finally:
        for node in nodes:
            node.stop()


def test_a_stalled_storage_node_is_hedged_around_not_waited_for(tmp_path):
    """rs:2+2 with the data fragments on a node that stops answering (SIGSTOP, not dead: its connections
    stay open). The broker's reader asks a parity store each time 100 ms pass with no piece, so the
    stripe comes back in well under the S3 request timeout, decoded from the parity pieces."""
    import signal

    import trio

    from lodestream.broker.remote_reader import RemoteSegmentReader
    from lodestream.storage.s3_store import TIMEOUT_S
    from lodestream.storage.stripe_cache import StripeCache

    nodes = [SeaweedFS(tmp_path / f"node{i}") for i in range(2)]
    try:
        for node in nodes:
            node.start()
        urls = [nodes[0].store_url(f"domain{i}") for i in (0, 1)] + [nodes[1].store_url(f"domain{i}") for i in (2, 3)]
        stores = [open_store(url) for url in urls]
        codec = codec_for(Scheme(2, 2))
        data = os.urandom(300_000)
        layout = write_segment(codec, stores, "topic/0/00000000000000000000-h", data, 65536)
        by_url = {store.url: store for store in stores}
        reader = RemoteSegmentReader(lambda: by_url, trio.CapacityLimiter(1), StripeCache(0), hedge_s=0.1)
        os.killpg(nodes[0].proc.pid, signal.SIGSTOP)

        async def read() -> tuple[bytes, float]:
            started = trio.current_time()
            got = await reader.read_range(codec, layout, 0, len(data))
            return got, trio.current_time() - started

        got, seconds = trio.run(read)
        assert got == data
        assert reader.hedged >= 2 and seconds < TIMEOUT_S / 2
        os.killpg(nodes[0].proc.pid, signal.SIGCONT)
    finally:
        for node in nodes:
            node.stop()
