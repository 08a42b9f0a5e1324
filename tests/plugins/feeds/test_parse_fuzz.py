"""Fuzzing the outside-document parser: whatever bytes a stranger serves, parse_feed returns a
ParsedFeed with bounded, well-formed items or raises FeedParseError; nothing else escapes."""

from __future__ import annotations

import json
from xml.sax.saxutils import escape

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from thoonk_bridge.feedparse import FeedParseError, ParsedFeed, parse_feed

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=60)


def check(data: bytes, content_type: str | None = None, max_entries: int = 5) -> ParsedFeed | None:
    try:
        parsed = parse_feed(data, content_type, max_entries=max_entries)
    except FeedParseError as exc:
        assert str(exc)  # a message that says what was wrong
        return None
    assert parsed.kind in ("atom", "rss", "json")
    assert len(parsed.items) <= max_entries
    for item_id, payload in parsed.items:
        assert isinstance(item_id, str) and item_id and "\x00" not in item_id
        assert isinstance(payload, str)
    assert len({i for i, _ in parsed.items}) == len(parsed.items)  # one item per id
    return parsed


@FUZZ
@given(st.binary(max_size=400), st.sampled_from([None, "application/atom+xml", "application/feed+json",
                                                 "text/html", "application/xml"]))
def test_random_bytes_never_crash_the_parser(data: bytes, content_type: str | None) -> None:
    check(data, content_type)


@FUZZ
@given(st.lists(st.tuples(text, text, text), max_size=12), text)
def test_atom_documents_with_hostile_fields(entries: list[tuple[str, str, str]], title: str) -> None:
    body = "".join(
        f"<entry><id>{escape(i)}</id><title>{escape(t)}</title><content type='html'>{escape(c)}</content>"
        "<updated>2026-01-01T00:00:00Z</updated></entry>"
        for i, t, c in entries
    )
    doc = f"<?xml version='1.0' encoding='utf-8'?><feed xmlns='http://www.w3.org/2005/Atom'><title>{escape(title)}" \
          f"</title>{body}</feed>"
    parsed = check(doc.encode("utf-8", "surrogatepass"), "application/atom+xml")
    if parsed is not None:
        assert parsed.kind == "atom"


@FUZZ
@given(st.lists(st.dictionaries(st.sampled_from(["id", "url", "title", "content_html", "content_text",
                                                 "date_published", "authors", "tags"]),
                                st.one_of(text, st.integers(), st.none(), st.lists(text, max_size=3)),
                                max_size=6), max_size=12))
def test_json_feeds_with_any_item_shapes(items: list[dict[str, object]]) -> None:
    doc = {"version": "https://jsonfeed.org/version/1.1", "title": "t", "items": items}
    parsed = check(json.dumps(doc).encode(), "application/feed+json")
    if parsed is not None:
        assert parsed.kind == "json"


def test_entry_cap_holds_for_a_huge_document() -> None:
    entries = "".join(f"<entry><id>urn:x:{n}</id><title>t</title></entry>" for n in range(20_000))
    doc = f"<feed xmlns='http://www.w3.org/2005/Atom'><title>big</title>{entries}</feed>".encode()
    parsed = parse_feed(doc, "application/atom+xml", max_entries=100)
    assert len(parsed.items) == 100
    assert parsed.ignored_entries == 19_900
