"""This broker's side of the cluster: its registration and heartbeats, and every request it makes of the
active controller (producer-id blocks, topic creation it starts itself).

When this node leads the metadata quorum the controller is in-process and is called directly; otherwise
the request goes to the leader's controller listener (broker/quorum_peers.ControllerConnection) as the
Kafka request a broker sends. An unreachable or changing controller is retried by the callers' loops;
a refusal comes back as the KafkaError the controller answered.
"""

from __future__ import annotations

import ipaddress
import logging
import time
import uuid

import trio

from kio.schema.allocate_producer_ids.v0.request import AllocateProducerIdsRequest
from kio.schema.alter_partition.v3 import request as alter_partition
from kio.schema.broker_heartbeat.v1.request import BrokerHeartbeatRequest
from kio.schema.broker_registration.v4.request import BrokerRegistrationRequest, Listener
from lodestream.consensus.records import encode_records
from lodestream.protocol.codec import decode_response, encode_request, response_type
from lodestream.protocol.messages import request_builder
from lodestream.protocol.errors import ErrorCode, KafkaError
from lodestream.protocol.lodestream_apis import UpdateAdminRecordsRequest, UpdateRemoteSegmentsRequest

from lodestream.broker.cluster_controller import SECURITY_PROTOCOL_IDS, ClusterController, registration_endpoints
from lodestream.broker.session import Session

log = logging.getLogger(__name__)

CONTROLLER_RETRY_S = 0.1  # while no controller answers (an election, or it restarts)


