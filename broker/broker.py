"""The Broker: the services every handler (and later the REST API) calls.

Topic administration lives here, once, so the Kafka admin handlers,
auto-creation in Metadata and the REST API all go through the same
validation and the same metadata records.
"""

from __future__ import annotations

import dataclasses
import datetime
import fcntl
import logging
import os
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

import trio

from lodestream.consensus.image import MetadataImage, TopicImage
from lodestream.consensus.image_machine import image_to_records
from lodestream.consensus.records import ConfigRecord, MetadataRecord, PartitionRecord, RemoveTopicRecord, TopicRecord
from lodestream.protocol.errors import ErrorCode, KafkaError
from lodestream.storage.leveldb_log import LogStore, StorageError
from lodestream.storage.fragment_store import FragmentStoreError

from lodestream.broker import audit
from lodestream.broker.authorizer import AclAuthorizer, AllowAllAuthorizer, Authorizer
from lodestream.broker.clock import Clock
from lodestream.broker.config import (
    BROKER_CONFIGS,
    TOPIC_CONFIGS,
    BrokerConfig,
    ConfigError,
    StartupError,
    describe_without_effect,
    effective_broker_value,
    effective_topic_config,
    validate_broker_config,
    random_cluster_id,
    validate_topic_config,
    stores_problem,
    tiered_topic_problem,
)
from lodestream.broker.coordinator_runtime import InternalTopicLog
from lodestream.broker.groups.coordinator import GroupCoordinator
from lodestream.broker.groups.offsets_log import TOPIC_CONFIGS as OFFSETS_TOPIC_CONFIGS
from lodestream.broker.internal_topics import OFFSETS_TOPIC, TRANSACTION_STATE_TOPIC
from lodestream.broker.limits import LimitReporter, MemoryPool
from lodestream.broker.listeners import (
    check_cluster_roles,
    listener_security_protocols,
    check_inter_broker_protocol,
    parse_listeners,
    parse_quorum_voters,
    process_roles,
)
from lodestream.broker import tls
from lodestream.broker.namespaces import apply_defaults, namespace_of, quota_charges
from lodestream.broker.sasl import SaslServer, check_mechanisms, listener_plain_users
from lodestream.broker.scram import ScramCredential, credential_of
from lodestream.broker.session import Session
from lodestream.broker.log_cleaner import LogCleaner
from lodestream.broker.metadata_log import METADATA_LOG_DIR
from lodestream.broker.metadata_quorum import MetadataQuorum, QuorumError, quorum_timing
from lodestream.broker.cluster_controller import ClusterController
from lodestream.broker.controller_client import ControllerClient
from lodestream.broker.quorum_peers import ControllerConnection, QuorumPeers
from lodestream.broker.metrics import BrokerMetrics
from lodestream.broker.producer_ids import ProducerIdManager
from lodestream.broker.quotas import QuotaManager
from lodestream.broker.replica_manager import ReplicaManager
from lodestream.broker.replication import BrokerConnections, IsrManager, ReplicaFetchers
from lodestream.broker.transactions.coordinator import TransactionCoordinator
from lodestream.broker.transactions.state_log import TOPIC_CONFIGS as TXN_TOPIC_CONFIGS

log = logging.getLogger(__name__)

_LEGAL_TOPIC = re.compile(r"^[a-zA-Z0-9._-]+$")
MAX_TOPIC_NAME_LENGTH = 249
MAX_PARTITIONS = 10_000
CONTROLLER_WAIT_S = 10.0  # a change made through the controller reaches this node's image within this


def validate_topic_name(name: str) -> None:
    if not name:
        raise KafkaError(ErrorCode.invalid_topic_exception, "topic name is empty")
    if name in (".", ".."):
        raise KafkaError(ErrorCode.invalid_topic_exception, f"topic name {name!r} is not allowed")
    if len(name) > MAX_TOPIC_NAME_LENGTH:
        raise KafkaError(ErrorCode.invalid_topic_exception, f"topic name is longer than {MAX_TOPIC_NAME_LENGTH}")
    if not _LEGAL_TOPIC.match(name):
        raise KafkaError(
            ErrorCode.invalid_topic_exception,
            f"topic name {name!r} has characters other than ASCII alphanumerics, '.', '_' and '-'",
        )


