"""The feeds sink: documents on disk and over HTTP, against a real plugin context (Redis, aiohttp)."""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import json
import threading
import time
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from email.utils import format_datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import feedparser
import pytest
import structlog
from defusedxml.ElementTree import fromstring as safe_xml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from thoonk_bridge import plugin as plugin_module
from thoonk_bridge.payload import PayloadError
from thoonk_bridge.plugin import DeliveryError, Endpoint, EventKind, ItemEvent, TopicChange, TopicRegistry
from thoonk_bridge.plugins.feeds import document as document_module
from thoonk_bridge.plugins.feeds.document import FeedDocument
from thoonk_bridge.plugins.feeds.plugin import FeedsPlugin
from thoonk_bridge.plugins.feeds.render import FeedMeta, StoredItem, render_documents
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
    bodies: dict[str, bytes | None] = {}

    async def listener(change: TopicChange) -> None:
        changed.append(change.path)
        bodies[change.path] = change.body

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
        assert bodies["/feeds/news.atom"] == await topic.render()  # the change carries the new body
        assert topics.named("news") == [topics.get(p) for p in topics.paths()]  # registered under NAME
        assert topics.name_of("/feeds/other.rss") == "other"  # a document another daemon may hold
        assert topics.name_of("/feeds/a/b.rss") is None and topics.name_of("/elsewhere/x.atom") is None
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
    assert sink.capacity == 3  # a reconcile sends only the newest 3 of a snapshot
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


# ------------------------------------------------------------------ documents safe to render (issue 11 §3)


A = "{http://www.w3.org/2005/Atom}"
CONTENT_NS = "{http://purl.org/rss/1.0/modules/content/}encoded"
ACTIVE_TAGS = {"script", "iframe", "embed", "object", "applet", "frame", "frameset", "style", "meta",
               "link", "base", "form", "svg", "math", "input", "button", "textarea"}
URL_ATTRIBUTES = {"href", "src", "action", "formaction", "background", "lowsrc", "dynsrc", "cite", "poster"}
XSS = "<img src=x onerror=alert(1)>"


