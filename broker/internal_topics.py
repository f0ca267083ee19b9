"""Kafka's internal topics (Topic.INTERNAL_TOPICS): flagged is_internal in Metadata and the REST API,
and never matched by a consumer group's regex subscription."""

OFFSETS_TOPIC = "__consumer_offsets"  # the group coordinator's log (broker/groups/offsets_log.py)
TRANSACTION_STATE_TOPIC = "__transaction_state"  # the transaction coordinator's log (broker/transactions)
SHARE_GROUP_STATE_TOPIC = "__share_group_state"  # share groups (KIP-932), not implemented: the name is reserved

INTERNAL_TOPICS = frozenset({OFFSETS_TOPIC, TRANSACTION_STATE_TOPIC, SHARE_GROUP_STATE_TOPIC})
