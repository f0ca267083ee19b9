"""`lodestream topics|groups|configs ...`: cluster tools, a client of a running broker (Kafka's or ours).

Two transports, one set of operations (`Backend`):

  --bootstrap-server host:port   the Kafka protocol: a small synchronous client on a
                                 socket using our kio codecs (works against Apache
                                 Kafka too; versions are negotiated with ApiVersions)
  --rest http://host:port        the broker's REST API (stdlib urllib)

Output is a table (default) or JSON (`--output json`, stable keys, for scripts).
Exit status: 0 success, 1 the broker reported an error (or the thing does not
exist), 2 bad usage, 3 the broker could not be reached or answered garbage.

Only the broker's own dependencies are used (no third-party Kafka client).
"""

from __future__ import annotations

import argparse
import base64
import datetime
import json
import os
import re
import socket
import struct
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Iterable

from lodestream.protocol.consumer_protocol import assignment_partitions
from lodestream.protocol.codec import decode_response, encode_request, response_type, schema_versions
from lodestream.protocol.errors import ErrorCode
from lodestream.protocol.messages import request_builder

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3

# API keys
PRODUCE, FETCH, LIST_OFFSETS, METADATA, OFFSET_COMMIT, OFFSET_FETCH, FIND_COORDINATOR = 0, 1, 2, 3, 8, 9, 10
DESCRIBE_GROUPS, LIST_GROUPS, API_VERSIONS, CREATE_TOPICS, DELETE_TOPICS = 15, 16, 18, 19, 20
DESCRIBE_CONFIGS, DESCRIBE_LOG_DIRS, CREATE_PARTITIONS, INCREMENTAL_ALTER_CONFIGS = 32, 35, 37, 44
DELETE_GROUPS, OFFSET_DELETE, CONSUMER_GROUP_DESCRIBE = 42, 47, 69

# (oldest version this client can build, newest it prefers)
CLIENT_VERSIONS = {
    METADATA: (1, 12), LIST_OFFSETS: (1, 8), CREATE_TOPICS: (2, 7), DELETE_TOPICS: (1, 6),
    DESCRIBE_CONFIGS: (1, 4), INCREMENTAL_ALTER_CONFIGS: (0, 1), CREATE_PARTITIONS: (0, 3),
    LIST_GROUPS: (0, 5), DESCRIBE_GROUPS: (0, 5), OFFSET_FETCH: (1, 9), FIND_COORDINATOR: (0, 4),
    CONSUMER_GROUP_DESCRIBE: (0, 1), DESCRIBE_LOG_DIRS: (1, 4), OFFSET_COMMIT: (2, 9), DELETE_GROUPS: (0, 2),
    OFFSET_DELETE: (0, 0),
}
API_NAMES = {
    METADATA: "Metadata", LIST_OFFSETS: "ListOffsets", CREATE_TOPICS: "CreateTopics", DELETE_TOPICS: "DeleteTopics",
    DESCRIBE_CONFIGS: "DescribeConfigs", INCREMENTAL_ALTER_CONFIGS: "IncrementalAlterConfigs",
    CREATE_PARTITIONS: "CreatePartitions", LIST_GROUPS: "ListGroups", DESCRIBE_GROUPS: "DescribeGroups",
    OFFSET_FETCH: "OffsetFetch", FIND_COORDINATOR: "FindCoordinator", CONSUMER_GROUP_DESCRIBE: "ConsumerGroupDescribe",
    DESCRIBE_LOG_DIRS: "DescribeLogDirs", OFFSET_COMMIT: "OffsetCommit", DELETE_GROUPS: "DeleteGroups",
    OFFSET_DELETE: "OffsetDelete",
}

TOPIC_RESOURCE, BROKER_RESOURCE = 2, 4
SET, DELETE = 0, 1
CONFIG_SOURCES = {
    0: "UNKNOWN", 1: "DYNAMIC_TOPIC_CONFIG", 2: "DYNAMIC_BROKER_CONFIG", 3: "DYNAMIC_DEFAULT_BROKER_CONFIG",
    4: "STATIC_BROKER_CONFIG", 5: "DEFAULT_CONFIG", 6: "DYNAMIC_BROKER_LOGGER_CONFIG", 7: "CLIENT_METRICS_CONFIG",
    8: "GROUP_CONFIG",
}
OVERRIDE_SOURCES = {"DYNAMIC_TOPIC_CONFIG", "DYNAMIC_BROKER_CONFIG", "DYNAMIC_DEFAULT_BROKER_CONFIG",
                    "DYNAMIC_BROKER_LOGGER_CONFIG", "CLIENT_METRICS_CONFIG", "GROUP_CONFIG"}
LATEST_TIMESTAMP = -1
EARLIEST_TIMESTAMP = -2


