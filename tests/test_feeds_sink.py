"""The feeds sink: documents on disk and over HTTP, against a real plugin context (Redis, aiohttp)."""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import aiohttp
import feedparser
import pytest

from thoonk_bridge.plugin import DeliveryError, Endpoint, EventKind, ItemEvent, TopicRegistry
from thoonk_bridge.plugins.feeds.plugin import FeedsPlugin
from thoonk_bridge.plugins.feeds.settings import FeedSinkOptions
from thoonk_bridge.testing import plugin_context

FAST = {"quiet": 0.005, "max_staleness": 0.05}
PUBLIC = "http://feeds.example"


def pub(item_id: str, payload: dict | str) -> ItemEvent:
    return ItemEvent(EventKind.PUBLISH, item_id, payload if isinstance(payload, str) else json.dumps(payload))


def edit(item_id: str, payload: dict) -> ItemEvent:
    return ItemEvent(EventKind.EDIT, item_id, json.dumps(payload))


def retract(item_id: str) -> ItemEvent:
    return ItemEvent(EventKind.RETRACT, item_id)


def make_sink(harness, name: str = "news", **options):  # type: ignore[no-untyped-def]
    opts = FeedSinkOptions(address=name, **options)
    return harness.plugin.sink(Endpoint("feeds", name, opts), harness.route())


async def settle(sink) -> None:  # type: ignore[no-untyped-def]
    await sink.document.wait_rendered()


