"""Replication between brokers: followers copy their leaders' logs, leaders keep their ISR.

* `ReplicaFetchers` (a follower's side): one task per leader this broker follows partitions of, each one
  connection sending Kafka's follower Fetch (a replica id and broker epoch in ReplicaState, each
  partition's leader epoch and last fetched epoch) for all those partitions at once. Fetched batches are
  written as they are (ReplicaManager.append_replicated: same offsets, epochs, producer state), durable
  before the next fetch asks for what follows; that next fetch is how the leader learns they are durable
  here, so an acks=all answer means every in-sync replica has fsynced the batch. A diverging epoch in the
  answer (KIP-320) cuts this log's suffix where it left the leader's.
* `IsrManager` (a leader's side): every replica.lag.time.max.ms / 2, and as soon as a follower catches up,
  asks the controller (AlterPartition) to drop the followers that have not caught up for
  replica.lag.time.max.ms and to add those that reached the high watermark. An addition counts for the
  high watermark from the moment it is asked (Partition.maximal_isr).
"""

from __future__ import annotations

import datetime
import logging
import time

import trio

from kio.schema.fetch.v17 import request as fetch
from lodestream.protocol.errors import ErrorCode, KafkaError
from lodestream.protocol.record_batch import InvalidBatch, split_batches

from lodestream.broker.partition import Partition
from lodestream.broker.quorum_peers import CONNECTION_FAILURES, PeerConnection

log = logging.getLogger(__name__)


