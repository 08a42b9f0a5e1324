"""Entries and dates the payload tests share (the engine's payload package and the xmpp plugin's
elements)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from thoonk_bridge.payload import ATOM_NS, Entry

A = f"{{{ATOM_NS}}}"
WHEN = datetime(2024, 5, 17, 12, 30, 15, tzinfo=UTC)
LATER = datetime(2024, 5, 18, 8, 0, 0, 250000, tzinfo=timezone(timedelta(hours=2)))


def atom(body: str, root: str = "entry") -> str:
    return f'<{root} xmlns="{ATOM_NS}">{body}</{root}>'


FULL = Entry(
    id="tag:example.org,2024:1",
    title="Full entry",
    link="https://example.org/1?a=1&b=2",
    content="Line one\n  indented <not a tag> & more\n\ttabbed\r\nCRLF",
    content_type="text",
    summary="Short & sweet",
    author="Ada Lovelace",
    author_email="ada@example.org",
    author_uri="https://example.org/ada",
    published=WHEN,
    updated=LATER,
    categories=["news", "tech & science", "ünïcode"],
)
