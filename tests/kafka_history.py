"""A Jepsen-style history of a Kafka workload, and the checker that judges it.

The vocabulary is jepsen.tests.kafka's. Every anomaly found lists its cases:

* **lost-write**: an acknowledged write that the final read did not see, though the read went past its
  offset.
* **unseen**: an acknowledged write that no read reached.
* **duplicate**: one value at more than one offset of a key.
* **inconsistent-offsets**: one offset of a key that held different values (in acknowledgements and reads).
* **G1a** (aborted read): a read_committed read of a value whose transaction aborted.
* **poll-skip**: a consumer whose next record of a key jumps over an offset known to hold a committed value.
* **nonmonotonic-poll**: a consumer whose next record of a key is at or below the previous one.
* **nonmonotonic-send**: a producer whose acknowledged writes to a key got offsets that went back.

A key is a partition of one topic; values are unique strings. What the workload knows goes in a
`History`; `check` is pure.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from dataclasses import dataclass, field

ANOMALIES = ("lost-write", "unseen", "duplicate", "inconsistent-offsets", "G1a", "poll-skip",
             "nonmonotonic-poll", "nonmonotonic-send")


@dataclass
class Send:
    process: str
    key: int
    value: str
    status: str  # "ok" acknowledged (a committed transaction's too), "fail" aborted, "info" unknown
    offset: int | None = None  # from the acknowledgement (also known for an aborted transaction's writes)


@dataclass
class History:
    sends: list[Send] = field(default_factory=list)  # in the order each producer issued them
    polls: dict[str, dict[int, list[tuple[int, str]]]] = field(default_factory=dict)  # consumer -> key -> reads
    final: dict[int, list[tuple[int, str]]] = field(default_factory=dict)  # a last read of every key
    final_ends: dict[int, int] = field(default_factory=dict)  # the high watermark each final read reached

    def read(self, consumer: str, key: int, offset: int, value: str) -> None:
        self.polls.setdefault(consumer, {}).setdefault(key, []).append((offset, value))


def check(history: History) -> dict[str, list]:
    found: dict[str, list] = {name: [] for name in ANOMALIES}
    reads = [(consumer, key, offset, value) for consumer, keys in history.polls.items()
             for key, seen in keys.items() for offset, value in seen]
    reads += [("final", key, offset, value) for key, seen in history.final.items() for offset, value in seen]

    # What each offset held and where each value was, from acknowledgements, aborted writes and reads.
    at_offset: dict[tuple[int, int], set[str]] = defaultdict(set)
    offsets_of: dict[tuple[int, str], set[int]] = defaultdict(set)
    for send in history.sends:
        if send.offset is not None and send.status in ("ok", "fail"):
            at_offset[(send.key, send.offset)].add(send.value)
            offsets_of[(send.key, send.value)].add(send.offset)
    for _, key, offset, value in reads:
        at_offset[(key, offset)].add(value)
        offsets_of[(key, value)].add(offset)
    for (key, offset), values in sorted(at_offset.items()):
        if len(values) > 1:
            found["inconsistent-offsets"].append({"key": key, "offset": offset, "values": sorted(values)})
    for (key, value), offsets in sorted(offsets_of.items()):
        if len(offsets) > 1:
            found["duplicate"].append({"key": key, "value": value, "offsets": sorted(offsets)})

    aborted = {(send.key, send.value) for send in history.sends if send.status == "fail"}
    for consumer, key, offset, value in reads:
        if (key, value) in aborted:
            found["G1a"].append({"consumer": consumer, "key": key, "offset": offset, "value": value})

    finally_read = {(key, value) for key, seen in history.final.items() for _, value in seen}
    ever_read = {(key, value) for _, key, _, value in reads}
    for send in history.sends:
        if send.status != "ok" or (send.key, send.value) in finally_read:
            continue
        reached = history.final_ends.get(send.key, -1)
        if send.offset is not None and reached > send.offset:
            found["lost-write"].append({"key": send.key, "value": send.value, "offset": send.offset})
        elif (send.key, send.value) not in ever_read:
            found["unseen"].append({"key": send.key, "value": send.value, "offset": send.offset})

    # Offsets known to hold a committed value: a consumer reading in order may not jump over them.
    committed: dict[int, list[int]] = defaultdict(list)
    for (key, offset), values in at_offset.items():
        if any((key, value) not in aborted for value in values):
            committed[key].append(offset)
    for key in committed:
        committed[key].sort()
    for consumer, keys in history.polls.items():
        for key, seen in keys.items():
            known = committed.get(key, [])
            for (previous, _), (offset, value) in zip(seen, seen[1:]):
                if offset <= previous:
                    found["nonmonotonic-poll"].append({"consumer": consumer, "key": key, "from": previous,
                                                       "to": offset})
                    continue
                low, high = bisect.bisect_right(known, previous), bisect.bisect_left(known, offset)
                skipped = known[low:high]
                if skipped:
                    found["poll-skip"].append({"consumer": consumer, "key": key, "from": previous, "to": offset,
                                               "skipped": skipped[:5]})

    last_sent: dict[tuple[str, int], int] = {}
    for send in history.sends:
        if send.status != "ok" or send.offset is None:
            continue
        previous = last_sent.get((send.process, send.key))
        if previous is not None and send.offset < previous:
            found["nonmonotonic-send"].append({"process": send.process, "key": send.key, "from": previous,
                                               "to": send.offset})
        last_sent[(send.process, send.key)] = send.offset
    return found


def summary(history: History, found: dict[str, list]) -> str:
    acknowledged = sum(1 for send in history.sends if send.status == "ok")
    aborted = sum(1 for send in history.sends if send.status == "fail")
    unknown = sum(1 for send in history.sends if send.status == "info")
    polled = sum(len(seen) for keys in history.polls.values() for seen in keys.values())
    counts = ", ".join(f"{name} {len(cases)}" for name, cases in found.items())
    return (f"{acknowledged} acknowledged writes, {aborted} aborted, {unknown} unknown; {polled} records polled, "
            f"{sum(len(seen) for seen in history.final.values())} in the final read. Anomalies: {counts}")