class ControllerClient:
    def __init__(self, broker, controller: ClusterController, connection) -> None:
        self.broker = broker
        self.controller = controller
        self.connection = connection  # a ControllerConnection, or None for a one-voter quorum
        self.incarnation_id = uuid.uuid4()
        self.broker_epoch = -1
        self.fenced = True
        self.lease_until = 0.0  # monotonic time before which the controller cannot have fenced this broker

    @property
    def local(self) -> bool:
        return self.connection is None or self.broker.quorum.is_leader

    def holds_lease(self) -> bool:
        """Whether this broker's leaderships are still its own as far as the controller is concerned: the
        controller fences a broker only broker.session.timeout.ms after the last heartbeat it received,
        so until that long after the last heartbeat answered "unfenced" was sent, nobody else can have
        taken over. A broker that was paused (SIGSTOP, a long GC-like stall) or cut off finds its lease
        expired and must not answer from its in-memory state (coordinators answer NOT_COORDINATOR) until
        a heartbeat renews it, by which time it has applied its own fencing. A one-voter quorum always
        holds it: no other node can take over."""
        return self.connection is None or time.monotonic() < self.lease_until

    def _renew_lease(self, sent: float) -> None:
        """After a heartbeat sent at `sent` answered "unfenced". When this node leads the quorum the answer
        came from itself, so it only counts from when a majority of voters last fetched from this leader
        (a stale leader's own controller would answer from its stale image)."""
        since = sent
        if self.local and self.connection is not None:
            fetched = self.broker.quorum.majority_fetched_s()
            since = min(since, fetched if fetched is not None else float("-inf"))
        session_s = int(self.broker.config.get("broker.session.timeout.ms")) / 1000
        # Every lease computed is a sound bound on its own (only a "fenced" answer ends it): a new quorum
        # leader that no follower has fetched from yet does not shorten the one it holds.
        self.lease_until = max(self.lease_until, since + session_s)

    async def _remote(self, body):
        response = await self.connection.request(body)
        if response is None:
            raise KafkaError(ErrorCode.not_controller, "no active controller reachable")
        if response.error_code != ErrorCode.none:
            raise KafkaError(ErrorCode(response.error_code))
        return response

    # -- requests ----------------------------------------------------------------------------------

    async def register(self) -> int:
        broker = self.broker
        endpoints = registration_endpoints(broker.bound_listeners, broker.listener_security_protocols)
        rack = broker.config.get("broker.rack")
        if self.local:
            return await self.controller.register(broker.node_id, broker.cluster_id, self.incarnation_id,
                                                  endpoints, rack)
        response = await self._remote(BrokerRegistrationRequest(
            broker_id=broker.node_id, cluster_id=broker.cluster_id, incarnation_id=self.incarnation_id,
            listeners=tuple(Listener(name=name, host=host, port=port, security_protocol=SECURITY_PROTOCOL_IDS[protocol])
                            for name, host, port, protocol in endpoints),
            features=(), rack=rack, log_dirs=(), previous_broker_epoch=self.broker_epoch))
        return int(response.broker_epoch)

    async def heartbeat(self, want_shut_down: bool = False) -> tuple[bool, bool, bool]:
        offset = self.broker.quorum.applied_offset
        if self.local:
            return await self.controller.heartbeat(self.broker.node_id, self.broker_epoch, offset, False,
                                                   want_shut_down)
        response = await self._remote(BrokerHeartbeatRequest(
            broker_id=self.broker.node_id, broker_epoch=self.broker_epoch, current_metadata_offset=offset,
            want_fence=False, want_shut_down=want_shut_down, offline_log_dirs=()))
        return response.is_caught_up, response.is_fenced, response.should_shut_down

    async def allocate_producer_ids(self) -> tuple[int, int]:
        """A new block of producer ids (first, count), retried until a controller answers."""
        while True:
            try:
                if self.local:
                    return await self.controller.allocate_producer_ids(self.broker.node_id, None)
                response = await self._remote(AllocateProducerIdsRequest(broker_id=self.broker.node_id,
                                                                         broker_epoch=self.broker_epoch))
                return int(response.producer_id_start), int(response.producer_id_len)
            except KafkaError as exc:
                if exc.code != ErrorCode.not_controller:
                    raise
            await trio.sleep(CONTROLLER_RETRY_S)

    async def alter_partition(self, changes: list) -> dict:
        """ISR changes of partitions this broker leads: [(topic id, index, leader epoch, partition epoch, new
        ISR)] -> {(topic id, index): error code}. Raises KafkaError when no controller answers."""
        broker = self.broker
        if self.local:
            results = {}
            for topic_id, index, leader_epoch, partition_epoch, isr in changes:
                registered = broker.image.brokers
                try:
                    await self.controller.alter_partition(
                        broker.node_id, self.broker_epoch, topic_id, index, leader_epoch, partition_epoch,
                        [(r, registered[r].broker_epoch if r in registered else -1) for r in isr])
                    results[(topic_id, index)] = ErrorCode.none
                except KafkaError as exc:
                    if exc.code in (ErrorCode.not_controller, ErrorCode.stale_broker_epoch):
                        raise
                    results[(topic_id, index)] = exc.code
            return results
        registered = broker.image.brokers
        by_topic: dict = {}
        for topic_id, index, leader_epoch, partition_epoch, isr in changes:
            by_topic.setdefault(topic_id, []).append(alter_partition.PartitionData(
                partition_index=index, leader_epoch=leader_epoch, partition_epoch=partition_epoch,
                new_isr_with_epochs=tuple(alter_partition.BrokerState(
                    broker_id=r, broker_epoch=registered[r].broker_epoch if r in registered else -1) for r in isr)))
        response = await self._remote(alter_partition.AlterPartitionRequest(
            broker_id=broker.node_id, broker_epoch=self.broker_epoch,
            topics=tuple(alter_partition.TopicData(topic_id=topic_id, partitions=tuple(partitions))
                         for topic_id, partitions in by_topic.items())))
        return {(topic.topic_id, int(p.partition_index)): ErrorCode(p.error_code)
                for topic in response.topics for p in topic.partitions}

    async def update_remote_segments(self, records: list) -> None:
        """Commit state changes of this broker's offloaded segments (broker/remote_log.py) through the active
        controller. Raises KafkaError: the controller's refusal, or NOT_CONTROLLER when none answers."""
        if self.local:
            await self.controller.update_remote_segments(self.broker.node_id, None, records)
            return
        response = await self.connection.request(UpdateRemoteSegmentsRequest(
            broker_id=self.broker.node_id, broker_epoch=self.broker_epoch, records=encode_records(records)))
        if response is None:
            raise KafkaError(ErrorCode.not_controller, "no active controller reachable")
        if response.error_code != ErrorCode.none:
            raise KafkaError(ErrorCode(response.error_code), response.error_message)

    async def forward(self, body):
        """A request of this broker's own that only the controller can carry out (CreateTopics, ...), sent to it."""
        response = await self.connection.request(body) if self.connection is not None else None
        if response is None:
            raise KafkaError(ErrorCode.not_controller, "no active controller reachable")
        return response

    async def update_admin_records(self, records: list) -> None:
        """Commit namespace or offset snapshot changes (broker/namespaces.py, broker/offset_snapshots.py)
        through the active controller. Raises KafkaError: INVALID_REQUEST with the controller's reason, or
        NOT_CONTROLLER when none answers."""
        if self.local:
            await self.controller.update_admin_records(records)
            return
        response = await self.connection.request(UpdateAdminRecordsRequest(records=encode_records(records)))
        if response is None:
            raise KafkaError(ErrorCode.not_controller, "no active controller reachable")
        if response.error_code != ErrorCode.none:
            raise KafkaError(ErrorCode(response.error_code), response.error_message)

    async def forward_for(self, session: Session, correlation_id: int, client_id: str | None, body):
        """A client's request, in an Envelope with its principal and address (KIP-590): the controller
        authorizes it as that client (broker/handlers/envelope.py)."""
        envelope = request_builder(58, 0).EnvelopeRequest(
            request_data=encode_request(correlation_id, body, client_id)[4:],
            request_principal=str(session.principal).encode(),
            client_host_address=_address_bytes(session.client_host))
        response = await self.forward(envelope)
        if response.error_code != ErrorCode.none or response.response_data is None:
            raise KafkaError(response.error_code, f"the controller refused the forwarded request: "
                                                  f"{response.error_code.name}")
        return decode_response(response.response_data, response_type(body.__api_key__, body.__version__))[1]

    # -- the registration's life -------------------------------------------------------------------

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Register, then heartbeat every broker.heartbeat.interval.ms; re-register when the controller
        no longer knows this registration. Reports started once registered and unfenced."""
        interval = int(self.broker.config.get("broker.heartbeat.interval.ms")) / 1000
        started = False
        while True:
            try:
                if self.broker_epoch < 0:
                    self.broker_epoch = await self.register()
                    log.info("registered with the controller, broker epoch %d", self.broker_epoch)
                sent = time.monotonic()
                _, self.fenced, _ = await self.heartbeat()
                if self.fenced:
                    self.lease_until = 0.0
                else:
                    self._renew_lease(sent)
            except KafkaError as exc:
                if exc.code == ErrorCode.stale_broker_epoch:
                    self.broker_epoch = -1
                elif exc.code not in (ErrorCode.not_controller, ErrorCode.request_timed_out):
                    log.warning("registration with the controller refused: %s", exc)
            if not self.fenced and not started:
                started = True
                task_status.started()
            await trio.sleep(interval if started else CONTROLLER_RETRY_S)

    async def controlled_shutdown(self, timeout_s: float) -> None:
        """Ask to be fenced before stopping (Kafka's controlled shutdown), for at most timeout_s."""
        if self.broker_epoch < 0:
            return
        with trio.move_on_after(timeout_s):
            while True:
                try:
                    if (await self.heartbeat(want_shut_down=True))[2]:
                        log.info("controlled shutdown: fenced by the controller")
                        return
                except KafkaError:
                    pass
                await trio.sleep(CONTROLLER_RETRY_S)



def _address_bytes(host: str) -> bytes:
    try:
        return ipaddress.ip_address(host).packed
    except ValueError:
        return b"\0\0\0\0"
