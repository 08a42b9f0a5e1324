"""Shared helpers for the websub tests (no tests here): a daemon-like node running the plugin on a
real aiohttp server on loopback, a recording subscriber, waiting on conditions (never on the clock)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import socket
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.test_utils import TestServer

from thoonk_bridge.context import build_plugin_context
from thoonk_bridge.plugin import Endpoint, PluginContext, Topic
from thoonk_bridge.plugins.websub.plugin import WebSubPlugin
from thoonk_bridge.plugins.websub.settings import WebSubSettings, WebSubSinkOptions
from thoonk_bridge.testing import wait_until
from thoonk_bridge.thoonk import AsyncThoonk

FAST = {
    "outbound": {"allow_loopback": True},
    "lease_min": 0.5,
    "retry_base": 0.02,
    "retry_max_delay": 0.1,
    "retry_window": 2.0,
    "retry_poll": 0.02,
    "sweep_interval": 0.05,
    "job_timeout": 1.0,
    "verify_timeout": 2.0,
    "delivery_timeout": 2.0,
    "breaker_threshold": 1000,
}


async def wait_for(cond: Callable[[], Any], timeout: float = 10.0, step: float = 0.01) -> Any:
    """Poll ``cond`` (sync or async) until truthy; fail after ``timeout`` (a safety net, not a measurement)."""
    return await wait_until(cond, timeout=timeout, interval=step)


class StubResolver(AbstractResolver):
    """Names -> addresses without any lookup; unknown names fail (no packet ever leaves)."""

    def __init__(self, table: dict[str, str]) -> None:
        self.table = table
        self.asked: list[str] = []

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
                      ) -> list[ResolveResult]:
        self.asked.append(host)
        if host not in self.table:
            raise OSError(f"stub resolver: unknown host {host}")
        return [{"hostname": host, "host": self.table[host], "port": port, "family": socket.AF_INET,
                 "proto": 0, "flags": socket.AI_NUMERICHOST}]

    async def close(self) -> None:
        return None


@dataclass
class Node:
    plugin: WebSubPlugin
    context: PluginContext
    runner: web.AppRunner
    thoonk: AsyncThoonk
    url: str
    docs: dict[str, tuple[bytes, str]] = field(default_factory=dict)

    @property
    def hub(self) -> str:
        return self.url + self.plugin.settings.hub_path

    def topic(self, path: str, body: bytes, content_type: str = "application/atom+xml", hub: bool = True) -> str:
        """Register (or update the body of) a served document, like the feeds plugin does; with
        ``hub``, a route distributes it (a ``websub:NAME`` sink is configured for /feeds/NAME.*)."""
        self.docs[path] = (body, content_type)
        name = path.rsplit("/", 1)[-1].rpartition(".")[0]
        if hub and all(str(s) != f"websub:{name}" for s in self.context.topics.sinks):
            self.context.topics.sinks += (Endpoint("websub", name, WebSubSinkOptions(address=name)),)

        async def render() -> bytes:
            return self.docs[path][0]

        if self.context.topics.get(path) is None:
            self.context.topics.register(Topic(path, content_type, render, name=name))
        return self.url + path

    async def change(self, path: str, body: bytes) -> None:
        """Change a document like the feeds plugin does (the new body goes with the notification),
        then wait until the plugin's task has handled it (queued its distribution, its pings)."""
        self.docs[path] = (body, self.docs[path][1])
        await self.context.topics.changed(path, body)
        await self.plugin.changes.settled()

    def metric(self, name: str, **labels: str) -> float:
        value = self.context.metrics.get_sample_value(name, labels or None)
        return value or 0.0

    async def idle(self) -> bool:
        """No job queued or running and no retry waiting: nothing more will be sent."""
        for q in self.plugin.queues.values():
            if await q.length():
                return False
        return not await self.context.redis.zcard("websub:retry")

    async def stop(self, kill: bool = False) -> None:
        if kill:
            await self.plugin.kill()
        else:
            await self.plugin.stop()
        await self.runner.cleanup()
        await self.thoonk.aclose()


def _feeds_name(path: str) -> str | None:
    """NAME of /feeds/NAME.FORMAT, as the feeds plugin (default path_prefix) tells the registry."""
    name, dot, fmt = path.removeprefix("/feeds/").rpartition(".")
    return name if dot and name and "/" not in name and fmt in ("atom", "rss", "json") else None


async def _no_copy(path: str) -> None:
    return None  # no document stored by another daemon in these tests


async def start_node(redis_url: str, resolver: AbstractResolver | None = None, **overrides: Any) -> Node:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    app = web.Application()
    thoonk = AsyncThoonk(url=redis_url)
    settings = WebSubSettings(**{**FAST, **overrides})
    context = build_plugin_context(
        "websub", thoonk=thoonk, redis=thoonk.redis, http=app, public_url=f"http://127.0.0.1:{port}",
        state_dir=Path(tempfile.gettempdir()),
    )
    plugin = WebSubPlugin(settings, context)
    plugin.resolver = resolver
    context.topics.add_reader("/feeds/", _no_copy, name_of=_feeds_name)  # what the feeds plugin registers
    await plugin.setup()
    runner = web.AppRunner(app)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    await plugin.start()
    return Node(plugin, context, runner, thoonk, context.public_url)


