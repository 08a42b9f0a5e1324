"""The conformance suite over the feeds plugin: its sink (documents on disk) and its source (an
outside document served by an aiohttp server on loopback, polled)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from xml.sax.saxutils import escape

import pytest
from aiohttp import web

from thoonk_bridge.plugin import Endpoint
from thoonk_bridge.plugins.feeds.plugin import FeedsPlugin
from thoonk_bridge.plugins.feeds.settings import FeedSinkOptions, FeedSourceOptions
from thoonk_bridge.testing.conformance import SinkConformance, SinkTarget, SourceConformance, SourceTarget
from thoonk_bridge.testing.pytest_plugin import HarnessFactory

FAST = {"quiet": 0.005, "max_staleness": 0.05}


class TestFeedsSink(SinkConformance):
    @pytest.fixture
    async def sink_target(self, plugin_harness: HarnessFactory, tmp_path: Path) -> AsyncIterator[SinkTarget]:
        async with plugin_harness(FeedsPlugin, FAST) as harness:
            endpoint = Endpoint("feeds", "news", FeedSinkOptions(address="news"))
            document = harness.context.state_dir / "news.json"

            async def held() -> dict[str, str]:
                """The JSON Feed document on disk, by item (the suite's payloads link to .../items/ID)."""
                if not document.exists():
                    return {}
                items = json.loads(document.read_text())["items"]
                return {str(item["url"]).rsplit("/", 1)[1]: json.dumps(item) for item in items}

            yield SinkTarget(make=lambda: harness.plugin.sink(endpoint, harness.route()), held=held)


class OutsideFeed:
    """An outside Atom document on loopback whose entries the test changes (ETag per version)."""

    def __init__(self) -> None:
        self.entries: dict[str, str] = {}  # id -> title
        self.version = 0
        self.url = ""

    def put(self, item_id: str, title: str) -> None:
        self.entries.pop(item_id, None)
        self.entries[item_id] = title  # newest last; the document lists newest first
        self.version += 1

    def remove(self, item_id: str) -> None:
        if self.entries.pop(item_id, None) is not None:
            self.version += 1

    async def serve(self, request: web.Request) -> web.Response:
        etag = f'"v{self.version}"'
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers={"ETag": etag})
        body = "".join(
            f"<entry><id>{escape(i)}</id><title>{escape(t)}</title><updated>2024-05-01T00:00:00Z</updated>"
            f'<link href="https://outside.example/{escape(i)}"/></entry>'
            for i, t in reversed(self.entries.items())
        )
        doc = ('<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom"><title>F</title>'
               f"<id>urn:f</id><updated>2024-05-01T00:00:00Z</updated>{body}</feed>")
        return web.Response(text=doc, content_type="application/atom+xml", headers={"ETag": etag})


@pytest.fixture
async def outside() -> AsyncIterator[OutsideFeed]:
    feed = OutsideFeed()
    app = web.Application()
    app.router.add_get("/feed.atom", feed.serve)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    feed.url = f"http://127.0.0.1:{port}/feed.atom"
    try:
        yield feed
    finally:
        await runner.cleanup()


class TestFeedsSource(SourceConformance):
    def item_id(self, name: str) -> str:
        return f"urn:conformance:{name}"  # an Atom entry id is a URI (a bare name resolves against the URL)

    @pytest.fixture
    async def source_target(self, plugin_harness: HarnessFactory, outside: OutsideFeed
                            ) -> AsyncIterator[SourceTarget]:
        settings = {"outbound": {"allow_loopback": True}, "fetch_timeout": 5}
        async with plugin_harness(FeedsPlugin, settings) as harness:
            endpoint = Endpoint("feeds", outside.url, FeedSourceOptions(address=outside.url, interval=0.05))

            async def put(item_id: str, marker: str) -> None:
                outside.put(item_id, marker)

            async def remove(item_id: str) -> None:
                outside.remove(item_id)

            # mirror: an entry gone from the document is retracted (without, absence means nothing)
            yield SourceTarget(make=lambda: harness.plugin.source(endpoint, harness.route(mirror=True)),
                               put=put, remove=remove)