class ReplicaFetchers:
    def __init__(self, broker) -> None:  # the Broker: its config, image, replica manager, controller client
        self.broker = broker
        self.following: dict[Partition, int] = {}  # partition -> the leader it is fetched from
        self._running: set[int] = set()  # leaders with a fetch task
        self._nursery: trio.Nursery | None = None
        config = broker.config
        self.wait_s = int(config.get("replica.fetch.wait.max.ms")) / 1000
        self.min_bytes = int(config.get("replica.fetch.min.bytes"))
        self.partition_max_bytes = int(config.get("replica.fetch.max.bytes"))
        self.response_max_bytes = int(config.get("replica.fetch.response.max.bytes"))
        self.backoff_s = int(config.get("replica.fetch.backoff.ms")) / 1000
        self.timeout_s = int(config.get("replica.socket.timeout.ms")) / 1000

    def follow(self, partition: Partition, leader: int) -> None:
        """Fetch `partition` from `leader` from now on (-1: from nobody until a leader is elected)."""
        if leader < 0 or leader == self.broker.node_id:
            self.following.pop(partition, None)
            return
        self.following[partition] = leader
        if self._nursery is not None and leader not in self._running:
            self._running.add(leader)
            self._nursery.start_soon(self._fetch_from, leader)

    def stop(self, partition: Partition) -> None:
        self.following.pop(partition, None)

    def forget_topic(self, topic_id) -> None:
        """A deleted topic: its partitions are fetched no more."""
        for partition in [p for p in self.following if p.topic_id == topic_id]:
            del self.following[partition]

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for leader in set(self.following.values()):
                self._running.add(leader)
                nursery.start_soon(self._fetch_from, leader)
            task_status.started()
            await trio.sleep_forever()

    def _address(self, leader: int) -> tuple[str, int] | None:
        registered = self.broker.image.brokers.get(leader)
        if registered is None or not registered.endpoints:
            return None
        name = str(self.broker.config.get("inter.broker.listener.name") or "")
        return registered.endpoint(name) or registered.endpoints[0][1:3]

    async def _fetch_from(self, leader: int) -> None:
        connection: PeerConnection | None = None
        try:
            while True:
                partitions = [p for p, fetched_from in self.following.items() if fetched_from == leader]
                if not partitions:
                    return
                address = self._address(leader)
                try:
                    if address is None:
                        raise OSError(f"broker {leader} has no registered endpoint")
                    if connection is None:
                        connection = await PeerConnection.connect(*address, f"lodestream-replica-{self.broker.node_id}",
                                                                  self.broker.inter_broker_tls)
                    response = await connection.request(self._request(partitions), self.timeout_s + self.wait_s)
                    if response.error_code != ErrorCode.none:
                        raise KafkaError(ErrorCode(response.error_code), "follower fetch refused")
                    if not await self._apply(leader, partitions, response):
                        await trio.sleep(self.backoff_s)
                except (*CONNECTION_FAILURES, KafkaError, Exception) as exc:  # storage errors too: fetched again
                    log.log(logging.DEBUG if isinstance(exc, (*CONNECTION_FAILURES, KafkaError)) else logging.WARNING,
                            "fetching from broker %d: %r", leader, exc)
                    if connection is not None:
                        await connection.aclose()
                        connection = None
                    await trio.sleep(self.backoff_s)
        finally:
            self._running.discard(leader)
            if connection is not None:
                await connection.aclose()

    def _request(self, partitions: list[Partition]) -> fetch.FetchRequest:
        by_topic: dict = {}
        for p in partitions:
            by_topic.setdefault(p.topic_id, []).append(fetch.FetchPartition(
                partition=p.index, current_leader_epoch=p.leader_epoch, fetch_offset=p.local_end_offset,
                last_fetched_epoch=p.last_epoch, log_start_offset=p.local_log_start_offset,
                partition_max_bytes=self.partition_max_bytes))
        return fetch.FetchRequest(
            replica_state=fetch.ReplicaState(replica_id=self.broker.node_id,
                                             replica_epoch=self.broker.controller_client.broker_epoch),
            max_wait=datetime.timedelta(seconds=self.wait_s), min_bytes=self.min_bytes,
            max_bytes=self.response_max_bytes, isolation_level=0, session_id=0, session_epoch=-1,
            topics=tuple(fetch.FetchTopic(topic_id=topic_id, partitions=tuple(ps)) for topic_id, ps in by_topic.items()),
            forgotten_topics_data=(), rack_id="")

    async def _apply(self, leader: int, partitions: list[Partition], response) -> bool:
        """Write what `leader` sent; False when no partition made progress (the caller backs off)."""
        wanted = {(p.topic_id, p.index): p for p in partitions}
        progressed = False
        for topic in response.responses:
            for answer in topic.partitions:
                partition = wanted.get((topic.topic_id, int(answer.partition_index)))
                if partition is None or self.following.get(partition) != leader:
                    continue  # no longer followed from this leader (a new one, or this broker, leads it now)
                error = ErrorCode(answer.error_code)
                if error == ErrorCode.none and answer.diverging_epoch.end_offset >= 0:
                    await self._truncate_diverged(partition, answer.diverging_epoch.epoch,
                                                  answer.diverging_epoch.end_offset)
                    progressed = True
                elif error == ErrorCode.none:
                    progressed |= await self._append(partition, answer)
                elif error == ErrorCode.offset_out_of_range:
                    await self._reset_out_of_range(partition, int(answer.log_start_offset),
                                                   int(answer.high_watermark))
                    progressed = True
                else:  # not (or no longer) the leader in this epoch: the metadata image will say more
                    log.debug("%s-%d from broker %d: %s", partition.topic_name, partition.index,
                              self.following.get(partition), error.name)
        return progressed

    async def _append(self, partition: Partition, answer) -> bool:
        records = answer.records
        batches = []
        if records:
            try:
                split = split_batches(bytes(records))
            except InvalidBatch as exc:  # a CRC mismatch on the wire: nothing is written, the fetch repeats
                log.warning("%s-%d: a corrupt batch from the leader, fetched again: %s", partition.topic_name,
                            partition.index, exc)
                return False
            end = partition.local_end_offset
            batches = [bytes(view) for header, view in split if header.base_offset >= end]
        if batches:
            await self.broker.replicas.append_replicated(partition, batches)
        partition.follow_leader_high_watermark(int(answer.high_watermark))
        leader_start = int(answer.log_start_offset)  # its local log's (tiered storage: below is offloaded)
        if leader_start > partition.local_log_start_offset:  # the leader's retention or DeleteRecords
            await partition.delete_records_before(min(leader_start, partition.local_end_offset))
        return bool(batches)

    async def _truncate_diverged(self, partition: Partition, leader_epoch: int, leader_end: int) -> None:
        """Kafka's follower rule: the end of the largest epoch both logs know, at most the leader's end."""
        local_end = partition.local_end_offset
        epoch, end = partition.end_offset_for_epoch(leader_epoch) if leader_epoch >= 0 else (-1, -1)
        if epoch < 0:  # no epoch in common known here: the leader's end bounds it
            offset = min(leader_end, local_end)
        elif epoch == leader_epoch:
            offset = min(leader_end, end, local_end)
        else:  # this log does not know the leader's epoch: cut to its own largest epoch below; fetch and see
            offset = min(end, local_end)
        log.info("%s-%d: truncating from %d to %d, where this log left its leader's (epoch %d ends at %d there)",
                 partition.topic_name, partition.index, local_end, offset, leader_epoch, leader_end)
        await partition.truncate_to(offset)

    async def _reset_out_of_range(self, partition: Partition, leader_start: int, leader_high_watermark: int) -> None:
        if partition.local_end_offset < leader_start:  # the leader deleted what this replica lacks: start there
            log.info("%s-%d: the leader's log starts at %d, after this replica's end: starting there",
                     partition.topic_name, partition.index, leader_start)
            await partition.truncate_to(partition.local_log_start_offset)
            await partition.delete_records_before(leader_start)
        else:  # this replica is ahead of its leader (an unclean election): keep what the leader committed
            log.warning("%s-%d: this replica's log is ahead of its leader's: truncating to %d",
                        partition.topic_name, partition.index, leader_high_watermark)
            await partition.truncate_to(max(leader_high_watermark, partition.local_log_start_offset))


