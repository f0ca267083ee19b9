"""Namespaces: the seed's hierarchy namespace -> topic -> partition (docs/security.md).

A namespace `payments` is the topics named `payments.<anything>`. It has defaults for the topics created in
it (topic configs such as retention.ms, and num.partitions), applied when CreateTopics (or the REST API, or
auto-creation) leaves them out; quotas (producer_byte_rate, consumer_byte_rate: bytes per second into and out
of all its topics together, whoever the clients are); and ACLs granted once for all its topics: PREFIXED ACLs
on `payments.`.
Kafka clients see only topic names. Namespaces are metadata records (NamespaceRecord), written through the
active controller (UpdateAdminRecords, protocol/lodestream_apis.py) and managed by the REST API and
`lodestream namespaces`. Pure logic: the broker and the controller call it.
"""

from __future__ import annotations

import re
from typing import Iterable, Mapping

from lodestream.consensus.image import MetadataImage
from lodestream.consensus.records import AclRecord, NamespaceRecord, RemoveNamespaceRecord

from lodestream.broker.authorizer import PatternType, ResourceType
from lodestream.broker.config import ConfigError, validate_topic_config

_NAME = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")
MAX_NAME_LENGTH = 200  # room for topic names under it (Kafka's limit is 249)
PARTITIONS_KEY = "num.partitions"
QUOTA_KEYS = ("producer_byte_rate", "consumer_byte_rate")  # the namespace's bytes per second, all clients together


def prefix(name: str) -> str:
    return name + "."


def namespace_of(namespaces: Mapping[str, NamespaceRecord], topic: str) -> NamespaceRecord | None:
    """The namespace a topic is in: the longest one whose prefix starts its name."""
    parts = topic.split(".")
    for end in range(len(parts) - 1, 0, -1):
        namespace = namespaces.get(".".join(parts[:end]))
        if namespace is not None:
            return namespace
    return None


def topics_in(image: MetadataImage, name: str) -> list[str]:
    """The topics of namespace `name` (not those of a namespace nested in it)."""
    return sorted(topic for topic in image.topics_by_name
                  if topic.startswith(prefix(name)) and getattr(namespace_of(image.namespaces, topic), "name", name) == name)


def namespace_acls(acls: Mapping, name: str) -> dict:
    """{id: AclRecord} of a namespace's own ACLs: PREFIXED on its prefix, for topics or groups."""
    return {acl_id: acl for acl_id, acl in acls.items()
            if acl.pattern_type == PatternType.PREFIXED and acl.resource_name == prefix(name)
            and acl.resource_type in (ResourceType.TOPIC, ResourceType.GROUP)}


def check_definition(name: str, defaults: Mapping[str, str]) -> None:
    """Raises ValueError saying what is wrong with a namespace's name or defaults."""
    if not _NAME.fullmatch(name) or len(name) > MAX_NAME_LENGTH:
        raise ValueError(f"namespace name {name!r}: ASCII letters, digits, '_' and '-', in parts joined by '.', "
                         f"at most {MAX_NAME_LENGTH} characters")
    for key, value in defaults.items():
        if key == PARTITIONS_KEY:
            if not str(value).isdigit() or int(value) < 1:
                raise ValueError(f"{PARTITIONS_KEY}={value!r}: a partition count, at least 1")
            continue
        if key in QUOTA_KEYS:
            try:
                if float(value) <= 0:
                    raise ValueError
            except ValueError:
                raise ValueError(f"{key}={value!r}: bytes per second, above 0") from None
            continue
        try:
            validate_topic_config(key, value)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None


def check_records(image: MetadataImage, records: Iterable) -> str | None:
    """Why the controller refuses a batch of namespace records, or None. ACLs must be a namespace's
    own: PREFIXED, on its prefix, for topics or groups of a namespace that exists (or is created with them)."""
    names = set(image.namespaces)
    for record in records:
        if isinstance(record, NamespaceRecord):
            try:
                check_definition(record.name, dict(record.defaults))
            except ValueError as exc:
                return str(exc)
            names.add(record.name)
        elif isinstance(record, RemoveNamespaceRecord):
            if record.name not in names:
                return f"namespace {record.name!r} does not exist"
            if topics_in(image, record.name):
                return f"namespace {record.name!r} still has topics: delete them first"
            names.discard(record.name)
        elif isinstance(record, AclRecord):
            if record.pattern_type != PatternType.PREFIXED or \
                    record.resource_type not in (ResourceType.TOPIC, ResourceType.GROUP) or \
                    not record.resource_name.endswith(".") or record.resource_name[:-1] not in names:
                return "a namespace's ACLs are PREFIXED ACLs on its prefix, for topics or groups"
        else:
            return f"{type(record).__name__} is not a namespace change"
    return None


def apply_defaults(namespace: NamespaceRecord | None, num_partitions: int,
                   configs: Mapping[str, str]) -> tuple[int, dict[str, str]]:
    """A new topic's partition count and configs with its namespace's defaults where the request left them out
    (num_partitions -1: not given)."""
    merged = dict(configs)
    if namespace is None:
        return num_partitions, merged
    defaults = dict(namespace.defaults)
    if num_partitions == -1 and PARTITIONS_KEY in defaults:
        num_partitions = int(defaults[PARTITIONS_KEY])
    for key, value in defaults.items():
        if key != PARTITIONS_KEY and key not in QUOTA_KEYS:
            merged.setdefault(key, value)
    return num_partitions, merged


def quota_charges(namespaces: Mapping[str, NamespaceRecord], key: str,
                  bytes_by_topic: Mapping[str, int]) -> dict[str, tuple[float, int]]:
    """{namespace: (its `key` quota in bytes/s, the bytes of these topics in it)} for namespaces with that quota."""
    charges: dict[str, tuple[float, int]] = {}
    for topic, size in bytes_by_topic.items():
        namespace = namespace_of(namespaces, topic)
        rate = dict(namespace.defaults).get(key) if namespace is not None else None
        if rate is not None:
            charges[namespace.name] = (float(rate), charges.get(namespace.name, (0.0, 0))[1] + size)
    return charges
