"""The one aiohttp application of the daemon: plugins mount their routes on it.

The engine adds ``/healthz`` (alive), ``/readyz`` (Redis and every route ready; 503 with a JSON
body naming what is not, while starting, draining or broken) and ``/metrics`` (Prometheus text).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

ReadinessProbe = Callable[[], Awaitable[tuple[bool, dict[str, Any]]]]

MAX_REQUEST_BYTES = 1024 * 1024  # WebSub requests and pings are small; bigger bodies are refused with 413


def build_app(
    registry: CollectorRegistry, readiness: ReadinessProbe, *, before_metrics: Callable[[], None] | None = None
) -> web.Application:
    app = web.Application(client_max_size=MAX_REQUEST_BYTES)

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"alive": True})

    async def readyz(_: web.Request) -> web.Response:
        ready, body = await readiness()
        return web.json_response({"ready": ready, **body}, status=200 if ready else 503)

    async def metrics(_: web.Request) -> web.Response:
        if before_metrics is not None:
            before_metrics()
        resp = web.Response(body=generate_latest(registry))
        resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return resp

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


def parse_listen(listen: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port)."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    return host or "127.0.0.1", int(port)
