"""The Raft binding of the metadata log (consensus/raft.py) on a real pysyncobj."""

from __future__ import annotations

import pathlib
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import pytest
from pysyncobj.journal import FileJournal

from lodestream.consensus.image import MetadataImage, replay_all
from lodestream.consensus.raft import (
    DUMP_FILE,
    MetadataQuorum,
    QuorumError,
    free_loopback_address,
    image_from_snapshot,
    image_to_snapshot,
)
from lodestream.consensus.records import ConfigRecord, PartitionRecord, QuotaRecord, RemoveTopicRecord, TopicRecord

REPO = pathlib.Path(__file__).resolve().parents[1]


def wait_until(condition, timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.002)


def topic_records(i: int) -> list:
    topic_id = uuid.UUID(int=i + 1)
    return [
        TopicRecord(name=f"topic-{i}", topic_id=topic_id),
        PartitionRecord(topic_id=topic_id, partition=0, replicas=(1,), leader=1),
        ConfigRecord("topic", f"topic-{i}", "retention.ms", str(i)),
    ]


class Recorder:
    """on_image listener: counts calls (one per applied command = no double apply)."""

    def __init__(self) -> None:
        self.images: list[MetadataImage] = []
        self.threads: set[str] = set()

    def __call__(self, image: MetadataImage) -> None:
        self.images.append(image)
        self.threads.add(threading.current_thread().name)


@pytest.fixture
def quorums():
    opened: list[MetadataQuorum] = []

    def open_quorum(journal_dir, address=None, voters=None, on_image=None, start=True) -> MetadataQuorum:
        address = address or free_loopback_address()
        quorum = MetadataQuorum(address, voters or [address], journal_dir, on_image=on_image)
        opened.append(quorum)
        if start:
            quorum.start()
        return quorum

    yield open_quorum
    for quorum in opened:
        quorum.close()


def test_fresh_node_starts_fast_with_an_empty_image(tmp_path, quorums):
    started = time.monotonic()
    quorum = quorums(tmp_path / "meta")
    elapsed = time.monotonic() - started
    assert elapsed < 1.0, f"single-node start took {elapsed:.3f}s"
    assert quorum.image == MetadataImage()
    assert quorum.is_leader and quorum.leader == quorum.self_address
    assert (tmp_path / "meta").is_dir()


def test_propose_commits_one_batch_and_returns_the_image_after_it(tmp_path, quorums):
    recorder = Recorder()
    quorum = quorums(tmp_path, on_image=recorder)
    image = quorum.propose(topic_records(0))
    topic = image.topic("topic-0")
    assert topic.partitions[0].leader == 1 and topic.configs == {"retention.ms": "0"}
    assert quorum.image is image
    # One command, one new image, delivered on the raft thread.
    assert recorder.images == [image]
    assert recorder.threads == {"lodestream-raft"}
    # An empty proposal is a barrier: committed, image unchanged.
    assert quorum.propose([]) is image


def test_a_batch_that_does_not_replay_is_rejected_whole(tmp_path, quorums):
    recorder = Recorder()
    quorum = quorums(tmp_path, on_image=recorder)
    before = quorum.propose(topic_records(0))
    bad = ConfigRecord("no-such-resource-type", "x", "k", "v")  # replay raises ValueError
    with pytest.raises(QuorumError, match="rejected"):
        quorum.propose([TopicRecord("half", uuid.uuid4()), bad])
    assert quorum.image is before and quorum.image.topic("half") is None
    assert len(recorder.images) == 1
    # The quorum is not stuck on the bad command.
    assert quorum.propose(topic_records(1)).topic("topic-1") is not None


