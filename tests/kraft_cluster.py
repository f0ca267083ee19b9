"""Several `lodestream serve` processes forming one KRaft cluster on loopback, for system tests.

Every node reaches every other node's controller listener through a proxy of its own (one per ordered
pair), so a test can cut a node off from the others in both directions (`isolate`) and heal it again,
as a network partition would. The controller listeners' ports are picked before the nodes start
(bound to port 0, read, released): static voters need their addresses in every node's configuration.
"""

from __future__ import annotations

import datetime
import socket
import threading
import time
from pathlib import Path

import trio

from lodestream.protocol.errors import ErrorCode
from lodestream.protocol.messages import request_builder

from broker_process import BrokerProcess
from wire_client import WireClient

# Short quorum timers so a test sees elections within seconds; Kafka's defaults are in docs/kraft.md.
FAST_QUORUM = {
    "controller.quorum.election.timeout.ms": "500",
    "controller.quorum.fetch.timeout.ms": "1000",
    "controller.quorum.election.backoff.max.ms": "500",
    "controller.quorum.request.timeout.ms": "1000",
    "broker.session.timeout.ms": "3000",
    "broker.heartbeat.interval.ms": "500",
}
CLUSTER_ID = "lodestream-test-cluster"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LinkProxy:
    """A TCP relay from a port of its own to one upstream; `cut()` closes every connection and refuses new
    ones (accepted and closed at once) until `heal()`. Plain threads: the tests drive blocking clients."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port  # read at each connection: a restarted node's new port may be set
        self.cut_off = False
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if self.cut_off:
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=2)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets.update((client, upstream))
            for source, target in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data or self.cut_off:
                    break
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                self._close(sock)

    def _close(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(sock)
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()

    def cut(self) -> None:
        self.cut_off = True
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            self._close(sock)

    def heal(self) -> None:
        self.cut_off = False

    def close(self) -> None:
        self._closed = True
        self.cut()
        self._server.close()


class KRaftCluster:
    """`size` combined nodes, or the roles given per node id (e.g. {1: "controller", 2: "broker"})."""

    def __init__(self, base_dir: Path, size: int = 3, overrides: dict[str, str] | None = None,
                 roles: dict[int, str] | None = None, proxied_clients: bool = False,
                 client_protocol: str = "PLAINTEXT") -> None:
        self.roles = roles or {i: "broker,controller" for i in range(1, size + 1)}
        self.ids = sorted(self.roles)
        self.voters = [i for i in self.ids if "controller" in self.roles[i]]
        self.controller_ports = {i: free_port() for i in self.voters}
        self.links = {(i, j): LinkProxy(self.controller_ports[j]) for i in self.ids for j in self.voters if i != j}
        self.nodes: dict[int, BrokerProcess] = {}
        # With proxied_clients each broker advertises a proxy of its client listener, so whoever finds it
        # through Metadata (clients, and the other brokers' follower fetches) can be cut off from it too;
        # `node.port` stays the direct way in.
        self.client_proxies = {i: LinkProxy(0) for i in self.ids if "broker" in self.roles[i]} if proxied_clients \
            else {}
        for i in self.ids:
            voters = ",".join(f"{j}@127.0.0.1:{self.controller_ports[j] if j == i else self.links[(i, j)].port}"
                              for j in self.voters)
            # The client listener, also the inter-broker one (SSL: overrides carry the ssl.* settings).
            listeners = [f"{client_protocol}://127.0.0.1:0"] if "broker" in self.roles[i] else []
            if i in self.voters:
                listeners.append(f"CONTROLLER://127.0.0.1:{self.controller_ports[i]}")
            self.nodes[i] = BrokerProcess(base_dir / f"node{i}", {
                "node.id": str(i), "cluster.id": CLUSTER_ID, "controller.quorum.voters": voters,
                "process.roles": self.roles[i], "listeners": ",".join(listeners),
                "admin.listeners": "", "inter.broker.listener.name": client_protocol, **FAST_QUORUM,
                **(overrides or {}),
                **({"advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.client_proxies[i].port}"}
                   if i in self.client_proxies else {})})

    def start(self, ids=None) -> None:
        """Start nodes together (each waits for the quorum before it is ready, so one at a time would hang)."""
        ids = list(ids or self.ids)
        errors: list[BaseException] = []

        def start_one(i: int) -> None:
            try:
                self.start_node(i)
            except BaseException as exc:  # noqa: BLE001 - reported below, on the test's thread
                errors.append(exc)

        threads = [threading.Thread(target=start_one, args=(i,)) for i in ids]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]

    def bootstrap(self) -> str:
        """Every broker's address for clients: its proxy when proxied (it stays when the node restarts on
        another port), else its listener."""
        if self.client_proxies:
            return ",".join(f"127.0.0.1:{proxy.port}" for proxy in self.client_proxies.values())
        return ",".join(self.nodes[i].bootstrap for i in self.ids if "broker" in self.roles[i])

    def start_node(self, i: int) -> None:
        self.nodes[i].start()
        if i in self.client_proxies:
            self.client_proxies[i].upstream_port = self.nodes[i].port

    def stop(self) -> None:
        for node in self.nodes.values():
            node.stop()
        for link in [*self.links.values(), *self.client_proxies.values()]:
            link.close()

    def isolate(self, i: int) -> None:
        """Cut node i off: its controller links both ways and, with proxied clients, everything reaching it
        through its advertised listener (other brokers' fetches, clients that found it by Metadata)."""
        for (a, b), link in self.links.items():
            if i in (a, b):
                link.cut()
        if i in self.client_proxies:
            self.client_proxies[i].cut()

    def heal(self) -> None:
        for link in [*self.links.values(), *self.client_proxies.values()]:
            link.heal()

    # -- asking the nodes (each call is bounded by a deadline) ----------------------------------------------

    def quorum(self, i: int) -> dict | None:
        """Node i's DescribeQuorum answer (forwarded to the leader it knows), None if it has none."""
        return trio.run(_describe_quorum, self.nodes[i].port)

    def wait_for_leader(self, among, timeout: float, not_leader: int | None = None,
                        min_epoch: int = 0) -> tuple[int, int, float]:
        """(leader, epoch, seconds waited) once every node in `among` reports the same leader."""
        started = time.monotonic()
        deadline = started + timeout
        while True:
            answers = [self.quorum(i) for i in among]
            leaders = {(a["leader"], a["epoch"]) for a in answers if a is not None}
            if len(leaders) == 1 and None not in answers:
                leader, epoch = leaders.pop()
                if leader >= 0 and leader != not_leader and epoch >= min_epoch:
                    return leader, epoch, time.monotonic() - started
            if time.monotonic() > deadline:
                raise AssertionError(f"no common leader among {among} within {timeout}s: {answers}")
            time.sleep(0.05)  # poll interval inside a deadline loop

    def create_topic(self, i: int, name: str, partitions: int = 1, timeout: float = 10.0) -> ErrorCode:
        return trio.run(_create_topic, self.nodes[i].port, name, partitions, timeout)

    def topics(self, i: int) -> dict[str, int]:
        """{topic: partition count} in node i's Metadata answer."""
        return {name: len(partitions) for name, partitions in trio.run(_metadata, self.nodes[i].port)[1].items()}

    def partition_leaders(self, i: int, topic: str) -> dict[int, int]:
        """{partition: leader id, -1 for none} of a topic in node i's Metadata answer."""
        return trio.run(_metadata, self.nodes[i].port)[1][topic]

    def partition_state(self, i: int, topic: str) -> dict[int, tuple[int, tuple[int, ...], int]]:
        """{partition: (leader, ISR, leader epoch)} of a topic in node i's Metadata answer."""
        return trio.run(_partition_state, self.nodes[i].port, topic)

    def partition_replicas(self, i: int, topic: str) -> dict[int, list[int]]:
        """{partition: replicas, in order} of a topic in node i's Metadata answer."""
        return trio.run(_partition_replicas, self.nodes[i].port, topic)

    def wait_for_brokers(self, i: int, expected: set[int], timeout: float) -> bool:
        """Until node i's Metadata lists exactly the `expected` brokers."""
        return wait_for_brokers(self.nodes[i].port, expected, timeout)


def wait_for_brokers(port: int, expected: set[int], timeout: float) -> bool:
    """Until the Metadata answer of the broker on `port` lists exactly the `expected` brokers."""
    deadline = time.monotonic() + timeout
    while True:
        listed = trio.run(_metadata, port)[0]
        if listed == expected:
            return True
        if time.monotonic() > deadline:
            raise AssertionError(f"the broker on port {port} lists brokers {listed}, not {expected}, after {timeout}s")
        time.sleep(0.1)  # poll interval inside a deadline loop


async def _describe_quorum(port: int) -> dict | None:
    build = request_builder(55, 2)
    try:
        with trio.fail_after(5):
            client = await WireClient.connect(port)
            try:
                response = await client.request(build.DescribeQuorumRequest(topics=(build.TopicData(
                    topic_name="__cluster_metadata", partitions=(build.PartitionData(partition_index=0),)),)))
            finally:
                await client.aclose()
    except (OSError, EOFError, trio.TooSlowError):
        return None
    if response.error_code != ErrorCode.none or not response.topics:
        return None
    partition = response.topics[0].partitions[0]
    if partition.error_code != ErrorCode.none:
        return None
    return {"leader": partition.leader_id, "epoch": partition.leader_epoch, "hw": partition.high_watermark,
            "voters": {v.replica_id: v.log_end_offset for v in partition.current_voters},
            "observers": {o.replica_id: o.log_end_offset for o in partition.observers}}


async def _create_topic(port: int, name: str, partitions: int, timeout: float) -> ErrorCode:
    build = request_builder(19, 7)
    with trio.fail_after(timeout + 5):
        client = await WireClient.connect(port)
        try:
            response = await client.request(build.CreateTopicsRequest(
                topics=(build.CreatableTopic(name=name, num_partitions=partitions, replication_factor=1,
                                             assignments=(), configs=()),),
                timeout=datetime.timedelta(seconds=timeout), validate_only=False))
        finally:
            await client.aclose()
    return ErrorCode(response.topics[0].error_code)


async def _metadata(port: int) -> tuple[set[int], dict[str, dict[int, int]]]:
    """(the listed brokers, {topic: {partition: leader}})."""
    build = request_builder(3, 12)
    with trio.fail_after(5):
        client = await WireClient.connect(port)
        try:
            response = await client.request(build.MetadataRequest(topics=None, allow_auto_topic_creation=False,
                                                                  include_topic_authorized_operations=False))
        finally:
            await client.aclose()
    return ({b.node_id for b in response.brokers},
            {t.name: {p.partition_index: p.leader_id for p in t.partitions} for t in response.topics})


async def _partition_state(port: int, topic: str) -> dict[int, tuple[int, tuple[int, ...], int]]:
    return {p.partition_index: (p.leader_id, tuple(sorted(p.isr_nodes)), p.leader_epoch)
            for p in await _topic_partitions(port, topic)}


async def _partition_replicas(port: int, topic: str) -> dict[int, list[int]]:
    return {p.partition_index: list(p.replica_nodes) for p in await _topic_partitions(port, topic)}


async def _topic_partitions(port: int, topic: str) -> list:
    """The topic's partitions in the Metadata answer of the broker on `port`."""
    build = request_builder(3, 12)
    with trio.fail_after(5):
        client = await WireClient.connect(port)
        try:
            response = await client.request(build.MetadataRequest(
                topics=(build.MetadataRequestTopic(name=topic, topic_id=None),), allow_auto_topic_creation=False,
                include_topic_authorized_operations=False))
        finally:
            await client.aclose()
    return [p for t in response.topics for p in t.partitions]
