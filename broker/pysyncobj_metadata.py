"""The metadata log as Lodestream wrote it before KRaft (on pysyncobj): kept only to read a data directory
written by an older version once, when `Broker.open` migrates it into the KRaft log (`read_legacy_image`).

The replicated state machine is just the MetadataImage. One Raft command is
one batch of metadata records, encoded with ``encode_records`` (JSON bytes).
Applying a command decodes it and replays the whole batch with ``replay_all``
into a NEW image, then swaps the reference: readers on any thread see either
the old or the new image, never a half-applied one, and nothing is mutated.

Synchronous by design (no trio here): pysyncobj runs on one thread that this
module owns; ``propose`` blocks the calling thread (the broker calls it via
``trio.to_thread.run_sync``) and ``on_image`` is called on the Raft thread.

Notes on pysyncobj 0.3.17 that shaped this module (read its source before
changing the settings below):

* We tick pysyncobj from our own thread (``autoTick=False``). Its built-in
  auto-tick thread stops as soon as the thread that constructed the SyncObj
  exits (``mainThread.is_alive()``), which would silently stop Raft if
  ``start()`` ran on a short-lived worker thread (trio's thread cache); it
  also sleeps a fixed 100 ms before the first tick.
* Journal (``journalFile``): entries are written through an mmap before they
  are committed, and the commit index is stored at most once a second; on
  restart the node re-elects itself and re-commits the whole journal, so the
  state is rebuilt from the journal plus the last full dump. Nothing is
  fsynced: the journal survives a process crash / SIGKILL (the page cache
  keeps the writes), not a power loss or kernel crash.
* No double apply on restart: the state starts empty, ``raftLastApplied``
  starts at 1 (the initial no-op), and loading the full dump sets both the
  state and ``raftLastApplied`` to the dump's index before anything after it
  is applied, so each journal entry is applied exactly once.
* Log compaction (full dump): pysyncobj pickles the consumers' state, and
  MappingProxyType cannot be pickled, so ``_ImageMachine`` overrides
  ``_serialize``/``_deserialize`` to store the image as JSON bytes (stable
  across code changes, unlike a pickle of our classes). ``useFork=False``:
  forking a multi-threaded broker process to write the dump is not safe, and
  the image is small enough to dump on the Raft thread.
* A crash after the new dump is renamed into place but before the journal is
  truncated (a window of about one tick) makes pysyncobj throw away every
  journal entry after the dump on restart (its journal-vs-dump consistency
  check clears the journal), losing acknowledged proposals.
  ``_ImageMachine._align_journal`` finishes the interrupted truncation first.
* The node address is only stored as ``votedForNodeId`` in the journal meta,
  and membership commands are never written (dynamicMembershipChange off), so
  a one-node group reopens its journal fine under a different port.
* In a multi-node group, followers now and then log CRITICAL "truncating
  already-applied log entries ... may have diverged": the leader re-sends
  entries the follower already has (an old success reply moves nextIndex
  back), and the follower cuts and re-appends the same committed entries.
  The state is not re-applied and stays identical. This is noise, not a
  divergence.
* The Raft port speaks pickle: anyone who can connect to it can run code in
  the broker. We bind exactly ``self_address`` (pysyncobj would otherwise
  bind 0.0.0.0); keep it on a private network or loopback.
"""

from __future__ import annotations

import fcntl
import logging
import os
import pathlib
import socket
import threading
import time
from typing import Callable

from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, SyncObjConsumer, replicated
from pysyncobj.syncobj import SyncObjException

from lodestream.consensus.image import MetadataImage, replay_all
from lodestream.consensus.image_machine import image_from_snapshot, image_to_snapshot
from lodestream.consensus.records import MetadataRecord, decode_records, encode_records

logger = logging.getLogger(__name__)

JOURNAL_FILE = "raft.journal"  # pysyncobj adds raft.journal.meta next to it
DUMP_FILE = "raft.dump"
LOCK_FILE = "raft.lock"

