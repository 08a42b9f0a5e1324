"""thoonk_bridge.feedparse: outside Atom / RSS / JSON Feed documents into items (pure logic)."""

from __future__ import annotations

import json

import pytest

from thoonk_bridge.feedparse import FeedParseError, Identity, entry_identity, parse_feed
from thoonk_bridge.payload import Entry, Format, parse

ATOM = b"""<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom">
  <title>Example</title>
  <id>urn:feed</id>
  <updated>2024-05-02T10:00:00Z</updated>
  <link rel="alternate" href="https://example.org/"/>
  <link rel="self" href="https://example.org/feed.atom"/>
  <link rel="hub" href="https://hub.example.org/"/>
  <entry>
    <id>urn:2</id>
    <title type="html">Second &lt;b&gt;post&lt;/b&gt;</title>
    <updated>2024-05-02T10:00:00Z</updated>
    <published>2024-05-01T09:00:00+02:00</published>
    <link href="/posts/2"/>
    <author><name>Ann</name><email>ann@example.org</email></author>
    <category term="news"/><category term="caf\xc3\xa9"/>
    <content type="html">&lt;p&gt;Hello &lt;b&gt;world&lt;/b&gt;&lt;/p&gt;</content>
  </entry>
  <entry>
    <id>urn:1</id>
    <title>First \xe2\x9c\x93</title>
    <updated>2024-05-01T10:00:00Z</updated>
    <link href="https://example.org/posts/1"/>
    <summary>Just a summary</summary>
  </entry>
</feed>
"""

RSS = b"""<?xml version="1.0"?>
<rss version="2.0" xmlns:atom="http://www.w3.org/2005/Atom" xmlns:content="http://purl.org/rss/1.0/modules/content/">
 <channel>
  <title>RSS example</title>
  <link>https://example.org/</link>
  <description>d</description>
  <atom:link rel="hub" href="https://hub.example.org/"/>
  <atom:link rel="self" href="https://example.org/rss" type="application/rss+xml"/>
  <item>
   <title>With guid</title>
   <guid isPermaLink="false">guid-2</guid>
   <link>https://example.org/2</link>
   <pubDate>Thu, 02 May 2024 10:00:00 GMT</pubDate>
   <description>Summary two</description>
   <content:encoded><![CDATA[<p>Body &nbsp;two</p>]]></content:encoded>
   <category>tech</category>
  </item>
  <item>
   <title>Only link</title>
   <link>https://example.org/1</link>
  </item>
  <item>
   <description>Neither guid nor link</description>
  </item>
 </channel>
</rss>
"""

JSONFEED = {
    "version": "https://jsonfeed.org/version/1.1",
    "title": "JSON example",
    "home_page_url": "https://example.org/",
    "feed_url": "https://example.org/feed.json",
    "hubs": [{"type": "WebSub", "url": "https://hub.example.org/"}, {"type": "rssCloud", "url": "x"}],
    "items": [
        {
            "id": "j2",
            "url": "https://example.org/j2",
            "title": "Two",
            "content_html": "<p>two</p>",
            "summary": "s2",
            "date_published": "2024-05-02T10:00:00Z",
            "date_modified": "2024-05-03T10:00:00+01:00",
            "authors": [{"name": "Bob", "url": "https://bob.example"}],
            "tags": ["a", "b"],
        },
        {"id": 1, "content_text": "plain one"},
        {"id": "j0", "title": "bad date", "date_published": "yesterday"},
    ],
}


