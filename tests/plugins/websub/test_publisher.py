"""Publish pings to outside hubs, and the operators' subscription listing (no secrets)."""

from __future__ import annotations

import asyncio
import json

from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.plugins.websub.support import Subscriber, start_node, subscribed, wait_for
from tests.support.bridge_process import cli
from thoonk_bridge.plugins.websub.cli import list_subscriptions

ATOM = b'<feed xmlns="http://www.w3.org/2005/Atom"><title>x</title></feed>'


async def test_pings_every_configured_hub_with_retries(redis_url: str) -> None:
    pings: list[tuple[str, dict[str, str]]] = []
    statuses = {"/a": [500, 503, 204], "/b": [204]}

    async def hub(request: web.Request) -> web.Response:
        pings.append((request.path, dict(await request.post())))  # type: ignore[arg-type]
        codes = statuses[request.path]
        return web.Response(status=codes.pop(0) if len(codes) > 1 else codes[0])

    app = web.Application()
    app.router.add_post("/{name}", hub)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    hubs = [str(server.make_url("/a")), str(server.make_url("/b"))]
    node = await start_node(redis_url, hub=False, publish_hubs=hubs)
    try:
        assert node.context.topics.hub_url == hubs[0]  # documents advertise the first outside hub
        topic = node.topic("/feeds/news.atom", ATOM)
        await node.change("/feeds/news.atom", ATOM)
        await wait_for(lambda: node.metric("thoonk_bridge_websub_publish_pings_total", result="ok") == 2)
        assert [p for p, _ in pings].count("/a") == 3  # 500, 503, then 204
        assert all(form == {"hub.mode": "publish", "hub.url": topic} for _, form in pings)
        assert node.metric("thoonk_bridge_websub_publish_pings_total", result="failed") == 2
    finally:
        await node.stop()
        await server.close()


async def test_documents_without_a_websub_sink_are_not_pinged(redis_url: str) -> None:
    pinged: list[str] = []

    async def hub(request: web.Request) -> web.Response:
        pinged.append((await request.post())["hub.url"])  # type: ignore[arg-type]
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/", hub)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    node = await start_node(redis_url, hub=False, publish_hubs=[str(server.make_url("/"))])
    try:
        private = node.topic("/feeds/private.atom", ATOM, hub=False)
        news = node.topic("/feeds/news.atom", ATOM)
        assert node.context.topics.hub_for("/feeds/private.atom") is None  # not advertised either
        await node.change("/feeds/private.atom", ATOM)
        await node.change("/feeds/news.atom", ATOM)
        await wait_for(lambda: news in pinged)
        await wait_for(node.idle)
        assert private not in pinged
    finally:
        await node.stop()
        await server.close()


async def test_ping_given_up_after_the_window(redis_url: str) -> None:
    async def hub(request: web.Request) -> web.Response:
        return web.Response(status=500)

    app = web.Application()
    app.router.add_post("/", hub)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    node = await start_node(redis_url, hub=False, publish_hubs=[str(server.make_url("/"))], ping_retry_window=0.3)
    try:
        node.topic("/feeds/news.atom", ATOM)
        await node.change("/feeds/news.atom", ATOM)
        await wait_for(lambda: node.metric("thoonk_bridge_websub_delivery_drops_total",
                                           reason="ping_retries_exhausted") == 1)
    finally:
        await node.stop()
        await server.close()


async def test_list_subscriptions_shows_no_secrets(redis_url: str) -> None:
    node = await start_node(redis_url)
    sub = await Subscriber().start()
    try:
        topic = node.topic("/feeds/news.atom", ATOM)
        other = node.topic("/feeds/other.atom", ATOM)
        secret_cb = sub.url("/cb/capability-token-xyz?key=abc")
        await subscribed(node, sub, secret_cb, topic, **{"hub.secret": "TOPSECRET"})
        await subscribed(node, sub, sub.url("/plain"), other)
        rows = await asyncio.to_thread(list_subscriptions, redis_url)
        assert len(rows) == 2
        text = json.dumps(rows)
        assert "TOPSECRET" not in text and "capability-token-xyz" not in text and "key=abc" not in text
        mine = await asyncio.to_thread(list_subscriptions, redis_url, topic)
        assert len(mine) == 1
        row = mine[0]
        assert row["topic"] == topic
        assert row["callback_host"] == f"http://127.0.0.1:{sub.server.port}"
        assert row["state"] == "active" and row["signed"] is True
        assert row["lease_seconds"] == 864000 and row["lease_end"].endswith("Z")
        assert row["failures"] == 0
        assert await asyncio.to_thread(list_subscriptions, redis_url, "http://nothing.example/") == []
        # The same through the command line, as an operator would ask.
        env = {"THOONK_BRIDGE_REDIS": redis_url}
        result = await asyncio.to_thread(cli, "websub", "subscriptions", topic, env=env)
        assert result.returncode == 0, result.stderr
        assert f"{topic}  http://127.0.0.1:{sub.server.port}  active until" in result.stdout
        assert "signed" in result.stdout
        assert "TOPSECRET" not in result.stdout and "capability-token-xyz" not in result.stdout
        listing = await asyncio.to_thread(cli, "websub", "subscriptions", "--json", env=env)
        assert len(json.loads(listing.stdout)) == 2
    finally:
        await node.stop()
        await sub.close()