class BrokerConnections:
    """This broker's requests to other brokers' client listeners (transaction markers for partitions they
    lead): one connection per broker, one request at a time, re-opened after a failure."""

    def __init__(self, broker) -> None:
        self.broker = broker
        self._connections: dict[int, PeerConnection] = {}
        self._locks: dict[int, trio.Lock] = {}

    async def request(self, node_id: int, body, timeout_s: float = 30.0):
        """The broker's answer; raises KafkaError (NOT_LEADER_OR_FOLLOWER: unreachable) so callers retry."""
        lock = self._locks.setdefault(node_id, trio.Lock())
        async with lock:
            registered = self.broker.image.brokers.get(node_id)
            if registered is None or not registered.endpoints:
                raise KafkaError(ErrorCode.not_leader_or_follower, f"broker {node_id} is not registered")
            name = str(self.broker.config.get("inter.broker.listener.name") or "")
            address = registered.endpoint(name) or registered.endpoints[0][1:3]
            try:
                connection = self._connections.get(node_id)
                if connection is None:
                    connection = self._connections[node_id] = await PeerConnection.connect(
                        *address, f"lodestream-broker-{self.broker.node_id}", self.broker.inter_broker_tls)
                return await connection.request(body, timeout_s)
            except CONNECTION_FAILURES as exc:
                dropped = self._connections.pop(node_id, None)
                if dropped is not None:
                    await dropped.aclose()
                raise KafkaError(ErrorCode.not_leader_or_follower, f"broker {node_id} unreachable: {exc!r}") from None


class IsrManager:
    def __init__(self, broker) -> None:  # the Broker: its config, image, replica manager, controller client
        self.broker = broker
        self.lag_s = int(broker.config.get("replica.lag.time.max.ms")) / 1000
        self._wake = trio.Event()

    def follower_caught_up(self) -> None:
        """A follower outside the ISR may have caught up: look now rather than at the next interval."""
        self._wake.set()

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            with trio.move_on_after(self.lag_s / 2):
                await self._wake.wait()
            self._wake = trio.Event()
            try:
                await self.check()
            except KafkaError as exc:  # no controller right now: the next round asks again
                log.debug("ISR changes not sent: %s", exc)

    def wanted_isr(self, partition: Partition, live: set[int]) -> tuple[int, ...] | None:
        """The ISR this leader should have now, or None when it has it (or a change is in flight)."""
        if not partition.is_leader or len(partition.replicas) == 1 or partition.pending_isr is not None:
            return None
        now = time.monotonic()
        isr = set(partition.isr)
        for replica, progress in partition.followers.items():
            if replica in isr and now - progress.caught_up_s > self.lag_s:
                isr.discard(replica)
            elif replica not in isr and replica in live \
                    and progress.end_offset >= max(partition.high_watermark, partition.leader_epoch_start, 0):
                isr.add(replica)  # Kafka's rule: it reached the high watermark and this leader epoch's start
        if isr == set(partition.isr):
            return None
        return tuple(r for r in partition.replicas if r in isr)

    async def check(self) -> None:
        broker = self.broker
        if broker.replicas is None:
            return
        live = {b.broker_id for b in broker.image.live_brokers()}
        changes = []
        for partition in list(broker.replicas.partitions.values()):
            wanted = self.wanted_isr(partition, live)
            if wanted is None:
                continue
            if set(wanted) - set(partition.isr):  # joining members count for the high watermark from now on
                partition.pending_isr = tuple(r for r in partition.replicas if r in set(wanted) | set(partition.isr))
            changes.append((partition, wanted))
        if not changes:
            return
        try:
            results = await broker.controller_client.alter_partition(
                [(p.topic_id, p.index, p.leader_epoch, p.partition_epoch, isr) for p, isr in changes])
        except KafkaError:
            for partition, _ in changes:
                partition.pending_isr = None
            raise
        for partition, wanted in changes:
            error = results.get((partition.topic_id, partition.index), ErrorCode.unknown_server_error)
            if error != ErrorCode.none:
                partition.pending_isr = None
                log.info("%s-%d: ISR change to %s refused: %s", partition.topic_name, partition.index, list(wanted),
                         error.name)
            else:
                log.info("%s-%d: ISR %s -> %s", partition.topic_name, partition.index, list(partition.isr),
                         list(wanted))
