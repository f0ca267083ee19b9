"""The active controller's duties: what the node leading the metadata quorum decides for the cluster.

* Broker registration (BrokerRegistration): a broker joins fenced, with a new broker epoch.
* Heartbeats (BrokerHeartbeat): a broker that has caught up with the metadata log is unfenced; one whose
  heartbeats stop for `broker.session.timeout.ms` is fenced; one that asks to shut down is fenced first
  (controlled shutdown). Fencing takes the broker out of its partitions' ISRs and elects new leaders for
  the ones it led; unfencing gives leaderless partitions a leader again (consensus/partition_change.py).
* ISR changes its partition leaders ask for (AlterPartition), leader elections on request (ElectLeaders)
  and, with auto.leader.rebalance.enable, preferred leaders given back their partitions.
* Producer-id blocks (AllocateProducerIds), and where new partitions go (`place`).

Every node runs one; only the quorum's leader acts (others answer NOT_CONTROLLER). Heartbeat times live
in memory: a new leader gives every registered broker a full session before fencing it.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from dataclasses import replace
from typing import Callable

import trio

from lodestream.consensus import partition_change
from lodestream.consensus.image import MetadataImage, TopicImage
from lodestream.consensus.records import (REMOTE_SEGMENT_NEXT_STATES, BrokerFencingRecord, ProducerIdsRecord,
                                          RegisterBrokerRecord, RemoteSegmentRecord)
from lodestream.protocol.errors import ErrorCode, KafkaError

from lodestream.broker.namespaces import check_records as check_namespace_records
from lodestream.broker.offset_snapshots import SNAPSHOT_RECORDS, check_records as check_snapshot_records
from lodestream.broker.metadata_quorum import MetadataQuorum, QuorumError

log = logging.getLogger(__name__)

PRODUCER_ID_BLOCK = 1000  # Kafka's ProducerIdsBlock size
SECURITY_PROTOCOL_IDS = {"PLAINTEXT": 0, "SSL": 1, "SASL_PLAINTEXT": 2, "SASL_SSL": 3}
SECURITY_PROTOCOL_NAMES = {code: name for name, code in SECURITY_PROTOCOL_IDS.items()}


def rack_alternating(brokers: list) -> list:
    """Brokers ordered so that consecutive ones are on different racks where possible (Kafka's rack-aware
    order: one broker of each rack in turn); without racks, by id."""
    by_rack: dict[str | None, list] = {}
    for broker in sorted(brokers, key=lambda b: b.broker_id):
        by_rack.setdefault(broker.rack, []).append(broker)
    if len(by_rack) <= 1:
        return sorted(brokers, key=lambda b: b.broker_id)
    ordered, queues = [], [by_rack[rack] for rack in sorted(by_rack, key=str)]
    while any(queues):
        for queue in queues:
            if queue:
                ordered.append(queue.pop(0))
    return ordered


class ClusterController:
    def __init__(self, quorum: MetadataQuorum, node_id: int, cluster_id: str, session_timeout_ms: int,
                 election_settings: Callable[[TopicImage], tuple[int, bool]] = lambda topic: (1, False),
                 rebalance_settings: Callable[[], tuple[bool, float, int]] = lambda: (False, 300.0, 10)) -> None:
        self.quorum = quorum
        # (auto.leader.rebalance.enable, leader.imbalance.check.interval.seconds, leader.imbalance.per.broker.percentage)
        self.rebalance_settings = rebalance_settings
        # A topic's (min.insync.replicas, unclean.leader.election.enable), for ISR and leader changes.
        self.election_settings = election_settings
        self.node_id = node_id
        self.cluster_id = cluster_id
        self.session_timeout_s = session_timeout_ms / 1000
        self._heartbeats: dict[int, float] = {}  # broker id -> monotonic time of its last heartbeat to us
        self._since = time.monotonic()  # when this controller started acting: brokers' grace starts here
        self._caught_up_at: dict[int, int] = {}  # broker id -> metadata offset it must reach to be unfenced
        self._led_epoch = -1  # the quorum epoch this controller last acted in
        self._lock = trio.Lock()  # one decision at a time: each reads the image the previous one wrote

    @property
    def image(self) -> MetadataImage:
        return self.quorum.image

    def _check_active(self) -> None:
        if not self.quorum.is_leader:
            raise KafkaError(ErrorCode.not_controller, f"node {self.node_id} is not the active controller "
                                                       f"(the leader is {self.quorum.leader})")
        if self._led_epoch != self.quorum.epoch:  # newly elected: every broker gets a full session from now
            self._led_epoch = self.quorum.epoch
            self._since = time.monotonic()
            self._heartbeats = {}
            self._caught_up_at = {}

    async def propose(self, records: list) -> MetadataImage:
        """Commit records through the quorum; NOT_CONTROLLER when this node does not lead it (other nodes
        forward what changes metadata to the leader) or stopped leading before the commit."""
        try:
            return await self.quorum.propose(records)
        except QuorumError as exc:
            raise KafkaError(ErrorCode.not_controller, str(exc)) from None

    # -- brokers ----------------------------------------------------------------------------------

    async def register(self, broker_id: int, cluster_id: str, incarnation_id: uuid.UUID,
                       endpoints: tuple[tuple[str, str, int, str], ...], rack: str | None) -> int:
        """A broker's registration; returns its broker epoch."""
        if cluster_id != self.cluster_id:
            raise KafkaError(ErrorCode.inconsistent_cluster_id,
                             f"cluster id {cluster_id!r} is not this cluster's ({self.cluster_id!r})")
        async with self._lock:
            self._check_active()
            current = self.image.brokers.get(broker_id)
            if current is not None and current.incarnation_id == incarnation_id:
                return current.broker_epoch  # a retried registration
            if current is not None and not current.fenced and broker_id in self._heartbeats \
                    and time.monotonic() - self._heartbeats[broker_id] < self.session_timeout_s:
                raise KafkaError(ErrorCode.duplicate_broker_registration,
                                 f"broker {broker_id} is registered and alive (another process with this node.id?)")
            epoch = max([b.broker_epoch for b in self.image.brokers.values()] + [self.quorum.high_watermark]) + 1
            await self.propose([RegisterBrokerRecord(broker_id, incarnation_id, epoch, endpoints, rack)])
            self._heartbeats[broker_id] = time.monotonic()
            self._caught_up_at[broker_id] = self.quorum.high_watermark
            log.info("broker %d registered (epoch %d, rack %s)", broker_id, epoch, rack)
            return epoch

    async def heartbeat(self, broker_id: int, broker_epoch: int, metadata_offset: int, want_fence: bool,
                        want_shut_down: bool) -> tuple[bool, bool, bool]:
        """(is caught up, is fenced, should shut down) after this heartbeat."""
        async with self._lock:
            self._check_active()
            broker = self.image.brokers.get(broker_id)
            if broker is None or broker.broker_epoch != broker_epoch:
                raise KafkaError(ErrorCode.stale_broker_epoch, f"broker {broker_id} epoch {broker_epoch} is not current")
            self._heartbeats[broker_id] = time.monotonic()
            caught_up = metadata_offset >= self._caught_up_at.setdefault(broker_id, self.quorum.high_watermark)
            fence = want_fence or want_shut_down
            if broker.fenced and caught_up and not fence:
                await self._set_fenced(broker_id, broker_epoch, False)
            elif not broker.fenced and fence:
                await self._set_fenced(broker_id, broker_epoch, True)
            fenced = self.image.brokers[broker_id].fenced
            return caught_up, fenced, want_shut_down and fenced

    async def fence_silent_brokers(self) -> None:
        """Fence the unfenced brokers whose heartbeats stopped (runs periodically on every node)."""
        if not self.quorum.is_leader:
            return
        async with self._lock:
            self._check_active()
            now = time.monotonic()
            for broker in self.image.live_brokers():
                if broker.broker_id == self.node_id:
                    continue  # this node's own heartbeats are local calls: it is alive while it decides
                if now - self._heartbeats.get(broker.broker_id, self._since) >= self.session_timeout_s:
                    log.warning("broker %d missed its heartbeats for %.1f s: fenced", broker.broker_id,
                                self.session_timeout_s)
                    await self._set_fenced(broker.broker_id, broker.broker_epoch, True)

    async def _set_fenced(self, broker_id: int, broker_epoch: int, fenced: bool) -> None:
        """Fence or unfence, with the ISR and leader changes of the broker's partitions in the same batch."""
        records: list = [BrokerFencingRecord(broker_id, broker_epoch, fenced)]
        live = {b.broker_id for b in self.image.live_brokers()}
        live = live - {broker_id} if fenced else live | {broker_id}
        for topic in self.image.topics_by_id.values():
            min_isr, unclean = self.election_settings(topic)
            for p in topic.partitions.values():
                change = partition_change.on_fenced(p, broker_id, live, min_isr, unclean) if fenced \
                    else partition_change.on_unfenced(p, live, unclean)
                if change is not None:
                    records.append(p.record(topic.topic_id, leader=change.leader, leader_epoch=change.leader_epoch,
                                            isr=change.isr, elr=change.elr))
        await self.propose(records)
        if fenced:  # unfenced again only once it has applied its own fencing (and lost its leaderships)
            self._caught_up_at[broker_id] = self.quorum.high_watermark
        log.info("broker %d %s (%d partitions changed)", broker_id, "fenced" if fenced else "unfenced",
                 len(records) - 1)

    # -- partitions -------------------------------------------------------------------------------------

    async def alter_partition(self, broker_id: int, broker_epoch: int, topic_id: uuid.UUID, index: int,
                              leader_epoch: int, partition_epoch: int, new_isr: list[tuple[int, int]]):
        """A partition leader's ISR change (AlterPartition); returns the partition's image after it.
        Refused as Kafka refuses: FENCED_LEADER_EPOCH (not the current leader and epoch),
        INVALID_UPDATE_VERSION (a stale partition epoch), INELIGIBLE_REPLICA (a fenced or re-registered
        broker, or the leader missing from the new ISR)."""
        async with self._lock:
            self._check_active()
            broker = self.image.brokers.get(broker_id)
            if broker is None or broker.broker_epoch != broker_epoch or broker.fenced:
                raise KafkaError(ErrorCode.stale_broker_epoch, f"broker {broker_id} epoch {broker_epoch} is not current")
            topic = self.image.topics_by_id.get(topic_id)
            p = topic.partitions.get(index) if topic is not None else None
            if p is None:
                raise KafkaError(ErrorCode.unknown_topic_or_partition, f"no partition {topic_id}-{index}")
            if p.leader != broker_id or p.leader_epoch != leader_epoch:
                raise KafkaError(ErrorCode.fenced_leader_epoch, f"leader of {topic.name}-{index} is {p.leader} in "
                                                                f"epoch {p.leader_epoch}")
            if p.partition_epoch != partition_epoch:
                raise KafkaError(ErrorCode.invalid_update_version, f"{topic.name}-{index} is at partition epoch "
                                                                   f"{p.partition_epoch}, not {partition_epoch}")
            members = [member for member, _ in new_isr]
            for member, epoch in new_isr:
                registered = self.image.brokers.get(member)
                if member not in p.replicas or registered is None or registered.fenced \
                        or (epoch >= 0 and registered.broker_epoch != epoch):
                    raise KafkaError(ErrorCode.ineligible_replica, f"broker {member} cannot join the ISR of "
                                                                   f"{topic.name}-{index}")
            if broker_id not in members:
                raise KafkaError(ErrorCode.ineligible_replica, "the leader must stay in its ISR")
            min_isr, unclean = self.election_settings(topic)
            change = partition_change.with_isr(p, tuple(members), min_isr)
            if change.isr != p.isr or change.elr != p.elr:
                record = p.record(topic_id, isr=change.isr, elr=change.elr)
                # A reassignment whose new replicas are now all in the ISR completes in the same record.
                after = replace(p, isr=change.isr, elr=change.elr)
                done = partition_change.complete_reassignment(after, {b.broker_id for b in self.image.live_brokers()},
                                                              unclean) if p.adding or p.removing else None
                if done is not None:
                    record = self._completed(topic, after, done)
                await self.propose([record])
                log.info("%s-%d ISR %s -> %s (leader %d)", topic.name, index, list(p.isr), list(change.isr), broker_id)
            return self.image.topics_by_id[topic_id].partitions[index]

    async def update_admin_records(self, records: list) -> None:
        """Namespace or offset snapshot changes made through a broker's REST API (broker/namespaces.py,
        broker/offset_snapshots.py): checked, then committed together. INVALID_REQUEST says why a batch is
        refused."""
        async with self._lock:
            self._check_active()
            snapshots = any(isinstance(r, SNAPSHOT_RECORDS) for r in records)
            problem = (check_snapshot_records if snapshots else check_namespace_records)(self.image, records)
            if problem:
                raise KafkaError(ErrorCode.invalid_request, problem)
            await self.propose(records)

    async def update_remote_segments(self, broker_id: int, broker_epoch: int | None, records: list) -> None:
        """State changes of offloaded segments' manifests (RemoteSegmentRecord), from the leader of their
        partition, committed together. Refused: STALE_BROKER_EPOCH (a remote caller's registration is not
        current), UNKNOWN_TOPIC_OR_PARTITION, NOT_LEADER_OR_FOLLOWER (only a partition's leader offloads and
        deletes its segments), INVALID_REQUEST (not a manifest, a state change out of KIP-405's order, or a
        manifest whose offsets differ from the segment's earlier state)."""
        async with self._lock:
            self._check_active()
            if broker_epoch is not None:
                broker = self.image.brokers.get(broker_id)
                if broker is None or broker.broker_epoch != broker_epoch or broker.fenced:
                    raise KafkaError(ErrorCode.stale_broker_epoch,
                                     f"broker {broker_id} epoch {broker_epoch} is not current")
            latest: dict = {}
            for record in records:
                if not isinstance(record, RemoteSegmentRecord):
                    raise KafkaError(ErrorCode.invalid_request, f"not a remote segment manifest: {record!r}")
                topic = self.image.topics_by_id.get(record.topic_id)
                p = topic.partitions.get(record.partition) if topic is not None else None
                if p is None:
                    raise KafkaError(ErrorCode.unknown_topic_or_partition,
                                     f"no partition {record.topic_id}-{record.partition}")
                if p.leader != broker_id:
                    raise KafkaError(ErrorCode.not_leader_or_follower,
                                     f"broker {broker_id} does not lead {topic.name}-{record.partition}")
                key = (record.topic_id, record.partition, record.segment_id)
                current = latest.get(key) or self.image.remote_segments.get(key[:2], {}).get(record.segment_id)
                if record.state not in REMOTE_SEGMENT_NEXT_STATES.get(current.state if current else None, ()):
                    raise KafkaError(ErrorCode.invalid_request,
                                     f"segment {record.segment_id} of {topic.name}-{record.partition}: "
                                     f"{current.state if current else 'no state'} -> {record.state} is not allowed")
                if current is not None and (current.base_offset, current.end_offset) != \
                        (record.base_offset, record.end_offset):
                    raise KafkaError(ErrorCode.invalid_request,
                                     f"segment {record.segment_id}: its offsets cannot change")
                latest[key] = record
            await self.propose(records)

    @staticmethod
    def _completed(topic: TopicImage, p, done: partition_change.Change):
        kept = tuple(r for r in p.replicas if r not in p.removing)
        log.info("%s-%d reassignment complete: replicas %s, leader %d", topic.name, p.partition, list(kept),
                 done.leader)
        return p.record(topic.topic_id, replicas=kept, leader=done.leader, leader_epoch=done.leader_epoch,
                        isr=done.isr, elr=done.elr, adding=(), removing=())

    async def reassign(self, moves: list[tuple[str, int, tuple[int, ...] | None]]) -> dict:
        """AlterPartitionReassignments: move each partition to its target replicas (None: cancel its ongoing
        move). The new replicas join as followers and catch up; once all are in the ISR the leaving ones go
        (alter_partition completes it). {(topic, partition): (error, message)}."""
        async with self._lock:
            self._check_active()
            live = {b.broker_id for b in self.image.live_brokers()}
            results: dict[tuple[str, int], tuple[ErrorCode, str | None]] = {}
            records = []
            for name, index, target in moves:
                topic = self.image.topic(name)
                p = topic.partitions.get(index) if topic is not None else None
                if p is None:
                    results[(name, index)] = (ErrorCode.unknown_topic_or_partition, f"no partition {name}-{index}")
                    continue
                if target is None:
                    if not (p.adding or p.removing):
                        results[(name, index)] = (ErrorCode.no_reassignment_in_progress,
                                                  f"no reassignment of {name}-{index} is in progress")
                        continue
                    target = tuple(r for r in p.replicas if r not in p.adding)
                if not target or len(set(target)) != len(target) or any(r not in self.image.brokers for r in target):
                    results[(name, index)] = (ErrorCode.invalid_replica_assignment,
                                              f"replicas {list(target)} must be distinct registered brokers")
                    continue
                replicas, adding, removing = partition_change.reassign(p, target)
                moving = replace(p, replicas=replicas, adding=adding, removing=removing)
                _, unclean = self.election_settings(topic)
                done = partition_change.complete_reassignment(moving, live, unclean)
                records.append(self._completed(topic, moving, done) if done is not None else
                               p.record(topic.topic_id, replicas=replicas, adding=adding, removing=removing))
                results[(name, index)] = (ErrorCode.none, None)
                log.info("%s-%d reassignment to %s: adding %s, removing %s", name, index, list(target), list(adding),
                         list(removing))
            if records:
                await self.propose(records)
            return results

    async def elect_leaders(self, unclean: bool, wanted: list[tuple[str, int]] | None) -> dict:
        """ElectLeaders: preferred (the first replica leads, if live and in the ISR) or unclean (a leaderless
        partition takes any live replica). {(topic, partition): (error, message)}; `wanted` None = every
        partition, answering only those where a leader was elected."""
        async with self._lock:
            self._check_active()
            live = {b.broker_id for b in self.image.live_brokers()}
            results: dict[tuple[str, int], tuple[ErrorCode, str | None]] = {}
            records = []
            targets = wanted if wanted is not None else [
                (topic.name, p) for topic in self.image.topics_by_id.values() for p in topic.partitions]
            for name, index in targets:
                topic = self.image.topic(name)
                p = topic.partitions.get(index) if topic is not None else None
                if p is None:
                    results[(name, index)] = (ErrorCode.unknown_topic_or_partition, f"no partition {name}-{index}")
                    continue
                if unclean:
                    change = None if p.leader >= 0 else partition_change.on_unfenced(p, live, unclean=True)
                    missing = (ErrorCode.election_not_needed, "the partition has a leader") if p.leader >= 0 else \
                        (ErrorCode.eligible_leaders_not_available, "no replica of the partition is alive")
                else:
                    change = partition_change.preferred(p, live)
                    missing = (ErrorCode.election_not_needed, "the preferred replica leads") \
                        if p.leader == p.replicas[0] else \
                        (ErrorCode.preferred_leader_not_available,
                         f"the preferred replica {p.replicas[0]} is not alive and in the ISR")
                if change is None:
                    if wanted is not None:
                        results[(name, index)] = missing
                    continue
                records.append(p.record(topic.topic_id, leader=change.leader, leader_epoch=change.leader_epoch,
                                        isr=change.isr, elr=change.elr))
                results[(name, index)] = (ErrorCode.none, None)
            if records:
                await self.propose(records)
                log.info("%s leader election: %d partitions changed leader", "unclean" if unclean else "preferred",
                         len(records))
            return results

    async def rebalance_leaders(self, imbalance_percentage: int) -> None:
        """auto.leader.rebalance.enable: for each broker whose share of partitions it is the preferred
        replica of but does not lead is above leader.imbalance.per.broker.percentage, elect it there."""
        preferred: dict[int, list[tuple[str, int]]] = {}
        imbalanced: dict[int, list[tuple[str, int]]] = {}
        live = {b.broker_id for b in self.image.live_brokers()}
        for topic in self.image.topics_by_id.values():
            for p in topic.partitions.values():
                if len(p.replicas) < 2:
                    continue
                first = p.replicas[0]
                preferred.setdefault(first, []).append((topic.name, p.partition))
                if p.leader != first and first in live and first in p.isr:
                    imbalanced.setdefault(first, []).append((topic.name, p.partition))
        wanted = [key for broker, keys in imbalanced.items()
                  if len(keys) * 100 > imbalance_percentage * len(preferred[broker]) for key in keys]
        if wanted:
            await self.elect_leaders(False, wanted)

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        next_rebalance = time.monotonic() + self.rebalance_settings()[1]
        while True:
            await trio.sleep(min(1.0, self.session_timeout_s / 4))
            try:
                await self.fence_silent_brokers()
                enabled, interval_s, percentage = self.rebalance_settings()
                if time.monotonic() >= next_rebalance:
                    next_rebalance = time.monotonic() + interval_s
                    if enabled and self.quorum.is_leader:
                        await self.rebalance_leaders(percentage)
            except KafkaError:
                pass  # lost leadership meanwhile

    # -- producer ids and placement --------------------------------------------------------------------

    async def allocate_producer_ids(self, broker_id: int, broker_epoch: int | None) -> tuple[int, int]:
        """A block of producer ids nobody had: (first id, count)."""
        async with self._lock:
            self._check_active()
            if broker_epoch is not None and broker_epoch >= 0:
                broker = self.image.brokers.get(broker_id)
                if broker is None or broker.broker_epoch != broker_epoch:
                    raise KafkaError(ErrorCode.stale_broker_epoch, f"broker {broker_id} epoch {broker_epoch} is not current")
            start = self.image.next_producer_id
            await self.propose([ProducerIdsRecord(broker_id, start + PRODUCER_ID_BLOCK)])
            return start, PRODUCER_ID_BLOCK

    def place(self, count: int, first: int = 0, replication_factor: int = 1) -> list[tuple[int, ...]]:
        """Replicas of `count` new partitions numbered from `first`: over the unfenced brokers in
        rack-alternating order from a random start, each partition's replicas the next brokers in turn, so
        leaders and followers spread as Kafka spreads them. Before any broker registered (a node's very
        first start), this node. INVALID_REPLICATION_FACTOR when fewer brokers are alive."""
        live = rack_alternating(self.image.live_brokers())
        if not live:
            live_ids = [self.node_id]
        else:
            live_ids = [broker.broker_id for broker in live]
        if replication_factor > len(live_ids):
            raise KafkaError(ErrorCode.invalid_replication_factor,
                             f"Unable to replicate the partition {replication_factor} time(s): The target "
                             f"replication factor of {replication_factor} cannot be reached because only "
                             f"{len(live_ids)} broker(s) are registered.")
        start = random.randrange(len(live_ids))
        return [tuple(live_ids[(start + first + i + r) % len(live_ids)] for r in range(replication_factor))
                for i in range(count)]


def registration_endpoints(bound_listeners, protocols: dict[str, str]) -> tuple[tuple[str, str, int, str], ...]:
    """This broker's client listeners as a registration names them."""
    return tuple((b.name, b.advertised_host, b.advertised_port, protocols.get(b.name, "PLAINTEXT"))
                 for b in bound_listeners)