class CliError(Exception):
    def __init__(self, message: str, exit_code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class RestHTTPError(CliError):
    """The REST API answered an HTTP error: its status and message (`message` alone, without the request)."""

    def __init__(self, text: str, status: int, message: str) -> None:
        super().__init__(text)
        self.status = status
        self.message = message


class TopicExistsError(CliError):
    """CreateTopics answered TOPIC_ALREADY_EXISTS (`topics create --if-not-exists` makes it a success)."""


def _error_name(code: int) -> str:
    try:
        return ErrorCode(code).name.upper()
    except ValueError:
        return f"ERROR_{code}"


def _check(code: int, message: str | None, what: str) -> None:
    if int(code) != 0:
        detail = f": {message}" if message else ""
        raise CliError(f"{what}: {_error_name(code)}{detail}")


# -- a synchronous Kafka client ---------------------------------------------------------------------

class KafkaConnection:
    """One socket to one broker; requests are answered in order."""

    def __init__(self, host: str, port: int, timeout: float, client_id: str = "lodestream-cli") -> None:
        self.address = f"{host}:{port}"
        self.client_id = client_id
        try:
            self.sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:
            raise CliError(f"cannot connect to {self.address}: {exc.strerror or exc}", EXIT_UNREACHABLE) from None
        self.sock.settimeout(timeout)
        self._correlation = 0
        self.versions: dict[int, range] = {}

    def _read_exactly(self, count: int) -> bytes:
        chunks = []
        while count:
            try:
                chunk = self.sock.recv(min(count, 1 << 20))
            except socket.timeout:
                raise CliError(f"{self.address} did not answer in time", EXIT_UNREACHABLE) from None
            except OSError as exc:
                raise CliError(f"connection to {self.address} failed: {exc}", EXIT_UNREACHABLE) from None
            if not chunk:
                raise CliError(f"{self.address} closed the connection (request not supported?)", EXIT_UNREACHABLE)
            chunks.append(chunk)
            count -= len(chunk)
        return b"".join(chunks)

    def request(self, body: Any) -> Any:
        self._correlation += 1
        try:
            self.sock.sendall(encode_request(self._correlation, body, self.client_id))
        except OSError as exc:
            raise CliError(f"connection to {self.address} failed: {exc}", EXIT_UNREACHABLE) from None
        (length,) = struct.unpack(">i", self._read_exactly(4))
        frame = self._read_exactly(length)
        try:
            correlation, response = decode_response(frame, response_type(body.__api_key__, body.__version__))
        except Exception as exc:
            raise CliError(f"cannot parse the answer from {self.address}: {exc}", EXIT_UNREACHABLE) from None
        if correlation != self._correlation:
            raise CliError(f"{self.address} answered out of order", EXIT_UNREACHABLE)
        return response

    def negotiate(self) -> None:
        for version in (3, 0):
            response = self.request(request_builder(API_VERSIONS, version).ApiVersionsRequest(
                client_software_name="lodestream-cli", client_software_version="1"))
            if int(response.error_code) == 0:
                self.versions = {int(k.api_key): range(int(k.min_version), int(k.max_version) + 1)
                                 for k in response.api_keys}
                return
            if int(response.error_code) != int(ErrorCode.unsupported_version):
                _check(response.error_code, None, "ApiVersions")
        raise CliError(f"{self.address} refused every ApiVersions version", EXIT_UNREACHABLE)

    def version(self, api_key: int) -> int:
        """The newest version both sides speak."""
        ours_min, ours_max = CLIENT_VERSIONS[api_key]
        known = schema_versions(api_key)
        theirs = self.versions.get(api_key)
        name = API_NAMES.get(api_key, str(api_key))
        if theirs is None:
            raise CliError(f"the broker at {self.address} does not support {name}")
        version = min(ours_max, theirs.stop - 1, known.stop - 1)
        if version < max(ours_min, theirs.start):
            raise CliError(f"no common {name} version with the broker at {self.address} "
                           f"(it serves {theirs.start}-{theirs.stop - 1}, we speak {ours_min}-{ours_max})")
        return version

    def supports(self, api_key: int) -> bool:
        try:
            self.version(api_key)
            return True
        except CliError:
            return False

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def parse_host_port(text: str, default_port: int = 9092) -> tuple[str, int]:
    text = text.strip()
    if text.startswith("["):  # [::1]:9092
        host, _, rest = text[1:].partition("]")
        port = rest.lstrip(":")
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            host, port = text, str(default_port)
    if not host or not port.isdigit():
        raise CliError(f"bad broker address {text!r}, expected host:port", EXIT_USAGE)
    return host, int(port)


# -- operations, transport-independent --------------------------------------------------------------

class Backend:
    transport = "this transport"

    def _unsupported(self, what: str) -> CliError:
        return CliError(f"{what} is not available over {self.transport} (yet): use --bootstrap-server HOST:PORT",
                        EXIT_USAGE)

    def list_topics(self, include_internal: bool) -> list[dict]: raise NotImplementedError
    def describe_topic(self, name: str) -> dict: raise NotImplementedError
    def create_topic(self, name: str, partitions: int, replication_factor: int, configs: dict[str, str]) -> dict:
        raise NotImplementedError
    def delete_topic(self, name: str) -> None: raise NotImplementedError
    def describe_configs(self, resource: str, name: str) -> list[dict]: raise NotImplementedError
    def alter_configs(self, resource: str, name: str, set_: dict[str, str], delete: list[str]) -> None:
        raise NotImplementedError
    def list_groups(self) -> list[dict]: raise NotImplementedError
    def describe_group(self, group_id: str) -> dict: raise NotImplementedError

    def create_partitions(self, name: str, count: int) -> None:
        """Raise the topic's partition count to `count` (CreatePartitions)."""
        raise self._unsupported("increasing partitions")

    def delete_group(self, group_id: str) -> None:
        raise self._unsupported("deleting groups")

    def delete_offsets(self, group_id: str, partitions: dict[str, list[int]]) -> list[dict]:
        """Delete a group's committed offsets: one {topic, partition, error (None = deleted)} per partition."""
        raise self._unsupported("deleting group offsets")

    # What `groups reset-offsets` needs (plan_reset computes the plan from these, transport-independently).
    def topic_partitions(self, topics: list[str]) -> dict[str, list[int]]:
        """Each topic's partition indexes; CliError if a topic does not exist."""
        raise self._unsupported("groups reset-offsets")

    def log_offsets(self, partitions: list[tuple[str, int]], timestamp: int) -> dict[tuple[str, int], int | None]:
        """ListOffsets: EARLIEST_TIMESTAMP (log start), LATEST_TIMESTAMP (log end) or a time in ms (the first
        offset at or after it; None when no record is that late, or the partition answered an error)."""
        raise self._unsupported("groups reset-offsets")

    def group_state(self, group_id: str) -> dict:
        """{"state": Kafka's state name ("Dead" when the group does not exist), "members": count}."""
        raise self._unsupported("groups reset-offsets")

    def committed_offsets(self, group_id: str) -> dict[tuple[str, int], int]:
        """The group's committed offsets; {} when it has none (or does not exist)."""
        raise self._unsupported("groups reset-offsets")

    def reset_offsets(self, group_id: str, plan: "ResetPlan") -> None:
        """Commit plan.rows' new offsets for the group (CliError, naming the group's state, if it refuses)."""
        raise self._unsupported("groups reset-offsets --execute")

    def close(self) -> None: pass


@dataclass
class _BrokerNode:
    node_id: int
    host: str
    port: int


class KafkaBackend(Backend):
    transport = "the Kafka protocol"

    def __init__(self, bootstrap: str, timeout: float) -> None:
        self.timeout = timeout
        servers = [s for s in bootstrap.split(",") if s.strip()]
        if not servers:
            raise CliError("--bootstrap-server is empty", EXIT_USAGE)
        last_error: CliError | None = None
        for server in servers:
            try:
                self.bootstrap = self._open(*parse_host_port(server))
                break
            except CliError as exc:
                if exc.exit_code != EXIT_UNREACHABLE:
                    raise
                last_error = exc
        else:
            assert last_error is not None
            raise last_error
        self._connections: dict[str, KafkaConnection] = {self.bootstrap.address: self.bootstrap}
        self._brokers: dict[int, _BrokerNode] | None = None

    def _open(self, host: str, port: int) -> KafkaConnection:
        connection = KafkaConnection(host, port, self.timeout)
        connection.negotiate()
        return connection

    def _connection(self, host: str, port: int) -> KafkaConnection:
        address = f"{host}:{port}"
        if address not in self._connections:
            self._connections[address] = self._open(host, port)
        return self._connections[address]

    def _node(self, node_id: int) -> KafkaConnection:
        if self._brokers is None:
            self._metadata(())
        node = (self._brokers or {}).get(node_id)
        if node is None:
            return self.bootstrap
        return self._connection(node.host, node.port)

    def close(self) -> None:
        for connection in self._connections.values():
            connection.close()

    # -- metadata -----------------------------------------------------------------------------------
    def _metadata(self, names: Iterable[str] | None):
        conn = self.bootstrap
        version = conn.version(METADATA)
        b = request_builder(METADATA, version)
        topics = None if names is None else tuple(b.MetadataRequestTopic(name=n, topic_id=None) for n in names)
        response = conn.request(b.MetadataRequest(
            topics=topics, allow_auto_topic_creation=False, include_cluster_authorized_operations=False,
            include_topic_authorized_operations=False))
        self._brokers = {int(b_.node_id): _BrokerNode(int(b_.node_id), b_.host, int(b_.port)) for b_ in response.brokers}
        return response

    def list_topics(self, include_internal: bool) -> list[dict]:
        response = self._metadata(None)
        topics = []
        for topic in response.topics:
            internal = bool(getattr(topic, "is_internal", False)) or topic.name.startswith("__")
            if internal and not include_internal:
                continue
            topics.append({"name": topic.name, "topic_id": _topic_id(topic), "partitions": len(topic.partitions),
                           "replication_factor": _replication_factor(topic), "internal": internal})
        return sorted(topics, key=lambda t: t["name"])

    def describe_topic(self, name: str) -> dict:
        response = self._metadata([name])
        (topic,) = response.topics
        if int(topic.error_code) == int(ErrorCode.unknown_topic_or_partition):
            raise CliError(f"topic {name!r} does not exist")
        _check(topic.error_code, None, f"describe topic {name}")
        partitions = sorted(topic.partitions, key=lambda p: int(p.partition_index))
        leaders = [(int(p.partition_index), int(p.leader_id)) for p in partitions]
        end_offsets = self._offsets(name, leaders, LATEST_TIMESTAMP)
        start_offsets = self._offsets(name, leaders, EARLIEST_TIMESTAMP)
        sizes = self._sizes(name, leaders)
        configs = [c for c in self.describe_configs("topic", name) if c["source"] in OVERRIDE_SOURCES]
        return {
            "name": topic.name,
            "topic_id": _topic_id(topic),
            "internal": bool(getattr(topic, "is_internal", False)),
            "partition_count": len(partitions),
            "replication_factor": _replication_factor(topic),
            "configs": {c["name"]: c["value"] for c in configs},
            "partitions": [{
                "partition": int(p.partition_index),
                "leader": int(p.leader_id),
                "replicas": [int(r) for r in p.replica_nodes],
                "isr": [int(r) for r in p.isr_nodes],
                "offline_replicas": [int(r) for r in getattr(p, "offline_replicas", ()) or ()],
                "start_offset": start_offsets.get(int(p.partition_index)),
                "end_offset": end_offsets.get(int(p.partition_index)),
                "size_bytes": sizes.get(int(p.partition_index)),
            } for p in partitions],
        }

    def _sizes(self, topic: str, partitions: list[tuple[int, int]]) -> dict[int, int]:
        """Log sizes from DescribeLogDirs, asked of each partition's leader (nothing for an unreachable one)."""
        by_leader: dict[int, list[int]] = {}
        for index, leader in partitions:
            by_leader.setdefault(leader, []).append(index)
        sizes: dict[int, int] = {}
        for leader, indexes in by_leader.items():
            if leader < 0:
                continue
            conn = self._node(leader)
            b = request_builder(DESCRIBE_LOG_DIRS, conn.version(DESCRIBE_LOG_DIRS))
            response = conn.request(b.DescribeLogDirsRequest(topics=(
                b.DescribableLogDirTopic(topic=topic, partitions=tuple(indexes)),)))
            for result in response.results:
                for described in result.topics:
                    for p in described.partitions:
                        index = int(p.partition_index)
                        sizes[index] = sizes.get(index, 0) + int(p.partition_size)
        return sizes

    def _offsets(self, topic: str, partitions: list[tuple[int, int]], timestamp: int) -> dict[int, int | None]:
        """ListOffsets for one topic's (partition, leader) pairs."""
        by_leader: dict[int, dict[str, list[int]]] = {}
        for index, leader in partitions:
            by_leader.setdefault(leader, {}).setdefault(topic, []).append(index)
        return {index: offset for (_, index), offset in self._list_offsets(by_leader, timestamp).items()}

    def _list_offsets(self, by_leader: dict[int, dict[str, list[int]]], timestamp: int
                      ) -> dict[tuple[str, int], int | None]:
        """ListOffsets sent to each leader (-1: unknown, the bootstrap broker) for its {topic: partitions}:
        each partition's offset, None where it answered an error."""
        result: dict[tuple[str, int], int | None] = {}
        for leader, topics in by_leader.items():
            conn = self._node(leader) if leader >= 0 else self.bootstrap
            b = request_builder(LIST_OFFSETS, conn.version(LIST_OFFSETS))
            response = conn.request(b.ListOffsetsRequest(
                replica_id=-1, isolation_level=0, timeout=datetime.timedelta(seconds=self.timeout),
                topics=tuple(b.ListOffsetsTopic(name=topic, partitions=tuple(
                    b.ListOffsetsPartition(partition_index=i, current_leader_epoch=-1, timestamp=timestamp)
                    for i in indexes)) for topic, indexes in topics.items())))
            for topic_response in response.topics:
                for p in topic_response.partitions:
                    key = (topic_response.name, int(p.partition_index))
                    result[key] = int(p.offset) if int(p.error_code) == 0 else None
        return result

    # -- topic administration -----------------------------------------------------------------------
    def create_topic(self, name: str, partitions: int, replication_factor: int, configs: dict[str, str]) -> dict:
        conn = self.bootstrap
        version = conn.version(CREATE_TOPICS)
        b = request_builder(CREATE_TOPICS, version)
        response = conn.request(b.CreateTopicsRequest(
            topics=(b.CreatableTopic(
                name=name, num_partitions=partitions, replication_factor=replication_factor, assignments=(),
                configs=tuple(b.CreatableTopicConfig(name=k, value=v) for k, v in configs.items())),),
            timeout=datetime.timedelta(seconds=self.timeout), validate_only=False))
        (result,) = response.topics
        if int(result.error_code) == int(ErrorCode.topic_already_exists):
            raise TopicExistsError(f"create topic {name}: TOPIC_ALREADY_EXISTS: "
                                   f"{getattr(result, 'error_message', None) or 'the topic already exists'}")
        _check(result.error_code, getattr(result, "error_message", None), f"create topic {name}")
        topic_id = getattr(result, "topic_id", None)
        return {"name": name, "topic_id": str(topic_id) if topic_id else None,
                "partitions": int(getattr(result, "num_partitions", partitions)),
                "replication_factor": int(getattr(result, "replication_factor", replication_factor))}

    def delete_topic(self, name: str) -> None:
        conn = self.bootstrap
        version = conn.version(DELETE_TOPICS)
        b = request_builder(DELETE_TOPICS, version)
        timeout = datetime.timedelta(seconds=self.timeout)
        if version >= 6:
            request = b.DeleteTopicsRequest(topics=(b.DeleteTopicState(name=name, topic_id=None),), timeout=timeout)
        else:
            request = b.DeleteTopicsRequest(topic_names=(name,), timeout=timeout)
        (result,) = conn.request(request).responses
        _check(result.error_code, getattr(result, "error_message", None), f"delete topic {name}")

    def describe_configs(self, resource: str, name: str) -> list[dict]:
        conn = self.bootstrap
        version = conn.version(DESCRIBE_CONFIGS)
        b = request_builder(DESCRIBE_CONFIGS, version)
        response = conn.request(b.DescribeConfigsRequest(
            resources=(b.DescribeConfigsResource(resource_type=_resource_type(resource), resource_name=name,
                                                 configuration_keys=None),),
            include_synonyms=False, include_documentation=False))
        (result,) = response.results
        _check(result.error_code, result.error_message, f"describe {resource} {name or '(defaults)'} configs")
        return sorted(({
            "name": c.name,
            "value": c.value,
            "source": CONFIG_SOURCES.get(int(c.config_source), str(int(c.config_source))),
            "read_only": bool(c.read_only),
            "sensitive": bool(c.is_sensitive),
        } for c in result.configs), key=lambda c: c["name"])

    def alter_configs(self, resource: str, name: str, set_: dict[str, str], delete: list[str]) -> None:
        conn = self.bootstrap
        version = conn.version(INCREMENTAL_ALTER_CONFIGS)
        b = request_builder(INCREMENTAL_ALTER_CONFIGS, version)
        ops = [b.AlterableConfig(name=k, config_operation=SET, value=v) for k, v in set_.items()]
        ops += [b.AlterableConfig(name=k, config_operation=DELETE, value=None) for k in delete]
        response = conn.request(b.IncrementalAlterConfigsRequest(
            resources=(b.AlterConfigsResource(resource_type=_resource_type(resource), resource_name=name,
                                              configs=tuple(ops)),),
            validate_only=False))
        (result,) = response.responses
        _check(result.error_code, result.error_message, f"alter {resource} {name or '(defaults)'} configs")

    # -- groups -------------------------------------------------------------------------------------
    def list_groups(self) -> list[dict]:
        self._metadata(())
        nodes = list((self._brokers or {}).values())
        connections = [self._connection(n.host, n.port) for n in nodes] or [self.bootstrap]
        groups: dict[str, dict] = {}
        for conn in connections:
            version = conn.version(LIST_GROUPS)
            b = request_builder(LIST_GROUPS, version)
            response = conn.request(b.ListGroupsRequest(states_filter=(), types_filter=()))
            _check(response.error_code, None, f"list groups on {conn.address}")
            for g in response.groups:
                groups[g.group_id] = {
                    "group": g.group_id,
                    "type": getattr(g, "group_type", None) or ("classic" if g.protocol_type else "simple"),
                    "state": getattr(g, "group_state", None) or "",
                    "protocol_type": g.protocol_type,
                }
        return sorted(groups.values(), key=lambda g: g["group"])

    def _coordinator(self, group_id: str) -> KafkaConnection:
        conn = self.bootstrap
        if not conn.supports(FIND_COORDINATOR):
            return conn
        version = conn.version(FIND_COORDINATOR)
        b = request_builder(FIND_COORDINATOR, version)
        if version >= 4:
            response = conn.request(b.FindCoordinatorRequest(key_type=0, coordinator_keys=(group_id,)))
            (found,) = response.coordinators
        else:
            found = conn.request(b.FindCoordinatorRequest(key=group_id, key_type=0))
        _check(found.error_code, getattr(found, "error_message", None), f"find the coordinator of group {group_id}")
        return self._connection(found.host, int(found.port))

    def describe_group(self, group_id: str) -> dict:
        conn = self._coordinator(group_id)
        described = None
        if conn.supports(CONSUMER_GROUP_DESCRIBE):
            described = self._consumer_group_describe(conn, group_id)
        if described is None:
            described = self._describe_classic(conn, group_id)
        offsets = self._committed(conn, group_id)
        if described["state"] in ("Dead", "") and not offsets and not described["members"]:
            raise CliError(f"group {group_id!r} does not exist")
        owner = {}
        for member in described["members"]:
            for topic, partition in member.pop("_owned"):
                owner[(topic, partition)] = member
        rows = []
        by_topic: dict[str, list[int]] = {}
        for topic, partition in offsets:
            by_topic.setdefault(topic, []).append(partition)
        end_offsets: dict[tuple[str, int], int | None] = {}
        if by_topic:
            metadata = self._metadata(list(by_topic))
            leaders = {(t.name, int(p.partition_index)): int(p.leader_id) for t in metadata.topics for p in t.partitions}
            for topic, partitions in by_topic.items():
                found = self._offsets(topic, [(p, leaders.get((topic, p), -1)) for p in partitions], LATEST_TIMESTAMP)
                end_offsets.update({(topic, p): o for p, o in found.items()})
        for (topic, partition), committed in sorted(offsets.items()):
            end = end_offsets.get((topic, partition))
            member = owner.get((topic, partition), {})
            rows.append({"topic": topic, "partition": partition, "committed_offset": committed,
                         "end_offset": end, "lag": None if end is None else max(0, end - committed),
                         "member_id": member.get("member_id"), "client_id": member.get("client_id"),
                         "host": member.get("host")})
        described["offsets"] = rows
        return described

    def _consumer_group_describe(self, conn: KafkaConnection, group_id: str) -> dict | None:
        version = conn.version(CONSUMER_GROUP_DESCRIBE)
        b = request_builder(CONSUMER_GROUP_DESCRIBE, version)
        response = conn.request(b.ConsumerGroupDescribeRequest(group_ids=(group_id,),
                                                              include_authorized_operations=False))
        (group,) = response.groups
        if int(group.error_code) != 0:
            return None  # not a consumer (KIP-848) group: describe it as a classic one
        members = []
        for m in group.members:
            owned = [(tp.topic_name, int(p)) for tp in m.assignment.topic_partitions for p in tp.partitions]
            members.append({"member_id": m.member_id, "instance_id": m.instance_id, "client_id": m.client_id,
                            "host": m.client_host, "assignment": [f"{t}-{p}" for t, p in sorted(owned)],
                            "_owned": owned})
        return {"group": group_id, "type": "consumer", "state": group.group_state, "protocol_type": "consumer",
                "protocol": group.assignor_name, "members": members}

    def _describe_classic(self, conn: KafkaConnection, group_id: str) -> dict:
        version = conn.version(DESCRIBE_GROUPS)
        b = request_builder(DESCRIBE_GROUPS, version)
        response = conn.request(b.DescribeGroupsRequest(groups=(group_id,), include_authorized_operations=False))
        (group,) = response.groups
        if int(group.error_code) == int(ErrorCode.group_id_not_found):
            return {"group": group_id, "type": "classic", "state": "Dead", "protocol_type": "", "protocol": "",
                    "members": []}
        _check(group.error_code, getattr(group, "error_message", None), f"describe group {group_id}")
        members = []
        for m in group.members:
            owned = assignment_partitions(m.member_assignment) if group.protocol_type == "consumer" else []
            members.append({"member_id": m.member_id, "instance_id": getattr(m, "group_instance_id", None),
                            "client_id": m.client_id, "host": m.client_host,
                            "assignment": [f"{t}-{p}" for t, p in sorted(owned)], "_owned": owned})
        return {"group": group_id, "type": "classic" if group.protocol_type else "simple", "state": group.group_state,
                "protocol_type": group.protocol_type, "protocol": group.protocol_data, "members": members}

    def _committed(self, conn: KafkaConnection, group_id: str) -> dict[tuple[str, int], int]:
        version = conn.version(OFFSET_FETCH)
        b = request_builder(OFFSET_FETCH, version)
        if version >= 8:
            response = conn.request(b.OffsetFetchRequest(groups=(b.OffsetFetchRequestGroup(
                group_id=group_id, member_id=None, member_epoch=-1, topics=None),), require_stable=False))
            (group,) = response.groups
            _check(group.error_code, None, f"fetch the offsets of group {group_id}")
            topics = group.topics
        else:
            response = conn.request(b.OffsetFetchRequest(group_id=group_id, topics=None, require_stable=False))
            _check(getattr(response, "error_code", 0), None, f"fetch the offsets of group {group_id}")
            topics = response.topics
        result = {}
        for topic in topics:
            for p in topic.partitions:
                if int(p.error_code) == 0 and int(p.committed_offset) >= 0:
                    result[(topic.name, int(p.partition_index))] = int(p.committed_offset)
        return result

    # -- partitions, group deletion, offset deletion and reset -------------------------------------
    def create_partitions(self, name: str, count: int) -> None:
        conn = self.bootstrap
        b = request_builder(CREATE_PARTITIONS, conn.version(CREATE_PARTITIONS))
        response = conn.request(b.CreatePartitionsRequest(
            topics=(b.CreatePartitionsTopic(name=name, count=count, assignments=None),),
            timeout=datetime.timedelta(seconds=self.timeout), validate_only=False))
        (result,) = response.results
        if int(result.error_code) == int(ErrorCode.unknown_topic_or_partition):
            raise CliError(f"topic {name!r} does not exist")
        _check(result.error_code, result.error_message, f"increase the partitions of topic {name}")

    def delete_group(self, group_id: str) -> None:
        conn = self._coordinator(group_id)
        b = request_builder(DELETE_GROUPS, conn.version(DELETE_GROUPS))
        (result,) = conn.request(b.DeleteGroupsRequest(groups_names=(group_id,))).results
        _check_group(result.error_code, group_id, f"delete group {group_id}")

    def delete_offsets(self, group_id: str, partitions: dict[str, list[int]]) -> list[dict]:
        conn = self._coordinator(group_id)
        b = request_builder(OFFSET_DELETE, conn.version(OFFSET_DELETE))
        response = conn.request(b.OffsetDeleteRequest(group_id=group_id, topics=tuple(
            b.OffsetDeleteRequestTopic(name=topic, partitions=tuple(
                b.OffsetDeleteRequestPartition(partition_index=p) for p in indexes))
            for topic, indexes in partitions.items())))
        _check_group(response.error_code, group_id, f"delete offsets of group {group_id}")
        results = []
        for topic in response.topics:
            for p in topic.partitions:
                code = int(p.error_code)
                results.append({"topic": topic.name, "partition": int(p.partition_index),
                                "error": None if code == 0 else _offset_delete_error(code, group_id, topic.name)})
        return sorted(results, key=lambda r: (r["topic"], r["partition"]))

    def topic_partitions(self, topics: list[str]) -> dict[str, list[int]]:
        if not topics:
            return {}
        result = {}
        for topic in self._metadata(topics).topics:
            if int(topic.error_code) == int(ErrorCode.unknown_topic_or_partition):
                raise CliError(f"topic {topic.name!r} does not exist")
            _check(topic.error_code, None, f"describe topic {topic.name}")
            result[topic.name] = sorted(int(p.partition_index) for p in topic.partitions)
        return result

    def log_offsets(self, partitions: list[tuple[str, int]], timestamp: int) -> dict[tuple[str, int], int | None]:
        if not partitions:
            return {}
        metadata = self._metadata(sorted({t for t, _ in partitions}))
        leaders = {(t.name, int(p.partition_index)): int(p.leader_id) for t in metadata.topics for p in t.partitions}
        by_leader: dict[int, dict[str, list[int]]] = {}
        for topic, partition in partitions:
            by_leader.setdefault(leaders.get((topic, partition), -1), {}).setdefault(topic, []).append(partition)
        found = self._list_offsets(by_leader, timestamp)
        # -1: no record that late (a timestamp lookup)
        return {tp: None if found.get(tp) is None or found[tp] < 0 else found[tp] for tp in partitions}

    def group_state(self, group_id: str) -> dict:
        conn = self._coordinator(group_id)
        described = self._consumer_group_describe(conn, group_id) if conn.supports(CONSUMER_GROUP_DESCRIBE) else None
        if described is None:
            described = self._describe_classic(conn, group_id)
        return {"state": described["state"] or "Dead", "members": len(described["members"])}

    def committed_offsets(self, group_id: str) -> dict[tuple[str, int], int]:
        return self._committed(self._coordinator(group_id), group_id)

    def reset_offsets(self, group_id: str, plan: "ResetPlan") -> None:
        """An admin commit (generation -1, no member id): the coordinator takes it only while the group is
        empty, as Kafka's kafka-consumer-groups relies on."""
        conn = self._coordinator(group_id)
        b = request_builder(OFFSET_COMMIT, conn.version(OFFSET_COMMIT))
        by_topic: dict[str, list[dict]] = {}
        for row in plan.rows:
            by_topic.setdefault(row["topic"], []).append(row)
        response = conn.request(b.OffsetCommitRequest(
            group_id=group_id, generation_id_or_member_epoch=-1, member_id="", group_instance_id=None,
            retention_time_ms=-1, retention_time=-1, topics=tuple(
                b.OffsetCommitRequestTopic(name=topic, partitions=tuple(
                    b.OffsetCommitRequestPartition(partition_index=r["partition"], committed_offset=r["new_offset"],
                                                   committed_leader_epoch=-1, committed_metadata="")
                    for r in rows)) for topic, rows in by_topic.items())))
        failed = [(t.name, int(p.partition_index), int(p.error_code))
                  for t in response.topics for p in t.partitions if int(p.error_code) != 0]
        if not failed:
            return
        codes = {code for _, _, code in failed}
        if codes & _ACTIVE_GROUP_ERRORS:
            state = self.group_state(group_id)
            raise CliError(f"Assignments can only be reset if the group '{group_id}' is inactive, but the current "
                           f"state is {state['state']} ({state['members']} members; the coordinator answered "
                           f"{', '.join(sorted(_error_name(c) for c in codes & _ACTIVE_GROUP_ERRORS))}): "
                           "stop its consumers first")
        raise CliError(f"reset offsets of group {group_id}: " + "; ".join(
            f"{t}-{p}: {_error_name(code)}" for t, p, code in sorted(failed)))


# OffsetCommit's answers to an admin commit while the group has members
_ACTIVE_GROUP_ERRORS = {int(ErrorCode.unknown_member_id), int(ErrorCode.illegal_generation),
                        int(ErrorCode.rebalance_in_progress), int(ErrorCode.stale_member_epoch),
                        int(ErrorCode.fenced_member_epoch)}


def _check_group(code: int, group_id: str, what: str) -> None:
    """A group-level error of DeleteGroups / OffsetDelete, said as an operator needs it."""
    code = int(code)
    if code == int(ErrorCode.group_id_not_found):
        raise CliError(f"{what}: group {group_id!r} does not exist (GROUP_ID_NOT_FOUND)")
    if code == int(ErrorCode.non_empty_group):
        raise CliError(f"{what}: the group has active members (NON_EMPTY_GROUP): stop its consumers first, "
                       "or wait until their sessions time out")
    _check(code, None, what)


def _offset_delete_error(code: int, group_id: str, topic: str) -> str:
    if code == int(ErrorCode.group_subscribed_to_topic):
        return (f"GROUP_SUBSCRIBED_TO_TOPIC: members of group {group_id} are subscribed to {topic}; its offsets "
                "can be deleted once they unsubscribe or stop")
    if code == int(ErrorCode.unknown_topic_or_partition):
        return f"UNKNOWN_TOPIC_OR_PARTITION: {topic} has no such partition"
    return _error_name(code)


def _topic_id(topic) -> str | None:
    topic_id = getattr(topic, "topic_id", None)
    if topic_id is None or int(getattr(topic_id, "int", 0)) == 0:
        return None
    return str(topic_id)


def _replication_factor(topic) -> int:
    return max((len(p.replica_nodes) for p in topic.partitions), default=0)


def _resource_type(resource: str) -> int:
    return TOPIC_RESOURCE if resource == "topic" else BROKER_RESOURCE


# -- the REST transport -------------------------------------------------------------------------------

def _kafka_state(rest_state: str | None) -> str:
    """REST Proxy's state enum ("PREPARING_REBALANCE") as Kafka names it ("PreparingRebalance")."""
    if not rest_state:
        return ""
    return "".join(part.capitalize() for part in rest_state.split("_"))


class RestBackend(Backend):
    """The same operations over the broker's REST API (Confluent REST Proxy v3 shape, admin/rest.py)."""

    transport = "the REST API"

    def __init__(self, base_url: str, timeout: float, token: str | None, user: str | None) -> None:
        parsed = urllib.parse.urlsplit(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise CliError(f"bad --rest URL {base_url!r}, expected http://host:port", EXIT_USAGE)
        self.base = base_url.rstrip("/")
        self.timeout = timeout
        self.headers = {"Accept": "application/json"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        elif user:
            self.headers["Authorization"] = "Basic " + base64.b64encode(user.encode()).decode()
        self._cluster: str | None = None

    def _call(self, method: str, path: str, body: Any = None, missing: str | None = None) -> Any:
        data = None
        headers = dict(self.headers)
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload = response.read()
        except urllib.error.HTTPError as exc:
            message = _rest_error_message(exc.read()) or exc.reason
            if exc.code == 404 and missing:
                raise CliError(missing) from None
            if exc.code in (401, 403):
                raise CliError(f"the REST API refused the request ({exc.code}): {message}; "
                               "see --rest-token / --rest-user") from None
            raise RestHTTPError(f"{message} (HTTP {exc.code} from {method} {path})", exc.code, message) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise CliError(f"cannot reach the REST API at {self.base}: {reason}", EXIT_UNREACHABLE) from None
        if not payload:
            return None
        try:
            return json.loads(payload)
        except ValueError:
            raise CliError(f"{method} {path}: the REST API answered something that is not JSON",
                           EXIT_UNREACHABLE) from None

    def _c(self, path: str) -> str:
        """A path under /v3/clusters/{this cluster}."""
        if self._cluster is None:
            clusters = self._call("GET", "/v3/clusters")["data"]
            if not clusters:
                raise CliError(f"the REST API at {self.base} lists no cluster", EXIT_UNREACHABLE)
            self._cluster = clusters[0]["cluster_id"]
        return f"/v3/clusters/{self._cluster}{path}"

    @staticmethod
    def _q(name: str) -> str:
        return urllib.parse.quote(name, safe="")

    def list_topics(self, include_internal: bool) -> list[dict]:
        topics = []
        for t in self._call("GET", self._c("/topics"))["data"]:
            internal = bool(t.get("is_internal")) or t["topic_name"].startswith("__")
            if internal and not include_internal:
                continue
            topics.append({"name": t["topic_name"], "topic_id": t.get("topic_id"), "partitions": t["partitions_count"],
                           "replication_factor": t["replication_factor"], "internal": internal})
        return sorted(topics, key=lambda t: t["name"])

    def describe_topic(self, name: str) -> dict:
        missing = f"topic {name!r} does not exist"
        topic = self._call("GET", self._c(f"/topics/{self._q(name)}"), missing=missing)
        partitions = self._call("GET", self._c(f"/topics/{self._q(name)}/partitions"), missing=missing)["data"]
        configs = [c for c in self.describe_configs("topic", name) if c["source"] in OVERRIDE_SOURCES]
        return {
            "name": topic["topic_name"],
            "topic_id": topic.get("topic_id"),
            "internal": bool(topic.get("is_internal")),
            "partition_count": len(partitions),
            "replication_factor": topic["replication_factor"],
            "configs": {c["name"]: c["value"] for c in configs},
            "partitions": [{
                "partition": p["partition_id"],
                "leader": -1 if p.get("leader_id") is None else p["leader_id"],
                "replicas": list(p.get("replica_ids", [])),
                "isr": list(p.get("isr_ids", [])),
                "offline_replicas": [],
                "start_offset": p.get("earliest_offset"),
                "end_offset": p.get("latest_offset"),
                "size_bytes": p.get("size_bytes"),
            } for p in sorted(partitions, key=lambda p: p["partition_id"])],
        }

    def create_topic(self, name: str, partitions: int, replication_factor: int, configs: dict[str, str]) -> dict:
        body: dict[str, Any] = {"topic_name": name, "configs": [{"name": k, "value": v} for k, v in configs.items()]}
        if partitions != -1:
            body["partitions_count"] = partitions
        if replication_factor != -1:
            body["replication_factor"] = replication_factor
        try:
            created = self._call("POST", self._c("/topics"), body)
        except RestHTTPError as exc:
            if exc.status == 400 and "already exists" in exc.message:
                raise TopicExistsError(f"create topic {name}: TOPIC_ALREADY_EXISTS: {exc.message}") from None
            raise
        return {"name": name, "topic_id": created.get("topic_id"), "partitions": created["partitions_count"],
                "replication_factor": created["replication_factor"]}

    def delete_topic(self, name: str) -> None:
        self._call("DELETE", self._c(f"/topics/{self._q(name)}"), missing=f"topic {name!r} does not exist")

    def create_partitions(self, name: str, count: int) -> None:
        try:
            self._call("PATCH", self._c(f"/topics/{self._q(name)}"), {"partitions_count": count},
                       missing=f"topic {name!r} does not exist")
        except RestHTTPError as exc:
            if exc.status == 400 and exc.message.startswith("partitions_count:"):
                raise CliError(f"increase the partitions of topic {name}: INVALID_PARTITIONS:"
                               f"{exc.message.removeprefix('partitions_count:')}") from None
            raise

    def _config_path(self, resource: str, name: str) -> tuple[str, str]:
        if resource == "topic":
            return self._c(f"/topics/{self._q(name)}/configs"), f"topic {name!r} does not exist"
        if not name:
            return self._c("/broker-configs"), "no cluster-wide broker configs"
        return self._c(f"/brokers/{self._q(name)}/configs"), f"broker {name} does not exist"

    def describe_configs(self, resource: str, name: str) -> list[dict]:
        path, missing = self._config_path(resource, name)
        return sorted(({
            "name": c["name"],
            "value": c.get("value"),
            "source": c.get("source", "UNKNOWN"),
            "read_only": bool(c.get("is_read_only")),
            "sensitive": bool(c.get("is_sensitive")),
        } for c in self._call("GET", path, missing=missing)["data"]), key=lambda c: c["name"])

    def alter_configs(self, resource: str, name: str, set_: dict[str, str], delete: list[str]) -> None:
        path, missing = self._config_path(resource, name)
        data = [{"name": k, "value": v, "operation": "SET"} for k, v in set_.items()]
        data += [{"name": k, "operation": "DELETE"} for k in delete]
        self._call("POST", path + ":alter", {"data": data}, missing=missing)

    def list_groups(self) -> list[dict]:
        return sorted(({
            "group": g["consumer_group_id"],
            "type": str(g.get("type", "")).lower(),
            "state": _kafka_state(g.get("state")),
            "protocol_type": g.get("protocol_type", ""),
        } for g in self._call("GET", self._c("/consumer-groups"))["data"]), key=lambda g: g["group"])

    def describe_group(self, group_id: str) -> dict:
        missing = f"group {group_id!r} does not exist"
        base = f"/consumer-groups/{self._q(group_id)}"
        group = self._call("GET", self._c(base), missing=missing)
        members = []
        for m in self._call("GET", self._c(base + "/consumers"), missing=missing)["data"]:
            assigned = self._call("GET", self._c(f"{base}/consumers/{self._q(m['consumer_id'])}/assignments"),
                                  missing=missing)["data"]
            members.append({"member_id": m["consumer_id"], "instance_id": m.get("instance_id"),
                            "client_id": m.get("client_id"), "host": None,
                            "assignment": sorted(f"{a['topic_name']}-{a['partition_id']}" for a in assigned)})
        by_id = {m["member_id"]: m for m in members}
        offsets = []
        for lag in self._call("GET", self._c(base + "/lags"), missing=missing)["data"]:
            owner = by_id.get(lag.get("consumer_id") or "")
            offsets.append({"topic": lag["topic_name"], "partition": lag["partition_id"],
                            "committed_offset": lag["current_offset"], "end_offset": lag["log_end_offset"],
                            "lag": lag["lag"], "member_id": lag.get("consumer_id") or None,
                            "client_id": lag.get("client_id") or None, "host": owner["host"] if owner else None})
        return {"group": group_id, "type": str(group.get("type", "")).lower(),
                "state": _kafka_state(group.get("state")), "protocol_type": group.get("protocol_type", ""),
                "protocol": group.get("partition_assignor", ""), "members": members,
                "offsets": sorted(offsets, key=lambda o: (o["topic"], o["partition"]))}


def _rest_error_message(raw: bytes) -> str | None:
    try:
        data = json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace").strip() or None
    if isinstance(data, dict):
        for key in ("message", "detail", "error_message", "error"):
            if data.get(key):
                detail = data[key]
                return detail if isinstance(detail, str) else json.dumps(detail)
    return None


# -- output ----------------------------------------------------------------------------------------

@dataclass
class Output:
    data: Any  # what --output json prints
    tables: list[tuple[str | None, list[str], list[list[Any]]]] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)  # table mode: plain lines before the tables


def _cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value)) if value else "-"
    return str(value)


