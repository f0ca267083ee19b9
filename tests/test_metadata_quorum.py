"""The KRaft quorum on real storage (broker/metadata_quorum.py, broker/metadata_log.py): a one-voter quorum
formats itself, commits, snapshots, survives SIGKILL, and a pre-KRaft data directory is migrated."""

from __future__ import annotations

import pathlib
import signal
import subprocess
import sys
import textwrap
import uuid

import pytest
import trio

from lodestream.broker.broker import Broker
from lodestream.broker.config import BrokerConfig, StartupError
from lodestream.broker.metadata_log import METADATA_LOG_DIR, MetadataLogStore, decode_entry, encode_entry
from lodestream.broker.metadata_quorum import MetadataQuorum, NotController, QuorumError
from lodestream.consensus.image_machine import image_from_snapshot, image_to_records, image_to_snapshot
from lodestream.consensus.image import MetadataImage, replay_all
from lodestream.consensus.kraft import Entry, PersistState, Role, Timing
from lodestream.consensus.records import ConfigRecord, PartitionRecord, QuotaRecord, RemoveTopicRecord, TopicRecord

REPO = pathlib.Path(__file__).resolve().parents[1]


def topic_records(i: int) -> list:
    topic_id = uuid.UUID(int=i + 1)
    return [TopicRecord(name=f"topic-{i}", topic_id=topic_id),
            PartitionRecord(topic_id=topic_id, partition=0, replicas=(1,), leader=1),
            ConfigRecord("topic", f"topic-{i}", "retention.ms", str(i))]


def one_voter(directory: pathlib.Path, **timing) -> MetadataQuorum:
    quorum = MetadataQuorum(1, (1,), directory, Timing(**timing))
    quorum.open()
    return quorum


def test_a_fresh_directory_is_formatted_and_its_one_voter_leads(tmp_path):
    quorum = one_voter(tmp_path / "q")
    try:
        assert quorum.is_leader and quorum.leader == 1 and quorum.epoch == 1
        assert quorum.image == MetadataImage()
        assert quorum.high_watermark == 1  # the leader-change record of epoch 1
    finally:
        quorum.close()
    state = MetadataLogStore(tmp_path / "q")
    try:
        assert state.load().epoch == 1 and state.load().voted_for == 1
    finally:
        state.close()


async def test_proposals_commit_in_order_and_survive_a_restart(tmp_path):
    quorum = one_voter(tmp_path / "q")
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(quorum.run)
            images = [await quorum.propose(topic_records(i)) for i in range(50)]
            rejected = quorum.propose([RemoveTopicRecord(uuid.UUID(int=1)), ConfigRecord("bogus", "x", "k", "v")])
            with pytest.raises(QuorumError, match="rejected|failed"):
                await rejected
            nursery.cancel_scope.cancel()
    finally:
        quorum.close()
    assert [len(image.topics_by_name) for image in images] == list(range(1, 51))
    expected = replay_all(MetadataImage(), [r for i in range(50) for r in topic_records(i)])
    assert images[-1] == expected
    again = one_voter(tmp_path / "q")
    try:
        assert again.image == expected  # the batch that did not replay changed nothing, here either
        assert again.epoch == 2
    finally:
        again.close()


async def test_snapshots_bound_the_log_and_restore_the_image(tmp_path):
    quorum = one_voter(tmp_path / "q", snapshot_after_bytes=2000)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(quorum.run)
            for i in range(100):
                image = await quorum.propose(topic_records(i))
            nursery.cancel_scope.cancel()
        snapshots = quorum.storage.snapshots()
        log_start = quorum.storage.log.log_start_offset
    finally:
        quorum.close()
    assert len(snapshots) == 2  # the two newest are kept
    assert log_start == snapshots[-1][0] > 50
    again = one_voter(tmp_path / "q")
    try:
        assert again.image == image
    finally:
        again.close()


def test_log_entries_and_snapshots_round_trip():
    for entry in (Entry(7, 3, b'[{"type":"x"}]'), Entry(0, 1, None), Entry(12, 2, b"")):
        assert decode_entry(encode_entry(entry)) == entry
    image = replay_all(MetadataImage(), topic_records(1) + [
        QuotaRecord((("user", "alice"),), "producer_byte_rate", 1024.0), ConfigRecord("broker", "", "a", "b")])
    assert image_from_snapshot(image_to_snapshot(image)) == image
    assert replay_all(MetadataImage(), image_to_records(image)) == image


def test_the_log_truncates_a_suffix_and_drops_a_prefix(tmp_path):
    store = MetadataLogStore(tmp_path / "q")
    try:
        store.append(tuple(Entry(i, 1, f"{i}".encode()) for i in range(10)))
        store.truncate(6)
        store.append((Entry(6, 2, b"six"),))
        store.flush()
        store.write_snapshot(4, 1, b"{}")
        store.drop_before(4)
        store.persist_state(PersistState(2, 1, 1))
    finally:
        store.close()
    store = MetadataLogStore(tmp_path / "q")
    try:
        state = store.load()
    finally:
        store.close()
    assert [(e.offset, e.epoch) for e in state.entries] == [(4, 1), (5, 1), (6, 2)]
    assert state.snapshot == (4, 1, b"{}") and (state.epoch, state.voted_for, state.leader) == (2, 1, 1)


async def test_a_follower_refuses_proposals(tmp_path):
    quorum = MetadataQuorum(1, (1, 2, 3), tmp_path / "q")
    quorum.open()
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(quorum.run)
            assert quorum.node.role is Role.UNATTACHED and not quorum.caught_up
            with pytest.raises(NotController):
                await quorum.propose(topic_records(0))
            nursery.cancel_scope.cancel()
    finally:
        quorum.close()