def test_atom_fields_and_order() -> None:
    feed = parse_feed(ATOM, "application/atom+xml", base_url="https://example.org/feed.atom")
    assert feed.kind == "atom"
    assert feed.title == "Example"
    assert feed.hubs == ["https://hub.example.org/"]
    assert feed.self_url == "https://example.org/feed.atom"
    assert [item_id for item_id, _ in feed.items] == ["urn:1", "urn:2"]  # oldest first
    first = parse(feed.items[0][1], Format.JSON)
    assert first.title == "First ✓" and first.summary == "Just a summary"
    second = parse(feed.items[1][1], Format.JSON)
    assert second.id == "urn:2"
    assert second.title == "Second post"
    assert second.link == "https://example.org/posts/2"  # relative link resolved
    assert second.content_type == "html" and "<b>world</b>" in (second.content or "")
    assert second.author == "Ann" and second.author_email == "ann@example.org"
    assert second.categories == ["news", "café"]
    assert second.updated is not None and second.updated.isoformat() == "2024-05-02T10:00:00+00:00"
    assert second.published is not None and second.published.isoformat() == "2024-05-01T07:00:00+00:00"
    assert feed.problems == []


def test_atom_payload_format() -> None:
    feed = parse_feed(ATOM, fmt=Format.ATOM)
    entry = parse(feed.items[1][1], Format.ATOM)
    assert entry.id == "urn:2" and entry.title == "Second post"


def test_rss_identity_and_fields() -> None:
    feed = parse_feed(RSS, "application/rss+xml")
    assert feed.kind == "rss"
    assert feed.hubs == ["https://hub.example.org/"]
    assert feed.self_url == "https://example.org/rss"
    ids = [item_id for item_id, _ in feed.items]
    assert ids[1:] == ["https://example.org/1", "guid-2"]
    assert ids[0].startswith("sha256:")
    entry = parse(feed.items[2][1], Format.JSON)
    assert entry.title == "With guid" and entry.summary == "Summary two"
    assert entry.content is not None and "Body" in entry.content
    assert entry.categories == ["tech"]
    assert entry.published is not None and entry.published.isoformat() == "2024-05-02T10:00:00+00:00"


def test_identity_modes() -> None:
    by_link = parse_feed(RSS, identity=Identity.LINK)
    assert [i for i, _ in by_link.items] == ["https://example.org/1", "https://example.org/2"]
    assert any("no link" in p for p in by_link.problems)
    by_id = parse_feed(RSS, identity="id")
    assert [i for i, _ in by_id.items] == ["guid-2"]
    by_hash = parse_feed(RSS, identity="hash")
    assert all(i.startswith("sha256:") for i, _ in by_hash.items) and len(by_hash.items) == 3
    # hash identity is stable across parses
    assert by_hash.items == parse_feed(RSS, identity="hash").items
    assert entry_identity(Entry(id="x" * 5000)) == entry_identity(Entry(id="x" * 5000))
    assert (entry_identity(Entry(id="x" * 5000)) or "").startswith("sha256:")
    assert entry_identity(Entry(id="  ", link=" https://l ")) == "https://l"


def test_an_id_with_a_control_character_becomes_a_stable_hash() -> None:
    # NUL separates fields in Thoonk jobs; an outside feed must not put one in an item id
    doc = {"version": "https://jsonfeed.org/version/1.1", "title": "t",
           "items": [{"url": "\x00"}, {"id": "a\tb", "title": "tab"}, {"id": "plain", "title": "p"}]}
    feed = parse_feed(json.dumps(doc).encode(), "application/feed+json")
    ids = [i for i, _ in feed.items]
    assert len(ids) == 3 and "plain" in ids
    assert all(not any(c < " " for c in i) for i in ids)
    assert sum(i.startswith("sha256:") for i in ids) == 2
    assert ids == [i for i, _ in parse_feed(json.dumps(doc).encode(), "application/feed+json").items]


def test_json_feed() -> None:
    feed = parse_feed(json.dumps(JSONFEED).encode(), "application/feed+json")
    assert feed.kind == "json"
    assert feed.hubs == ["https://hub.example.org/"]
    assert feed.self_url == "https://example.org/feed.json"
    assert [i for i, _ in feed.items] == ["j0", "1", "j2"]
    two = parse(feed.items[2][1], Format.JSON)
    assert two.content == "<p>two</p>" and two.content_type == "html"
    assert two.author == "Bob" and two.author_uri == "https://bob.example"
    assert two.categories == ["a", "b"]
    assert two.updated is not None and two.updated.isoformat() == "2024-05-03T10:00:00+01:00"
    one = parse(feed.items[1][1], Format.JSON)
    assert one.content == "plain one" and one.content_type == "text"
    assert any("date_published" in p for p in feed.problems)


