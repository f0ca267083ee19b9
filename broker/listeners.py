"""Parsing of Kafka listener strings: NAME://host:port[,NAME://host:port]."""

from __future__ import annotations

from dataclasses import dataclass

from .config import ConfigError


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