def test_acknowledged_proposals_survive_sigkill(tmp_path):
    directory = tmp_path / "q"
    script = tmp_path / "proposer.py"
    script.write_text(textwrap.dedent("""
        import pathlib, sys, uuid
        import trio
        from lodestream.broker.metadata_quorum import MetadataQuorum
        from lodestream.consensus.records import TopicRecord

        async def main():
            quorum = MetadataQuorum(1, (1,), pathlib.Path(sys.argv[1]))
            quorum.open()
            async with trio.open_nursery() as nursery:
                await nursery.start(quorum.run)
                for i in range(1_000_000):
                    await quorum.propose([TopicRecord(f"t{i}", uuid.UUID(int=i + 1))])
                    print(i, flush=True)

        trio.run(main)
        """))
    proc = subprocess.Popen([sys.executable, str(script), str(directory)], stdout=subprocess.PIPE, text=True,
                            cwd=REPO)
    try:
        for _ in range(300):  # kill it while it is still proposing
            assert proc.stdout.readline(), "proposer exited early"
        proc.send_signal(signal.SIGKILL)
        rest, _ = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    last_acked = int(rest.split()[-1]) if rest.split() else 299
    recovered = one_voter(directory)
    try:
        names = recovered.image.topics_by_name
    finally:
        recovered.close()
    assert [i for i in range(last_acked + 1) if f"t{i}" not in names] == []
    assert all(topic.topic_id == uuid.UUID(int=int(name[1:]) + 1) for name, topic in names.items())


def test_a_pre_kraft_data_directory_is_migrated(tmp_path):
    from lodestream.broker.pysyncobj_metadata import MetadataQuorum as LegacyQuorum, free_loopback_address

    data = tmp_path / "data"
    address = free_loopback_address()
    legacy = LegacyQuorum(address, [address], data / "metadata")
    legacy.start()
    try:
        legacy.propose(topic_records(1) + topic_records(2) + [
            QuotaRecord((("client-id", "app"),), "producer_byte_rate", 2048.0),
            ConfigRecord("broker", "", "log.retention.ms", "1000")])
        old_image = legacy.image
    finally:
        legacy.close()
    (data / "meta.properties").write_text("version=1\ncluster.id=old-cluster\nnode.id=1\n")
    broker = Broker(BrokerConfig({"log.dirs": str(data), "listeners": "PLAINTEXT://127.0.0.1:0"}))
    broker.open()
    try:
        assert broker.image == old_image and broker.cluster_id == "old-cluster"
    finally:
        broker.close()
    assert not (data / "metadata").exists() and (data / "metadata.pre-kraft").is_dir()
    broker = Broker(BrokerConfig({"log.dirs": str(data), "listeners": "PLAINTEXT://127.0.0.1:0"}))
    broker.open()  # the second start reads the KRaft log alone
    try:
        assert broker.image == old_image
    finally:
        broker.close()
    assert (data / METADATA_LOG_DIR / "quorum-state").exists()


@pytest.mark.parametrize("setting, message", [("cluster.id=another", "belongs to cluster"),
                                              ("node.id=2", "node 1's")])
def test_a_directory_of_another_cluster_or_node_refuses_to_start(tmp_path, setting, message):
    data = tmp_path / "data"
    (data).mkdir()
    (data / "meta.properties").write_text("version=1\ncluster.id=mine\nnode.id=1\n")
    key, value = setting.split("=")
    broker = Broker(BrokerConfig({"log.dirs": str(data), "listeners": "PLAINTEXT://127.0.0.1:0", key: value}))
    with pytest.raises(StartupError, match=message):
        broker.open()
    broker.close()


async def test_a_metadata_log_that_cannot_be_written_halts_the_node(tmp_path):
    """A full disk under the metadata log: the proposal is not acknowledged and the node stops with one
    clear error (NodeHalted), rather than answer votes or commits it could not make durable. Restarted, it
    has the batch whole or not at all."""
    from lodestream.broker.config import NodeHalted

    quorum = one_voter(tmp_path / "q")
    try:
        def full_disk() -> int:
            raise OSError(28, "No space left on device")

        quorum.storage.flush = full_disk
        with pytest.raises(ExceptionGroup) as raised:
            async with trio.open_nursery() as nursery:
                await nursery.start(quorum.run)
                await quorum.propose(topic_records(0))
        assert raised.group_contains(NodeHalted, match="No space left")
    finally:
        quorum.close()
    recovered = one_voter(tmp_path / "q")
    try:
        # Not acknowledged, so either outcome is allowed (the write may have reached the disk), but whole.
        assert recovered.image in (MetadataImage(), replay_all(MetadataImage(), topic_records(0)))
    finally:
        recovered.close()


async def test_a_crash_between_a_snapshot_and_the_deletion_below_it(tmp_path):
    """The snapshot is durable but the log below it was not deleted, and even ends before the snapshot's
    end (a follower snapshots what it applied, not only what it flushed): the node starts after the
    snapshot and appends from there."""
    quorum = one_voter(tmp_path / "q")
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(quorum.run)
            image = await quorum.propose(topic_records(1))
            nursery.cancel_scope.cancel()
        end = quorum.high_watermark
        quorum.storage.write_snapshot(end + 5, quorum.epoch, image_to_snapshot(image))  # beyond the log's end
    finally:
        quorum.close()
    again = one_voter(tmp_path / "q")
    try:
        assert again.image == image and again.storage.log.log_start_offset == end + 5
        async with trio.open_nursery() as nursery:
            await nursery.start(again.run)
            assert "topic-2" in (await again.propose(topic_records(2))).topics_by_name
            nursery.cancel_scope.cancel()
    finally:
        again.close()