@pytest.fixture
async def harness(redis_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    topics = TopicRegistry()
    async with plugin_context(FeedsPlugin, FAST, redis_url=redis_url, tmp_path=tmp_path, topics=topics) as h:
        yield h


async def get(url: str, **headers: str) -> tuple[int, Any, bytes]:
    """GET without decoding; ``identity`` unless the test asks for another Accept-Encoding."""
    headers.setdefault("Accept-Encoding", "identity")
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        async with session.get(url, headers=headers) as resp:
            return resp.status, resp.headers.copy(), await resp.read()


ENTRY_A = {
    "title": 'Hello <world> & "friends" ✓',
    "link": "https://example.org/1",
    "content": "<p>Hi <b>there</b><script>alert(1)</script></p>",
    "content_type": "html",
    "summary": "short",
    "author": "Ann",
    "author_email": "ann@example.org",
    "published": "2024-05-01T10:00:00Z",
    "updated": "2024-05-02T11:00:00+02:00",
    "categories": ["news", "ünïcode"],
}
ATOM_ENTRY_B = (
    '<entry xmlns="http://www.w3.org/2005/Atom"><id>tag:example.org,2024:b</id><title>Atom B</title>'
    '<updated>2024-05-03T00:00:00Z</updated><link href="https://example.org/b"/>'
    "<content>plain text body</content></entry>"
)


async def test_documents_parse_back_field_by_field(harness) -> None:  # type: ignore[no-untyped-def]
    sink = make_sink(harness, title="News", subtitle="All the news", language="en", author="Desk")
    await sink.open()
    await sink.apply(pub("a", ENTRY_A))
    await sink.apply(pub("b", ATOM_ENTRY_B))
    await sink.apply(pub("c", "Just a line of text\n\nwith a body"))
    await settle(sink)
    out = harness.context.state_dir

    atom = feedparser.parse((out / "news.atom").read_bytes())
    assert atom.bozo == 0, atom.get("bozo_exception")
    assert atom.version == "atom10"
    assert atom.feed.title == "News" and atom.feed.subtitle == "All the news"
    assert atom.feed.id == f"{harness.base_url}/feeds/news.atom"
    assert [e.title for e in atom.entries] == ["Just a line of text", "Atom B", ENTRY_A["title"]]
    a = atom.entries[2]
    assert a.link == "https://example.org/1"
    assert "<b>there</b>" in a.content[0].value and "script" not in a.content[0].value
    assert a.summary == "short"
    assert a.author_detail.name == "Ann" and a.author_detail.email == "ann@example.org"
    assert [t.term for t in a.tags] == ["news", "ünïcode"]
    assert a.updated == "2024-05-02T09:00:00+00:00"
    assert a.published == "2024-05-01T10:00:00+00:00"
    assert a.id.startswith("urn:uuid:")
    b = atom.entries[1]
    assert b.id == "tag:example.org,2024:b"  # an Atom payload keeps its own id
    assert b.content[0].value == "plain text body" and b.content[0].type == "text/plain"
    for entry in atom.entries:
        assert entry.id and entry.title and entry.updated

    rss = feedparser.parse((out / "news.rss").read_bytes())
    assert rss.bozo == 0, rss.get("bozo_exception")
    assert rss.version == "rss20"
    assert rss.feed.title == "News" and rss.feed.link == f"{harness.base_url}/"
    assert [e.id for e in rss.entries] == [e.id for e in atom.entries]  # guid == atom:id
    ra = rss.entries[2]
    assert ra.title == ENTRY_A["title"] and ra.link == "https://example.org/1"
    assert ra.published_parsed[:6] == (2024, 5, 1, 10, 0, 0)
    assert "<b>there</b>" in ra.content[0].value
    assert all(e.get("guidislink") is False for e in rss.entries)

    doc = json.loads((out / "news.json").read_bytes())
    assert doc["version"] == "https://jsonfeed.org/version/1.1"
    assert doc["feed_url"] == f"{harness.base_url}/feeds/news.json"
    assert [i["id"] for i in doc["items"]] == ["c", "b", "a"]
    ja = doc["items"][2]
    assert ja["title"] == ENTRY_A["title"] and ja["url"] == "https://example.org/1"
    assert "script" not in ja["content_html"] and ja["summary"] == "short"
    assert ja["date_modified"] == "2024-05-02T09:00:00Z" and ja["tags"] == ["news", "ünïcode"]
    assert doc["items"][0]["content_text"] == "Just a line of text\n\nwith a body"
    # every document is well-formed XML / JSON and the feeds plugin's own parser reads them back
    from thoonk_bridge.feedparse import parse_feed

    for fmt, ctype in (("atom", "application/atom+xml"), ("rss", "application/rss+xml"), ("json", None)):
        parsed = parse_feed((out / f"news.{fmt}").read_bytes(), ctype)
        assert len(parsed.items) == 3


async def test_publish_edit_retract_over_http(harness) -> None:  # type: ignore[no-untyped-def]
    sink = make_sink(harness)
    await sink.open()
    url = f"{harness.base_url}/feeds/news.atom"
    status, headers, body = await get(url)
    assert status == 200 and headers["Content-Type"] == "application/atom+xml; charset=utf-8"
    assert feedparser.parse(body).entries == []

    await sink.apply(pub("1", {"title": "One", "link": "https://e/1"}))
    await settle(sink)
    _, _, body = await get(url)
    first = feedparser.parse(body).entries
    assert [e.title for e in first] == ["One"]

    await sink.apply(edit("1", {"title": "One, edited", "link": "https://e/1"}))
    await settle(sink)
    _, _, body = await get(url)
    edited = feedparser.parse(body).entries
    assert [e.title for e in edited] == ["One, edited"]
    assert edited[0].id == first[0].id  # stable id across regenerations
    assert edited[0].updated_parsed >= first[0].updated_parsed

    await sink.apply(retract("1"))
    await settle(sink)
    for fmt in ("atom", "rss"):
        _, _, body = await get(f"{harness.base_url}/feeds/news.{fmt}")
        assert feedparser.parse(body).entries == []
    _, _, body = await get(f"{harness.base_url}/feeds/news.json")
    assert json.loads(body)["items"] == []
    assert (await get(f"{harness.base_url}/feeds/other.atom"))[0] == 404
    assert (await get(f"{harness.base_url}/feeds/news.html"))[0] == 404


async def test_idempotent_apply(harness) -> None:  # type: ignore[no-untyped-def]
    sink = make_sink(harness)
    await sink.open()
    await sink.apply(pub("1", {"title": "One"}))
    await settle(sink)
    renders = sink.document.renders
    await sink.apply(pub("1", {"title": "One"}))
    await sink.apply(retract("nope"))
    await asyncio.sleep(0.1)
    assert sink.document.renders == renders
    assert await sink.ids() == {"1": sink.document.items["1"].hash}


async def test_conditional_get_and_gzip(harness) -> None:  # type: ignore[no-untyped-def]
    sink = make_sink(harness)
    await sink.open()
    await sink.apply(pub("1", {"title": "One " * 200}))
    await settle(sink)
    url = f"{harness.base_url}/feeds/news.rss"
    status, headers, body = await get(url)
    assert status == 200 and headers["Content-Type"] == "application/rss+xml; charset=utf-8"
    etag, modified = headers["ETag"], headers["Last-Modified"]
    assert "Content-Encoding" not in headers
    assert (await get(url, **{"If-None-Match": etag}))[0] == 304
    assert (await get(url, **{"If-None-Match": f'"x", W/{etag}'}))[0] == 304
    assert (await get(url, **{"If-None-Match": '"other"'}))[0] == 200
    assert (await get(url, **{"If-Modified-Since": modified}))[0] == 304
    old = format_datetime(datetime(2000, 1, 1, tzinfo=UTC), usegmt=True)
    assert (await get(url, **{"If-Modified-Since": old}))[0] == 200
    status, gz_headers, gz_body = await get(url, **{"Accept-Encoding": "gzip, deflate"})
    assert gz_headers["Content-Encoding"] == "gzip" and gzip.decompress(gz_body) == body
    assert gz_headers["ETag"] != etag and gz_headers["Vary"] == "Accept-Encoding"
    assert (await get(url, **{"Accept-Encoding": "gzip", "If-None-Match": gz_headers["ETag"]}))[0] == 304
    assert "Content-Encoding" not in (await get(url, **{"Accept-Encoding": "gzip;q=0"}))[1]
    # a change gives a new ETag, and the old one no longer matches
    await sink.apply(pub("2", {"title": "Two"}))
    await settle(sink)
    status, headers2, _ = await get(url, **{"If-None-Match": etag})
    assert status == 200 and headers2["ETag"] != etag


async def test_websub_discovery(redis_url: str, tmp_path: Path) -> None:
    topics = TopicRegistry()
    topics.hub_url = "https://hub.example.org/websub"
    changed: list[str] = []

    async def listener(path: str) -> None:
        changed.append(path)

    topics.listen(listener)
    async with plugin_context(FeedsPlugin, FAST, redis_url=redis_url, tmp_path=tmp_path, topics=topics) as h:
        sink = make_sink(h)
        await sink.open()
        assert topics.paths() == ["/feeds/news.atom", "/feeds/news.json", "/feeds/news.rss"]
        changed.clear()
        await sink.apply(pub("1", {"title": "One"}))
        await settle(sink)
        assert sorted(changed) == ["/feeds/news.atom", "/feeds/news.json", "/feeds/news.rss"]
        topic = topics.get("/feeds/news.atom")
        assert topic is not None and topic.content_type.startswith("application/atom+xml")
        assert b"<title>One</title>" in await topic.render()
        for fmt in ("atom", "rss", "json"):
            status, headers, body = await get(f"{h.base_url}/feeds/news.{fmt}")
            assert headers["Link"] == (
                f'<https://hub.example.org/websub>; rel="hub", <{h.base_url}/feeds/news.{fmt}>; rel="self"'
            )
            if fmt == "json":
                assert json.loads(body)["hubs"] == [{"type": "WebSub", "url": "https://hub.example.org/websub"}]
                continue
            parsed = feedparser.parse(body)
            rels = {link.rel: link.href for link in parsed.feed.links}
            assert rels["hub"] == "https://hub.example.org/websub"
            assert rels["self"] == f"{h.base_url}/feeds/news.{fmt}"


async def test_bad_items_refused_document_stays_valid(harness) -> None:  # type: ignore[no-untyped-def]
    sink = make_sink(harness, max_payload_bytes=100_000)
    await sink.open()
    await sink.apply(pub("good", {"title": "Good"}))
    bad = [
        ("atom-broken", '<entry xmlns="http://www.w3.org/2005/Atom"><title>x</entry>'),
        ("atom-no-title", '<entry xmlns="http://www.w3.org/2005/Atom"><id>x</id></entry>'),
        ("empty-json", "{}"),
        ("huge", json.dumps({"title": "x" * 10_000_000})),
        ("blank", "   "),
    ]
    for item_id, payload in bad:
        with pytest.raises(DeliveryError) as info:
            await sink.apply(pub(item_id, payload))
        assert info.value.retryable is False
    # control characters and odd Unicode are kept out of the XML, not refused
    await sink.apply(pub("ctrl", {"title": "bell\x07 nul\x00 \ufffe ok 🎉", "content": "a\x1bb"}))
    await settle(sink)
    for fmt in ("atom", "rss"):
        body = (harness.context.state_dir / f"news.{fmt}").read_bytes()
        ET.fromstring(body)  # well-formed
        parsed = feedparser.parse(body)
        assert parsed.bozo == 0
        assert [e.title for e in parsed.entries] == ["bell nul  ok 🎉", "Good"]
    json.loads((harness.context.state_dir / "news.json").read_bytes())
    metric = harness.context.metrics.get_sample_value
    assert metric("thoonk_bridge_feeds_bad_items_total", {"feed": "news", "reason": "too_large"}) == 1
    assert metric("thoonk_bridge_feeds_bad_items_total", {"feed": "news", "reason": "invalid"}) == 2
    assert metric("thoonk_bridge_feeds_bad_items_total", {"feed": "news", "reason": "empty"}) == 2


async def test_max_items_keeps_newest(harness) -> None:  # type: ignore[no-untyped-def]
    sink = make_sink(harness, max_items=3)
    await sink.open()
    for i in range(10):
        await sink.apply(pub(str(i), {"title": f"T{i}"}))
    await settle(sink)
    parsed = feedparser.parse((harness.context.state_dir / "news.atom").read_bytes())
    assert [e.title for e in parsed.entries] == ["T9", "T8", "T7"]
    ids = await sink.ids()
    assert set(ids) == {str(i) for i in range(10)}  # pushed-out items still count as delivered
    await sink.apply(edit("2", {"title": "T2 edited"}))  # outside the window: nothing to render
    await sink.apply(retract("8"))
    await settle(sink)
    parsed = feedparser.parse((harness.context.state_dir / "news.atom").read_bytes())
    assert [e.title for e in parsed.entries] == ["T9", "T7"]
    # the window has room: the newest pushed-out item is asked for again, and comes back in place
    ids = await sink.ids()
    assert "6" not in ids and "5" in ids
    await sink.apply(pub("6", {"title": "T6"}))
    await settle(sink)
    parsed = feedparser.parse((harness.context.state_dir / "news.atom").read_bytes())
    assert [e.title for e in parsed.entries] == ["T9", "T7", "T6"]


async def test_burst_is_coalesced(harness) -> None:  # type: ignore[no-untyped-def]
    sink = make_sink(harness, max_items=20)
    await sink.open()
    before = sink.document.renders
    for i in range(10_000):
        await sink.apply(pub(str(i), {"title": f"T{i}"}))
        if i % 1000 == 0:
            await asyncio.sleep(0)  # let the render loop see the burst in progress
    await settle(sink)
    renders = sink.document.renders - before
    assert 1 <= renders <= 20, renders
    parsed = feedparser.parse((harness.context.state_dir / "news.atom").read_bytes())
    assert len(parsed.entries) == 20 and parsed.entries[0].title == "T9999"


async def test_staleness_bound_renders_during_endless_burst(harness) -> None:  # type: ignore[no-untyped-def]
    """Events that never pause still get rendered: the bound forces renders while the burst goes on."""
    sink = make_sink(harness)
    await sink.open()
    before = sink.document.renders
    i = 0
    while sink.document.renders == before:
        await sink.apply(pub(str(i % 100), {"title": f"T{i}"}))
        i += 1
        await asyncio.sleep(0.001)  # always sooner than `quiet`
        assert i < 100_000
    assert sink.document.renders > before


async def test_atomic_writes_under_reader_loop(harness) -> None:  # type: ignore[no-untyped-def]
    sink = make_sink(harness, max_items=100, formats=("atom",))
    await sink.open()
    path = harness.context.state_dir / "news.atom"
    stop = threading.Event()
    reads: list[int] = []
    errors: list[str] = []

    def reader() -> None:
        while not stop.is_set():
            data = path.read_bytes()
            try:
                ET.fromstring(data)
            except ET.ParseError as exc:
                errors.append(f"{exc}: {len(data)} bytes")
            reads.append(len(data))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(150):
            await sink.apply(pub(str(i), {"title": f"T{i}", "content": "x" * 2000}))
            if i % 10 == 0:
                await sink.flush()
    finally:
        await sink.flush()
        stop.set()
        thread.join()
    assert errors == []
    assert len(reads) > 10 and len(set(reads)) > 5
    leftovers = [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


async def test_restart_rebuilds_deleted_and_corrupted_files(redis_url: str, tmp_path: Path) -> None:
    async with plugin_context(FeedsPlugin, FAST, redis_url=redis_url, tmp_path=tmp_path, public_url=PUBLIC) as h:
        sink = make_sink(h)
        await sink.open()
        for i in range(3):
            await sink.apply(pub(str(i), {"title": f"T{i}"}))
        await sink.close()
        out = h.context.state_dir
        original = {fmt: (out / f"news.{fmt}").read_bytes() for fmt in ("atom", "rss", "json")}
        mtime = (out / "news.rss").stat().st_mtime
    (out / "news.atom").unlink()
    (out / "news.json").write_bytes(b'{"truncat')
    async with plugin_context(FeedsPlugin, FAST, redis_url=redis_url, tmp_path=tmp_path, public_url=PUBLIC) as h:
        sink = make_sink(h)
        await sink.open()
        assert set(await sink.ids()) == {"0", "1", "2"}
        for fmt in ("atom", "rss", "json"):
            assert (out / f"news.{fmt}").read_bytes() == original[fmt]  # deterministic: same bytes
        assert (out / "news.rss").stat().st_mtime == mtime  # unchanged file not rewritten
        status, headers, _ = await get(f"{h.base_url}/feeds/news.rss")
        assert status == 200
        await sink.close()
    # the state file itself damaged: the sink holds nothing, so the router delivers everything again
    (out / "news.state.json").write_bytes(b"garbage")
    async with plugin_context(FeedsPlugin, FAST, redis_url=redis_url, tmp_path=tmp_path, public_url=PUBLIC) as h:
        sink = make_sink(h)
        await sink.open()
        assert await sink.ids() == {}
        await sink.close()
