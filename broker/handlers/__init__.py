"""The registry of Kafka API handlers: one module per API.

Each module declares API_KEY, VERSIONS (what ApiVersions advertises) and
`async def handle(ctx: RequestContext, request)` returning a kio response (or
None for acks=0 produce). Every handler asks `ctx.authorize(...)` for each
topic, group, transactional id or cluster action it touches and answers
Kafka's deny error when refused (broker/authorizer.py). A module may also define `async admit(ctx, request)`: the
connection's reader task awaits it, in arrival order, and it returns an awaitable for
the response; the connection can then read the next request while this one
completes (used by Produce so pipelined batches keep their order).

LISTENERS says where an API is served: "broker" (the default: client listeners), "controller" (the
controller listeners, where the metadata quorum's peers talk) or "both". ApiVersions advertises on each
listener what is served there, as Kafka's brokers and controllers do. FORWARDED_TO_CONTROLLER = True marks
a metadata change: on a node that is not the active controller the server forwards the request to it
(KIP-590), which serves it on its controller listener.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any, Awaitable, Callable

from lodestream.protocol.codec import schema_versions

from lodestream.broker.request_context import RequestContext

from lodestream.broker.handlers import (
    alter_configs,
    alter_partition_reassignments,
    api_versions,
    create_partitions,
    create_topics,
    delete_records,
    delete_topics,
    describe_cluster,
    describe_configs,
    describe_log_dirs,
    describe_topic_partitions,
    describe_user_scram_credentials,
    elect_leaders,
    fetch,
    incremental_alter_configs,
    list_config_resources,
    list_offsets,
    list_partition_reassignments,
    metadata,
    offset_for_leader_epoch,
    produce,
)
from lodestream.broker.handlers import consumer_group_describe, consumer_group_heartbeat  # KIP-848 consumer groups
from lodestream.broker.handlers import alter_client_quotas, describe_client_quotas  # client quotas (broker/quotas.py)
from lodestream.broker.handlers import create_acls, delete_acls, describe_acls  # ACLs (broker/authorizer.py)
from lodestream.broker.handlers import (  # authentication (broker/sasl.py) and its SCRAM credentials
    alter_user_scram_credentials,
    sasl_authenticate,
    sasl_handshake,
)
from lodestream.broker.handlers import describe_producers, init_producer_id  # idempotent producers (docs/transactions.md)
from lodestream.broker.handlers import (  # the transaction coordinator's APIs (broker/transactions)
    add_offsets_to_txn,
    add_partitions_to_txn,
    describe_transactions,
    end_txn,
    list_transactions,
    txn_offset_commit,
    write_txn_markers,
)
from lodestream.broker.handlers import (  # the metadata quorum (broker/metadata_quorum.py)
    allocate_producer_ids,
    alter_partition,
    begin_quorum_epoch,
    broker_heartbeat,
    broker_registration,
    describe_quorum,
    end_quorum_epoch,
    envelope,
    fetch_snapshot,
    update_admin_records,
    update_remote_segments,
    vote,
)
from lodestream.broker.handlers import (  # the group coordinator's APIs (broker/groups)
    delete_groups,
    describe_groups,
    find_coordinator,
    heartbeat,
    join_group,
    leave_group,
    list_groups,
    offset_commit,
    offset_delete,
    offset_fetch,
    sync_group,
)

@dataclass(frozen=True)
class Handler:
    api_key: int
    versions: range  # advertised
    parseable: range  # what kio can decode; versions outside it close the connection like Kafka
    handle: Callable[[RequestContext, Any], Awaitable[Any]]
    admit: Callable[[RequestContext, Any], Awaitable[Any]] | None
    listeners: str  # "broker", "controller" or "both"
    forwarded: bool  # a metadata change: a node that is not the active controller forwards it there

    def served_on(self, controller: bool) -> bool:
        return self.listeners == "both" or (self.listeners == "controller") == controller


def _handler(module: ModuleType) -> Handler:
    known = schema_versions(module.API_KEY)
    versions: range = module.VERSIONS
    parseable = range(max(versions.start, known.start), min(versions.stop, known.stop))
    listeners = getattr(module, "LISTENERS", "broker")
    assert listeners in ("broker", "controller", "both"), module
    forwarded = getattr(module, "FORWARDED_TO_CONTROLLER", False)
    assert not forwarded or listeners == "both", module  # the controller serves what is forwarded to it
    return Handler(module.API_KEY, versions, parseable, module.handle, getattr(module, "admit", None), listeners,
                   forwarded)


HANDLER_MODULES = (
    produce,
    fetch,
    list_offsets,
    metadata,
    offset_for_leader_epoch,
    api_versions,
    create_topics,
    delete_topics,
    delete_records,
    describe_configs,
    alter_configs,
    create_partitions,
    describe_log_dirs,
    incremental_alter_configs,
    describe_cluster,
    describe_topic_partitions,
    describe_user_scram_credentials, alter_user_scram_credentials,
    sasl_handshake, sasl_authenticate,
    create_acls, describe_acls, delete_acls,
    elect_leaders,
    alter_partition_reassignments,
    list_partition_reassignments,
    list_config_resources,
    offset_commit,
    offset_fetch,
    find_coordinator,
    join_group,
    heartbeat,
    leave_group,
    sync_group,
    describe_groups,
    list_groups,
    delete_groups,
    offset_delete,
    consumer_group_heartbeat, consumer_group_describe,
    describe_client_quotas, alter_client_quotas,
    init_producer_id, describe_producers,
    add_partitions_to_txn, add_offsets_to_txn, end_txn, txn_offset_commit, describe_transactions, list_transactions,
    write_txn_markers,
    vote, begin_quorum_epoch, end_quorum_epoch, fetch_snapshot, describe_quorum,
    broker_registration, broker_heartbeat, allocate_producer_ids,  # the active controller (broker/cluster_controller.py)
    alter_partition,
    envelope,  # clients' requests forwarded by brokers, with their principals
    update_remote_segments,  # Lodestream's own (protocol/lodestream_apis.py): tiered storage's manifests
    update_admin_records,  # and namespaces and offset snapshots
)

REGISTRY: dict[int, Handler] = {h.api_key: h for h in map(_handler, HANDLER_MODULES)}
envelope.REGISTRY = REGISTRY
api_versions.ADVERTISED = {
    controller: tuple((h.api_key, h.versions.start, h.versions.stop - 1)
                      for h in sorted(REGISTRY.values(), key=lambda h: h.api_key) if h.served_on(controller))
    for controller in (False, True)
}