def test_json_feed_10_author() -> None:
    doc = {
        "version": "https://jsonfeed.org/version/1",
        "items": [{"id": "a", "title": "t", "author": {"name": "Old"}}],
    }
    feed = parse_feed(json.dumps(doc).encode())
    assert parse(feed.items[0][1], Format.JSON).author == "Old"


def test_duplicates_and_empty_entries() -> None:
    doc = {
        "version": "https://jsonfeed.org/version/1.1",
        "items": [{"id": "a", "title": "new"}, {"id": "a", "title": "old"}, {"id": "b"}, "junk"],
    }
    feed = parse_feed(json.dumps(doc).encode())
    assert [i for i, _ in feed.items] == ["a"]
    assert parse(feed.items[0][1], Format.JSON).title == "new"
    assert len(feed.problems) == 3


@pytest.mark.parametrize(
    ("data", "ctype", "fragment"),
    [
        (b"", None, "empty"),
        (b"   \n ", "application/xml", "empty"),
        (b"<!DOCTYPE html><html><body>hi</body></html>", "text/html", "HTML page"),
        (b"<html><head><title>x</title></head></html>", "application/xml", "HTML page"),
        (b'<html xmlns="http://www.w3.org/1999/xhtml"><head/></html>', "application/xhtml+xml", "HTML page"),
        (ATOM[: len(ATOM) // 2], "application/atom+xml", "truncated"),
        (b"<rss><channel><title>x</title></chanel></rss>", None, "not well-formed"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", None, "not an Atom, RSS"),
        (
            b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;">]><rss>&b;</rss>',
            None,
            "hostile",
        ),
        (b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><rss>&x;</rss>', None, "hostile"),
        (b"just text", "text/plain", "not XML or JSON"),
        (b"{not json", "application/json", "not valid JSON"),
        (b"[1, 2]", "application/json", "not an object"),
        (b'{"version": "x", "items": []}', None, "not a JSON Feed"),
        (b'{"version": "https://jsonfeed.org/version/1.1"}', None, "no items"),
        (b"\xff\xfe{", "application/feed+json", "UTF-8"),
    ],
)
def test_refused_documents(data: bytes, ctype: str | None, fragment: str) -> None:
    with pytest.raises(FeedParseError, match=fragment):
        parse_feed(data, ctype)


def test_size_limit() -> None:
    with pytest.raises(FeedParseError, match="too large"):
        parse_feed(ATOM, max_bytes=100)


def test_bare_doctype_and_undefined_entities_tolerated() -> None:
    doc = (
        b'<?xml version="1.0"?>\n<!DOCTYPE rss PUBLIC "-//Netscape Communications//DTD RSS 0.91//EN" '
        b'"http://my.netscape.com/publish/formats/rss-0.91.dtd">\n'
        b"<rss version='0.91'><channel><title>Old</title><link>https://o.example/</link>"
        b"<item><title>A&nbsp;B</title><link>https://o.example/1</link></item></channel></rss>"
    )
    feed = parse_feed(doc)
    assert [i for i, _ in feed.items] == ["https://o.example/1"]


def test_control_characters_and_unicode() -> None:
    doc = {
        "version": "https://jsonfeed.org/version/1.1",
        "items": [{"id": "c", "title": "bell\x07 and emoji 🎉 and rtl \u202e", "content_text": "nul\x00"}],
    }
    feed = parse_feed(json.dumps(doc).encode(), fmt=Format.ATOM)
    entry = parse(feed.items[0][1], Format.ATOM)
    assert entry.title == "bell and emoji 🎉 and rtl \u202e"
