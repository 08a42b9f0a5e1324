"""The feeds source: polling a local aiohttp server that serves changing, redirected, throttled and
broken feeds. Sleeps between polls are replaced by a recorder, so no test waits or measures time."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiohttp import web

from tests.support.loop_probe import LoopProbe
from thoonk_bridge import feedparse
from thoonk_bridge.payload import Format, parse
from thoonk_bridge.plugin import Endpoint, EventKind, ItemEvent
from thoonk_bridge.plugins.feeds.plugin import FeedsPlugin
from thoonk_bridge.plugins.feeds.settings import FeedSourceOptions
from thoonk_bridge.plugins.feeds.source import FeedSource, FetchFailed, parse_retry_after
from thoonk_bridge.testing import plugin_context


def atom(entries: list[tuple[str, str]]) -> bytes:
    body = "".join(
        f"<entry><id>{i}</id><title>{t}</title><updated>2024-05-01T00:00:00Z</updated>"
        f'<link href="https://example.org/{i}"/></entry>'
        for i, t in entries
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom"><title>F</title>'
        f"<id>urn:f</id><updated>2024-05-01T00:00:00Z</updated>{body}</feed>"
    ).encode()


class FeedServer:
    """A local outside site: ``/feed`` serves ``self.body`` with ETag/304, other paths misbehave."""

    def __init__(self) -> None:
        self.body = atom([("urn:2", "Two"), ("urn:1", "One")])
        self.content_type = "application/atom+xml"
        self.etag = '"v1"'
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.next_status: list[tuple[int, dict[str, str]]] = []
        self.never = asyncio.Event()
        self.base = ""

    def set(self, entries: list[tuple[str, str]], etag: str) -> None:
        self.body = atom(entries)
        self.etag = etag

    async def feed(self, request: web.Request) -> web.Response:
        self.requests.append((request.path, dict(request.headers)))
        if self.next_status:
            status, headers = self.next_status.pop(0)
            return web.Response(status=status, headers=headers, text="busy")
        if request.headers.get("If-None-Match") == self.etag:
            return web.Response(status=304, headers={"ETag": self.etag})
        return web.Response(body=self.body, headers={"Content-Type": self.content_type, "ETag": self.etag})

    async def handler(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path == "/feed":
            return await self.feed(request)
        self.requests.append((path, dict(request.headers)))
        if path == "/moved":
            raise web.HTTPMovedPermanently("/feed")
        if path.startswith("/loop"):
            raise web.HTTPFound(path + "x")
        if path == "/html":
            return web.Response(text="<!DOCTYPE html><html><body>Not a feed</body></html>", content_type="text/html")
        if path == "/truncated":
            return web.Response(body=self.body[: len(self.body) // 2], content_type="application/atom+xml")
        if path == "/bomb":
            bomb = gzip.compress(b" " * (50 * 1024 * 1024))
            return web.Response(body=bomb, headers={"Content-Encoding": "gzip", "Content-Type": "application/xml"})
        if path == "/never":
            await self.never.wait()
        if path == "/json":
            doc = {
                "version": "https://jsonfeed.org/version/1.1",
                "title": "J",
                "items": [{"id": "j1", "title": "J one", "content_text": "hi"}],
            }
            return web.Response(text=json.dumps(doc), content_type="application/feed+json")
        raise web.HTTPNotFound()


@pytest.fixture
async def site() -> AsyncIterator[FeedServer]:
    server = FeedServer()
    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", server.handler)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    tcp = web.TCPSite(runner, "127.0.0.1", 0)
    await tcp.start()
    server.base = f"http://127.0.0.1:{tcp._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    try:
        yield server
    finally:
        server.never.set()
        await runner.cleanup()


@pytest.fixture
async def harness(redis_url: str, tmp_path: Path) -> AsyncIterator[Any]:
    settings = {"outbound": {"allow_loopback": True}, "fetch_timeout": 5}
    async with plugin_context(FeedsPlugin, settings, redis_url=redis_url, tmp_path=tmp_path) as h:
        yield h


def make_source(harness: Any, url: str, *, mirror: bool = False, **options: Any) -> FeedSource:
    """A source whose sleeps between polls are recorded and gated by :func:`take` (no waiting)."""
    opts = FeedSourceOptions(address=url, interval=options.pop("interval", 60), **options)
    source = harness.plugin.source(Endpoint("feeds", url, opts), harness.route(mirror=mirror))
    assert isinstance(source, FeedSource)
    source.delays = []  # type: ignore[attr-defined]
    source.gate = asyncio.Semaphore(0)  # type: ignore[attr-defined]

    async def record(delay: float) -> None:
        source.delays.append(delay)  # type: ignore[attr-defined]
        await source.gate.acquire()  # type: ignore[attr-defined]

    source.sleep = record
    return source


async def take(source: FeedSource, polls: int) -> list[ItemEvent]:
    """The events ``follow()`` yields during exactly the next ``polls`` polls."""
    events: list[ItemEvent] = []
    delays: list[float] = source.delays  # type: ignore[attr-defined]
    target = len(delays) + polls + 1  # one sleep before each poll, and the one after the last

    async def run() -> None:
        async for event in source.follow():
            events.append(event)

    task = asyncio.create_task(run())
    for _ in range(polls):
        source.gate.release()  # type: ignore[attr-defined]
    try:
        while len(delays) < target:
            assert not task.done(), task
            await asyncio.sleep(0.005)
    finally:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
    return events


def metric(harness: Any, result: str) -> float:
    value = harness.context.metrics.get_sample_value(
        "thoonk_bridge_feeds_fetches_total", {"route": "test-route", "result": result}
    )
    return value or 0.0


async def test_snapshot_then_publish_edit_retract(harness: Any, site: FeedServer) -> None:
    source = make_source(harness, f"{site.base}/feed", mirror=True)
    await source.open()
    snapshot = await source.snapshot()
    assert [i for i, _ in snapshot] == ["urn:1", "urn:2"]  # oldest first
    assert parse(snapshot[1][1], Format.JSON).title == "Two"

    site.set([("urn:3", "Three"), ("urn:2", "Two, edited")], '"v2"')
    events = await take(source, 1)
    assert [(e.kind, e.id) for e in events] == [  # in document order, oldest first
        (EventKind.EDIT, "urn:2"),
        (EventKind.PUBLISH, "urn:3"),
        (EventKind.RETRACT, "urn:1"),
    ]
    assert parse(events[0].payload or "", Format.JSON).title == "Two, edited"
    await source.close()


async def test_without_mirror_nothing_is_retracted(harness: Any, site: FeedServer) -> None:
    source = make_source(harness, f"{site.base}/feed")
    await source.open()
    await source.snapshot()
    site.set([("urn:3", "Three")], '"v2"')
    events = await take(source, 1)
    assert [(e.kind, e.id) for e in events] == [(EventKind.PUBLISH, "urn:3")]
    await source.close()


async def test_conditional_get_304(harness: Any, site: FeedServer) -> None:
    source = make_source(harness, f"{site.base}/feed", interval=30)
    await source.open()
    await source.snapshot()
    assert "If-None-Match" not in site.requests[0][1]  # the snapshot always takes the whole document
    events = await take(source, 3)
    assert events == []
    assert [r[1].get("If-None-Match") for r in site.requests[1:4]] == ['"v1"'] * 3
    assert metric(harness, "not_modified") == 3
    assert source.delays[:3] == [30, 30, 30]  # type: ignore[attr-defined]
    await source.close()


async def test_redirects_followed_and_limited(harness: Any, site: FeedServer) -> None:
    source = make_source(harness, f"{site.base}/moved")
    await source.open()
    assert [i for i, _ in await source.snapshot()] == ["urn:1", "urn:2"]
    await source.close()
    looping = make_source(harness, f"{site.base}/loop", max_redirects=2)
    await looping.open()
    with pytest.raises(FetchFailed, match="more than 2 redirects"):
        await looping.snapshot()
    assert metric(harness, "redirects") == 1
    await looping.close()


async def test_retry_after_and_backoff(harness: Any, site: FeedServer) -> None:
    source = make_source(harness, f"{site.base}/feed", interval=10, max_backoff=1000)
    await source.open()
    await source.snapshot()
    site.next_status = [(429, {"Retry-After": "120"}), (503, {}), (500, {}), (503, {"Retry-After": "99999"})]
    site.set([("urn:9", "Nine")], '"v9"')
    events = await take(source, 5)
    assert [e.id for e in events] == ["urn:9"]  # recovered on the fifth poll
    delays = source.delays  # type: ignore[attr-defined]
    assert delays[0] == 10  # the normal interval before the first (throttled) poll
    assert delays[1] >= 120  # Retry-After honoured
    assert 10 <= delays[2] <= 40 and 10 <= delays[3] <= 80  # exponential backoff with jitter
    assert delays[4] == 1000  # a huge Retry-After is capped by max_backoff
    assert metric(harness, "http_429") == 1 and metric(harness, "http_503") == 2
    assert metric(harness, "http_5xx") == 1
    assert source.failures == 0 and source.next_delay() == 10
    await source.close()


def test_backoff_jitter_and_cap() -> None:
    source = FeedSource.__new__(FeedSource)
    source.options = FeedSourceOptions(address="https://x.example/", interval=5, max_backoff=60)
    source.retry_after = None
    import random

    source.random = random.Random(1)
    seen = []
    for failures in range(1, 10):
        source.failures = failures
        delay = source.next_delay()
        assert 5 <= delay <= 60
        seen.append(delay)
    assert seen[-1] <= 60 and len(set(seen)) > 3  # jittered, growing, capped
    source.failures = 0
    assert source.next_delay() == 5


def test_parse_retry_after() -> None:
    assert parse_retry_after("120") == 120
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480 - 60) == 60


@pytest.mark.parametrize(
    ("path", "reason"),
    [("/html", "bad_document"), ("/truncated", "bad_document"), ("/bomb", "too_large"), ("/missing", "http_4xx")],
)
async def test_broken_documents_keep_the_items(harness: Any, site: FeedServer, path: str, reason: str) -> None:
    source = make_source(harness, f"{site.base}/feed", mirror=True)
    await source.open()
    await source.snapshot()
    source.url = f"{site.base}{path}"  # the site starts serving garbage at the same address
    events = await take(source, 2)
    assert events == []  # nothing retracted
    assert metric(harness, reason) == 2 and source.failures == 2
    assert set(source.items or {}) == {"urn:1", "urn:2"}
    source.url = f"{site.base}/feed"
    site.set([("urn:1", "One")], '"v3"')
    events = await take(source, 1)
    assert [(e.kind, e.id) for e in events] == [(EventKind.RETRACT, "urn:2")]
    assert source.failures == 0
    await source.close()


async def test_first_fetch_failing_raises(harness: Any, site: FeedServer) -> None:
    source = make_source(harness, f"{site.base}/html")
    await source.open()
    with pytest.raises(FetchFailed, match="HTML page"):
        await source.snapshot()
    await source.close()


async def test_server_that_never_answers(harness: Any, site: FeedServer) -> None:
    source = make_source(harness, f"{site.base}/never", timeout=0.2)
    await source.open()
    with pytest.raises(FetchFailed, match="no answer"):
        await source.snapshot()
    assert metric(harness, "timeout") == 1
    await source.close()


async def test_loopback_refused_unless_allowed(redis_url: str, tmp_path: Path, site: FeedServer) -> None:
    async with plugin_context(FeedsPlugin, {}, redis_url=redis_url, tmp_path=tmp_path) as h:
        source = make_source(h, f"{site.base}/feed")
        await source.open()
        with pytest.raises(FetchFailed, match="loopback"):
            await source.snapshot()
        assert metric(h, "refused") == 1
        await source.close()
        allowed = make_source(h, f"{site.base}/feed", allow_loopback=True)
        await allowed.open()
        assert len(await allowed.snapshot()) == 2
        await allowed.close()
    assert [r[0] for r in site.requests] == ["/feed"]  # the refused source never connected


async def test_json_feed_source(harness: Any, site: FeedServer) -> None:
    source = make_source(harness, f"{site.base}/json", payload_format="atom")
    await source.open()
    [(item_id, payload)] = await source.snapshot()
    assert item_id == "j1" and parse(payload, Format.ATOM).title == "J one"
    await source.close()


async def test_entries_past_max_entries_are_ignored_with_a_note(harness: Any, site: FeedServer) -> None:
    site.set([(f"urn:{n}", f"Entry {n}") for n in range(50, 0, -1)], '"many"')  # newest first
    source = make_source(harness, f"{site.base}/feed", max_entries=10)
    await source.open()
    with structlog.testing.capture_logs() as logs:
        snapshot = await source.snapshot()
    assert [i for i, _ in snapshot] == [f"urn:{n}" for n in range(41, 51)]  # the 10 newest, oldest first
    notes = [line for line in logs if "max_entries" in line["event"]]
    assert len(notes) == 1 and notes[0]["ignored"] == 40 and notes[0]["kept"] == 10
    await source.close()


async def test_a_huge_document_is_parsed_off_the_event_loop(
    harness: Any, site: FeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 20,000 entries: seconds of parsing when it ran on the loop. The loop must keep ticking.
    site.set([(f"urn:{n}", "t") for n in range(20_000, 0, -1)], '"huge"')
    source = make_source(harness, f"{site.base}/feed", max_entries=20_000)
    await source.open()
    async with LoopProbe() as probe:
        monkeypatch.setattr(feedparse, "parse_feed", probe.wrap(feedparse.parse_feed))
        snapshot = await source.snapshot()
    assert len(snapshot) == 20_000
    assert probe.off_loop  # the loop ran while the document was parsed
    await source.close()
