"""The active controller's duties: what the node leading the metadata quorum decides for the cluster.

* Broker registration (BrokerRegistration): a broker joins fenced, with a new broker epoch.
* Heartbeats (BrokerHeartbeat): a broker that has caught up with the metadata log is unfenced; one whose
  heartbeats stop for `broker.session.timeout.ms` is fenced; one that asks to shut down is fenced first
  (controlled shutdown). Fencing moves the broker's partitions to no leader (they have one replica until
  replication lands), unfencing gives them back, each with a new leader epoch.
* Producer-id blocks (AllocateProducerIds), and where new partitions go (`place`).

Every node runs one; only the quorum's leader acts (others answer NOT_CONTROLLER). Heartbeat times live
in memory: a new leader gives every registered broker a full session before fencing it.
"""

from __future__ import annotations

import logging
import random
import time
import uuid

import trio

from lodestream.consensus.image import MetadataImage
from lodestream.consensus.records import BrokerFencingRecord, PartitionRecord, ProducerIdsRecord, RegisterBrokerRecord
from lodestream.protocol.errors import ErrorCode, KafkaError

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
    def __init__(self, quorum: MetadataQuorum, node_id: int, cluster_id: str, session_timeout_ms: int) -> None:
        self.quorum = quorum
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
        """Fence or unfence, with the leader changes of the broker's partitions in the same batch."""
        records: list = [BrokerFencingRecord(broker_id, broker_epoch, fenced)]
        for topic in self.image.topics_by_id.values():
            for p in topic.partitions.values():
                if fenced and p.leader == broker_id:
                    records.append(PartitionRecord(topic.topic_id, p.partition, p.replicas, -1, p.leader_epoch + 1))
                elif not fenced and p.leader == -1 and broker_id in p.replicas:
                    records.append(PartitionRecord(topic.topic_id, p.partition, p.replicas, broker_id,
                                                   p.leader_epoch + 1))
        await self.propose(records)
        log.info("broker %d %s (%d partition leaders changed)", broker_id, "fenced" if fenced else "unfenced",
                 len(records) - 1)

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await trio.sleep(min(1.0, self.session_timeout_s / 4))
            try:
                await self.fence_silent_brokers()
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

    def place(self, count: int, first: int = 0) -> list[tuple[int, ...]]:
        """Replicas of `count` new partitions numbered from `first`: one each (until replication lands),
        round-robin over the unfenced brokers in rack-alternating order from a random start, as Kafka
        spreads leaders. Before any broker registered (a node's very first start), this node."""
        live = rack_alternating(self.image.live_brokers())
        if not live:
            return [(self.node_id,)] * count
        start = random.randrange(len(live))
        return [(live[(start + first + i) % len(live)].broker_id,) for i in range(count)]


def registration_endpoints(bound_listeners, protocols: dict[str, str]) -> tuple[tuple[str, str, int, str], ...]:
    """This broker's client listeners as a registration names them."""
    return tuple((b.name, b.advertised_host, b.advertised_port, protocols.get(b.name, "PLAINTEXT"))
                 for b in bound_listeners)