def lock_data_dir(data_dir: Path) -> int:
    """Create log.dirs and hold an exclusive lock on its `.lock` file (as Kafka does) for the process's
    life, so a second broker on the same directory stops at once instead of sharing its files."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(data_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StartupError(f"log.dirs: cannot use data directory {data_dir}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        raise StartupError(f"log.dirs: data directory {data_dir} is in use by another broker"
                           f"{f' (pid {holder})' if holder else ''}; each broker needs a directory of its own") from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError as exc:
        os.close(fd)
        raise StartupError(f"log.dirs: data directory {data_dir} is not writable: {exc.strerror or exc}") from None
    return fd


@dataclass
class TopicSpec:
    name: str
    num_partitions: int = -1  # -1 = broker default
    replication_factor: int = -1
    assignments: dict[int, list[int]] = field(default_factory=dict)
    configs: dict[str, str | None] = field(default_factory=dict)


@dataclass
class BoundListener:
    name: str
    host: str
    port: int  # actually bound
    advertised_host: str
    advertised_port: int


class Broker:
    def __init__(self, config: BrokerConfig) -> None:
        self.config = config
        self.node_id = config.node_id
        self.data_dir = config.data_dir
        self.listener_specs = parse_listeners("listeners", config.raw("listeners"))
        self.advertised_specs = {s.name: s for s in parse_listeners("advertised.listeners", config.raw("advertised.listeners"))}
        controller_names = {n.strip().upper() for n in str(config.get("controller.listener.names")).split(",")}
        self.controller_listener_names = frozenset(controller_names)
        self.kafka_listener_specs = [s for s in self.listener_specs if s.name not in controller_names]
        self.controller_specs = [s for s in self.listener_specs if s.name in controller_names]
        self.roles = process_roles(config)  # broker, controller, or both
        self.is_broker = "broker" in self.roles
        if self.is_broker and not self.kafka_listener_specs:
            raise ConfigError("listeners: no client listener configured")
        if not self.is_broker and self.kafka_listener_specs:
            raise ConfigError(f"listeners: a controller-only node (process.roles=controller) serves only its "
                              f"controller listener, not {', '.join(s.name for s in self.kafka_listener_specs)}")
        unknown_advertised = sorted(set(self.advertised_specs) - {s.name for s in self.listener_specs})
        if unknown_advertised:
            raise ConfigError(f"advertised.listeners: {', '.join(unknown_advertised)} not among the listeners")
        # Each listener's security protocol; refuses listeners this broker cannot secure as asked.
        self.listener_security_protocols = listener_security_protocols(
            self.listener_specs, config.explicit.get("listener.security.protocol.map"), controller_names)
        check_cluster_roles(config)
        self.voters = parse_quorum_voters(str(config.get("controller.quorum.voters") or ""))
        clustered = len(self.voters) > 1 or "controller" not in self.roles  # other brokers are configured
        inter_broker_protocol = check_inter_broker_protocol(
            self.kafka_listener_specs, self.listener_security_protocols,
            str(config.get("inter.broker.listener.name") or ""), clustered)
        # Follower fetches and transaction markers over TLS when the inter-broker listener is SSL. A single
        # node needs no trust store until brokers join it (then it is needed: say so now).
        self.inter_broker_tls = None
        if inter_broker_protocol == "SSL" and self.is_broker:
            try:
                self.inter_broker_tls = tls.client_context(config.get)
            except ConfigError as exc:
                if clustered:
                    raise
                log.warning("%s: brokers that join this node later will not be reached", exc)
        # TLS contexts of the SSL listeners (broker/tls.py): a missing or unusable key refuses start-up.
        self.ssl_rules = tls.parse_mapping_rules(str(config.get("ssl.principal.mapping.rules")))
        self.tls_contexts = {spec.name: tls.server_context(config.get) for spec in self.kafka_listener_specs
                             if self.listener_security_protocols[spec.name] in ("SSL", "SASL_SSL")}
        # SASL on SASL_PLAINTEXT / SASL_SSL listeners (broker/sasl.py); None when there are none.
        self.sasl: SaslServer | None = None
        self.jwks_refresher = None  # OAUTHBEARER's JWKS, refreshed in the background (broker/oauth.py)
        sasl_listeners = [spec.name for spec in self.kafka_listener_specs
                          if self.listener_security_protocols[spec.name].startswith("SASL_")]
        if sasl_listeners:
            self._configure_sasl(sasl_listeners)
        self._tls_configs_seen = None  # the image's broker configs the contexts were last built from
        if len(self.voters) > 1 and "controller" in self.roles and not self.controller_specs:
            raise ConfigError(
                f"controller.quorum.voters lists {len(self.voters)} voters, but listeners has no controller listener "
                f"({', '.join(sorted(controller_names))}) for the other voters to reach this one: add e.g. "
                f"CONTROLLER://host:port, the address this node has in controller.quorum.voters")
        self.bound_listeners: list[BoundListener] = []  # client listeners
        self.bound_controller_listeners: list[BoundListener] = []
        self.quorum_peers = None  # connections to the other voters (broker/quorum_peers.py); none for one voter
        self.background: trio.Nursery | None = None  # serve_broker's, for work an image change starts
        self._data_dir_lock: int | None = None  # fd holding the flock on log.dirs/.lock
        self.io_limiter = trio.CapacityLimiter(4)
        self.cluster_id = ""
        self.quorum: MetadataQuorum | None = None
        self.store: LogStore | None = None
        self.replicas: ReplicaManager | None = None
        self.remote_log = None  # tiered storage's RemoteLogManager (broker/remote_log.py), when enabled
        self._metadata_lock = trio.Lock()
        # topic id -> (its config overrides, dynamic broker configs, effective configs): see topic_config
        self._topic_configs: dict[uuid.UUID, tuple[Mapping, Mapping, Mapping[str, str]]] = {}
        self.groups: GroupCoordinator | None = None  # the group coordinator (broker/groups)
        self.controller: ClusterController | None = None  # acts while this node leads the quorum
        self.controller_client: ControllerClient | None = None  # registration, heartbeats, requests to it
        self.producer_ids = ProducerIdManager(self._allocate_producer_ids)  # InitProducerId
        self.transactions = None  # the transaction coordinator (broker/transactions), docs/transactions.md
        self._logs_open = False  # open_logs finished: new images are applied to the partitions and coordinators
        self.log_cleaner: LogCleaner | None = None  # compacts compacted topics (broker/log_cleaner.py)
        self.fetchers = ReplicaFetchers(self)  # followers copying their leaders (broker/replication.py)
        self.isr_manager = IsrManager(self)  # leaders asking for ISR changes
        self.broker_connections = BrokerConnections(self)  # requests to other brokers (transaction markers)
        self.connections: set = set()  # server.Connection objects, for metrics
        self.clock = Clock()  # deadlines and stored timestamps (broker/clock.py)
        # Every handler asks it (broker/authorizer.py): ACLs from the image once authorizer.class.name is set.
        self.authorizer: Authorizer = AllowAllAuthorizer()
        if config.get("authorizer.class.name"):
            self.authorizer = AclAuthorizer(lambda: self.image.acls, config.get("super.users"),
                                            bool(config.get("allow.everyone.if.no.acl.found")))
        self.connections_per_ip: dict[str, int] = {}  # open connections by peer IP (max.connections.per.ip)
        pool_bytes = int(config.get("queued.max.request.bytes"))
        self.request_pool = MemoryPool(None if pool_bytes < 0 else pool_bytes)  # queued.max.request.bytes
        self.limits = LimitReporter()  # limit hits: counted (metrics) and logged once per interval
        self.metrics = BrokerMetrics(self)  # a registry of its own: several brokers may share a process
        self.quotas = QuotaManager(lambda: self.image.client_quotas)  # client quotas (broker/quotas.py)

    # -- start-up / shut-down -----------------------------------------------------
    def open(self) -> None:
        """Blocking start-up work (runs before the trio listeners start). Raises StartupError with one
        clear line when the data directory cannot be used or a port cannot be bound.

        A one-voter quorum (the embedded default) has its image at once, so the logs and coordinators
        open here too; a node of a larger quorum opens them in serve_broker, once it has caught up with
        the metadata log (open_logs)."""
        self._data_dir_lock = lock_data_dir(self.data_dir)
        self.cluster_id = self._load_or_create_cluster_id()
        voters = tuple(node for node, _ in self.voters) or (self.node_id,)
        alone = voters == (self.node_id,)  # a one-voter quorum: no peers, its image is there at once
        self.quorum = MetadataQuorum(self.node_id, voters, self.data_dir / METADATA_LOG_DIR,
                                     timing=quorum_timing(self.config), on_image=self._on_image)
        try:
            self.quorum.open()
            self._migrate_legacy_metadata()
        except QuorumError as exc:
            raise StartupError(f"metadata quorum: {exc}") from None
        self.controller = ClusterController(self.quorum, self.node_id, self.cluster_id,
                                            int(self.config.get("broker.session.timeout.ms")), self._election_settings,
                                            self._rebalance_settings)
        connection = None
        if not alone:
            addresses = {}
            for node, address in self.voters:
                host, _, port = address.rpartition(":")
                if node != self.node_id:
                    addresses[node] = (host.strip("[]"), int(port))
            timeout_s = self.quorum.timing.request_timeout_ms / 1000
            self.quorum_peers = QuorumPeers(self.quorum, self.node_id, self.cluster_id, addresses, timeout_s)
            connection = ControllerConnection(self.quorum, self.node_id, addresses, timeout_s)
        self.controller_client = ControllerClient(self, self.controller, connection)
        if alone:
            self.open_logs()
            self.logs_opened()

    def open_logs(self) -> None:
        """Open the partition logs and replay the coordinators' internal topics (blocking), once the
        metadata image is current."""
        try:
            self.store = LogStore(self.data_dir / "log", sync_writes=self.config.sync_on_append,
                                  producer_id_expiration_ms=int(self.config.get("producer.id.expiration.ms")))
        except StorageError as exc:
            raise StartupError(f"log.dirs: cannot open the partition logs in {self.data_dir / 'log'}: {exc}") from None
        self.replicas = ReplicaManager(
            self.store, self.config.sync_on_append, self.config.flush_interval_seconds, self.io_limiter,
            metrics=self.metrics, producer_expiration_check_seconds=int(self.config.get("producer.id.expiration.check.interval.ms")) / 1000,
            node_id=self.node_id,
        )
        self.replicas.follower_caught_up = self.isr_manager.follower_caught_up
        self.replicas.snapshot_offsets = self.snapshot_offsets
        if self.config.get("remote.log.storage.system.enable"):
            # Tiered storage's code (pyeclib, httpx) is loaded only by brokers that use it.
            from lodestream.broker.remote_log import RemoteLogManager
            try:
                self.remote_log = RemoteLogManager.from_config(self)
            except FragmentStoreError as exc:
                raise StartupError(f"remote.fragment.stores: {exc}") from None
        self.log_cleaner = LogCleaner(lambda: list(self.replicas.partitions.values()), self.retention_config,
                                      self.broker_config_value, self.metrics)
        self._reconcile(self.quorum.image)
        # Drop data of topics deleted while their files were being removed.
        live = {(t.topic_id, p) for t in self.quorum.image.topics_by_id.values() for p in t.partitions}
        orphans = self.store.existing_partitions() - live
        if orphans and not live:  # an image without any topic next to stored data: keep it, say so
            log.warning("the metadata image has no topics, but %d partitions are stored here: kept (is this the "
                        "data directory of another cluster, or was __cluster_metadata-0 removed?)", len(orphans))
            orphans = set()
        for topic_id, index in orphans:
            log.info("dropping orphaned partition data %s-%d", topic_id, index)
            self.store.drop_partition(topic_id, index)
        # Groups and committed offsets: replay __consumer_offsets before serving.
        self.groups = GroupCoordinator(self.broker_config_value, self._internal_log(
            OFFSETS_TOPIC, {**OFFSETS_TOPIC_CONFIGS, "segment.bytes": str(self.config.get("offsets.topic.segment.bytes"))}),
                                       self.clock)
        self.groups.load(self._led_partitions(OFFSETS_TOPIC))
        # Transactions: replay __transaction_state. Each coordinator's task runs in serve_broker.
        self.transactions = TransactionCoordinator(
            self.broker_config_value, self._internal_log(TRANSACTION_STATE_TOPIC, {
                **TXN_TOPIC_CONFIGS, "segment.bytes": str(self.config.get("transaction.state.log.segment.bytes"))}),
            self.producer_ids.allocate, self.write_markers, self.clock)
        self.transactions.load(self._led_partitions(TRANSACTION_STATE_TOPIC))

    def _internal_log(self, topic: str, configs: dict[str, str]) -> InternalTopicLog:
        assert self.replicas is not None
        return InternalTopicLog(topic, configs, lambda: self.image, self.replicas, self.create_internal_topic,
                                self.holds_lease)

    async def write_markers(self, partitions: list[tuple[str, int]], producer_id: int, producer_epoch: int,
                            commit: bool, coordinator_epoch: int) -> None:
        """The transaction coordinator's markers: through the partition layer for the partitions this broker
        leads (ReplicaManager.write_markers), with WriteTxnMarkers to the leaders of the others. Raises
        KafkaError when a leader could not take them (the coordinator retries)."""
        assert self.replicas is not None
        targets = []
        elsewhere: dict[int, dict[str, list[int]]] = {}  # leader -> topic -> partitions
        for topic_name, index in partitions:
            topic = self.image.topic(topic_name)
            p = topic.partitions.get(index) if topic is not None else None
            if p is None:
                log.warning("no marker for %s-%d: the partition no longer exists", topic_name, index)
                continue
            partition = self.replicas.get(topic.topic_id, index)
            if p.leader == self.node_id and partition is not None and partition.is_leader:
                targets.append(partition)
            else:
                elsewhere.setdefault(p.leader, {}).setdefault(topic_name, []).append(index)
        failures = []
        if targets:
            refused = await self.replicas.write_markers(targets, producer_id, producer_epoch, commit,
                                                        coordinator_epoch)
            for partition, error in refused.items():
                if error == ErrorCode.not_leader_or_follower:  # leadership moved: the new leader gets it
                    failures.append(f"{partition.topic_name}-{partition.index}: leadership moved")
                    continue
                log.warning("%s-%d refused the %s marker of producer %d epoch %d: %s", partition.topic_name,
                            partition.index, "commit" if commit else "abort", producer_id, producer_epoch,
                            error.name)
        for leader, topics in elsewhere.items():
            if leader < 0:
                failures.append(f"{sorted(topics)} have no leader")
                continue
            from kio.schema.write_txn_markers.v1 import request as markers

            response = await self.broker_connections.request(leader, markers.WriteTxnMarkersRequest(markers=(
                markers.WritableTxnMarker(producer_id=producer_id, producer_epoch=producer_epoch,
                                          transaction_result=commit, coordinator_epoch=coordinator_epoch,
                                          topics=tuple(markers.WritableTxnMarkerTopic(name=name, partition_indexes=tuple(indexes))
                                                       for name, indexes in topics.items())),)))
            for topic in response.markers[0].topics:
                for answer in topic.partitions:
                    error = ErrorCode(answer.error_code)
                    if error in (ErrorCode.not_leader_or_follower, ErrorCode.unknown_topic_or_partition,
                                 ErrorCode.kafka_storage_error, ErrorCode.request_timed_out):
                        failures.append(f"{topic.name}-{answer.partition_index} at broker {leader}: {error.name}")
                    elif error != ErrorCode.none:
                        log.warning("%s-%d refused the %s marker of producer %d: %s", topic.name,
                                    answer.partition_index, "commit" if commit else "abort", producer_id, error.name)
        if failures:
            raise KafkaError(ErrorCode.not_leader_or_follower, "markers not written: " + "; ".join(failures))

    async def verify_in_transaction(self, transactional_id: str, producer_id: int, producer_epoch: int,
                                    topic: str, partition: int) -> ErrorCode:
        """KIP-890 part 1: whether the producer's ongoing transaction holds the partition, asked of the
        transactional id's coordinator, here or (AddPartitionsToTxn verify_only, as Kafka's partition leaders
        ask) on the broker leading its __transaction_state partition. The raw coordinator answer; an
        unreachable or moving coordinator is COORDINATOR_NOT_AVAILABLE (the client retries)."""
        coordinator = self.transactions
        txn_topic = self.image.topic(TRANSACTION_STATE_TOPIC)
        if coordinator is None or txn_topic is None:
            return ErrorCode.invalid_producer_id_mapping  # no transaction was ever begun in this cluster
        index = coordinator.partition_for(transactional_id)
        state = txn_topic.partitions.get(index)
        leader = state.leader if state is not None else -1
        if leader == self.node_id or leader < 0:
            result = coordinator.verify_partitions(transactional_id, producer_id, producer_epoch, [(topic, partition)])
            return result[(topic, partition)] if isinstance(result, dict) else result
        from kio.schema.add_partitions_to_txn.v4 import request as add

        try:
            response = await self.broker_connections.request(leader, add.AddPartitionsToTxnRequest(transactions=(
                add.AddPartitionsToTxnTransaction(transactional_id=transactional_id, producer_id=producer_id,
                                                  producer_epoch=producer_epoch, verify_only=True, topics=(
                                                      add.AddPartitionsToTxnTopic(name=topic,
                                                                                  partitions=(partition,)),)),)))
        except KafkaError:
            return ErrorCode.coordinator_not_available
        if response.error_code != ErrorCode.none:
            return ErrorCode(response.error_code)
        for result in response.results_by_transaction:
            for topic_result in result.topic_results:
                for partition_result in topic_result.results_by_partition:
                    return ErrorCode(partition_result.partition_error_code)
        return ErrorCode.coordinator_not_available

    def _migrate_legacy_metadata(self) -> None:
        """A data directory written before KRaft keeps its metadata in a pysyncobj journal (`metadata/`).
        Its image is proposed once as records into the KRaft log; then the old directory is renamed, so
        a crash in between only proposes the same records again (replaying them is idempotent)."""
        legacy = self.data_dir / "metadata"
        if not legacy.is_dir():
            return
        if not self.quorum.is_leader:
            raise StartupError(f"log.dirs: {legacy} holds metadata of a Lodestream older than KRaft: start this "
                               "directory once as a single node (no controller.quorum.voters) to migrate it")
        from lodestream.broker.pysyncobj_metadata import read_legacy_image  # only ever needed once

        image = read_legacy_image(legacy)
        records = image_to_records(image)
        if records:
            self.quorum.propose_blocking(records)
        legacy.rename(self.data_dir / "metadata.pre-kraft")
        log.info("migrated the pre-KRaft metadata (%d topics) into the KRaft log; the old journal is kept in "
                 "%s", len(image.topics_by_id), self.data_dir / "metadata.pre-kraft")

    def _load_or_create_cluster_id(self) -> str:
        """meta.properties as Kafka keeps it: the cluster and node this directory belongs to. A directory
        of another cluster (cluster.id set and different) or of another node refuses to start."""
        meta = self.data_dir / "meta.properties"
        configured = self.config.get("cluster.id")
        if meta.exists():
            properties = dict(line.split("=", 1) for line in meta.read_text().splitlines()
                              if "=" in line and not line.startswith("#"))
            stored = properties.get("cluster.id", "").strip()
            if configured and stored and configured != stored:
                raise StartupError(f"cluster.id={configured}, but {meta} says this data directory belongs to "
                                   f"cluster {stored}; use the directory of a node of this cluster")
            stored_node = properties.get("node.id", "").strip()
            if stored_node and stored_node != str(self.node_id):
                raise StartupError(f"node.id={self.node_id}, but {meta} says this data directory is node "
                                   f"{stored_node}'s")
            if stored:
                return stored
        if self.voters and [node for node, _ in self.voters] != [self.node_id] and not configured:
            raise StartupError(
                "cluster.id: a node of a quorum of several voters needs the cluster's id, the same on every node "
                "(e.g. `lodestream random-cluster-id`), to be formatted on first start")
        cluster_id = configured or random_cluster_id()
        try:
            meta.write_text(f"version=1\ncluster.id={cluster_id}\nnode.id={self.node_id}\n")
        except OSError as exc:
            raise StartupError(f"log.dirs: cannot write {meta}: {exc.strerror or exc}") from None
        return cluster_id

    def controller_endpoints(self) -> dict[int, tuple[str, str, int]]:
        """Each voter's controller listener: {node id: (listener name, host, port)} (DescribeQuorum)."""
        name = next(iter(sorted(self.controller_listener_names)), "CONTROLLER")
        endpoints = {}
        for node, address in self.voters:
            host, _, port = address.rpartition(":")
            endpoints[node] = (name, host.strip("[]"), int(port))
        for bound in self.bound_controller_listeners[:1]:
            endpoints[self.node_id] = (bound.name, bound.advertised_host, bound.advertised_port)
        return endpoints

    def close(self) -> None:
        if self.log_cleaner is not None:
            self.log_cleaner.close()
        if self.quorum is not None:
            self.quorum.close()
        if self.store is not None:
            self.store.close()
        if self._data_dir_lock is not None:
            os.close(self._data_dir_lock)  # releases the flock
            self._data_dir_lock = None

    # -- metadata ---------------------------------------------------------------------
    @property
    def image(self) -> MetadataImage:
        assert self.quorum is not None
        return self.quorum.image

    def logs_opened(self) -> None:
        """open_logs has finished (on a worker thread, while the quorum went on applying metadata here): apply
        the images from now on, starting with the current one."""
        self._logs_open = True
        self._on_image(self.image)

    def _configure_sasl(self, listeners: list[str]) -> None:
        config = self.config
        mechanisms = list(config.get("sasl.enabled.mechanisms"))
        check_mechanisms(mechanisms, config)
        plain_users = listener_plain_users(config, listeners) if "PLAIN" in mechanisms else {}
        validator = None
        if "OAUTHBEARER" in mechanisms:
            # Imported here: pyjwt and cryptography weigh on every broker's memory otherwise.
            from lodestream.broker.oauth import JwksRefresher, JwtValidator
            validator = JwtValidator(
                audiences=[a.strip() for a in str(config.get("sasl.oauthbearer.expected.audience") or "").split(",")
                           if a.strip()],
                issuer=config.get("sasl.oauthbearer.expected.issuer"),
                principal_claim=str(config.get("sasl.oauthbearer.sub.claim.name")),
                clock_skew_s=int(config.get("sasl.oauthbearer.clock.skew.seconds")))
            self.jwks_refresher = JwksRefresher(validator, str(config.get("sasl.oauthbearer.jwks.endpoint.url")),
                                                int(config.get("sasl.oauthbearer.jwks.endpoint.refresh.ms")) / 1000)
        self.sasl = SaslServer(mechanisms, lambda listener: plain_users.get(listener, {}), self.scram_credential,
                               validator)

    def scram_credential(self, user: str, mechanism: str) -> ScramCredential | None:
        """A user's SCRAM credential from the image (SASL/SCRAM logins, the REST API's basic auth)."""
        record = self.image.scram_credentials.get((user, mechanism))
        return None if record is None else credential_of(record)

    def _tls_setting(self, dynamic: Mapping[str, Mapping[str, str]]):
        """ssl.* settings as the dynamic broker configs `dynamic` would make them (Kafka's precedence)."""
        def setting(key: str):
            value, source = effective_broker_value(self.config, dynamic, self.node_id, key)
            return self.config.get(key) if source in ("STATIC_BROKER_CONFIG", "DEFAULT_CONFIG") else value
        return setting

    def _reload_tls(self, image: MetadataImage) -> None:
        """Certificates reload without a restart, as Kafka's do: a broker config change (AlterConfigs of an
        ssl.* key, even to the value it has, to read the files again) rebuilds the SSL listeners' contexts.
        New connections use them; open ones keep theirs."""
        self._tls_configs_seen = image.broker_configs
        try:
            context = tls.server_context(self._tls_setting(image.broker_configs))
        except ConfigError as exc:  # AlterConfigs checked it; a file changed since: keep serving the old one
            log.error("TLS certificates not reloaded, the listeners keep the ones they have: %s", exc)
            return
        self.tls_contexts = {name: context for name in self.tls_contexts}
        log.info("TLS: key and certificates (re)loaded for %s", ", ".join(sorted(self.tls_contexts)))

    def _on_image(self, image: MetadataImage) -> None:
        """The quorum applied metadata (possibly written by another node): host what this node leads, and
        coordinate the groups and transactions of the internal partitions it leads. Not while open_logs
        runs on its thread: both would change the same partitions and coordinators (logs_opened catches up)."""
        if self.replicas is None or not self._logs_open:
            return
        if self.tls_contexts and image.broker_configs is not self._tls_configs_seen:
            self._reload_tls(image)
        self._reconcile(image)
        gone = {topic_id for topic_id, _ in self.replicas.partitions} - set(image.topics_by_id)
        if gone and self.background is not None:  # deleted through another node: its data goes here too
            for topic_id in gone:
                self.background.start_soon(self._drop_deleted_topic, topic_id)
        for coordinator, name in ((self.groups, OFFSETS_TOPIC), (self.transactions, TRANSACTION_STATE_TOPIC)):
            if coordinator is None or image.topic(name) is None:
                continue
            led = set(self._led_partitions(name))
            runtime = coordinator.runtime
            for partition in [p for p in runtime.partitions if p not in led]:
                runtime.unload(partition)
            newly = sorted(led - set(runtime.partitions))
            if newly:
                coordinator.load(newly)

    async def _drop_deleted_topic(self, topic_id: uuid.UUID) -> None:
        if topic_id in self.image.topics_by_id:
            return
        self.fetchers.forget_topic(topic_id)
        await self.replicas.drop_topic(topic_id)
        self._topic_configs.pop(topic_id, None)
        log.info("dropped the partitions of deleted topic %s", topic_id)

    def _led_partitions(self, topic_name: str) -> list[int] | None:
        """The partitions of an internal topic this node leads; None (all of them) before the topic exists,
        so a coordinator's first request creates it (and is redirected if another node leads its partition)."""
        topic = self.image.topic(topic_name)
        if topic is None:
            return None
        return [p.partition for p in topic.partitions.values() if p.leader == self.node_id]

    async def _allocate_producer_ids(self) -> tuple[int, int]:
        assert self.controller_client is not None
        return await self.controller_client.allocate_producer_ids()

    def broker_endpoints(self, listener_name: str, include_fenced: bool = False) -> list[tuple[int, str, int, str | None, bool]]:
        """(broker id, host, port, rack, fenced) of the registered brokers that have a listener of that name
        (clients are told about the unfenced ones), by id; this node alone before any registered."""
        registered = sorted(self.image.brokers.values(), key=lambda b: b.broker_id)
        if not registered and self.bound_listeners:
            bound = next((b for b in self.bound_listeners if b.name == listener_name), self.bound_listeners[0])
            return [(self.node_id, bound.advertised_host, bound.advertised_port, self.config.get("broker.rack"), False)]
        found = []
        for broker in registered:
            endpoint = broker.endpoint(listener_name) or (broker.endpoints[0][1:3] if broker.endpoints else None)
            if endpoint is not None and (include_fenced or not broker.fenced):
                found.append((broker.broker_id, endpoint[0], endpoint[1], broker.rack, broker.fenced))
        return found

    def holds_lease(self) -> bool:
        """Whether the controller cannot have replaced this broker yet (ControllerClient.holds_lease)."""
        return self.controller_client is None or self.controller_client.holds_lease()

    def not_leader_error(self, topic: TopicImage, index: int) -> ErrorCode:
        """Why a partition of an existing topic is not served here: it has no such partition, or this broker
        does not lead it."""
        return ErrorCode.not_leader_or_follower if index in topic.partitions else ErrorCode.unknown_topic_or_partition

    def leader_of(self, topic: TopicImage, index: int) -> tuple[int, int]:
        """(leader id, leader epoch) of a partition, as this node's image has it (KIP-951's hint)."""
        p = topic.partitions.get(index)
        return (p.leader, p.leader_epoch) if p is not None else (-1, -1)

    def node_endpoints(self, build, listener_name: str, node_ids) -> tuple:
        """NodeEndpoint entries for the leaders a Produce or Fetch answer names (KIP-951; Fetch v16+ and
        Produce v10+ have them)."""
        wanted = set(node_ids) - {-1}
        if not wanted or not build.has("NodeEndpoint"):
            return ()
        return tuple(build.NodeEndpoint(node_id=node, host=host, port=port, rack=rack)
                     for node, host, port, rack, _ in self.broker_endpoints(listener_name) if node in wanted)

    def active_controller_id(self) -> int:
        """What Metadata and DescribeCluster give clients as the controller: a broker they can reach, which
        forwards what only the controller does (KIP-590). The quorum's leader when it is a live broker
        (combined nodes), else this broker, as Kafka's KRaft brokers answer."""
        leader = self.quorum.leader if self.quorum is not None else -1
        live = {broker.broker_id for broker in self.image.live_brokers()}
        return leader if leader in live or not live else self.node_id

    def broker_ids(self) -> set[int]:
        """The registered brokers (this node alone before any registered)."""
        return set(self.image.brokers) or {self.node_id}

    def _reconcile(self, image: MetadataImage) -> None:
        """Host every partition this broker is a replica of, with its topic's segment settings, in the role
        the image gives it: a leader serves it, a follower fetches it from its leader."""
        if self.replicas is None:  # a controller-only node, or one still catching up
            return
        for topic in image.topics_by_id.values():
            config = None
            for p in topic.partitions.values():
                if self.node_id not in p.replicas:
                    continue
                hosted = self.replicas.ensure_partition(topic.name, topic.topic_id, p.partition, p.leader_epoch)
                config = config or self.topic_config(topic)
                hosted.configure(config)
                hosted.remote = self.remote_log
                hosted.set_remote_log(image.remote_log(topic.topic_id, p.partition))
                role = hosted.apply_state(p.replicas, p.leader, p.leader_epoch, p.isr, p.partition_epoch,
                                          int(config["min.insync.replicas"]))
                if role == "leader":
                    self.fetchers.stop(hosted)
                    if len(p.replicas) > 1:
                        log.info("leading %s-%d in epoch %d (ISR %s)", topic.name, p.partition, p.leader_epoch,
                                 list(p.isr))
                elif role == "follower":
                    self.replicas.leadership_lost(hosted)
                    self.fetchers.follow(hosted, p.leader)
                    log.info("following %s-%d from broker %d in epoch %d", topic.name, p.partition, p.leader,
                             p.leader_epoch)
                elif hosted.is_leader:
                    self.replicas.advance_high_watermark(hosted)  # the ISR may have shrunk
        moved_away = [key for key in self.replicas.partitions if self._moved_away(image, key)]
        if moved_away and self.background is not None:  # a reassignment took these replicas elsewhere
            for key in moved_away:
                self.fetchers.stop(self.replicas.partitions[key])
            self.background.start_soon(self._drop_moved_replicas, moved_away)

    def _moved_away(self, image: MetadataImage, key: tuple[uuid.UUID, int]) -> bool:
        topic = image.topics_by_id.get(key[0])
        p = topic.partitions.get(key[1]) if topic is not None else None
        return p is not None and self.node_id not in p.replicas

    def _rebalance_settings(self) -> tuple[bool, float, int]:
        return (bool(self.broker_config_value("auto.leader.rebalance.enable")),
                float(self.broker_config_value("leader.imbalance.check.interval.seconds")),
                int(self.broker_config_value("leader.imbalance.per.broker.percentage")))

    async def _drop_moved_replicas(self, keys: list[tuple[uuid.UUID, int]]) -> None:
        keys = [key for key in keys if key in self.replicas.partitions and self._moved_away(self.image, key)]
        if keys:
            await self.replicas.drop_partitions(keys)
            log.info("deleted %d partition replicas a reassignment moved to other brokers", len(keys))

    def _election_settings(self, topic: TopicImage) -> tuple[int, bool]:
        """(min.insync.replicas, unclean.leader.election.enable) of a topic, for the controller's ISR and
        leader changes."""
        config = self.topic_config(topic)
        return int(config["min.insync.replicas"]), str(config["unclean.leader.election.enable"]).lower() == "true"

    def snapshot_offsets(self, partition) -> dict[str, int]:
        """{snapshot name: offset} of the offset snapshots pointing into a hosted partition
        (broker/offset_snapshots.py): what retention warns about, or keeps."""
        return {name: offset for name, snapshot in self.image.offset_snapshots.items()
                for topic, index, offset in snapshot.offsets
                if topic == partition.topic_name and index == partition.index and offset >= 0}

    def log_start_offset(self, topic_name: str, index: int) -> int | None:
        """A hosted partition's log start (None: not hosted here)."""
        topic = self.image.topic(topic_name)
        partition = self.replicas.get(topic.topic_id, index) if topic is not None else None
        return partition.log_start_offset if partition is not None else None

    def retention_config(self, partition) -> Mapping[str, str] | None:
        """The topic configs retention and the cleaner read for a hosted partition (None once its topic is
        gone)."""
        topic = self.image.topics_by_id.get(partition.topic_id)
        return None if topic is None else self.topic_config(topic)

    async def propose(self, records: list[MetadataRecord]) -> MetadataImage:
        """Commit records through the quorum (ClusterController.propose), then host what the new image
        gives this node."""
        assert self.controller is not None
        image = await self.controller.propose(records)
        self._reconcile(image)
        return image

    async def _alter_configs_at_controller(self, resource_type: int, name: str, changes: dict[str, str | None],
                                           replace_all: bool, validate_only: bool, session: Session | None) -> None:
        """A config change this node was asked for (the REST API), made by the active controller:
        IncrementalAlterConfigs, or the legacy AlterConfigs when the whole set is replaced; in an Envelope with
        the caller's principal when there is one, which the controller authorizes and logs (broker/audit.py)."""
        if replace_all:
            from kio.schema.alter_configs.v2 import request as alter

            body = alter.AlterConfigsRequest(resources=(alter.AlterConfigsResource(
                resource_type=resource_type, resource_name=name,
                configs=tuple(alter.AlterableConfig(name=k, value=v) for k, v in changes.items() if v is not None)),),
                validate_only=validate_only)
        else:
            from kio.schema.incremental_alter_configs.v1 import request as alter

            body = alter.IncrementalAlterConfigsRequest(resources=(alter.AlterConfigsResource(
                resource_type=resource_type, resource_name=name,
                configs=tuple(alter.AlterableConfig(name=k, config_operation=1 if v is None else 0, value=v)
                              for k, v in changes.items())),), validate_only=validate_only)
        if session is not None:
            response = await self.controller_client.forward_for(session, 0, "lodestream-rest", body)
        else:
            response = await self.controller_client.forward(body)
        _raise_forwarded(response.responses[0])
        if validate_only:
            return

        def applied_here(image: MetadataImage) -> bool:  # the change has reached this node's image
            if resource_type == 2:
                topic = image.topic(name)
                current = topic.configs if topic is not None else {}
            else:
                current = image.broker_configs.get(name, {})
            return all(current.get(key) == value for key, value in changes.items())

        await self.quorum.wait_for(applied_here, CONTROLLER_WAIT_S)

    @property
    def forwards_to_controller(self) -> bool:
        """Requests that change metadata go to the active controller: this node is not it."""
        return self.quorum_peers is not None and not self.quorum.is_leader

    async def _create_topic_at_controller(self, name: str, num_partitions: int, configs: dict[str, str],
                                          replication_factor: int) -> TopicImage:
        """Create a topic this node needs (auto-creation, an internal topic) through the active controller,
        with a CreateTopics request as a Kafka broker sends it; returns once this node's image has it."""
        from kio.schema.create_topics.v7 import request as create

        response = await self.controller_client.forward(create.CreateTopicsRequest(
            topics=(create.CreatableTopic(name=name, num_partitions=num_partitions, replication_factor=replication_factor,
                                          assignments=(),
                                          configs=tuple(create.CreatableTopicConfig(name=k, value=v)
                                                        for k, v in configs.items())),),
            timeout=datetime.timedelta(seconds=30), validate_only=False))
        result = response.topics[0]
        if result.error_code not in (ErrorCode.none, ErrorCode.topic_already_exists):
            raise KafkaError(ErrorCode(result.error_code), result.error_message)
        topic = await self.quorum.wait_for(lambda image: image.topic(name), CONTROLLER_WAIT_S)
        if topic is None:
            raise KafkaError(ErrorCode.request_timed_out, f"topic {name} was created but has not reached this node yet")
        return topic

    def topic_config(self, topic: TopicImage) -> Mapping[str, str]:
        """Effective topic configs (overrides, then broker synonyms, then defaults).

        Produce asks for this per partition per request, so the result is kept
        until the topic's overrides or the dynamic broker configs change; both
        are immutable mappings in the image, so identity tells whether they did.
        """
        broker_configs = self.image.broker_configs
        cached = self._topic_configs.get(topic.topic_id)
        if cached is not None and cached[0] is topic.configs and cached[1] is broker_configs:
            return cached[2]
        effective = MappingProxyType(effective_topic_config(topic.configs, self.config, broker_configs, self.node_id))
        self._topic_configs[topic.topic_id] = (topic.configs, broker_configs, effective)
        return effective

    def namespace_throttle_ms(self, key: str, bytes_by_topic: Mapping[str, int]) -> int:
        """The throttle a produce or consumer fetch of these bytes earns under its namespaces' quotas
        (producer_byte_rate / consumer_byte_rate: broker/namespaces.py); 0 without any."""
        if not self.image.namespaces:
            return 0
        charges = quota_charges(self.image.namespaces, key, bytes_by_topic)
        return self.quotas.record_namespaces(key, charges) if charges else 0

    def broker_config_value(self, key: str):
        """Effective value of a broker property (Kafka's precedence: effective_broker_value), parsed."""
        value, source = effective_broker_value(self.config, self.image.broker_configs, self.node_id, key)
        if source in ("DYNAMIC_BROKER_CONFIG", "DYNAMIC_DEFAULT_BROKER_CONFIG"):
            return BROKER_CONFIGS[key].parse(value)
        return self.config.get(key)  # the static value, parsed once at start-up

    # -- topic administration ------------------------------------------------------------
    def check_topic_spec(self, spec: TopicSpec) -> tuple[int, dict[str, str], int]:
        """Validate a CreateTopics entry; return (partition count, configs, replication factor). Raises
        KafkaError. A topic in a namespace gets its defaults where the request leaves them out."""
        validate_topic_name(spec.name)
        num_partitions, with_defaults = apply_defaults(namespace_of(self.image.namespaces, spec.name),
                                                       spec.num_partitions, spec.configs)
        spec = dataclasses.replace(spec, configs=with_defaults,
                                   num_partitions=spec.num_partitions if spec.assignments else num_partitions)
        if spec.name in self.image.topics_by_name:
            raise KafkaError(ErrorCode.topic_already_exists, f"Topic '{spec.name}' already exists.")
        if spec.assignments:
            if spec.num_partitions != -1 or spec.replication_factor != -1:
                raise KafkaError(
                    ErrorCode.invalid_request,
                    "Both numPartitions or replicationFactor and replicasAssignments were set. Both cannot be used at the same time.",
                )
            known = self.broker_ids()
            for index, replicas in spec.assignments.items():
                unknown = [r for r in replicas if r not in known]
                if unknown:
                    raise KafkaError(
                        ErrorCode.invalid_replica_assignment,
                        f"Replica assignment for partition {index} names brokers {unknown} that are not in this cluster "
                        f"(its brokers are {sorted(known)}).",
                    )
                if len(set(replicas)) != len(replicas) or not replicas:
                    raise KafkaError(ErrorCode.invalid_replica_assignment, f"bad replica list {replicas} for partition {index}")
            if sorted(spec.assignments) != list(range(len(spec.assignments))):
                raise KafkaError(ErrorCode.invalid_replica_assignment, "partitions must be numbered consecutively from 0")
            count = len(spec.assignments)
            factor = len(spec.assignments[0])
        else:
            count = spec.num_partitions if spec.num_partitions != -1 else int(self.broker_config_value("num.partitions"))
            if count <= 0:
                raise KafkaError(ErrorCode.invalid_partitions, "Number of partitions must be larger than 0.")
            if count > MAX_PARTITIONS:
                raise KafkaError(ErrorCode.invalid_partitions, f"Number of partitions must be at most {MAX_PARTITIONS}.")
            factor = spec.replication_factor if spec.replication_factor != -1 else int(self.broker_config_value("default.replication.factor"))
            if factor <= 0:
                raise KafkaError(ErrorCode.invalid_replication_factor, "Replication factor must be larger than 0.")
            live = len(self.image.live_brokers()) or 1
            if factor > live:
                raise KafkaError(
                    ErrorCode.invalid_replication_factor,
                    f"Unable to replicate the partition {factor} time(s): The target replication factor of {factor} "
                    f"cannot be reached because only {live} broker(s) are registered.",
                )
        configs: dict[str, str] = {}
        for key, value in spec.configs.items():
            try:
                validate_topic_config(key, value)
            except ConfigError as exc:
                raise KafkaError(ErrorCode.invalid_config, str(exc)) from None
            configs[key] = value  # type: ignore[assignment]
        self._check_tiered_topic(configs)
        return count, configs, factor

    def _check_tiered_topic(self, overrides: Mapping[str, str]) -> None:
        """INVALID_CONFIG naming the key when a topic's configs are not a valid tiered-storage set."""
        effective = effective_topic_config(overrides, self.config, self.image.broker_configs, self.node_id)
        problem = tiered_topic_problem(effective, bool(self.config.get("remote.log.storage.system.enable")),
                                       len(self.config.get("remote.fragment.stores")))
        if problem:
            raise KafkaError(ErrorCode.invalid_config, problem)

    async def create_topic(self, spec: TopicSpec, validate_only: bool = False) -> TopicImage | None:
        async with self._metadata_lock:
            count, configs, factor = self.check_topic_spec(spec)
            if validate_only:
                return None
            if self.forwards_to_controller and not spec.assignments:  # the REST API on another node
                return await self._create_topic_at_controller(spec.name, count, configs, factor)
            topic_id = uuid.uuid4()
            records: list[MetadataRecord] = [TopicRecord(spec.name, topic_id)]
            records += [ConfigRecord("topic", spec.name, k, v) for k, v in configs.items()]
            assignments = [tuple(spec.assignments[i]) for i in range(count)] if spec.assignments \
                else self.controller.place(count, replication_factor=factor)
            records += [PartitionRecord(topic_id, i, replicas, replicas[0], 0, replicas)
                        for i, replicas in enumerate(assignments)]
            image = await self.propose(records)
            log.info("created topic %s (%s) with %d partitions", spec.name, topic_id, count)
            _warn_without_effect(f"topic {spec.name}", configs, TOPIC_CONFIGS)
            return image.topics_by_id[topic_id]

    async def create_internal_topic(self, name: str, num_partitions: int, configs: dict[str, str]) -> TopicImage:
        """Create an internal topic (__consumer_offsets) with its own partition count and configs.

        Skips the broker defaults and CreateTopics' validation; a concurrent creation is tolerated."""
        async with self._metadata_lock:
            existing = self.image.topic(name)
            if existing is not None:
                return existing
            # As many replicas as configured, or as live brokers when there are fewer (a single node).
            key = {OFFSETS_TOPIC: "offsets.topic.replication.factor",
                   TRANSACTION_STATE_TOPIC: "transaction.state.log.replication.factor"}.get(name)
            factor = min(int(self.config.get(key)) if key else 1, max(1, len(self.image.live_brokers())))
            if self.forwards_to_controller:
                return await self._create_topic_at_controller(name, num_partitions, configs, factor)
            topic_id = uuid.uuid4()
            records: list[MetadataRecord] = [TopicRecord(name, topic_id)]
            records += [ConfigRecord("topic", name, k, v) for k, v in configs.items()]
            records += [PartitionRecord(topic_id, i, replicas, replicas[0], 0, replicas)
                        for i, replicas in enumerate(self.controller.place(num_partitions, replication_factor=factor))]
            image = await self.propose(records)
            log.info("created internal topic %s (%s) with %d partitions", name, topic_id, num_partitions)
            return image.topics_by_id[topic_id]

    async def auto_create_topic(self, name: str) -> TopicImage:
        """Create a topic with broker defaults, tolerating a concurrent creation."""
        # Internal topics are created by their coordinators, with their own settings, as in Kafka.
        coordinator = {OFFSETS_TOPIC: self.groups, TRANSACTION_STATE_TOPIC: self.transactions}.get(name)
        if coordinator is not None:
            await coordinator.ensure_loaded()
            topic = self.image.topic(name)
            assert topic is not None
            return topic
        try:
            created = await self.create_topic(TopicSpec(name))
            assert created is not None
            return created
        except KafkaError as exc:
            if exc.code == ErrorCode.topic_already_exists:
                topic = self.image.topic(name)
                if topic is not None:
                    return topic
            raise

    async def delete_topic(self, topic: TopicImage) -> None:
        async with self._metadata_lock:
            if not bool(self.broker_config_value("delete.topic.enable")):
                raise KafkaError(ErrorCode.topic_deletion_disabled, "Topic deletion is disabled.")
            if topic.topic_id not in self.image.topics_by_id:
                raise KafkaError(ErrorCode.unknown_topic_or_partition, f"Topic '{topic.name}' does not exist.")
            if self.forwards_to_controller:
                from kio.schema.delete_topics.v6 import request as delete

                response = await self.controller_client.forward(delete.DeleteTopicsRequest(
                    topics=(delete.DeleteTopicState(name=None, topic_id=topic.topic_id),),
                    timeout=datetime.timedelta(seconds=30)))
                _raise_forwarded(response.responses[0])
                return  # the partitions go where they are hosted once the deletion reaches each node
            await self.propose([RemoveTopicRecord(topic.topic_id)])
            if self.replicas is not None:
                self.fetchers.forget_topic(topic.topic_id)
                await self.replicas.drop_topic(topic.topic_id)
            self._topic_configs.pop(topic.topic_id, None)
            self.metrics.forget_topic(topic.name)
            log.info("deleted topic %s (%s)", topic.name, topic.topic_id)

    async def create_partitions(self, name: str, count: int, assignments: list[list[int]] | None, validate_only: bool) -> None:
        async with self._metadata_lock:
            topic = self.image.topic(name)
            if topic is None:
                raise KafkaError(ErrorCode.unknown_topic_or_partition, f"Topic '{name}' does not exist.")
            current = len(topic.partitions)
            if count < current:
                raise KafkaError(ErrorCode.invalid_partitions, f"Topic currently has {current} partitions, which is higher than the requested {count}.")
            if count == current:
                raise KafkaError(ErrorCode.invalid_partitions, f"Topic already has {current} partitions.")
            if count > MAX_PARTITIONS:
                raise KafkaError(ErrorCode.invalid_partitions, f"Number of partitions must be at most {MAX_PARTITIONS}.")
            if self.forwards_to_controller and assignments is None:
                from kio.schema.create_partitions.v3 import request as create

                response = await self.controller_client.forward(create.CreatePartitionsRequest(
                    topics=(create.CreatePartitionsTopic(name=name, count=count, assignments=None),),
                    timeout=datetime.timedelta(seconds=30), validate_only=validate_only))
                _raise_forwarded(response.results[0])
                return
            if assignments is not None:
                if len(assignments) != count - current:
                    raise KafkaError(ErrorCode.invalid_replica_assignment,
                                     f"Increasing the number of partitions by {count - current} but {len(assignments)} assignments provided.")
                known = self.broker_ids()
                for replicas in assignments:
                    if not replicas or any(r not in known for r in replicas):
                        raise KafkaError(ErrorCode.invalid_replica_assignment,
                                         f"Replica assignment {replicas} names brokers that are not in this cluster.")
            if validate_only:
                return
            factor = len(next(iter(topic.partitions.values())).replicas) if topic.partitions else 1
            placed = [tuple(replicas) for replicas in assignments] if assignments is not None \
                else self.controller.place(count - current, current, factor)
            await self.propose([PartitionRecord(topic.topic_id, current + i, replicas, replicas[0], 0, replicas)
                                for i, replicas in enumerate(placed)])

    async def alter_topic_configs(self, name: str, changes: dict[str, str | None], replace_all: bool, validate_only: bool,
                                  session: Session | None = None) -> None:
        """Set (str) or delete (None) topic config overrides. replace_all = legacy AlterConfigs semantics.
        `session` is who asks (the audit log names them, broker/audit.py)."""
        async with self._metadata_lock:
            topic = self.image.topic(name)
            if topic is None:
                raise KafkaError(ErrorCode.unknown_topic_or_partition, f"Topic '{name}' does not exist.")
            if self.forwards_to_controller:
                return await self._alter_configs_at_controller(2, name, changes, replace_all, validate_only, session)
            for key, value in changes.items():
                if value is None:
                    if key not in TOPIC_CONFIGS:
                        raise KafkaError(ErrorCode.invalid_config, f"unknown topic config {key!r}")
                    continue
                try:
                    validate_topic_config(key, value)
                except ConfigError as exc:
                    raise KafkaError(ErrorCode.invalid_config, str(exc)) from None
            if replace_all:
                changes = {**{k: None for k in topic.configs if k not in changes}, **changes}
            overrides = {k: v for k, v in {**topic.configs, **changes}.items() if v is not None}
            self._check_tiered_topic(overrides)
            if validate_only or not changes:
                return
            await self.propose([ConfigRecord("topic", name, k, v) for k, v in changes.items()])
            audit.config_changed(session, f"topic {name}", changes, TOPIC_CONFIGS)
            _warn_without_effect(f"topic {name}", [k for k, v in changes.items() if v is not None], TOPIC_CONFIGS)

    async def alter_broker_configs(self, broker: str, changes: dict[str, str | None], replace_all: bool, validate_only: bool,
                                   session: Session | None = None) -> None:
        """Dynamic broker configs; broker "" is the cluster-wide default. `session` is who asks (the audit log
        names them, broker/audit.py)."""
        async with self._metadata_lock:
            if broker != "" and (not broker.isdigit() or int(broker) not in self.broker_ids() | {self.node_id}):
                raise KafkaError(ErrorCode.invalid_request, f"Unknown broker id {broker}.")
            if self.forwards_to_controller:
                return await self._alter_configs_at_controller(4, broker, changes, replace_all, validate_only, session)
            for key, value in changes.items():
                definition = BROKER_CONFIGS.get(key)
                if definition is None:
                    raise KafkaError(ErrorCode.invalid_config, f"unknown broker config {key!r}")
                if definition.read_only:
                    raise KafkaError(ErrorCode.invalid_config, f"Cannot update these configs dynamically: {{{key}}}")
                if definition.per_broker_only and broker == "":
                    raise KafkaError(ErrorCode.invalid_request, "Cannot update these configs at default cluster level, "
                                                               f"broker id must be specified: {{{key}}}")
                if value is not None:
                    try:
                        validate_broker_config(key, value)
                    except ConfigError as exc:
                        raise KafkaError(ErrorCode.invalid_config, str(exc)) from None
                if key.startswith("ssl.") and self.tls_contexts:  # a key or certificate that cannot load: refused
                    merged = {k: v for k, v in {**self.image.broker_configs.get(broker or str(self.node_id), {}),
                                                **changes}.items() if v is not None}
                    try:
                        tls.server_context(self._tls_setting({**self.image.broker_configs,
                                                              broker or str(self.node_id): merged}))
                    except ConfigError as exc:
                        raise KafkaError(ErrorCode.invalid_config, str(exc)) from None
                if key == "remote.erasure.code" and value is not None \
                        and self.config.get("remote.log.storage.system.enable"):
                    problem = stores_problem(value, len(self.config.get("remote.fragment.stores")))
                    if problem:
                        raise KafkaError(ErrorCode.invalid_config, problem)
            if replace_all:
                existing = self.image.broker_configs.get(broker, {})
                changes = {**{k: None for k in existing if k not in changes}, **changes}
            if validate_only or not changes:
                return
            await self.propose([ConfigRecord("broker", broker, k, v) for k, v in changes.items()])
            audit.config_changed(session, f"broker {broker}" if broker else "cluster-wide broker default", changes,
                                 BROKER_CONFIGS)
            _warn_without_effect(f"broker config {broker or '(cluster default)'}",
                                 [k for k, v in changes.items() if v is not None], BROKER_CONFIGS)


def _warn_without_effect(what: str, keys, table) -> None:
    """Kafka config names are accepted where Lodestream does not act on them: say so when they are set."""
    note = describe_without_effect(keys, table)
    if note:
        log.warning("%s: accepted with no effect here: %s", what, note)


def _raise_forwarded(result) -> None:
    """The KafkaError of a forwarded request's result entry, if it has one."""
    if result.error_code != ErrorCode.none:
        raise KafkaError(ErrorCode(result.error_code), getattr(result, "error_message", None))