class _ActiveMarkup(HTMLParser):
    """What the W3C feed validator's security checks flag in HTML: active elements, event handler
    and style attributes, URLs with a scheme other than http/https/mailto."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ACTIVE_TAGS:
            self.found.append(f"<{tag}>")
        for name, value in attrs:
            if name.startswith("on") or name == "style":
                self.found.append(f"{tag}@{name}")
            if name in URL_ATTRIBUTES and value is not None:
                scheme = urlsplit("".join(value.split())).scheme.lower()
                if scheme not in ("", "http", "https", "mailto"):
                    self.found.append(f"{tag}@{name}={value}")


def active_markup(markup: str) -> list[str]:
    parser = _ActiveMarkup()
    parser.feed(markup)
    parser.close()
    return parser.found


HOSTILE_ITEMS: list[tuple[str, str]] = [
    ("text-json", json.dumps({"title": "Plain", "content": XSS, "summary": "<script>alert(2)</script>"})),
    ("title-xss", json.dumps({"title": '<svg onload="alert(3)">', "content": "x"})),
    ("html-json", json.dumps({
        "title": "HTML", "content_type": "html", "summary_type": "html",
        "content": '<p onclick="x()">a<script>alert(4)</script><iframe src="https://e.example"></iframe>'
                   '<embed src="x.swf"><object data="x"></object><a href="javascript:alert(5)">j</a>'
                   '<img src="data:image/svg+xml,<svg onload=alert(6)>"><b style="x:expression(1)">s</b>]]>',
        "summary": '<a href=" jAvAsCrIpT:alert(7)">s</a><style>p{}</style>',
    })),
    ("plain-text", "<iframe src=javascript:alert(8)></iframe> and ]]> and \x01 control"),
    ("atom-text", '<entry xmlns="http://www.w3.org/2005/Atom"><title>Atom text</title>'
                  '<content type="text">&lt;script&gt;alert(9)&lt;/script&gt;</content>'
                  '<summary type="html">&lt;img src=x onerror=alert(10)&gt;</summary></entry>'),
    ("atom-xhtml", '<entry xmlns="http://www.w3.org/2005/Atom"><title>Atom xhtml</title>'
                   '<content type="xhtml"><div xmlns="http://www.w3.org/1999/xhtml"><p onmouseover="y()">p'
                   '</p><script>alert(11)</script></div></content></entry>'),
    ("links", json.dumps({
        "title": "Links", "content": "c", "link": "javascript:alert(12)",
        "author": "Eve", "author_uri": "javascript:alert(13)", "author_email": "not an <email>",
    })),
    ("data-link", json.dumps({"title": "Data", "content": "c", "link": "data:text/html,<script>alert(14)</script>"})),
    ("relative", json.dumps({"title": "Relative", "content": "c", "link": "/posts/1?a=b c",
                             "author": "Ann", "author_uri": "mailto:ann@example.org"})),
    ("iri", json.dumps({"title": "IRI", "content": "c", "link": "https://bücher.example/straße?q=ü#frag"})),
    ("dup-1", '<entry xmlns="http://www.w3.org/2005/Atom"><id>tag:example.org,2024:same</id><title>Dup 1</title>'
              '<content>one</content></entry>'),
    ("dup-2", '<entry xmlns="http://www.w3.org/2005/Atom"><id>tag:example.org,2024:same</id><title>Dup 2</title>'
              '<content>two</content></entry>'),
    ("bad-id", '<entry xmlns="http://www.w3.org/2005/Atom"><id>x:a&lt;b c</id><title>Bad id</title></entry>'),
    ("future", json.dumps({"title": "Future", "content": "c", "updated": "2999-01-01T00:00:00Z"})),
]
META = FeedMeta(
    name="news", title="News", subtitle="News, via thoonk-bridge", link="https://site.example/blog/",
    author="Desk", author_email=None, language="en", feed_id="https://feeds.example/feeds/news.atom",
    self_urls={f: f"https://feeds.example/feeds/news.{f}" for f in ("atom", "rss", "json")},
    hub_url="https://feeds.example/websub/hub",
)


def stored(items: list[tuple[str, str]], start: float = 1_700_000_000.25) -> list[StoredItem]:
    """Items as a document holds them, newest first (the first of ``items`` is the oldest)."""
    from thoonk_bridge.payload import content_hash, parse

    out = []
    for seq, (item_id, payload) in enumerate(items, 1):
        item = StoredItem(item_id, payload, content_hash(payload), seq, start + seq * 0.1)
        item.entry = parse(payload)
        out.append(item)
    return list(reversed(out))


def _rfc3339(value: str) -> datetime:
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    assert parsed.tzinfo is not None, value
    return parsed


def test_hostile_items_render_safe_valid_documents() -> None:
    docs = render_documents(META, stored(HOSTILE_ITEMS), ("atom", "rss", "json"))
    now = datetime.now(UTC)
    for fmt in ("atom", "rss"):
        parsed = feedparser.parse(docs[fmt])
        assert parsed.bozo == 0, (fmt, parsed.get("bozo_exception"))

    _assert_safe_atom(docs["atom"], now)
    _assert_safe_rss(docs["rss"])
    _assert_safe_json_feed(docs["json"])


def _assert_safe_atom(doc: bytes, now: datetime) -> None:
    atom = safe_xml(doc)
    entries = atom.findall(f"{A}entry")
    ids = [e.findtext(f"{A}id") for e in entries]
    assert len(ids) == len(set(ids)) == len(HOSTILE_ITEMS) - 1  # the duplicate id is written once
    assert _rfc3339(atom.findtext(f"{A}updated") or "") <= now  # a future date is not the feed's
    for entry in entries:
        assert entry.findtext(f"{A}title") is not None and entry.find(f"{A}title").get("type") in (None, "text")
        assert _rfc3339(entry.findtext(f"{A}updated") or "")
        for part in ("content", "summary"):
            elem = entry.find(f"{A}{part}")
            if elem is None:
                continue
            if elem.get("type") == "html":
                assert active_markup(elem.text or "") == [], (ids, part, elem.text)
            else:  # text: shown as text by every reader
                assert elem.get("type") in (None, "text") and len(elem) == 0
        for link in entry.iter(f"{A}link"):
            assert urlsplit(link.get("href")).scheme in ("http", "https"), link.get("href")
        for uri in entry.iter(f"{A}uri"):
            assert urlsplit(uri.text).scheme in ("http", "https", "mailto"), uri.text
        for email in entry.iter(f"{A}email"):
            assert "@" in (email.text or "") and "<" not in (email.text or "")


def _assert_safe_rss(doc: bytes) -> None:
    rss = safe_xml(doc)
    items = rss.findall("channel/item")
    guids = [i.findtext("guid") for i in items]
    assert len(guids) == len(set(guids)) == len(items) == len(HOSTILE_ITEMS) - 1
    for item in items:
        for field_ in ("title", "description", CONTENT_NS):  # HTML by definition (title: by many readers)
            assert active_markup(item.findtext(field_) or "") == [], (field_, item.findtext(field_))
        link = item.findtext("link")
        if link is not None:
            assert link.isascii() and " " not in link and urlsplit(link).scheme in ("http", "https"), link
        author = item.findtext("author")
        assert author is None or "@" in author.split(" ")[0]


def _assert_safe_json_feed(doc: bytes) -> None:
    feed = json.loads(doc)
    assert feed["version"] == "https://jsonfeed.org/version/1.1" and isinstance(feed["title"], str)
    assert isinstance(feed["items"], list)
    assert all(isinstance(h["type"], str) and isinstance(h["url"], str) for h in feed["hubs"])
    json_ids = [i["id"] for i in feed["items"]]
    assert len(json_ids) == len(set(json_ids)) == len(HOSTILE_ITEMS) - 1
    for item in feed["items"]:
        assert isinstance(item["id"], str) and item["id"]
        assert isinstance(item.get("content_html"), str) or isinstance(item.get("content_text"), str)
        assert active_markup(item.get("content_html", "")) == []
        for key in ("url", "external_url"):
            if key in item:
                assert urlsplit(item[key]).scheme in ("http", "https"), item[key]
        for key in ("date_published", "date_modified"):
            _rfc3339(item[key])
        for author in item.get("authors", []):
            assert author.get("name") or author.get("url")
            if "url" in author:
                assert urlsplit(author["url"]).scheme in ("http", "https", "mailto")


def _rss_item(docs: dict[str, bytes], title: str) -> Any:
    return next(i for i in safe_xml(docs["rss"]).findall("channel/item") if i.findtext("title") == title)


def _atom_entry(docs: dict[str, bytes], title: str) -> Any:
    return next(e for e in safe_xml(docs["atom"]).findall(f"{A}entry") if e.findtext(f"{A}title") == title)


def _json_item(docs: dict[str, bytes], title: str) -> Any:
    return next(i for i in json.loads(docs["json"])["items"] if i["title"] == title)


def test_plain_text_is_escaped_where_rss_means_html() -> None:
    items = [("t", json.dumps({"title": "T", "content": XSS, "summary": "a < b & <b>c</b>"})),
             ("p", XSS), ("a", HOSTILE_ITEMS[4][1])]
    docs = render_documents(META, stored(items), ("atom", "rss", "json"))
    rss_t = _rss_item(docs, "T")
    # the reader takes these as HTML: the text must come out as the same text, not as an element
    assert rss_t.findtext(CONTENT_NS) == "&lt;img src=x onerror=alert(1)&gt;"
    assert rss_t.findtext("description") == "a &lt; b &amp; &lt;b&gt;c&lt;/b&gt;"
    assert active_markup(_rss_item(docs, "&lt;img src=x onerror=alert(1)&gt;").findtext("description") or "") == []
    rss_a = _rss_item(docs, "Atom text")
    assert rss_a.findtext(CONTENT_NS) == "&lt;script&gt;alert(9)&lt;/script&gt;"
    assert "onerror" not in (rss_a.findtext("description") or "")  # html summary: sanitised
    # Atom says which is which: text stays text; JSON Feed keeps text in content_text
    atom_t = _atom_entry(docs, "T")
    assert atom_t.find(f"{A}content").get("type") == "text" and atom_t.findtext(f"{A}content") == XSS
    assert _json_item(docs, "T")["content_text"] == XSS and "content_html" not in _json_item(docs, "T")


def test_links_schemes_relative_and_iri() -> None:
    docs = render_documents(META, stored(HOSTILE_ITEMS), ("atom", "rss", "json"))
    assert _atom_entry(docs, "Links").find(f"{A}link") is None
    assert _rss_item(docs, "Links").find("link") is None and "url" not in _json_item(docs, "Links")
    assert _atom_entry(docs, "Links").find(f"{A}author/{A}uri") is None
    assert _atom_entry(docs, "Links").find(f"{A}author/{A}email") is None
    assert "url" not in _json_item(docs, "Data")
    # relative: resolved against the feed's link; characters IRIs exclude are percent-encoded
    assert _atom_entry(docs, "Relative").find(f"{A}link").get("href") == "https://site.example/posts/1?a=b%20c"
    assert _json_item(docs, "Relative")["url"] == "https://site.example/posts/1?a=b%20c"
    assert _atom_entry(docs, "Relative").findtext(f"{A}author/{A}uri") == "mailto:ann@example.org"
    # an IRI: kept in Atom and JSON Feed, written as a URI in RSS
    iri = "https://bücher.example/straße?q=ü#frag"
    assert _atom_entry(docs, "IRI").find(f"{A}link").get("href") == iri
    assert _json_item(docs, "IRI")["url"] == iri
    assert _rss_item(docs, "IRI").findtext("link") == "https://xn--bcher-kva.example/stra%C3%9Fe?q=%C3%BC#frag"
    # what was left out is said, once per item version
    notes: list[tuple[str, str]] = []
    render_documents(META, stored(HOSTILE_ITEMS), ("atom", "rss"), lambda item, note: notes.append((item, note)))
    assert {item for item, _ in notes} == {"links", "data-link", "dup-1"}
    assert any("javascript" in note for item, note in notes if item == "links")


def test_duplicate_ids_written_once_newest_kept() -> None:
    docs = render_documents(META, stored(HOSTILE_ITEMS[10:12]), ("atom", "rss", "json"))
    assert [e.findtext(f"{A}title") for e in safe_xml(docs["atom"]).findall(f"{A}entry")] == ["Dup 2"]
    assert [i.findtext("title") for i in safe_xml(docs["rss"]).findall("channel/item")] == ["Dup 2"]
    assert [i["title"] for i in json.loads(docs["json"])["items"]] == ["Dup 2"]


def test_feed_updated_never_future_nor_epoch() -> None:
    docs = render_documents(META, stored([HOSTILE_ITEMS[-1], ("now", json.dumps({"title": "N"}))]), ("atom", "rss"))
    updated = _rfc3339(safe_xml(docs["atom"]).findtext(f"{A}updated") or "")
    assert updated.year < 2999 and updated > datetime(2023, 1, 1, tzinfo=UTC)
    # the entry keeps its own date; only the feed's is not taken from it
    assert _atom_entry(docs, "Future").findtext(f"{A}updated", "").startswith("2999-01-01")
    empty = render_documents(dataclasses.replace(META, updated_when_empty=1_700_000_000.0), [], ("atom", "rss"))
    assert safe_xml(empty["atom"]).findtext(f"{A}updated", "").startswith("2023-11-14T22:13:20")
    assert "1970" not in (safe_xml(empty["rss"]).findtext("channel/lastBuildDate") or "1970")


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_document(tmp_path: Path, clock: Any = None, max_items: int = 50, **meta: Any) -> FeedDocument:
    return FeedDocument(
        dataclasses.replace(META, **meta), directory=tmp_path / "out", formats=("atom", "rss", "json"),
        max_items=max_items, max_staleness=0.05, quiet=0.005, max_payload_bytes=1_000_000,
        clock=clock or time.time,
    )


async def test_edit_within_the_second_moves_updated(tmp_path: Path) -> None:
    clock = FakeClock(1_700_000_000.1)
    doc = make_document(tmp_path, clock)
    doc.load()
    doc.put("1", json.dumps({"title": "One"}))
    await doc.render_now()
    first = _atom_entry({"atom": doc.served["atom"].body}, "One").findtext(f"{A}updated")
    clock.now += 0.5
    doc.put("1", json.dumps({"title": "One", "content": "edited"}))
    await doc.render_now()
    second = _atom_entry({"atom": doc.served["atom"].body}, "One").findtext(f"{A}updated")
    assert _rfc3339(second) > _rfc3339(first)
    rss = feedparser.parse(doc.served["rss"].body)
    assert rss.bozo == 0


async def test_empty_document_updated_is_when_it_last_changed(tmp_path: Path) -> None:
    clock = FakeClock(1_700_000_000.0)
    doc = make_document(tmp_path, clock)
    doc.load()
    await doc.render_now()
    assert not _rfc3339(safe_xml(doc.served["atom"].body).findtext(f"{A}updated") or "").year == 1970
    doc.put("1", json.dumps({"title": "One"}))
    clock.now += 100
    doc.remove("1")
    await doc.render_now()
    assert _rfc3339(safe_xml(doc.served["atom"].body).findtext(f"{A}updated") or "").timestamp() == clock.now
    # kept over a restart: the same bytes again
    again = make_document(tmp_path, FakeClock(1_800_000_000.0))
    again.load()
    await again.render_now(first=True)
    assert again.served["atom"].body == doc.served["atom"].body


# ------------------------------------------------------------------ bounded state (issue 12 §4)


async def test_state_file_bounded_by_the_window(tmp_path: Path) -> None:
    doc = make_document(tmp_path, max_items=5)
    doc.load()
    for i in range(2000):
        doc.put(str(i), json.dumps({"title": f"T{i}"}))
    await doc.render_now()
    state = json.loads(doc.state_path.read_bytes())
    assert [i["id"] for i in state["items"]] == [str(i) for i in range(1995, 2000)]
    assert sorted(state["known"], key=int) == [str(i) for i in range(1945, 1995)]  # 10 windows
    size = len(doc.state_path.read_bytes())
    for i in range(2000, 4000):
        doc.put(str(i), json.dumps({"title": f"T{i}"}))
    await doc.render_now()
    assert len(doc.state_path.read_bytes()) <= size + 100  # flat, however many went through
    # a state file written before the bound is cut when read
    state["known"] = {str(i): ["h", i + 1] for i in range(1995)}
    doc.state_path.write_text(json.dumps(state))
    again = make_document(tmp_path, max_items=5)
    again.load()
    assert list(again.known) == [str(i) for i in range(1945, 1995)]
    # an edit of a forgotten item is an upsert (it may stand for a publish coalesced with it)
    assert again.put("3", json.dumps({"title": "T3 edited"})) is True and "3" in again.items


# ------------------------------------------------------------------ outsiders' input and labels (issue 11 §6)


async def test_unknown_formats_and_names_count_under_fixed_labels(harness) -> None:  # type: ignore[no-untyped-def]
    from prometheus_client import generate_latest

    sink = make_sink(harness)
    await sink.open()
    for i in range(60):
        assert (await get(f"{harness.base_url}/feeds/news.x{i}"))[0] == 404
        assert (await get(f"{harness.base_url}/feeds/nope{i}.atom"))[0] == 404
        assert (await get(f"{harness.base_url}/feeds/{i}"))[0] == 404
    assert (await get(f"{harness.base_url}/feeds/news.atom"))[0] == 200
    text = generate_latest(harness.context.metrics).decode()
    formats = {line.split('format="')[1].split('"')[0] for line in text.splitlines()
               if line.startswith("thoonk_bridge_feeds_requests_total{")}
    assert formats == {"other", "atom"}
    assert len(harness.plugin.fleet.copies) == 0  # nothing cached for names nobody stored


# ------------------------------------------------------------------ failures an operator must see (issue 11 §7)


def _count(logs: list[dict[str, Any]], event: str) -> int:
    return sum(1 for line in logs if line["event"].startswith(event))


async def test_unwritable_directory_degrades_keeps_serving_and_recovers(harness) -> None:  # type: ignore[no-untyped-def]
    # Tests run as root, where chmod does not stop writes: the directory is replaced by a plain
    # file instead, so every write fails with a real OS error (ENOTDIR / EEXIST).
    out = harness.context.state_dir / "own"
    sink = make_sink(harness, output_dir=str(out))
    await sink.open()
    await sink.apply(pub("1", {"title": "One"}))
    await settle(sink)
    for path in out.iterdir():
        path.unlink()
    out.rmdir()
    out.write_bytes(b"not a directory")
    with structlog.testing.capture_logs() as logs:
        for i in range(2, 40):
            await sink.apply(pub(str(i), {"title": f"T{i}"}))
            await asyncio.wait_for(settle(sink), 30)  # bounded: a render that keeps failing never settles
    assert sink.problem() is not None and "Errno" in sink.problem()
    health = harness.plugin.health()
    assert health.status == "degraded" and "feeds:news" in health.detail and "Errno" in health.detail
    status, _, body = await get(f"{harness.base_url}/feeds/news.atom")
    assert status == 200 and b"T39" in body  # the current rendering, from memory
    assert 1 <= _count(logs, "feed files cannot be written") <= 2  # backed off: not a line per event
    # the disk is back: the retry writes the current documents, the degraded state ends
    out.unlink()
    with structlog.testing.capture_logs() as logs:
        for _ in range(400):
            if sink.problem() is None:
                break
            await asyncio.sleep(0.05)
    assert sink.problem() is None and harness.plugin.health().status == "ready"
    assert b"T39" in (out / "news.atom").read_bytes()
    assert _count(logs, "feed files written again") == 1


async def test_write_error_at_open_still_serves(harness) -> None:  # type: ignore[no-untyped-def]
    # A full disk, simulated in a real sink: every atomic write fails with ENOSPC.
    import errno

    def full(path: Path, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    sink = make_sink(harness)
    original = document_module.atomic_write
    document_module.atomic_write = full
    try:
        await sink.open()
        await sink.apply(pub("1", {"title": "One"}))
        await asyncio.wait_for(settle(sink), 30)
        assert "No space left on device" in (sink.problem() or "")
        status, _, body = await get(f"{harness.base_url}/feeds/news.rss")
        assert status == 200 and b"One" in body
    finally:
        document_module.atomic_write = original


async def test_left_over_temporary_files_removed_on_open(harness) -> None:  # type: ignore[no-untyped-def]
    out = harness.context.state_dir
    out.mkdir(parents=True, exist_ok=True)
    mine = [".news.atom.k3j_9x0a.tmp", ".news.state.json.abcdefgh.tmp", ".news.json.ZZZZ1234.tmp"]
    others = [".news.atom.atom.abcdefgh.tmp", ".other.atom.abcdefgh.tmp", "news.atom.tmp", ".news.atom.x.tmp"]
    for name in mine + others:
        (out / name).write_bytes(b"half a docu")
    sink = make_sink(harness)
    await sink.open()
    left = {p.name for p in out.iterdir()}
    assert not set(mine) & left
    assert set(others) <= left


async def test_large_payloads_and_stored_items_parsed_off_the_event_loop(harness, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    loop_thread = threading.get_ident()
    parsed_on: list[tuple[int, int]] = []

    def recording(original: Any) -> Any:
        def recording_parse(payload: Any, *args: Any, **kwargs: Any) -> Any:
            parsed_on.append((len(payload), threading.get_ident()))
            return original(payload, *args, **kwargs)

        return recording_parse

    def big_parses() -> list[int]:
        return [thread for size, thread in parsed_on if size == len(big)]

    big = json.dumps({"title": "Big", "content": "<p>" + "x" * 200_000 + "</p>", "content_type": "html"})
    monkeypatch.setattr(document_module, "parse", recording(document_module.parse))
    # an event's payload is parsed once, by the event (ItemEvent.parsed), for the route's sinks
    monkeypatch.setattr(plugin_module, "parse_payload", recording(plugin_module.parse_payload))
    sink = make_sink(harness)
    await sink.open()
    await sink.apply(pub("big", big))
    await settle(sink)
    await sink.close()
    assert big_parses() and loop_thread not in big_parses()
    parsed_on.clear()
    again = make_sink(harness)
    await again.open()  # the state holds the big item: loading parses it
    assert big_parses() and loop_thread not in big_parses()
    await again.close()


async def test_redis_away_logged_once_per_interval_not_per_request(harness, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    async def redis_away(name: str, fmt: str) -> None:
        raise ConnectionError("Connection refused")

    monkeypatch.setattr(harness.plugin.fleet, "read", redis_away)
    with structlog.testing.capture_logs() as logs:
        for i in range(50):
            status, headers, _ = await get(f"{harness.base_url}/feeds/elsewhere{i}.atom")
            assert status == 503 and headers["Retry-After"] == "1"
    assert _count(logs, "stored feed document unreadable") == 1


_FUZZ_TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=40) | st.sampled_from(
    ["<script>x</script>", "]]>", "javascript:alert(1)", "//x", "http://[::1", "http://a:99999/", "mailto:a@b",
     "https://ü.example/ä b", "\x00\x1f", "&amp;", "<!--", "http://", "x:y", XSS]
)
_FUZZ_ITEM = st.fixed_dictionaries(
    {},
    optional={
        **{key: _FUZZ_TEXT for key in ("id", "title", "link", "content", "summary", "author", "author_email",
                                       "author_uri")},
        "content_type": st.sampled_from(["text", "html", "xhtml"]),
        "summary_type": st.sampled_from(["text", "html", "xhtml"]),
    },
)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(_FUZZ_ITEM, min_size=1, max_size=4))
def test_any_items_render_well_formed_documents(objects: list[dict[str, str]]) -> None:
    items = []
    for n, obj in enumerate(objects):
        payload = json.dumps(obj)
        try:
            stored_items = stored([(str(n), payload)])
        except PayloadError:
            continue  # refused at the door (dead-lettered), never rendered
        items.append(dataclasses.replace(stored_items[0], seq=n))
    docs = render_documents(META, list(reversed(items)), ("atom", "rss", "json"))
    for fmt in ("atom", "rss"):
        safe_xml(docs[fmt])
        parsed = feedparser.parse(docs[fmt])
        assert parsed.bozo == 0, (fmt, parsed.get("bozo_exception"))
        assert len(parsed.entries) == len({p.get("id") or "" for p in parsed.entries})
    for item in json.loads(docs["json"])["items"]:
        assert isinstance(item["id"], str) and ("content_html" in item or "content_text" in item)
        assert active_markup(item.get("content_html", "")) == []


async def test_failing_render_logged_once_then_backed_off(harness, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    sink = make_sink(harness)
    await sink.open()

    def broken(*args: Any, **kwargs: Any) -> dict[str, bytes]:
        raise ValueError("renderer bug")

    monkeypatch.setattr(document_module, "render_documents", broken)
    with structlog.testing.capture_logs() as logs:
        for i in range(20):
            await sink.apply(pub(str(i), {"title": f"T{i}"}))
            await asyncio.sleep(0.05)  # events keep coming while renders fail (max_staleness 0.05 s)
        await asyncio.sleep(0.5)
    assert _count(logs, "feed render failed") == 1
    assert (await get(f"{harness.base_url}/feeds/news.atom"))[0] == 200  # the last good rendering
