"""Listeners and the node's place in a cluster: NAME://host:port lists, security protocols, quorum voters,
and the refusal of what a single node cannot serve."""

from __future__ import annotations

from dataclasses import dataclass

from lodestream.broker.config import BrokerConfig, ConfigError, multi_value


@dataclass(frozen=True)
class ListenerSpec:
    name: str
    host: str
    port: int


def parse_listeners(key: str, value: str | None) -> list[ListenerSpec]:
    if not value:
        return []
    result = []
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        if "://" not in item:
            raise ConfigError(f"{key}: expected NAME://host:port, got {item!r}")
        name, address = item.split("://", 1)
        host, sep, port_text = address.rpartition(":")
        if not sep or not port_text.isdigit() or int(port_text) > 65535:
            raise ConfigError(f"{key}: bad port in {item!r}")
        host = host.strip("[]")
        result.append(ListenerSpec(name.upper(), host, int(port_text)))
    names = [spec.name for spec in result]
    if len(set(names)) != len(names):
        raise ConfigError(f"{key}: listener names must be unique, got {names}")
    return result


def parse_quorum_voters(value: str) -> list[tuple[int, str]]:
    """`1@host:port,2@host:port` -> [(1, "host:port"), ...]."""
    voters = []
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        node, sep, address = item.partition("@")
        if not sep or not node.isdigit() or ":" not in address:
            raise ConfigError(f"controller.quorum.voters: expected id@host:port, got {item!r}")
        voters.append((int(node), address))
    return voters


# Kafka's default listener.security.protocol.map: each security protocol's name is also a listener name.
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")


def parse_security_protocol_map(value: str) -> dict[str, str]:
    """listener.security.protocol.map: `NAME:PROTOCOL,...` -> {NAME: PROTOCOL}."""
    mapping: dict[str, str] = {}
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        name, sep, protocol = item.partition(":")
        protocol = protocol.strip().upper()
        if not sep or not name.strip():
            raise ConfigError(f"listener.security.protocol.map: expected NAME:PROTOCOL, got {item!r}")
        if protocol not in SECURITY_PROTOCOLS:
            raise ConfigError(f"listener.security.protocol.map: {item!r} names an unknown security protocol "
                              f"(expected one of {', '.join(SECURITY_PROTOCOLS)})")
        mapping[name.strip().upper()] = protocol
    return mapping


def listener_security_protocols(specs: list[ListenerSpec], map_value: str | None,
                                controller_names: set[str]) -> dict[str, str]:
    """Each listener's security protocol, as Kafka resolves it; refuses what this broker cannot serve.

    Without an explicit map Kafka maps each protocol name to itself and, in KRaft mode, the
    controller listeners to PLAINTEXT. A listener name with no entry is a configuration error."""
    if map_value is None:
        mapping = {protocol: protocol for protocol in SECURITY_PROTOCOLS}
        for name in controller_names:
            mapping.setdefault(name, "PLAINTEXT")
    else:
        mapping = parse_security_protocol_map(map_value)
    protocols = {}
    for spec in specs:
        protocol = mapping.get(spec.name)
        if protocol is None:
            raise ConfigError(
                f"listeners: listener {spec.name} has no entry in listener.security.protocol.map "
                f"(add {spec.name}:PLAINTEXT, or name the listener after its security protocol)")
        if protocol != "PLAINTEXT" and spec.name in controller_names:
            raise ConfigError(
                f"listeners: controller listener {spec.name} uses {protocol}: the metadata quorum's peers talk "
                "PLAINTEXT for now (keep controller listeners on a private network)")
        protocols[spec.name] = protocol
    return protocols


def check_inter_broker_protocol(specs: list[ListenerSpec], protocols: dict[str, str], inter_broker_name: str,
                                clustered: bool) -> str | None:
    """The security protocol brokers reach each other with (follower fetches, transaction markers), on the
    inter-broker listener: PLAINTEXT or SSL (broker/tls.client_context). SASL between brokers is not built:
    refused when the configuration shows other brokers (`clustered`)."""
    names = [spec.name for spec in specs if spec.name in protocols]
    listener = inter_broker_name.upper() if inter_broker_name.upper() in names else (names[0] if names else "")
    if clustered and listener and protocols.get(listener) not in ("PLAINTEXT", "SSL"):
        raise ConfigError(
            f"inter.broker.listener.name: brokers reach each other in PLAINTEXT or SSL, and listener {listener} "
            f"is {protocols[listener]} (SASL between brokers is not built): name a PLAINTEXT or SSL listener in "
            "inter.broker.listener.name")
    return protocols.get(listener)


def process_roles(config: BrokerConfig) -> frozenset[str]:
    """process.roles as a set: broker, controller, or both (Kafka's KRaft roles)."""
    roles = frozenset(multi_value(config.raw("process.roles")))
    if not roles or not roles <= {"broker", "controller"}:
        raise ConfigError(f"process.roles={config.raw('process.roles')}: expected broker, controller, or both")
    return roles


def check_cluster_roles(config: BrokerConfig) -> None:
    """Refuse what this node cannot be: a controller that is not among controller.quorum.voters, a
    broker-only node that is (or has no voters to fetch the metadata log from)."""
    node_id = config.node_id
    roles = process_roles(config)
    voters = parse_quorum_voters(str(config.get("controller.quorum.voters") or ""))
    if roles != {"broker", "controller"} and not voters:
        raise ConfigError(f"process.roles={config.raw('process.roles')}: a node with one role needs "
                          "controller.quorum.voters (id@host:port,...) to find the other role")
    listed = ",".join(f"{node}@{address}" for node, address in voters)
    if "controller" in roles and voters and node_id not in {node for node, _ in voters}:
        raise ConfigError(f"controller.quorum.voters={listed} does not list this node (node.id={node_id}), "
                          "which has the controller role")
    if roles == {"broker"} and node_id in {node for node, _ in voters}:
        raise ConfigError(f"controller.quorum.voters={listed} lists this node (node.id={node_id}), whose "
                          "process.roles=broker has no controller role: give it both roles, or another id")
    if len({node for node, _ in voters}) != len(voters):
        raise ConfigError(f"controller.quorum.voters={config.raw('controller.quorum.voters')} lists a node twice")
    bootstrap = multi_value(config.raw("controller.quorum.bootstrap.servers"))
    if bootstrap and len(voters) > 1:
        raise ConfigError("controller.quorum.bootstrap.servers: Lodestream's quorum has static voters; with "
                          "controller.quorum.voters set, leave controller.quorum.bootstrap.servers out")
    if len(bootstrap) > 1 and not voters:
        raise ConfigError(
            f"controller.quorum.bootstrap.servers lists {len(bootstrap)} controllers: Lodestream's quorum has "
            "static voters; list them as controller.quorum.voters (id@host:port,...)")