def render_table(columns: list[str], rows: list[list[Any]]) -> str:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(lines)


PROGRESS_MIN = 20  # items from which an operation reports progress on a stderr that is not a terminal
PROGRESS_EVERY_S = 2.0  # at most one progress line this often off a terminal


class Progress:
    """`what: done/total` on stderr for an operation over many items: redrawn in place on a terminal (from 2
    items), else a line at most every PROGRESS_EVERY_S and at the end, from PROGRESS_MIN items. The output
    itself stays on stdout, whole."""

    def __init__(self, what: str, total: int, stream=None) -> None:
        self.what, self.total, self.count = what, total, 0
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.enabled = total >= (2 if self.tty else PROGRESS_MIN)
        self._shown_at = time.monotonic()

    def step(self, count: int = 1) -> None:
        self.count += count
        if not self.enabled:
            return
        if self.tty:
            self.stream.write(f"\r{self.what}: {self.count}/{self.total}")
            self.stream.flush()
        elif time.monotonic() - self._shown_at >= PROGRESS_EVERY_S:
            self._shown_at = time.monotonic()
            self.stream.write(f"{self.what}: {self.count}/{self.total}\n")
            self.stream.flush()

    def done(self) -> None:
        if self.enabled:
            self.stream.write(("\r" if self.tty else "") + f"{self.what}: {self.count}/{self.total} done\n")
            self.stream.flush()