def test_restart_recovers_hundreds_of_proposals_applied_once(tmp_path, quorums):
    journal = tmp_path / "meta"
    first = quorums(journal)
    count = 300
    started = time.perf_counter()
    for i in range(count):
        first.propose(topic_records(i))
    per_propose_ms = (time.perf_counter() - started) / count * 1000
    print(f"\n{per_propose_ms:.2f} ms per propose() (single node)")
    expected = first.image
    first.close()
    first.close()  # idempotent

    recorder = Recorder()
    # A new loopback port: a one-node group does not care about its old address.
    second = quorums(journal, on_image=recorder)
    assert second.image == expected
    assert len(second.image.topics_by_id) == count
    # Each journal command replayed exactly once, and nothing after start().
    assert len(recorder.images) == count
    assert recorder.images[-1] is second.image
    after = second.propose(topic_records(count))
    assert len(after.topics_by_name) == count + 1


def test_restart_after_log_compaction(tmp_path, quorums):
    journal = tmp_path / "meta"
    first = quorums(journal)
    for i in range(50):
        first.propose(topic_records(i))
    first.propose([ConfigRecord("broker", "", "num.partitions", "3")])
    first._sync.forceLogCompaction()
    wait_until(lambda: (journal / DUMP_FILE).exists(), what="full dump")
    wait_until(lambda: first._sync.getStatus()["log_len"] <= 3, what="journal cut after dump")
    for i in range(50, 60):
        first.propose(topic_records(i))
    expected = first.image
    first.close()

    recorder = Recorder()
    second = quorums(journal, on_image=recorder)
    assert second.image == expected
    assert second.image.broker_configs[""]["num.partitions"] == "3"
    # The dump (one image) and then only the 10 commands after it.
    assert len(recorder.images) == 1 + 10


def test_restart_when_the_journal_was_not_cut_after_the_dump(tmp_path, quorums, monkeypatch):
    """A crash between writing the dump and cutting the journal loses nothing.

    pysyncobj's own restart check would clear such a journal and drop every
    command after the dump, acknowledged or not.
    """
    journal = tmp_path / "meta"
    monkeypatch.setattr(FileJournal, "deleteEntriesTo", lambda self, entry_to: None)
    first = quorums(journal)
    for i in range(20):
        first.propose(topic_records(i))
    first._sync.forceLogCompaction()
    wait_until(lambda: (journal / DUMP_FILE).exists(), what="full dump")
    for i in range(20, 30):
        first.propose(topic_records(i))  # acknowledged after the dump
    expected = first.image
    first.close()
    monkeypatch.undo()

    second = quorums(journal)
    assert second.image == expected
    assert len(second.image.topics_by_name) == 30


