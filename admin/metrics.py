"""Prometheus exposition of a broker's metrics registry (served at /metrics).

The instruments live in `broker/metrics.py` (`broker.metrics.registry`, one
registry per broker); this module only renders them. Call either function
on the trio thread (an `async def` endpoint), not from a worker thread: the
scrape-time gauges read live broker state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Awaitable, Callable

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest, make_asgi_app

if TYPE_CHECKING:
    from lodestream.broker.broker import Broker

ASGIApp = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]


def render_metrics(broker: "Broker") -> tuple[bytes, str]:
    """(body, content type) in the Prometheus text exposition format (CONTENT_TYPE_LATEST)."""
    return generate_latest(broker.metrics.registry), CONTENT_TYPE_LATEST


def metrics_asgi_app(broker: "Broker") -> ASGIApp:
    """An ASGI app answering any GET with the metrics.

    Negotiates OpenMetrics (Accept header) and gzip (Accept-Encoding) like
    prometheus-client's own exporter; runs no thread and no asyncio, so it is
    safe under Hypercorn's trio worker.
    """
    return make_asgi_app(broker.metrics.registry)


__all__ = ["render_metrics", "metrics_asgi_app"]
