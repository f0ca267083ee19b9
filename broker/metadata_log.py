"""The KRaft quorum's storage on this node, in `<log.dirs>/__cluster_metadata-0/` as Kafka lays it out:

* `log/`: the `__cluster_metadata` log, kept by the partition log storage (storage/leveldb_log.py) in a
  LevelDB of its own. Each entry is one record batch at its offset, stamped with its epoch as the
  partition leader epoch; its one record's value is the entry's payload (a batch of metadata records).
  A new leader's first entry is a control batch (Kafka's LeaderChange).
* `quorum-state`: epoch, vote and leader (Kafka's file and field names), replaced atomically and fsynced
  before the quorum answers anything that depends on it.
* `<end offset>-<epoch>.checkpoint`: snapshots of the image (KIP-630), fsynced before the log below them
  is deleted; the two newest are kept.

Blocking: the quorum's driver calls these from a worker thread, one call at a time.
"""

from __future__ import annotations

import json
import os
import struct
import uuid
from pathlib import Path

from lodestream.consensus.kraft import DurableState, Entry, PersistState
from lodestream.protocol.record_batch import CONTROL_BIT, build_batch, iter_records, parse_header
from lodestream.storage.leveldb_log import END_OFFSET, LogStore, StorageError

METADATA_TOPIC = "__cluster_metadata"
METADATA_LOG_DIR = "__cluster_metadata-0"  # in log.dirs, as Kafka names it
METADATA_TOPIC_ID = uuid.UUID(int=1)  # Kafka's fixed id for it (AAAAAAAAAAAAAAAAAAAAAQ)
QUORUM_STATE_FILE = "quorum-state"
SNAPSHOT_SUFFIX = ".checkpoint"
_LEADER_CHANGE_KEY = struct.pack(">hh", 0, 2)  # control record type 2: LeaderChange
_NEVER = 1 << 62  # the metadata log never rolls: snapshots bound it instead

__all__ = ["MetadataLogStore", "METADATA_LOG_DIR", "METADATA_TOPIC", "METADATA_TOPIC_ID", "StorageError"]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durably(path: Path, data: bytes) -> None:
    """Write a whole file so that a crash leaves either the old or the new one (rename is atomic)."""
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
    _fsync_dir(path.parent)


def encode_entry(entry: Entry) -> bytes:
    if entry.payload is None:
        batch = bytearray(build_batch([(_LEADER_CHANGE_KEY, b"")], 0, attributes=CONTROL_BIT))
    else:
        batch = bytearray(build_batch([(None, entry.payload)], 0))
    # base offset and partition leader epoch sit outside the CRC
    struct.pack_into(">q", batch, 0, entry.offset)
    struct.pack_into(">i", batch, 12, entry.epoch)
    return bytes(batch)


def decode_entry(batch: bytes) -> Entry:
    header = parse_header(batch)
    if header.is_control:
        return Entry(header.base_offset, header.partition_leader_epoch, None)
    value = iter_records(batch)[0][3]
    return Entry(header.base_offset, header.partition_leader_epoch, value or b"")


class MetadataLogStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.store = LogStore(directory / "log", sync_writes=False)
        self.log = self.store.partition(METADATA_TOPIC_ID, 0)
        self.log.segment_bytes = self.log.segment_ms = self.log.segment_index_bytes = _NEVER

    @property
    def is_empty(self) -> bool:
        """Nothing was ever written here: no log, no vote, no snapshot (a node to format)."""
        return self.log.log_end_offset == 0 and not (self.directory / QUORUM_STATE_FILE).exists() \
            and not self.snapshots()

    # -- loading

    def load(self) -> DurableState:
        state = {}
        path = self.directory / QUORUM_STATE_FILE
        if path.exists():
            try:
                state = json.loads(path.read_bytes())
            except ValueError as exc:
                raise StorageError(f"{path} is not valid JSON: {exc}") from None
        snapshot = None
        snapshots = self.snapshots()
        if snapshots:
            end, epoch, snapshot_path = snapshots[-1]
            snapshot = (end, epoch, snapshot_path.read_bytes())
        batches = self.log.read(self.log.log_start_offset, END_OFFSET, END_OFFSET)
        return DurableState(
            epoch=int(state.get("leaderEpoch", 0)),
            voted_for=int(state.get("votedId", -1)),
            leader=int(state.get("leaderId", -1)),
            entries=tuple(decode_entry(batch) for batch in batches),
            snapshot=snapshot,
        )

    def snapshots(self) -> list[tuple[int, int, Path]]:
        """(end offset, epoch, path) of each stored snapshot, oldest first."""
        found = []
        for path in self.directory.glob("*" + SNAPSHOT_SUFFIX):
            end, _, epoch = path.name[:-len(SNAPSHOT_SUFFIX)].partition("-")
            if end.isdigit() and epoch.isdigit():
                found.append((int(end), int(epoch), path))
        return sorted(found)

    # -- the quorum's actions

    def persist_state(self, state: PersistState) -> None:
        document = {"leaderId": state.leader, "leaderEpoch": state.epoch, "votedId": state.voted_for,
                    "data_version": 0}
        _write_durably(self.directory / QUORUM_STATE_FILE, json.dumps(document).encode())

    def append(self, entries: tuple[Entry, ...]) -> None:
        if entries[0].offset != self.log.log_end_offset:
            raise StorageError(f"metadata log append at {entries[0].offset}, but the log ends at "
                               f"{self.log.log_end_offset}")
        encoded = [encode_entry(entry) for entry in entries]
        pending = self.log.prepare_append(
            ((0, 0, len(batch), memoryview(batch)) for batch in encoded), lambda batch, base: bytes(batch))
        self.store.write([pending], sync=False)
        self.log.complete_append(pending)

    def truncate(self, end_offset: int) -> None:
        self.log.truncate_from(end_offset)

    def flush(self) -> int:
        self.store.sync()
        return self.log.log_end_offset

    def write_snapshot(self, end_offset: int, epoch: int, data: bytes) -> None:
        _write_durably(self.directory / f"{end_offset:020d}-{epoch:010d}{SNAPSHOT_SUFFIX}", data)
        for _, _, old in self.snapshots()[:-2]:
            old.unlink(missing_ok=True)

    def drop_before(self, offset: int) -> None:
        self.log.delete_records_before(offset)

    def close(self) -> None:
        self.store.close()
