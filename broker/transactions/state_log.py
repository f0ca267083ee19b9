"""Records of ``__transaction_state``: JSON like ``__consumer_offsets`` (docs/groups.md,
docs/transactions.md), one record per transactional id, latest wins, a tombstone when the id
expires. Keys are canonical JSON so compaction can match them.

  key   {"transactional_id":T}
  value {"producer_id", "previous_producer_id", "next_producer_id", "producer_epoch",
         "last_producer_epoch", "timeout_ms", "state", "partitions": [[topic, partition], ...],
         "txn_start_ms", "last_update_ms", "tv2"}
"""

from __future__ import annotations

import json

from lodestream.broker.groups.offsets_log import canonical_json
from lodestream.broker.transactions.state import STATE_BY_NAME, TxnMetadata

TOPIC_CONFIGS = {"cleanup.policy": "compact", "compression.type": "uncompressed"}  # + transaction.state.log.segment.bytes


def txn_key(transactional_id: str) -> bytes:
    return canonical_json({"transactional_id": transactional_id})


def txn_value(md: TxnMetadata) -> bytes:
    return canonical_json({
        "producer_id": md.producer_id, "previous_producer_id": md.previous_producer_id,
        "next_producer_id": md.next_producer_id, "producer_epoch": md.producer_epoch,
        "last_producer_epoch": md.last_producer_epoch, "timeout_ms": md.timeout_ms, "state": md.state.value,
        "partitions": sorted([t, p] for t, p in md.partitions), "txn_start_ms": md.txn_start_ms,
        "last_update_ms": md.last_update_ms, "tv2": md.tv2,
    })


def decode_key(key: bytes) -> str:
    return json.loads(key)["transactional_id"]


def decode_value(transactional_id: str, value: bytes) -> TxnMetadata:
    data = json.loads(value)
    return TxnMetadata(
        transactional_id, int(data["producer_id"]), int(data.get("previous_producer_id", -1)),
        int(data.get("next_producer_id", -1)), int(data["producer_epoch"]), int(data.get("last_producer_epoch", -1)),
        int(data["timeout_ms"]), STATE_BY_NAME[data["state"]],
        frozenset((str(t), int(p)) for t, p in data.get("partitions", ())),
        int(data.get("txn_start_ms", -1)), int(data.get("last_update_ms", -1)), bool(data.get("tv2", False)),
    )