def emit(output: Output, fmt: str, stream=None) -> None:
    stream = stream or sys.stdout
    if fmt == "json":
        stream.write(json.dumps(output.data, indent=2, sort_keys=False) + "\n")
        return
    parts = list(output.lines)
    for title, columns, rows in output.tables:
        block = render_table(columns, rows)
        parts.append(f"{title}\n{block}" if title else block)
    if parts:
        stream.write("\n\n".join(parts) if output.tables else "\n".join(parts))
        stream.write("\n")


# -- commands --------------------------------------------------------------------------------------

def _key_values(items: list[str], option: str) -> dict[str, str]:
    result = {}
    for item in items:
        key, sep, val = item.partition("=")
        if not sep or not key.strip():
            raise CliError(f"{option} expects KEY=VALUE, got {item!r}", EXIT_USAGE)
        result[key.strip()] = val
    return result


def cmd_topics_list(backend: Backend, args) -> Output:
    topics = backend.list_topics(args.include_internal)
    return Output(topics, [(None, ["TOPIC", "PARTITIONS", "REPLICATION", "TOPIC-ID"],
                            [[t["name"], t["partitions"], t["replication_factor"], t["topic_id"]] for t in topics])])


def cmd_topics_describe(backend: Backend, args) -> Output:
    names = args.topics or [t["name"] for t in backend.list_topics(include_internal=False)]
    described = [backend.describe_topic(name) for name in names]
    output = Output(described)
    for topic in described:
        configs = ",".join(f"{k}={v}" for k, v in sorted(topic["configs"].items())) or "-"
        output.tables.append((
            f"Topic: {topic['name']}  TopicId: {topic['topic_id'] or '-'}  PartitionCount: {topic['partition_count']}  "
            f"ReplicationFactor: {topic['replication_factor']}  Configs: {configs}",
            ["PARTITION", "LEADER", "REPLICAS", "ISR", "START-OFFSET", "END-OFFSET", "SIZE"],
            [[p["partition"], p["leader"], p["replicas"], p["isr"], p["start_offset"], p["end_offset"],
              p["size_bytes"]] for p in topic["partitions"]]))
    return output


