"""Who changed what: one INFO line on the `lodestream.audit` logger for every configuration or quota change
the node applies (AlterConfigs, IncrementalAlterConfigs, AlterClientQuotas and their REST equivalents).

Written where the change is committed (Broker.alter_topic_configs / alter_broker_configs, the quota and
group-config handlers), on the node that commits it: the active controller, which a change made elsewhere
reaches in an Envelope carrying the caller's principal and address (broker/handlers/envelope.py; the listener
named is then the controller listener it came in on, `(CONTROLLER)`). Values of sensitive
configs (PASSWORD type) are never written. validate_only requests and refused changes change nothing and
are not logged here.
"""

from __future__ import annotations

import logging
from typing import Mapping

from lodestream.broker.session import Session

log = logging.getLogger("lodestream.audit")
REDACTED = "[redacted]"


def who(session: Session | None) -> str:
    """`User:alice from 10.0.0.7 (REST)`: the principal, its address and the listener it came on."""
    if session is None:
        return "the broker itself"
    where = f" from {session.client_host}" if session.client_host else ""
    return f"{session.principal}{where} ({session.listener_name})"


def _sensitive(definition) -> bool:
    return bool(getattr(definition, "sensitive", False)) or getattr(definition, "kafka_type", "") == "PASSWORD"


def _changes_text(changes: Mapping[str, object], hidden) -> str:
    set_ = [f"{key}={REDACTED if hidden(key) else value}"
            for key, value in sorted(changes.items()) if value is not None]
    deleted = sorted(key for key, value in changes.items() if value is None)
    parts = ([f"set {', '.join(set_)}"] if set_ else []) + ([f"deleted {', '.join(deleted)}"] if deleted else [])
    return "; ".join(parts) or "nothing"


def config_changed(session: Session | None, resource: str, changes: Mapping[str, str | None],
                   table: Mapping[str, object]) -> None:
    """A committed config change: `resource` is e.g. `topic orders` or `broker 1`; None values were deleted;
    `table` (BROKER_CONFIGS / TOPIC_CONFIGS) says which keys are sensitive."""
    log.info("config change by %s: %s: %s", who(session), resource,
             _changes_text(changes, lambda key: _sensitive(table.get(key))))


def quotas_changed(session: Session | None, entity, changes: Mapping[str, float | None]) -> None:
    """A committed quota change of one entity (((type, name or None for the default), ...)); None = removed."""
    described = ",".join(f"{kind}={'<default>' if name is None else name}" for kind, name in entity)
    log.info("quota change by %s: %s: %s", who(session), described or "<no entity>",
             _changes_text(changes, lambda key: False))