# Poll timeout of the Raft thread when idle. A proposal wakes it at once
# (pysyncobj's pipe notifier, enabled by appendEntriesUseBatch=False).
TICK_SECONDS = 0.005
# Compaction: dump the image and cut the journal after this many entries or
# seconds (pysyncobj's defaults). A restart replays at most this many entries.
LOG_COMPACTION_MIN_ENTRIES = 5000
LOG_COMPACTION_MIN_SECONDS = 300.0

_FAIL_REASON_NAMES = {
    value: name for name, value in vars(FAIL_REASON).items() if not name.startswith("_")
}


class QuorumError(Exception):
    """The metadata quorum could not start, or a proposal's outcome is not a success.

    On a timeout the command may still commit later (outcome unknown).
    """


def free_loopback_address(host: str = "127.0.0.1") -> str:
    """A currently free "HOST:PORT" (bind port 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return f"{host}:{sock.getsockname()[1]}"


def _conf(*, single_node: bool, journal_dir: pathlib.Path, bind_address: str, on_ready) -> SyncObjConf:
    if single_node:
        # No peers: the timeouts only decide how fast the node elects itself.
        timing = dict(appendEntriesPeriod=0.005, raftMinTimeout=0.02, raftMaxTimeout=0.04)
    else:
        timing = dict(
            appendEntriesPeriod=0.05,  # heartbeat
            raftMinTimeout=0.4,
            raftMaxTimeout=0.8,
            connectionRetryTime=0.2,  # default 5 s: a peer not yet listening would stall startup
            leaderFallbackTimeout=2.0,  # default 30 s: a cut-off leader steps down sooner
        )
    return SyncObjConf(
        autoTick=False,  # we tick from our own thread, see the module docstring
        appendEntriesUseBatch=False,  # wake the Raft thread on propose, replicate at once
        commandsWaitLeader=True,
        journalFile=str(journal_dir / JOURNAL_FILE),
        fullDumpFile=str(journal_dir / DUMP_FILE),
        useFork=False,
        logCompactionMinEntries=LOG_COMPACTION_MIN_ENTRIES,
        logCompactionMinTime=LOG_COMPACTION_MIN_SECONDS,
        dynamicMembershipChange=False,
        bindAddress=bind_address,
        maxBindRetries=1,  # fail start() at once if the port is taken (0 = retry forever)
        onReady=on_ready,
        **timing,
    )


# --- the replicated state machine -----------------------------------------------------


class _ImageMachine(SyncObjConsumer):
    """Holds the current image; every method below runs on the Raft thread."""

    def __init__(self, notify: Callable[[MetadataImage], None]) -> None:
        super().__init__()
        self._notify = notify
        self._image = MetadataImage()

    # Do not add or rename @replicated methods casually: pysyncobj identifies
    # them in the journal by their sorted position, so old journals would call
    # the wrong method. Change the command format instead (or use ver=).
    @replicated
    def apply(self, data: bytes):
        """Apply one command: a batch of records, all or nothing.

        Returns (image after this command, error or None) to the proposer.
        A batch that fails to decode or replay is skipped on every node alike
        (replay is deterministic), so the quorum never stalls on it.
        """
        try:
            image = replay_all(self._image, decode_records(data))
        except Exception as exc:  # noqa: BLE001 - must not kill the Raft thread
            logger.error("metadata command rejected, image unchanged: %r", exc)
            return self._image, f"{type(exc).__name__}: {exc}"
        if image is not self._image:
            self._image = image
            self._notify(image)
        return image, None

    def _serialize(self):
        # pysyncobj pickles this for the full dump; MappingProxyType cannot be pickled, so JSON.
        return {"image": image_to_snapshot(self._image), "applied_index": self._syncObj.raftLastApplied}

    def _deserialize(self, data) -> None:
        self._align_journal(data.get("applied_index"))
        self._image = image_from_snapshot(data["image"])
        self._notify(self._image)

    def _align_journal(self, applied_index: int | None) -> None:
        """Finish a journal truncation that a crash interrupted.

        pysyncobj writes the dump (last applied entry L, and L-1), and only on
        a later tick cuts the journal down to start at L-1. On load, if the
        journal does not start with exactly those two entries it clears it,
        dropping the entries after L, which may have been acknowledged in the
        meantime. If the journal still holds L-1 and L further down, cut it
        here so pysyncobj's own check (which compares whole entries) passes.
        """
        journal = getattr(self._syncObj, "_SyncObj__raftLog", None)
        if journal is None or applied_index is None or len(journal) < 2:
            return
        first = journal[0][1]
        position = applied_index - 1 - first
        if 0 < position < len(journal) - 1 and journal[position][1] == applied_index - 1 \
                and journal[position + 1][1] == applied_index:
            logger.warning("metadata journal was not cut after the last dump (crash?); cutting it now")
            journal.deleteEntriesTo(position)


# --- the public face -----------------------------------------------------------------------


class _Waiter:
    __slots__ = ("event", "result", "error")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.result = None
        self.error: str | None = None

    def on_result(self, result, fail_reason) -> None:
        if fail_reason != FAIL_REASON.SUCCESS:
            self.error = _FAIL_REASON_NAMES.get(fail_reason, str(fail_reason))
        else:
            self.result = result
        self.event.set()


class MetadataQuorum:
    """This node's member of the metadata Raft group.

    ``voters`` lists ALL voters including ``self_address`` (empty means a
    one-node group). Journal and dump live in ``journal_dir``, which one
    process at a time may use (an flock guards it).
    """

    def __init__(
        self,
        self_address: str,
        voters: list[str],
        journal_dir: pathlib.Path,
        on_image: Callable[[MetadataImage], None] | None = None,
    ) -> None:
        voters = list(dict.fromkeys(voters or [self_address]))
        for address in voters:
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"raft address must be host:port, got {address!r}")
        if self_address not in voters:
            raise ValueError(f"self address {self_address!r} is not one of the voters {voters!r}")
        self.self_address = self_address
        self.voters = voters
        self.journal_dir = pathlib.Path(journal_dir)
        self.journal_dir.mkdir(parents=True, exist_ok=True)
        self._on_image = on_image
        self._machine = _ImageMachine(self._notify)
        self._sync: SyncObj | None = None
        self._thread: threading.Thread | None = None
        self._lock_fd: int | None = None
        self._state_lock = threading.Lock()
        self._started = False
        self._stopping = False
        self._pending: set[_Waiter] = set()

    # -- lifecycle

    def start(self, timeout: float = 10.0) -> None:
        """Join the group; return once a leader is known and the journal is replayed."""
        with self._state_lock:
            if self._started or self._stopping:
                raise QuorumError("MetadataQuorum.start() may be called once")
            self._started = True
        deadline = time.monotonic() + timeout
        self._lock_journal_dir()
        ready = threading.Event()
        conf = _conf(
            single_node=len(self.voters) == 1,
            journal_dir=self.journal_dir,
            bind_address=self.self_address,
            on_ready=ready.set,
        )
        others = [v for v in self.voters if v != self.self_address]
        try:
            self._sync = SyncObj(self.self_address, others, conf, consumers=[self._machine])
        except SyncObjException as exc:
            self._unlock_journal_dir()
            self._stopping = True
            raise QuorumError(f"cannot bind the raft port {self.self_address}") from exc
        except Exception as exc:
            self._unlock_journal_dir()
            self._stopping = True
            raise QuorumError(f"cannot open the metadata journal in {self.journal_dir}: {exc!r}") from exc
        self._thread = threading.Thread(target=self._tick_loop, name="lodestream-raft", daemon=True)
        self._thread.start()
        # isReady(): the node has applied everything up to the leader's commit
        # index (a restarted single node: its whole journal, re-committed).
        while not (ready.is_set() and self._sync._getLeader() is not None):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.close()
                raise QuorumError(
                    f"metadata quorum {self.voters} not ready after {timeout:.1f}s (no leader elected?)"
                )
            ready.wait(min(remaining, 0.005))

    def close(self) -> None:
        """Stop Raft and release the journal; idempotent. Pending proposals fail."""
        with self._state_lock:
            if self._stopping:
                return
            self._stopping = True
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        for waiter in list(self._pending):
            if not waiter.event.is_set():
                waiter.error = "closed"
                waiter.event.set()

    # -- state

    @property
    def image(self) -> MetadataImage:
        return self._machine._image

    @property
    def leader(self) -> str | None:
        """The last known leader's address (may be outdated)."""
        node = self._sync._getLeader() if self._sync is not None else None
        return None if node is None else node.address

    @property
    def is_leader(self) -> bool:
        return self._sync is not None and not self._stopping and self._sync._isLeader()

    def propose(self, records: list[MetadataRecord], timeout: float = 10.0) -> MetadataImage:
        """Commit one Raft command with all ``records``; return the image right after it.

        The batch is applied atomically (all records or none). From a follower
        the command is forwarded to the leader. Raises QuorumError on timeout
        (outcome unknown: it may still commit), on losing the leader, when
        closed, or when the batch does not replay (image unchanged).
        """
        if not self._started or self._stopping or self._sync is None:
            raise QuorumError("metadata quorum is not running")
        if threading.current_thread() is self._thread:
            raise QuorumError("propose() cannot be called from the raft thread (e.g. inside on_image)")
        data = encode_records(records)
        waiter = _Waiter()
        self._pending.add(waiter)
        try:
            try:
                if self._stopping:
                    raise RuntimeError("closed")
                self._machine.apply(data, callback=waiter.on_result)
            except Exception as exc:  # closed concurrently (pysyncobj detached the machine)
                raise QuorumError("metadata quorum is not running") from exc
            if not waiter.event.wait(timeout):
                raise QuorumError(f"metadata proposal timed out after {timeout:.1f}s (outcome unknown)")
        finally:
            self._pending.discard(waiter)
        if waiter.error is not None:
            raise QuorumError(f"metadata proposal failed: {waiter.error}")
        image, rejected = waiter.result
        if rejected is not None:
            raise QuorumError(f"metadata records rejected by replay: {rejected}")
        return image

    # -- internals

    def _notify(self, image: MetadataImage) -> None:
        if self._on_image is None:
            return
        try:
            self._on_image(image)
        except Exception:  # noqa: BLE001 - a listener bug must not stop Raft
            logger.exception("on_image callback failed")

    def _tick_loop(self) -> None:
        sync = self._sync
        single_node = len(self.voters) == 1
        try:
            while not self._stopping:
                # One node commits on the tick after the one that appends, so
                # while a proposal waits, tick again without sleeping.
                wait = 0.0 if single_node and self._pending else TICK_SECONDS
                try:
                    sync.doTick(wait)
                except Exception:  # noqa: BLE001 - same policy as pysyncobj's own tick thread
                    logger.exception("raft tick failed")
                    time.sleep(TICK_SECONDS)
        finally:
            try:
                sync.destroy()  # autoTick=False: closes sockets and the journal right here
            except Exception:  # noqa: BLE001
                logger.exception("closing pysyncobj failed")
            _close_pipe_notifier(sync)
            self._unlock_journal_dir()

    def _lock_journal_dir(self) -> None:
        fd = os.open(self.journal_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            self._stopping = True
            raise QuorumError(f"metadata journal {self.journal_dir} is in use by another process") from exc
        self._lock_fd = fd

    def _unlock_journal_dir(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)  # releases the flock


def _close_pipe_notifier(sync: SyncObj) -> None:
    # pysyncobj never closes the wake-up pipe it opens for appendEntriesUseBatch=False.
    notifier = getattr(sync, "_SyncObj__pipeNotifier", None)
    for name in ("_PipeNotifier__pipeR", "_PipeNotifier__pipeW"):
        fd = getattr(notifier, name, None)
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass


def read_legacy_image(journal_dir: pathlib.Path) -> MetadataImage:
    """The image a pre-KRaft data directory's pysyncobj journal and dump hold (starts a one-node group
    on a free loopback port just long enough to replay them)."""
    quorum = MetadataQuorum(free_loopback_address(), [], journal_dir)
    quorum.start()
    try:
        return quorum.image
    finally:
        quorum.close()