def cmd_topics_create(backend: Backend, args) -> Output:
    configs = _key_values(args.config, "--config")
    try:
        created = backend.create_topic(args.topic, args.partitions, args.replication_factor, configs)
    except TopicExistsError:
        if not args.if_not_exists:
            raise
        return Output({"name": args.topic, "created": False, "already_exists": True},
                      lines=[f"Topic {args.topic} already exists: nothing to do (--if-not-exists)."])
    return Output({**created, "created": True},
                  lines=[f"Created topic {args.topic} ({created['partitions']} partitions)."])


def cmd_topics_alter(backend: Backend, args) -> Output:
    backend.create_partitions(args.topic, args.partitions)
    return Output({"name": args.topic, "partitions": args.partitions},
                  lines=[f"Topic {args.topic} now has {args.partitions} partitions."])


def _delete_each(names: list[str], what: str, key: str, delete) -> Output:
    """Delete each name in turn (with progress when there are many): one result per name ({key: name,
    deleted, error}); the refused ones make a partial failure, a transport failure stops at once."""
    results, failed = [], []
    progress = Progress(f"deleting {what}s", len(names))
    for name in names:
        try:
            delete(name)
            results.append({key: name, "deleted": True})
        except CliError as exc:
            if exc.exit_code != EXIT_ERROR:
                raise
            results.append({key: name, "deleted": False, "error": str(exc)})
            failed.append(str(exc))
        progress.step()
    progress.done()
    output = Output(results, lines=[f"Deleted {what} {r[key]}." for r in results if r["deleted"]])
    if failed:
        raise _PartialFailure(output, failed)
    return output


def cmd_topics_delete(backend: Backend, args) -> Output:
    return _delete_each(args.topics, "topic", "name", backend.delete_topic)


def cmd_topics_alter_config(backend: Backend, args) -> Output:
    args.resource, args.name = "topic", args.topic
    return cmd_configs_alter(backend, args)


def _resource_of(args) -> tuple[str, str]:
    if args.topic is not None:
        return "topic", args.topic
    if args.broker_defaults:
        return "broker", ""
    return "broker", str(args.broker)


def cmd_configs_describe(backend: Backend, args) -> Output:
    resource, name = _resource_of(args)
    configs = backend.describe_configs(resource, name)
    if not args.all:
        configs = [c for c in configs if c["source"] in OVERRIDE_SOURCES]
    label = f"{resource} {name}" if name else "broker defaults"
    rows = [[c["name"], "(sensitive)" if c["sensitive"] and c["value"] is None else c["value"], c["source"],
             c["read_only"]] for c in configs]
    output = Output({"resource": resource, "name": name, "configs": configs},
                    [(f"Configs of {label}" + ("" if args.all else " (overrides; --all for every config)"),
                      ["NAME", "VALUE", "SOURCE", "READ-ONLY"], rows)])
    return output


def cmd_configs_alter(backend: Backend, args) -> Output:
    resource, name = getattr(args, "resource", None), getattr(args, "name", None)
    if resource is None:
        resource, name = _resource_of(args)
    set_ = _key_values(args.set, "--set")
    delete = [k.strip() for k in args.delete]
    if not set_ and not delete:
        raise CliError("nothing to change: give --set KEY=VALUE and/or --delete KEY", EXIT_USAGE)
    backend.alter_configs(resource, name, set_, delete)
    label = f"{resource} {name}" if name else "broker defaults"
    return Output({"resource": resource, "name": name, "set": set_, "deleted": delete},
                  lines=[f"Updated the configs of {label}."])


def cmd_groups_list(backend: Backend, args) -> Output:
    groups = backend.list_groups()
    return Output(groups, [(None, ["GROUP", "TYPE", "STATE", "PROTOCOL-TYPE"],
                            [[g["group"], g["type"], g["state"], g["protocol_type"]] for g in groups])])


def cmd_groups_describe(backend: Backend, args) -> Output:
    names = args.groups or [g["group"] for g in backend.list_groups()]
    described = [backend.describe_group(name) for name in names]
    output = Output(described)
    for group in described:
        total_lag = sum(o["lag"] or 0 for o in group["offsets"])
        output.tables.append((
            f"Group: {group['group']}  Type: {group['type']}  State: {group['state']}  "
            f"Members: {len(group['members'])}  TotalLag: {total_lag}",
            ["TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG", "CONSUMER-ID", "HOST", "CLIENT-ID"],
            [[o["topic"], o["partition"], o["committed_offset"], o["end_offset"], o["lag"], o["member_id"], o["host"],
              o["client_id"]] for o in group["offsets"]]))
        if group["members"]:
            output.tables.append((
                f"Members of {group['group']}",
                ["CONSUMER-ID", "CLIENT-ID", "HOST", "ASSIGNMENT"],
                [[m["member_id"], m["client_id"], m["host"], m["assignment"]] for m in group["members"]]))
    return output


def cmd_groups_delete(backend: Backend, args) -> Output:
    return _delete_each(args.groups, "group", "group", backend.delete_group)


def parse_topic_partitions(specs: list[str], option: str = "--topic") -> dict[str, list[int] | None]:
    """`T` (every partition: None) or `T:0,1,...`, repeatable; the same topic twice merges."""
    scope: dict[str, list[int] | None] = {}
    for spec in specs:
        topic, sep, listed = spec.partition(":")
        topic = topic.strip()
        if not topic or (sep and not listed.strip()):
            raise CliError(f"{option} expects TOPIC or TOPIC:PARTITION,..., got {spec!r}", EXIT_USAGE)
        if not sep:
            scope[topic] = None
            continue
        try:
            partitions = [int(p) for p in listed.split(",")]
        except ValueError:
            raise CliError(f"{option} {spec!r}: partitions are numbers, e.g. {topic}:0,1", EXIT_USAGE) from None
        if topic not in scope or scope[topic] is not None:
            scope[topic] = sorted(set((scope.get(topic) or []) + partitions))
    return scope


def _resolve_scope(backend: Backend, scope: dict[str, list[int] | None]) -> list[tuple[str, int]]:
    """The (topic, partition) pairs a --topic scope names, checked against the topics' partitions."""
    existing = backend.topic_partitions(sorted(scope))
    pairs = []
    for topic, listed in sorted(scope.items()):
        for partition in listed if listed is not None else existing[topic]:
            if partition not in existing[topic]:
                raise CliError(f"topic {topic} has no partition {partition} (it has {len(existing[topic])})")
            pairs.append((topic, partition))
    return pairs


def cmd_groups_delete_offsets(backend: Backend, args) -> Output:
    pairs = _resolve_scope(backend, parse_topic_partitions(args.topic))
    partitions: dict[str, list[int]] = {}
    for topic, partition in pairs:
        partitions.setdefault(topic, []).append(partition)
    results = backend.delete_offsets(args.group, partitions)
    failed = [f"{r['topic']}-{r['partition']}: {r['error']}" for r in results if r["error"]]
    output = Output({"group": args.group, "partitions": results}, [(
        None, ["TOPIC", "PARTITION", "STATUS"],
        [[r["topic"], r["partition"], "Successful" if not r["error"] else f"Error: {r['error']}"] for r in results])])
    if failed:
        raise _PartialFailure(output, [f"delete offsets of group {args.group}: {f}" for f in failed])
    return output


# -- groups reset-offsets: a plan computed from the Backend's reads, then Backend.reset_offsets ------------

@dataclass
class ResetTarget:
    """Where `groups reset-offsets` moves a group. kind: earliest | latest | current | offset (value: the
    offset) | shift (value: +/- count) | timestamp (value: ms since the epoch; --to-datetime, --by-duration)
    | explicit (value: {(topic, partition): offset}, e.g. from a snapshot: the partitions to reset when no
    --topic is given). label: how the user said it, for output."""
    kind: str
    value: Any = None
    label: str = ""