@dataclass
class Received:
    body: bytes
    headers: dict[str, str]
    query: dict[str, str]
    path_qs: str


class Subscriber:
    """A WebSub subscriber on loopback: answers verifications and records deliveries.

    ``verify_mode``: "echo" (correct), "wrong" (bad challenge), "404", "redirect".
    ``status``: what deliveries get (a list is consumed one per delivery, the last one repeats).
    """

    def __init__(self) -> None:
        self.verifications: list[dict[str, str]] = []
        self.verification_paths: list[str] = []
        self.deliveries: list[Received] = []
        self.verify_mode = "echo"
        self.status: list[int] = [200]
        self.hang = asyncio.Event()
        self.hang.set()
        self.arrived = 0  # POSTs received (counted before any hang)
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._get)
        app.router.add_post("/{tail:.*}", self._post)
        self.server = TestServer(app, host="127.0.0.1")

    async def start(self) -> Subscriber:
        await self.server.start_server()
        return self

    async def close(self) -> None:
        await self.server.close()

    def url(self, path: str = "/cb") -> str:
        return str(self.server.make_url(path))

    async def _get(self, request: web.Request) -> web.Response:
        q = dict(request.query)
        self.verifications.append(q)
        self.verification_paths.append(request.path_qs)
        if self.verify_mode == "wrong":
            return web.Response(text="not-the-challenge")
        if self.verify_mode == "404":
            return web.Response(status=404)
        if self.verify_mode == "redirect":
            raise web.HTTPFound(location=self.url("/elsewhere"))
        return web.Response(body=q.get("hub.challenge", "").encode(), content_type="application/octet-stream")

    async def _post(self, request: web.Request) -> web.Response:
        self.arrived += 1
        await self.hang.wait()
        body = await request.read()
        self.deliveries.append(Received(body, dict(request.headers), dict(request.query), request.path_qs))
        status = self.status[0] if len(self.status) == 1 else self.status.pop(0)
        return web.Response(status=status)

    def bodies(self) -> list[bytes]:
        return [d.body for d in self.deliveries]


class Tarpit:
    """A callback host that accepts verification GETs and never answers them (a slowloris of the
    kind an attacker points the hub at). Listens on its own loopback address, so that several
    tarpits are several "hosts". Counts what it holds, and the most it held at once."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.holding = 0
        self.most = 0
        self.seen = 0
        self._never = asyncio.Event()
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._get)
        self.server = TestServer(app, host=host)

    async def start(self) -> Tarpit:
        await self.server.start_server()
        return self

    async def close(self) -> None:
        await self.server.close()

    def url(self, path: str = "/cb") -> str:
        return str(self.server.make_url(path))

    async def _get(self, request: web.Request) -> web.Response:
        self.seen += 1
        self.holding += 1
        self.most = max(self.most, self.holding)
        try:
            await self._never.wait()
        finally:
            self.holding -= 1
        return web.Response(status=500)


def check_signature(secret: str, received: Received) -> bool:
    header = received.headers.get("X-Hub-Signature", "")
    method, _, digest = header.partition("=")
    algo = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "sha384": hashlib.sha384,
            "sha512": hashlib.sha512}[method]
    return hmac.compare_digest(hmac.new(secret.encode(), received.body, algo).hexdigest(), digest)


async def subscribe(node: Node, callback: str, topic: str, **extra: str) -> tuple[int, str]:
    import aiohttp

    form = {"hub.mode": "subscribe", "hub.callback": callback, "hub.topic": topic, **extra}
    async with aiohttp.ClientSession() as session, session.post(node.hub, data=form) as resp:
        return resp.status, await resp.text()


async def hub_post(node: Node, data: Any, headers: dict[str, str] | None = None,
                   source: str | None = None) -> tuple[int, str, Any]:
    """POST to the hub; ``source``: the loopback address to send from (another "client")."""
    import aiohttp

    connector = aiohttp.TCPConnector(local_addr=(source, 0)) if source else None
    async with aiohttp.ClientSession(connector=connector) as session, \
            session.post(node.hub, data=data, headers=headers) as resp:
        return resp.status, await resp.text(), resp.headers


async def subscribed(node: Node, sub: Subscriber, callback: str, topic: str, **extra: str) -> None:
    """Subscribe and wait until the subscription is verified and stored."""
    def verified() -> float:
        return node.metric("thoonk_bridge_websub_verifications_total", mode="subscribe", result="verified")

    before = verified()
    status, text = await subscribe(node, callback, topic, **extra)
    assert status == 202, text
    await wait_for(lambda: verified() > before)


Waiter = Callable[[], Awaitable[None]]
