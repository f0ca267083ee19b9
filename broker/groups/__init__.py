"""Group coordination: classic groups (JoinGroup/SyncGroup), KIP-848 consumer
groups, and committed offsets, all persisted in ``__consumer_offsets``."""