@dataclass
class ResetPlan:
    group: str
    target: ResetTarget
    state: str  # the group's state when planned ("Dead": no such group yet)
    members: int
    rows: list[dict]  # topic, partition, current_offset (None: nothing committed), new_offset, log_start, log_end
    warnings: list[str] = field(default_factory=list)

    def as_json(self, executed: bool) -> dict:
        return {"group": self.group, "state": self.state, "members": self.members, "target": self.target.label,
                "executed": executed, "partitions": self.rows, "warnings": self.warnings}


_DATETIME = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(\.\d{1,9})?(Z|[+-]\d{2}(?::?\d{2})?)?$")
_DURATION = re.compile(r"^([-+]?)P(?:([-+]?\d+)D)?(?:T(?:([-+]?\d+)H)?(?:([-+]?\d+)M)?"
                       r"(?:([-+]?\d+)(?:[.,](\d{1,9}))?S)?)?$", re.IGNORECASE)


def parse_datetime_ms(text: str) -> int:
    """Kafka's --to-datetime: YYYY-MM-DDTHH:mm:SS[.sss][Z|+hh:mm|+hhmm|+hh], UTC when no zone is given."""
    match = _DATETIME.match(text.strip())
    if not match:
        raise CliError(f"--to-datetime {text!r}: expected YYYY-MM-DDTHH:mm:SS[.sss][Z|+hh:mm], "
                       "e.g. 2024-05-01T12:00:00.000Z", EXIT_USAGE)
    clock, fraction, zone = match.groups()
    zone = zone or "Z"
    if zone != "Z" and len(zone) == 3:
        zone += ":00"
    elif zone != "Z" and ":" not in zone:
        zone = f"{zone[:3]}:{zone[3:]}"
    try:
        moment = datetime.datetime.fromisoformat(f"{clock}{zone.replace('Z', '+00:00')}")
    except ValueError as exc:
        raise CliError(f"--to-datetime {text!r}: {exc}", EXIT_USAGE) from None
    millis = int((fraction or ".0")[1:].ljust(3, "0")[:3])
    return int(moment.timestamp()) * 1000 + millis


def parse_duration_ms(text: str) -> int:
    """An ISO-8601 duration as Java's Duration.parse takes it (PnDTnHnMnS), in milliseconds."""
    match = _DURATION.match(text.strip())
    if not match or match.group(0).upper().endswith(("P", "T")):
        raise CliError(f"--by-duration {text!r}: expected an ISO-8601 duration PnDTnHnMnS, e.g. PT1H30M or P1D",
                       EXIT_USAGE)
    sign, days, hours, minutes, seconds, fraction = match.groups()
    millis = (int(days or 0) * 86_400_000 + int(hours or 0) * 3_600_000 + int(minutes or 0) * 60_000
              + int(seconds or 0) * 1000)
    if fraction:
        part = int(fraction.ljust(3, "0")[:3])
        millis += -part if (seconds or "").startswith("-") else part
    return -millis if sign == "-" else millis


def read_offsets_file(path: str) -> dict[tuple[str, int], int]:
    """--from-file: TOPIC,PARTITION,OFFSET lines, as kafka-consumer-groups --export writes them."""
    offsets: dict[tuple[str, int], int] = {}
    try:
        lines = open(path, encoding="utf-8").read().splitlines()
    except OSError as exc:
        raise CliError(f"--from-file {path}: {exc.strerror or exc}", EXIT_USAGE) from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        fields = line.strip().rsplit(",", 2)
        if len(fields) != 3 or not fields[1].strip().isdigit() or not fields[2].strip().lstrip("-").isdigit():
            raise CliError(f"--from-file {path} line {number}: expected TOPIC,PARTITION,OFFSET, got {line!r}",
                           EXIT_USAGE)
        offsets[(fields[0].strip(), int(fields[1]))] = int(fields[2])
    if not offsets:
        raise CliError(f"--from-file {path}: no offsets in it", EXIT_USAGE)
    return offsets