def test_acknowledged_proposals_survive_sigkill(tmp_path, quorums):
    journal = tmp_path / "meta"
    script = tmp_path / "proposer.py"
    script.write_text(
        textwrap.dedent(
            """
            import pathlib, sys, uuid
            from lodestream.consensus.raft import MetadataQuorum, free_loopback_address
            from lodestream.consensus.records import TopicRecord

            address = free_loopback_address()
            quorum = MetadataQuorum(address, [address], pathlib.Path(sys.argv[1]))
            quorum.start()
            for i in range(1_000_000):
                quorum.propose([TopicRecord(f"t{i}", uuid.UUID(int=i + 1))])
                print(i, flush=True)
            """
        )
    )
    proc = subprocess.Popen([sys.executable, str(script), str(journal)], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        # Kill it mid-stream, while it is still proposing.
        for _ in range(200):
            line = proc.stdout.readline()
            assert line, "proposer exited early"
        proc.send_signal(signal.SIGKILL)
        rest, _ = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    last_acked = int(rest.split()[-1]) if rest.split() else 199

    recovered = quorums(journal)
    names = recovered.image.topics_by_name
    missing = [i for i in range(last_acked + 1) if f"t{i}" not in names]
    assert missing == []
    # Committed-but-unprinted commands may be there too, nothing else.
    assert len(names) >= last_acked + 1
    assert all(topic.topic_id == uuid.UUID(int=int(name[1:]) + 1) for name, topic in names.items())


def test_journal_dir_is_used_by_one_quorum_at_a_time(tmp_path, quorums):
    quorums(tmp_path)
    with pytest.raises(QuorumError, match="in use"):
        quorums(tmp_path)


def test_start_fails_fast_when_the_port_is_taken(tmp_path, quorums):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        address = f"127.0.0.1:{sock.getsockname()[1]}"
        with pytest.raises(QuorumError, match="bind"):
            quorums(tmp_path, address=address)
    # The journal dir was released: a retry on a free port works.
    quorums(tmp_path)


def test_start_times_out_without_a_majority(tmp_path, quorums):
    address, absent = free_loopback_address(), free_loopback_address()
    quorum = quorums(tmp_path, address=address, voters=[address, absent], start=False)
    started = time.monotonic()
    with pytest.raises(QuorumError, match="not ready"):
        quorum.start(timeout=0.5)
    assert time.monotonic() - started < 2.0


def test_closed_quorum_refuses_proposals(tmp_path, quorums):
    quorum = quorums(tmp_path)
    quorum.propose(topic_records(0))
    quorum.close()
    with pytest.raises(QuorumError):
        quorum.propose(topic_records(1))
    assert quorum.image.topic("topic-0") is not None  # the last image stays readable


def test_three_voters_replicate_and_followers_forward(tmp_path, quorums):
    addresses = [free_loopback_address() for _ in range(3)]
    group = [
        quorums(tmp_path / f"node{n}", address=a, voters=addresses, start=False) for n, a in enumerate(addresses)
    ]
    errors = []

    def start(quorum):
        try:
            quorum.start(timeout=10)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(q,)) for q in group]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=15)
    assert errors == []
    leaders = [q for q in group if q.is_leader]
    assert len(leaders) == 1
    follower = next(q for q in group if not q.is_leader)
    leaders[0].propose(topic_records(0))
    image = follower.propose(topic_records(1))  # forwarded to the leader
    assert image.topic("topic-0") and image.topic("topic-1")
    wait_until(lambda: all(q.image == image for q in group), what="all voters on the same image")


def test_snapshot_codec_is_exact_for_odd_images():
    a, b, c = uuid.UUID(int=1), uuid.UUID(int=2), uuid.UUID(int=3)
    records = [
        *topic_records(7),
        TopicRecord("dup", a),
        PartitionRecord(a, 1, (1, 2, 3), 2, leader_epoch=5),
        TopicRecord("dup", b),  # same name, new id: replaces the old topic entirely
        TopicRecord("gone", c),
        RemoveTopicRecord(c),
        ConfigRecord("broker", "1", "log.retention.ms", "5"),
        ConfigRecord("broker", "1", "log.retention.ms", None),  # leaves an empty mapping
        ConfigRecord("broker", "", "num.partitions", "6"),
        QuotaRecord((("client-id", "app"),), "producer_byte_rate", 1048576.0),
        QuotaRecord((("client-id", None), ("user", "alice")), "consumer_byte_rate", 2.5),
        QuotaRecord((("consumer-group", "g"),), "consumer_byte_rate", 7.0),
        QuotaRecord((("consumer-group", "g"),), "consumer_byte_rate", None),  # removes the entity
    ]
    image = replay_all(MetadataImage(), records)
    restored = image_from_snapshot(image_to_snapshot(image))
    assert restored == image
    assert list(restored.topics_by_name) == list(image.topics_by_name)
    assert list(restored.topics_by_id) == list(image.topics_by_id)
    assert a not in restored.topics_by_id and restored.topics_by_name["dup"].topic_id == b
    assert restored.broker_configs["1"] == {}
    assert restored.client_quotas == {
        (("client-id", "app"),): {"producer_byte_rate": 1048576.0},
        (("client-id", None), ("user", "alice")): {"consumer_byte_rate": 2.5},
    }
    assert image_from_snapshot(image_to_snapshot(MetadataImage())) == MetadataImage()
