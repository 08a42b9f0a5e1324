"""The feeds plugin inside a whole daemon (config, router, HTTP): the README's main job, restart
rebuild through reconcile, and an outside feed pulled into a Thoonk feed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import feedparser
from aiohttp import web

from thoonk_bridge.testing import running_bridge, wait_until

FAST = {"quiet": 0.005, "max_staleness": 0.05}


async def fetch(url: str) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as session:
        async with session.get(url) as resp:
            return resp.status, await resp.read()


def base_url(daemon: Any) -> str:
    return daemon.base_url.rstrip("/")


async def titles(url: str) -> list[str]:
    status, body = await fetch(url)
    return [e.title for e in feedparser.parse(body).entries] if status == 200 else [f"HTTP {status}"]


async def test_thoonk_feed_to_documents_and_restart_rebuild(redis_url: str, tmp_path: Path) -> None:
    out = tmp_path / "docs"
    config = {
        "plugins": {"feeds": {**FAST, "output_dir": str(out)}},
        "routes": [{"name": "news-public", "from": "thoonk:news", "to": [{"endpoint": "feeds:news", "title": "News"}]}],
    }
    async with running_bridge(config, redis_url=redis_url, tmp_path=tmp_path) as daemon:
        url = base_url(daemon) + "/feeds/news.atom"
        await wait_until(lambda: daemon.routes["news-public"].ready, message="route ready")
        feed = await daemon.thoonk.feed("news")
        await feed.publish(json.dumps({"title": "Hello", "link": "https://example.org/1"}), id="1")
        await wait_until(lambda: _titles_are(url, ["Hello"]), message="entry in the feed")
        await feed.publish(json.dumps({"title": "Second", "link": "https://example.org/2"}), id="2")
        await feed.publish(json.dumps({"title": "Hello, edited", "link": "https://example.org/1"}), id="1")
        await wait_until(lambda: _titles_are(url, ["Second", "Hello, edited"]), message="edit")
        await feed.retract("2")
        await wait_until(lambda: _titles_are(url, ["Hello, edited"]), message="retract")
        rss_status, rss = await fetch(base_url(daemon) + "/feeds/news.rss")
        assert rss_status == 200 and feedparser.parse(rss).feed.title == "News"
    # while the daemon is down: items published, a document deleted, another damaged
    import redis.asyncio as aioredis

    from thoonk_bridge.thoonk import AsyncThoonk

    client = aioredis.Redis.from_url(redis_url)
    thoonk = AsyncThoonk(redis=client)
    feed = await thoonk.feed("news")
    await feed.publish(json.dumps({"title": "While down"}), id="3")
    await client.aclose()
    (out / "news.atom").unlink()
    (out / "news.rss").write_bytes(b"<rss><chan")
    async with running_bridge(config, redis_url=redis_url, tmp_path=tmp_path) as daemon:
        await wait_until(lambda: daemon.routes["news-public"].ready, message="route ready")
        url = base_url(daemon) + "/feeds/news.atom"
        await wait_until(lambda: _titles_are(url, ["While down", "Hello, edited"]), message="rebuilt")
        await wait_until(lambda: _file_titles(out / "news.rss") == ["While down", "Hello, edited"])
        assert _file_titles(out / "news.atom") == ["While down", "Hello, edited"]


async def _titles_are(url: str, expected: list[str]) -> bool:
    return await titles(url) == expected


def _file_titles(path: Path) -> list[str] | None:
    try:
        return [e.title for e in feedparser.parse(path.read_bytes()).entries]
    except OSError:
        return None


async def test_outside_feed_into_thoonk(redis_url: str, tmp_path: Path) -> None:
    state = {"entries": [("urn:1", "One")]}

    async def serve(_: web.Request) -> web.Response:
        body = "".join(
            f"<item><guid>{i}</guid><title>{t}</title><link>https://example.org/{i}</link></item>"
            for i, t in reversed(state["entries"])
        )
        rss = (
            f'<?xml version="1.0"?><rss version="2.0"><channel><title>P</title><link>https://p/</link>'
            f"<description>d</description>{body}</channel></rss>"
        )
        return web.Response(text=rss, content_type="application/rss+xml")

    app = web.Application()
    app.router.add_get("/feed.rss", serve)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"http://127.0.0.1:{port}/feed.rss"
    config = {
        "plugins": {"feeds": {**FAST, "outbound": {"allow_loopback": True}}},
        "routes": [
            {
                "name": "partner-in",
                "mirror": True,
                "from": {"endpoint": f"feeds:{url}", "interval": 0.05},
                "to": "thoonk:partner",
            },
        ],
    }
    try:
        async with running_bridge(config, redis_url=redis_url, tmp_path=tmp_path) as daemon:
            feed = await daemon.thoonk.feed("partner")

            async def ids() -> list[str]:
                return list((await feed.get_all()).keys())

            await wait_until(lambda: _eq(ids(), ["urn:1"]), message="first item")
            state["entries"] = [("urn:1", "One"), ("urn:2", "Two")]
            await wait_until(lambda: _eq(ids(), ["urn:1", "urn:2"]), message="publish")
            state["entries"] = [("urn:2", "Two, edited")]
            await wait_until(lambda: _eq(ids(), ["urn:2"]), message="retract")
            payload = json.loads(await feed.get_item("urn:2"))
            await wait_until(lambda: _title_of(feed, "urn:2", "Two, edited"), message="edit")
            assert payload["link"] == "https://example.org/urn:2"
    finally:
        await runner.cleanup()


async def _eq(value: Any, expected: Any) -> bool:
    return await value == expected


async def _title_of(feed: Any, item_id: str, title: str) -> bool:
    raw = await feed.get_item(item_id)
    return raw is not None and json.loads(raw).get("title") == title


async def test_unwritable_output_dir_is_degraded_in_readyz_and_documents_still_served(
    redis_url: str, tmp_path: Path
) -> None:
    # Tests run as root (chmod does not stop writes): the output directory is replaced by a plain
    # file, so every write fails with a real OS error.
    out = tmp_path / "docs"
    config = {
        "plugins": {"feeds": {**FAST, "output_dir": str(out)}},
        "routes": [{"name": "news-public", "from": "thoonk:news", "to": "feeds:news"}],
    }
    async with running_bridge(config, redis_url=redis_url, tmp_path=tmp_path) as daemon:
        url = base_url(daemon) + "/feeds/news.atom"
        await wait_until(lambda: daemon.routes["news-public"].ready, message="route ready")
        feed = await daemon.thoonk.feed("news")
        await feed.publish(json.dumps({"title": "Before"}), id="1")
        await wait_until(lambda: _titles_are(url, ["Before"]), message="first entry")
        for path in out.iterdir():
            path.unlink()
        out.rmdir()
        out.write_bytes(b"")
        await feed.publish(json.dumps({"title": "After"}), id="2")
        await wait_until(lambda: _titles_are(url, ["After", "Before"]), message="served from memory")

        async def degraded() -> bool:
            status, body = await fetch(base_url(daemon) + "/readyz")
            route = json.loads(body)["routes"]["news-public"]
            return "Errno" in route.get("degraded", "") and route["sinks"]["feeds:news"]["state"] == "degraded"

        await wait_until(degraded, message="route degraded in /readyz with the OS error")
        out.unlink()

        async def recovered() -> bool:
            status, body = await fetch(base_url(daemon) + "/readyz")
            return "degraded" not in json.loads(body)["routes"]["news-public"]

        await wait_until(recovered, timeout=30, message="degraded state ends once the files are written")
        assert _file_titles(out / "news.atom") == ["After", "Before"]