def reset_target(args, backend: Backend, now_ms: int | None = None) -> ResetTarget:
    """The one target option of `groups reset-offsets` as a ResetTarget (a new target: its option in
    _reset_target_options and its branch here, resolving to one of ResetTarget's kinds)."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    if args.to_earliest:
        return ResetTarget("earliest", label="earliest")
    if args.to_latest:
        return ResetTarget("latest", label="latest")
    if args.to_current:
        return ResetTarget("current", label="current")
    if args.to_offset is not None:
        return ResetTarget("offset", args.to_offset, f"offset {args.to_offset}")
    if args.shift_by is not None:
        return ResetTarget("shift", args.shift_by, f"shift by {args.shift_by}")
    if args.to_datetime is not None:
        return ResetTarget("timestamp", parse_datetime_ms(args.to_datetime), f"datetime {args.to_datetime}")
    if args.by_duration is not None:
        return ResetTarget("timestamp", now_ms - parse_duration_ms(args.by_duration), f"duration {args.by_duration}")
    if args.to_snapshot is not None:
        return ResetTarget("snapshot", args.to_snapshot, f"snapshot {args.to_snapshot}")
    if args.from_file is not None:
        return ResetTarget("explicit", read_offsets_file(args.from_file), f"the offsets in {args.from_file}")
    raise CliError("give one target: --to-earliest, --to-latest, --to-offset, --to-datetime, --by-duration, "
                   "--shift-by, --to-current, --to-snapshot or --from-file", EXIT_USAGE)


def plan_reset(backend: Backend, group_id: str, scope: dict[str, list[int] | None] | None,
               target: ResetTarget) -> ResetPlan:
    """The new offset of each partition in scope (None = --all-topics: every partition the group has an
    offset for, or an explicit target's partitions), clamped to [log start, log end] as Kafka does for
    --to-offset, --shift-by and explicit offsets. Reads only: nothing is committed."""
    committed = backend.committed_offsets(group_id)
    if scope is not None:
        pairs = _resolve_scope(backend, scope)
        if target.kind == "explicit":
            pairs = [tp for tp in pairs if tp in target.value]
    elif target.kind == "explicit":
        pairs = sorted(target.value)
    else:
        pairs = sorted(committed)
        if not pairs:
            raise CliError(f"group {group_id!r} has no committed offsets: name the partitions with --topic")
    if not pairs:
        raise CliError("no partitions to reset")
    starts = backend.log_offsets(pairs, EARLIEST_TIMESTAMP)
    ends = backend.log_offsets(pairs, LATEST_TIMESTAMP)
    unreadable = [f"{t}-{p}" for t, p in pairs if starts.get((t, p)) is None or ends.get((t, p)) is None]
    if unreadable:
        raise CliError(f"cannot read the log start and end offsets of {', '.join(unreadable)} (no leader?)")
    found = backend.log_offsets(pairs, target.value) if target.kind == "timestamp" else {}
    warnings: list[str] = []
    rows = []
    for topic, partition in pairs:
        start, end = starts[(topic, partition)], ends[(topic, partition)]
        current = committed.get((topic, partition))
        clamp = False
        if target.kind == "earliest":
            new = start
        elif target.kind == "latest":
            new = end
        elif target.kind == "current":
            new = end if current is None else current  # Kafka: the log end where nothing is committed
        elif target.kind == "timestamp":
            new = found.get((topic, partition))
            new = end if new is None else new  # no record that late: the log end, as Kafka
        elif target.kind == "shift":
            if current is None:
                raise CliError(f"cannot shift the offset of {topic}-{partition}: group {group_id} has no committed "
                               "offset for it")
            new, clamp = current + target.value, True
        elif target.kind in ("offset", "explicit"):
            new = target.value if target.kind == "offset" else target.value[(topic, partition)]
            clamp = True
        else:
            raise CliError(f"unknown reset target {target.kind!r}", EXIT_USAGE)
        if clamp and new < start:
            warnings.append(f"New offset ({new}) is lower than earliest offset for topic partition "
                            f"{topic}-{partition}. Value will be set to {start}")
            new = start
        elif clamp and new > end:
            warnings.append(f"New offset ({new}) is higher than latest offset for topic partition "
                            f"{topic}-{partition}. Value will be set to {end}")
            new = end
        rows.append({"topic": topic, "partition": partition, "current_offset": current, "new_offset": new,
                     "log_start_offset": start, "log_end_offset": end})
    state = backend.group_state(group_id)
    return ResetPlan(group_id, target, state["state"], state["members"], rows, warnings)


def _rest_reset(rest: "RestBackend", group_id: str, scope: dict[str, list[int] | None] | None,
                target: ResetTarget, execute: bool, online: bool) -> ResetPlan:
    """The plan the broker makes (admin/offset_snapshots.py), applied by it when `execute`."""
    if scope is not None and any(partitions is not None for partitions in scope.values()):
        raise CliError("over --rest a reset covers whole topics: name partitions with --bootstrap-server",
                       EXIT_USAGE)
    body: dict[str, Any] = {"dry_run": not execute, "online": online,
                            "topics": None if scope is None else sorted(scope)}
    kind, value = target.kind, target.value
    if kind == "explicit":
        body.update({"to": "offsets", "offsets": [{"topic": t, "partition": p, "offset": o}
                                                  for (t, p), o in sorted(value.items())]})
    else:
        body.update({"earliest": {"to": "earliest"}, "latest": {"to": "latest"}, "current": {"to": "current"},
                     "offset": {"to": "offset", "offset": value}, "shift": {"to": "shift", "shift_by": value},
                     "timestamp": {"to": "timestamp", "timestamp_ms": value},
                     "snapshot": {"to": "snapshot", "snapshot": value}}[kind])
    answer = rest._call("POST", rest._c(f"/consumer-groups/{rest._q(group_id)}/offset-resets"), body)
    rows = [{"topic": r["topic"], "partition": r["partition"], "current_offset": r["current_offset"],
             "new_offset": r["new_offset"], "log_start_offset": r["log_start_offset"],
             "log_end_offset": r["end_offset"]} for r in answer["plan"]]
    fenced = answer["fenced_members"]
    warnings = [f"fenced {len(fenced)} members; they rejoin at the new offsets"] if fenced else []
    return ResetPlan(group_id, target, "", len(fenced), rows, warnings)


def cmd_groups_reset_offsets(backend: Backend, args) -> Output:
    scope = None if args.all_topics else parse_topic_partitions(args.topic)
    target = reset_target(args, backend)
    if isinstance(backend, RestBackend):
        plan = _rest_reset(backend, args.group, scope, target, args.execute, args.online)
        return _reset_output(plan, args.execute)
    if target.kind == "snapshot" or args.online:
        raise CliError("--to-snapshot and --online are served by the REST API: give --rest URL "
                       f"(default {DEFAULT_REST})", EXIT_USAGE)
    plan = plan_reset(backend, args.group, scope, target)
    if args.execute:
        backend.reset_offsets(args.group, plan)
    return _reset_output(plan, args.execute)


def _reset_output(plan: ResetPlan, execute: bool) -> Output:
    target = plan.target
    for warning in plan.warnings:
        print(f"lodestream: warning: {warning}", file=sys.stderr)
    if execute:
        summary = f"Reset the offsets of group {plan.group} to {target.label} ({len(plan.rows)} partitions)."
    elif not plan.state:  # planned by the broker (--rest): it refuses an active group unless --online
        summary = (f"Dry run: nothing was committed. Group {plan.group} would be reset to {target.label}; "
                   "--execute to commit (--online for a consumer-protocol group with members).")
    else:
        summary = (f"Dry run: nothing was committed. Group {plan.group} (state {plan.state}, {plan.members} "
                   f"members) would be reset to {target.label}; --execute to commit.")
        if plan.members:
            summary += (" The group is active: --execute will be refused until its members stop "
                        "(assignments can only be reset while the group is inactive).")
    return Output(plan.as_json(execute), [(None, ["GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "NEW-OFFSET"],
                                                [[plan.group, r["topic"], r["partition"], r["current_offset"],
                                                  r["new_offset"]] for r in plan.rows])], [summary])


# -- tiered storage (REST only: admin/tiering.py) ---------------------------------------------------

DEFAULT_REST = "http://127.0.0.1:8083"  # `lodestream serve`'s admin.listeners
JOB_POLL_S = 0.5


def _tiering_rest(backend: Backend) -> "RestBackend":
    return _rest_only(backend, "tiering")


def cmd_tiering_status(backend: Backend, args) -> Output:
    rest = _tiering_rest(backend)
    listed = rest._call("GET", rest._c("/tiering/segments"))
    segments = [s for s in listed["data"] if not args.topic or s["topic"] == args.topic]
    bad = [s for s in segments if s["bad_fragments"]]
    lines = [f"tiered storage {'on' if listed['enabled'] else 'off'}: {len(segments)} segments, "
             f"{sum(s['size'] for s in segments)} bytes offloaded, {len(bad)} with bad fragments "
             f"({sum(1 for s in segments if not s['checked'])} not scrubbed yet)"]
    rows = [[s["topic"], s["partition"], s["base_offset"], s["end_offset"], s["size"], s["state"], s["scheme"],
             ("unchecked" if not s["checked"] else ",".join(sorted(s["bad_fragments"])) or "healthy")]
            for s in segments]
    return Output(segments, [(None, ["TOPIC", "PARTITION", "BASE", "END", "BYTES", "STATE", "SCHEME", "FRAGMENTS"],
                              rows)], lines)


def _run_job(backend: Backend, what: str) -> Output:
    """Start a scrub or repair, print its progress on stderr until it is done, then its totals."""
    rest = _tiering_rest(backend)
    job = rest._call("POST", rest._c(f"/tiering/{what}"))
    shown = None
    while True:
        progress = (f"{job['kind']}: {job['segments_done']}/{job['segments_total']} segments, "
                    f"{job['fragments_checked']} fragments checked, {job['bad_fragments']} bad, "
                    f"{job['repaired']} repaired")
        if progress != shown:
            print(progress, file=sys.stderr, flush=True)
            shown = progress
        if job["done"]:
            break
        time.sleep(JOB_POLL_S)
        job = rest._call("GET", rest._c("/tiering/job"))
    output = Output(job, lines=[progress + (" (done)" if not job["errors"] else "")])
    if job["errors"]:
        raise _PartialFailure(output, job["errors"])
    return output


def cmd_tiering_scrub(backend: Backend, args) -> Output:
    return _run_job(backend, "scrub")


def cmd_tiering_repair(backend: Backend, args) -> Output:
    return _run_job(backend, "repair")


# -- namespaces (REST only: admin/namespaces.py) -----------------------------------------------------

def _namespace_rows(namespaces: list[dict]) -> list[list]:
    return [[n["name"], n["prefix"], len(n["topics"]), ",".join(f"{k}={v}" for k, v in sorted(n["defaults"].items())),
             len(n["acls"])] for n in namespaces]


_NAMESPACE_HEADER = ["NAMESPACE", "PREFIX", "TOPICS", "DEFAULTS", "ACLS"]


# -- offset snapshots (REST only: admin/offset_snapshots.py) --------------------------------------------

_SNAPSHOT_HEADER = ["SNAPSHOT", "CREATED", "SOURCE", "PARTITIONS", "BELOW-LOG-START"]


def _snapshot_row(snapshot: dict) -> list:
    source = f"group {snapshot['group_id']}" if snapshot["group_id"] else "topic ends"
    return [snapshot["name"], snapshot["created_at"], source, snapshot["partitions"], snapshot["below_log_start"]]


def _below_log_start_warning(snapshot: dict) -> None:
    if snapshot["below_log_start"]:
        print(f"lodestream: warning: snapshot {snapshot['name']} points below the log start of "
              f"{snapshot['below_log_start']} partitions: a reset to it skips records retention deleted "
              "(retention.keep.snapshots=true on a topic keeps them)", file=sys.stderr)


def cmd_snapshot_create(backend: Backend, args) -> Output:
    rest = _rest_only(backend, "offset snapshots")
    body = {"name": args.name, "group_id": args.group} if args.group else {"name": args.name, "topics": args.topic}
    created = rest._call("POST", rest._c("/offset-snapshots"), body)
    return Output(created, [(None, _SNAPSHOT_HEADER, [_snapshot_row(created)])],
                  [f"snapshot {args.name} taken ({created['partitions']} partitions)"])


def cmd_snapshot_list(backend: Backend, args) -> Output:
    rest = _rest_only(backend, "offset snapshots")
    listed = rest._call("GET", rest._c("/offset-snapshots"))["data"]
    for snapshot in listed:
        _below_log_start_warning(snapshot)
    return Output(listed, [(None, _SNAPSHOT_HEADER, [_snapshot_row(s) for s in listed])])


def cmd_snapshot_describe(backend: Backend, args) -> Output:
    rest = _rest_only(backend, "offset snapshots")
    snapshot = rest._call("GET", rest._c(f"/offset-snapshots/{rest._q(args.name)}"), missing=f"snapshot {args.name}")
    _below_log_start_warning(snapshot)
    rows = [[o["topic"], o["partition"], o["offset"], o["log_start_offset"], o["below_log_start"]]
            for o in snapshot["offsets"]]
    return Output(snapshot, [(None, _SNAPSHOT_HEADER, [_snapshot_row(snapshot)]),
                             (None, ["TOPIC", "PARTITION", "OFFSET", "LOG-START", "BELOW-LOG-START"], rows)])


def cmd_snapshot_delete(backend: Backend, args) -> Output:
    rest = _rest_only(backend, "offset snapshots")
    rest._call("DELETE", rest._c(f"/offset-snapshots/{rest._q(args.name)}"), missing=f"snapshot {args.name}")
    return Output({"deleted": args.name}, lines=[f"deleted snapshot {args.name}"])


def _rest_only(backend: Backend, what: str) -> "RestBackend":
    if not isinstance(backend, RestBackend):
        raise CliError(f"{what} is served by the REST API only: give --rest URL (default {DEFAULT_REST})", EXIT_USAGE)
    return backend


def cmd_namespaces_list(backend: Backend, args) -> Output:
    rest = _rest_only(backend, "namespaces")
    listed = rest._call("GET", rest._c("/namespaces"))["data"]
    return Output(listed, [(None, _NAMESPACE_HEADER, _namespace_rows(listed))])


def cmd_namespaces_create(backend: Backend, args) -> Output:
    rest = _rest_only(backend, "namespaces")
    created = rest._call("POST", rest._c("/namespaces"), {"name": args.namespace, "defaults": _pairs(args.default)})
    return Output(created, lines=[f"created namespace {created['name']} (topics {created['prefix']}*)"])


def cmd_namespaces_describe(backend: Backend, args) -> Output:
    rest = _rest_only(backend, "namespaces")
    namespace = rest._call("GET", rest._c(f"/namespaces/{args.namespace}"), missing=f"namespace {args.namespace}")
    tables = [(None, _NAMESPACE_HEADER, _namespace_rows([namespace]))]
    if namespace["topics"]:
        tables.append(("Topics", ["TOPIC"], [[t] for t in namespace["topics"]]))
    if namespace["acls"]:
        tables.append(("ACLs (PREFIXED on " + namespace["prefix"] + ")",
                       ["RESOURCE", "PRINCIPAL", "HOST", "OPERATION", "PERMISSION"],
                       [[a["resource_type"], a["principal"], a["host"], a["operation"], a["permission"]]
                        for a in namespace["acls"]]))
    return Output(namespace, tables)


def cmd_namespaces_set_defaults(backend: Backend, args) -> Output:
    rest = _rest_only(backend, "namespaces")
    updated = rest._call("PUT", rest._c(f"/namespaces/{args.namespace}/defaults"), {"defaults": _pairs(args.default)},
                         missing=f"namespace {args.namespace}")
    return Output(updated, lines=[f"namespace {updated['name']}: defaults {updated['defaults']}"])


def cmd_namespaces_delete(backend: Backend, args) -> Output:
    rest = _rest_only(backend, "namespaces")
    rest._call("DELETE", rest._c(f"/namespaces/{args.namespace}"), missing=f"namespace {args.namespace}")
    return Output({"deleted": args.namespace}, lines=[f"deleted namespace {args.namespace}"])


def cmd_namespaces_grant(backend: Backend, args) -> Output:
    rest = _rest_only(backend, "namespaces")
    body = {"principal": args.principal, "operations": args.operation, "permission": args.permission,
            "host": args.host, "resource_types": ["GROUP"] if args.groups else ["TOPIC"]}
    updated = rest._call("POST", rest._c(f"/namespaces/{args.namespace}/acls"), body,
                         missing=f"namespace {args.namespace}")
    return Output(updated, lines=[f"namespace {updated['name']}: {len(updated['acls'])} ACLs"])


def _pairs(items: list[str]) -> dict[str, str]:
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise CliError(f"expected KEY=VALUE, got {item!r}", EXIT_USAGE)
        pairs[key.strip()] = value.strip()
    return pairs


class _PartialFailure(Exception):
    def __init__(self, output: Output, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.output = output
        self.errors = errors


# -- argparse wiring ---------------------------------------------------------------------------------

def _connection_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    where = common.add_argument_group("broker")
    where.add_argument("--bootstrap-server", metavar="HOST:PORT",
                       help="talk the Kafka protocol to this broker (default: $LODESTREAM_BOOTSTRAP_SERVER "
                            "or localhost:9092)")
    where.add_argument("--rest", metavar="URL",
                       help="use the broker's REST API instead, e.g. http://127.0.0.1:8083 (or $LODESTREAM_REST)")
    where.add_argument("--rest-token", metavar="TOKEN", help="REST bearer token (or $LODESTREAM_REST_TOKEN)")
    where.add_argument("--rest-user", metavar="USER:PASSWORD", help="REST basic auth (or $LODESTREAM_REST_USER)")
    where.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the broker (default 30)")
    where.add_argument("--output", "-o", choices=["table", "json"], default="table", help="output format")
    return common


def _resource_options(parser: argparse.ArgumentParser) -> None:
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--topic", help="a topic's configs")
    target.add_argument("--broker", type=int, metavar="ID", help="a broker's configs (its node id)")
    target.add_argument("--broker-defaults", action="store_true", help="the cluster-wide broker defaults")


def _change_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="set a config (repeatable)")
    parser.add_argument("--delete", action="append", default=[], metavar="KEY",
                        help="remove an override, back to the default (repeatable)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _reset_target_options(parser: argparse.ArgumentParser):
    """`groups reset-offsets`' targets, exactly one required (reset_target turns it into a ResetTarget)."""
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--to-earliest", action="store_true", help="the log start offset")
    target.add_argument("--to-latest", action="store_true", help="the log end offset")
    target.add_argument("--to-offset", type=int, metavar="N", help="offset N (kept within the log)")
    target.add_argument("--to-datetime", metavar="YYYY-MM-DDTHH:mm:SS.sss",
                        help="the first offset at or after this time (UTC unless a zone is given: Z, +hh:mm)")
    target.add_argument("--by-duration", metavar="PnDTnHnMnS",
                        help="the first offset at or after this long ago (ISO-8601 duration, e.g. PT1H, P1DT12H)")
    target.add_argument("--shift-by", type=int, metavar="N", help="the committed offset plus N (N may be negative)")
    target.add_argument("--to-current", action="store_true",
                        help="the committed offset (the log end where nothing is committed)")
    target.add_argument("--from-file", metavar="CSV", help="explicit offsets, one TOPIC,PARTITION,OFFSET a line "
                                                          "(kafka-consumer-groups' format)")
    target.add_argument("--to-snapshot", metavar="NAME",
                        help="the offsets of a snapshot (`groups snapshot create`; REST API only)")
    return target


def add_subcommands(sub) -> None:
    """Add `topics`, `groups`, `configs`, `tiering` and `namespaces` to the `lodestream` parser's subparsers."""
    common = _connection_options()

    topics = sub.add_parser("topics", help="list, describe, create, delete topics; add partitions; change topic "
                                           "configs")
    topic_sub = topics.add_subparsers(dest="action", required=True)
    p = topic_sub.add_parser("list", parents=[common], help="list topics")
    p.add_argument("--include-internal", action="store_true", help="also list internal topics (__consumer_offsets)")
    p.set_defaults(run=cmd_topics_list)
    p = topic_sub.add_parser("describe", parents=[common], help="partitions, leaders, end offsets and config overrides")
    p.add_argument("topics", nargs="*", metavar="TOPIC", help="topics to describe (default: all)")
    p.set_defaults(run=cmd_topics_describe)
    p = topic_sub.add_parser("create", parents=[common], help="create a topic")
    p.add_argument("topic", metavar="TOPIC")
    p.add_argument("--partitions", type=int, default=-1, help="partition count (default: the broker's num.partitions)")
    p.add_argument("--replication-factor", type=int, default=-1,
                   help="replicas per partition (default: the broker's default.replication.factor)")
    p.add_argument("--config", action="append", default=[], metavar="KEY=VALUE", help="topic config (repeatable)")
    p.add_argument("--if-not-exists", action="store_true", help="a topic of that name already existing is success")
    p.set_defaults(run=cmd_topics_create)
    p = topic_sub.add_parser("alter", parents=[common], help="increase a topic's partition count")
    p.add_argument("topic", metavar="TOPIC")
    p.add_argument("--partitions", type=_positive_int, required=True, metavar="N",
                   help="the new partition count, larger than the current one (partitions cannot be removed)")
    p.set_defaults(run=cmd_topics_alter)
    p = topic_sub.add_parser("delete", parents=[common], help="delete topics")
    p.add_argument("topics", nargs="+", metavar="TOPIC")
    p.set_defaults(run=cmd_topics_delete)
    p = topic_sub.add_parser("alter-config", parents=[common], help="set or remove topic config overrides")
    p.add_argument("topic", metavar="TOPIC")
    _change_options(p)
    p.set_defaults(run=cmd_topics_alter_config)

    groups = sub.add_parser("groups", help="list, describe and delete consumer groups; delete and reset their "
                                           "offsets")
    group_sub = groups.add_subparsers(dest="action", required=True)
    p = group_sub.add_parser("list", parents=[common], help="list groups with their type and state")
    p.set_defaults(run=cmd_groups_list)
    p = group_sub.add_parser("describe", parents=[common], help="members, committed offsets and lag per partition")
    p.add_argument("groups", nargs="*", metavar="GROUP", help="groups to describe (default: all)")
    p.set_defaults(run=cmd_groups_describe)
    p = group_sub.add_parser("delete", parents=[common], help="delete groups without members, and their offsets")
    p.add_argument("groups", nargs="+", metavar="GROUP")
    p.set_defaults(run=cmd_groups_delete)
    p = group_sub.add_parser("delete-offsets", parents=[common],
                             help="delete a group's committed offsets of topics it no longer consumes")
    p.add_argument("group", metavar="GROUP")
    p.add_argument("--topic", action="append", required=True, metavar="TOPIC[:P,...]",
                   help="a topic (all its partitions) or some of its partitions (repeatable)")
    p.set_defaults(run=cmd_groups_delete_offsets)
    p = group_sub.add_parser(
        "reset-offsets", parents=[common], help="move an inactive group's committed offsets (dry run by default)",
        description="Like kafka-consumer-groups --reset-offsets: prints the plan (--dry-run, the default) or "
                    "commits it (--execute), which the broker accepts only while the group has no members. "
                    "New offsets are kept within [log start, log end].")
    p.add_argument("group", metavar="GROUP")
    scope = p.add_mutually_exclusive_group(required=True)
    scope.add_argument("--topic", action="append", metavar="TOPIC[:P,...]",
                       help="a topic (all its partitions) or some of its partitions (repeatable)")
    scope.add_argument("--all-topics", action="store_true", help="every partition the group has an offset for")
    _reset_target_options(p)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="print the plan, change nothing (the default)")
    mode.add_argument("--execute", action="store_true", help="commit the new offsets")
    p.add_argument("--online", action="store_true",
                   help="a consumer-protocol group with members: fence them and reset while they run; they rejoin "
                        "at the new offsets (REST API only)")
    p.set_defaults(run=cmd_groups_reset_offsets)
    snapshot = group_sub.add_parser("snapshot", help="named snapshots of offsets, to reset groups to later "
                                                     "(REST API; docs/replay.md)")
    snapshot_sub = snapshot.add_subparsers(dest="snapshot_action", required=True)
    p = snapshot_sub.add_parser("create", parents=[common], help="snapshot a group's committed offsets, or the "
                                                                 "current end offsets of topics")
    p.add_argument("name", metavar="NAME")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--group", metavar="GROUP", help="the group whose committed offsets to keep")
    source.add_argument("--topic", action="append", metavar="TOPIC", help="a topic whose end offsets to keep "
                                                                          "(repeatable)")
    p.set_defaults(run=cmd_snapshot_create)
    p = snapshot_sub.add_parser("list", parents=[common], help="snapshots, and how many of their partitions "
                                                               "point below the log start")
    p.set_defaults(run=cmd_snapshot_list)
    p = snapshot_sub.add_parser("describe", parents=[common], help="a snapshot's offsets and the log starts")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(run=cmd_snapshot_describe)
    p = snapshot_sub.add_parser("delete", parents=[common], help="delete a snapshot")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(run=cmd_snapshot_delete)

    configs = sub.add_parser("configs", help="describe and alter topic and broker configs")
    config_sub = configs.add_subparsers(dest="action", required=True)
    p = config_sub.add_parser("describe", parents=[common], help="config overrides (or --all with defaults)")
    _resource_options(p)
    p.add_argument("--all", action="store_true", help="every config with its source, not only overrides")
    p.set_defaults(run=cmd_configs_describe)
    p = config_sub.add_parser("alter", parents=[common], help="set or remove config overrides")
    _resource_options(p)
    _change_options(p)
    p.set_defaults(run=cmd_configs_alter)


    tiering = sub.add_parser("tiering", help="offloaded segments and their fragments: status, scrub, repair "
                                            "(REST API)")
    tiering_sub = tiering.add_subparsers(dest="action", required=True)
    p = tiering_sub.add_parser("status", parents=[common], help="offloaded segments and their fragments' health")
    p.add_argument("--topic", help="only this topic's segments")
    p.set_defaults(run=cmd_tiering_status, rest_default=True)
    p = tiering_sub.add_parser("scrub", parents=[common], help="check every fragment now, with progress")
    p.set_defaults(run=cmd_tiering_scrub, rest_default=True)
    p = tiering_sub.add_parser("repair", parents=[common], help="check every fragment and rebuild the bad ones")
    p.set_defaults(run=cmd_tiering_repair, rest_default=True)

    namespaces = sub.add_parser("namespaces", help="namespaces: topic-name prefixes with defaults and ACLs (REST API)")
    namespace_sub = namespaces.add_subparsers(dest="action", required=True)
    p = namespace_sub.add_parser("list", parents=[common], help="namespaces, their topics, defaults and ACLs")
    p.set_defaults(run=cmd_namespaces_list, rest_default=True)
    p = namespace_sub.add_parser("create", parents=[common], help="create a namespace (its topics: NAME.*)")
    p.add_argument("namespace", metavar="NAME")
    p.add_argument("--default", action="append", default=[], metavar="KEY=VALUE",
                   help="a default for its new topics: a topic config or num.partitions (repeatable)")
    p.set_defaults(run=cmd_namespaces_create, rest_default=True)
    p = namespace_sub.add_parser("describe", parents=[common], help="a namespace's defaults, topics and ACLs")
    p.add_argument("namespace", metavar="NAME")
    p.set_defaults(run=cmd_namespaces_describe, rest_default=True)
    p = namespace_sub.add_parser("set-defaults", parents=[common], help="replace a namespace's defaults")
    p.add_argument("namespace", metavar="NAME")
    p.add_argument("--default", action="append", default=[], metavar="KEY=VALUE", help="(repeatable)")
    p.set_defaults(run=cmd_namespaces_set_defaults, rest_default=True)
    p = namespace_sub.add_parser("delete", parents=[common], help="delete an empty namespace and its ACLs")
    p.add_argument("namespace", metavar="NAME")
    p.set_defaults(run=cmd_namespaces_delete, rest_default=True)
    p = namespace_sub.add_parser("grant", parents=[common], help="ACLs on all of a namespace's topics (or groups)")
    p.add_argument("namespace", metavar="NAME")
    p.add_argument("--principal", required=True, help="e.g. User:alice")
    p.add_argument("--operation", action="append", required=True, help="READ, WRITE, DESCRIBE, ALL, ... (repeatable)")
    p.add_argument("--permission", default="ALLOW", choices=["ALLOW", "DENY"])
    p.add_argument("--host", default="*")
    p.add_argument("--groups", action="store_true", help="on the groups named NAME.* instead of the topics")
    p.set_defaults(run=cmd_namespaces_grant, rest_default=True)


