"""Opening a long-lived partition: time, memory and producer-state replay against total history.

Writes N batches (2 records each, every third from an idempotent producer) into one partition with the
default segment settings, closes the store uncleanly (no snapshot at close, as after a crash) and opens
it again in a fresh interpreter, twice: once timed, once under tracemalloc for the memory the open
allocates. Prints one row per N. Run it for several N: the figures should not grow with N once the
active segment is full (storage/leveldb_log.py keeps a per-batch index only for the active segment).

    .venv/bin/python bench/log_open.py --batches 250000 1000000

To compare with another checkout, put a folder holding a `lodestream` package of that checkout first on
PYTHONPATH (see docs/benchmarks.md, "Opening a long-lived partition").
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

TOPIC = uuid.UUID(int=0x0BE0)
GROUP = 1000  # batches per write


def write(path: Path, batches: int) -> None:
    from lodestream.protocol.record_batch import split_batches, stamp_for_append
    from lodestream.storage.leveldb_log import LogStore, producer_index_tail

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import record_batches as rb

    now = int(time.time() * 1000)
    plain = rb.build_batch([rb.Record(value=b"x" * 40, key=b"k", timestamp=now)] * 2)
    store = LogStore(path, sync_writes=False)
    log = store.partition(TOPIC, 0)
    sequence = 0
    for start in range(0, batches, GROUP):
        pendings = []
        for n in range(start, min(start + GROUP, batches)):
            tail = b""
            raw = plain
            if n % 3 == 0:
                raw = rb.build_batch([rb.Record(value=b"x" * 40, key=b"k", timestamp=now)] * 2,
                                     producer_id=7, producer_epoch=0, base_sequence=sequence)
                tail = producer_index_tail(7, 0, sequence, 0)
            entries = [(h.last_offset_delta, h.max_timestamp, h.size, view) for h, view in split_batches(raw)]
            pending = log.prepare_append(entries, lambda view, base: stamp_for_append(view, base, 0, None), tail)
            if tail:
                base, last = pending.index_entries[0][:2]
                log.producers.append_data(7, 0, sequence, sequence + 1, base, last, now, False)
                sequence += 2
            pendings.append(pending)
        store.write(pendings)
        for pending in pendings:
            log.complete_append(pending)
    store.db.close()  # as a crash would leave it: no snapshot taken at close


def open_once(path: Path, traced: bool) -> dict:
    import tracemalloc

    from lodestream.storage.leveldb_log import LogStore

    if traced:
        tracemalloc.start()
    started = time.perf_counter()
    store = LogStore(path, sync_writes=False)
    log = store.partition(TOPIC, 0)
    seconds = time.perf_counter() - started
    result = {"seconds": seconds, "log_end": log.log_end_offset, "segments": len(log.segments),
              "replayed": getattr(log, "replayed_batches", None)}
    if traced:
        result["peak_mib"] = tracemalloc.get_traced_memory()[1] / (1 << 20)
    store.db.close()  # keep the directory as it was for the next open
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[250_000, 1_000_000])
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        action, path, value = args.child
        if action == "write":
            write(Path(path), int(value))
        else:
            print(json.dumps(open_once(Path(path), value == "traced")))
        return
    print(f"{'batches':>9} {'segments':>8} {'open s':>7} {'peak MiB':>9} {'replayed':>9}")
    for batches in args.batches:
        with tempfile.TemporaryDirectory(prefix="lodestream-open-") as directory:
            path = Path(directory) / "log"
            subprocess.run([sys.executable, __file__, "--child", "write", str(path), str(batches)], check=True)
            timed, traced = (json.loads(subprocess.run(
                [sys.executable, __file__, "--child", "open", str(path), mode], check=True, capture_output=True,
                text=True).stdout) for mode in ("plain", "traced"))
            print(f"{batches:>9,} {timed['segments']:>8} {timed['seconds']:>7.2f} {traced['peak_mib']:>9.1f} "
                  f"{timed['replayed'] if timed['replayed'] is not None else '-':>9}")


if __name__ == "__main__":
    main()
