"""One broker process (`lodestream serve`, parsed in cli/main.py): configuration, logging, signals, exit status."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from pathlib import Path

import trio

from lodestream.broker.broker import Broker
from lodestream.broker.config import BrokerConfig, ConfigError, NodeHalted, StartupError, environment_overrides
from lodestream.broker.lifecycle import serve_broker

log = logging.getLogger("lodestream")

CONTROLLED_SHUTDOWN_S = 5.0  # at most this long waiting to be fenced before stopping anyway
RESIGN_S = 1.0  # at most this long for the other voters to hear that this leader resigns


def _write_ready_file(path: Path, broker: Broker, services: dict[str, str]) -> None:
    listeners = {b.name: f"{b.advertised_host}:{b.port}"
                 for b in [*broker.bound_listeners, *broker.bound_controller_listeners]}
    listeners.update(services)
    content = {"listeners": listeners,
               "cluster_id": broker.cluster_id, "node_id": broker.node_id, "pid": os.getpid()}
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(content))
    temporary.replace(path)


async def run_broker(config: BrokerConfig, ready_file: Path | None) -> None:
    broker = Broker(config)
    broker.open()
    try:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:
                services = await nursery.start(serve_broker, broker)
                if ready_file is not None:
                    _write_ready_file(ready_file, broker, services)
                log.info("broker %d ready, cluster %s, data in %s", broker.node_id, broker.cluster_id, broker.data_dir)
                async for received in signals:
                    log.info("received %s, shutting down", signal.Signals(received).name)
                    break
                # Controlled shutdown, as Kafka's: fenced by the controller first (clients move away), then
                # the quorum's leadership handed over (EndQuorumEpoch) when this node has it.
                await broker.controller_client.controlled_shutdown(CONTROLLED_SHUTDOWN_S)
                await broker.quorum.resign(RESIGN_S)
                nursery.cancel_scope.cancel()
    finally:
        broker.close()
        log.info("broker stopped")


def serve(config_file: Path | None, overrides: list[str], log_level: str, ready_file: Path | None) -> int:
    """Run a broker until SIGTERM/SIGINT; the exit status (2: refused configuration or start-up)."""
    logging.basicConfig(
        level=getattr(logging, log_level),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("pysyncobj").setLevel(logging.WARNING)
    try:
        environment = environment_overrides(os.environ)
        config = BrokerConfig.load(config_file, overrides, environment)
    except ConfigError as exc:
        print(f"lodestream: configuration error: {exc}", file=sys.stderr)
        return 2
    if environment:  # names only: values may be secrets
        log.info("configuration from LODESTREAM_* variables: %s", ", ".join(sorted(environment)))
    ignored = config.without_effect()
    if ignored:  # one warning, not one per key
        log.warning("accepted with no effect here (Kafka config names Lodestream does not act on): %s",
                    "; ".join(f"{', '.join(keys)}: {reason}" for reason, keys in ignored.items()))
    try:
        trio.run(run_broker, config, ready_file)
    except (ConfigError, StartupError, BaseExceptionGroup) as exc:
        error = _startup_error(exc)
        if error is None:
            raise
        kind = ("configuration error" if isinstance(error, ConfigError)
                else "stopped" if isinstance(error, NodeHalted) else "cannot start")
        print(f"lodestream: {kind}: {error}", file=sys.stderr)
        return 2
    return 0


def _startup_error(exc: BaseException) -> ConfigError | StartupError | None:
    """The refusal behind a failed start-up (a service's start raises it inside the nursery)."""
    if isinstance(exc, (ConfigError, StartupError)):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        matched, rest = exc.split((ConfigError, StartupError))
        if matched is not None and rest is None:
            while isinstance(matched, BaseExceptionGroup):
                matched = matched.exceptions[0]
            return matched
    return None