COMMANDS = ("topics", "groups", "configs", "tiering", "namespaces")


def _backend(args) -> Backend:
    rest = args.rest or (None if args.bootstrap_server else os.environ.get("LODESTREAM_REST"))
    if getattr(args, "rest_default", False) and not args.bootstrap_server:
        rest = rest or DEFAULT_REST
    if args.rest and args.bootstrap_server:
        raise CliError("give either --bootstrap-server or --rest, not both", EXIT_USAGE)
    if rest:
        return RestBackend(rest, args.timeout, args.rest_token or os.environ.get("LODESTREAM_REST_TOKEN"),
                           args.rest_user or os.environ.get("LODESTREAM_REST_USER"))
    bootstrap = args.bootstrap_server or os.environ.get("LODESTREAM_BOOTSTRAP_SERVER") or "localhost:9092"
    return KafkaBackend(bootstrap, args.timeout)


def run(args) -> int:
    """Run a parsed `topics|groups|configs` command; returns the exit status."""
    backend = None
    try:
        backend = _backend(args)
        output = args.run(backend, args)
        emit(output, args.output)
        return EXIT_OK
    except _PartialFailure as exc:
        emit(exc.output, args.output)
        for error in exc.errors:
            print(f"lodestream: error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except CliError as exc:
        print(f"lodestream: error: {exc}", file=sys.stderr)
        return exc.exit_code
    finally:
        if backend is not None:
            backend.close()
