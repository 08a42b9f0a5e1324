"""Documents from items: Atom 1.0 and RSS 2.0 through feedgen, JSON Feed 1.1 by hand. Pure logic.

Output is deterministic: the same items and metadata always give the same bytes (the feed's
``updated``/``lastBuildDate`` is the newest entry's date, never "now"), so ETags stay stable across
re-renders and restarts.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from feedgen.ext.base import BaseEntryExtension, BaseExtension
from feedgen.feed import FeedGenerator

from thoonk_bridge.payload import Entry, derive_title, html_to_text, sanitize_html

ATOM_NS = "http://www.w3.org/2005/Atom"
CONTENT_TYPES = {
    "atom": "application/atom+xml; charset=utf-8",
    "rss": "application/rss+xml; charset=utf-8",
    "json": "application/feed+json; charset=utf-8",
}
_XML_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_IRI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:\S+$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def xml_safe(text: str | None) -> str | None:
    """``text`` without the characters XML 1.0 forbids (lxml refuses them)."""
    return None if text is None else _XML_FORBIDDEN.sub("", text)


@dataclass
class StoredItem:
    """One item a document holds. ``seq`` orders items (higher is newer)."""

    id: str
    payload: str
    hash: str
    seq: int
    first_seen: float
    edited_at: float | None = None
    entry: Entry | None = field(default=None, compare=False, repr=False)
    prepared: object | None = field(default=None, compare=False, repr=False)  # cache of prepare()


@dataclass(frozen=True)
class FeedMeta:
    """Feed-level fields of one document set."""

    name: str
    title: str
    subtitle: str
    link: str
    author: str
    author_email: str | None
    language: str | None
    feed_id: str
    self_urls: dict[str, str]
    hub_url: str | None = None
    sanitize: bool = True


def _ts(value: float) -> datetime:
    return datetime.fromtimestamp(int(value), tz=UTC)


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None or value.utcoffset() is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).replace(microsecond=0)


@dataclass
class _Prepared:
    """An item's fields as the documents show them."""

    atom_id: str
    item_id: str
    title: str
    link: str | None
    content: str | None
    content_type: str  # text | html
    summary: str | None
    summary_type: str
    author: str | None
    author_email: str | None
    author_uri: str | None
    published: datetime
    updated: datetime
    categories: list[str]


def entry_atom_id(meta: FeedMeta, item: StoredItem) -> str:
    """The entry's Atom id / RSS guid: its own id when it is an IRI, else a UUID derived from the
    feed id and the item id (stable across re-renders, restarts and machines)."""
    own = (item.entry.id if item.entry else None) or ""
    own = own.strip()
    if own and _IRI.match(own):
        return own
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, meta.feed_id + '#' + (own or item.id))}"


def _markup(value: str | None, kind: str, sanitize: bool) -> tuple[str | None, str]:
    if value is None:
        return None, "text"
    if kind in ("html", "xhtml"):
        return xml_safe(sanitize_html(value) if sanitize else value), "html"
    return xml_safe(value), "text"


def prepare(meta: FeedMeta, item: StoredItem) -> _Prepared:
    """The item's fields as the documents show them (cached on the item: one sanitise per version)."""
    if isinstance(item.prepared, _Prepared):
        return item.prepared
    item.prepared = _prepare(meta, item)
    return item.prepared


def _prepare(meta: FeedMeta, item: StoredItem) -> _Prepared:
    entry = item.entry or Entry()
    content, content_type = _markup(entry.content, entry.content_type, meta.sanitize)
    summary, summary_type = _markup(entry.summary, entry.summary_type, meta.sanitize)
    title = entry.title
    if not title:
        title = derive_title(html_to_text(summary) if summary_type == "html" else summary) or derive_title(
            html_to_text(content) if content_type == "html" else content
        )
    title = xml_safe(title) or entry.link or item.id
    updated = _aware(entry.updated) or _ts(item.first_seen)
    if item.edited_at is not None:
        updated = max(updated, _ts(item.edited_at))
    published = _aware(entry.published) or _aware(entry.updated) or _ts(item.first_seen)
    return _Prepared(
        atom_id=xml_safe(entry_atom_id(meta, item)) or item.id,
        item_id=item.id,
        title=title,
        link=xml_safe(entry.link),
        content=content,
        content_type=content_type,
        summary=summary,
        summary_type=summary_type,
        author=xml_safe(entry.author or entry.author_email),
        author_email=xml_safe(entry.author_email),
        author_uri=xml_safe(entry.author_uri),
        published=min(published, updated),
        updated=updated,
        categories=[c for c in (xml_safe(t) for t in entry.categories) if c],
    )


class _HubLinks(BaseExtension):
    """Adds ``<atom:link rel="hub">`` to an RSS channel (feedgen writes only rel="self")."""

    hub: str | None = None

    def extend_ns(self) -> dict[str, str]:
        return {"atom": ATOM_NS}

    def extend_rss(self, feed):  # type: ignore[no-untyped-def]
        if self.hub:
            channel = feed[0]
            link = channel.makeelement(f"{{{ATOM_NS}}}link", {"rel": "hub", "href": self.hub})
            channel.insert(0, link)
        return feed


def _generator(meta: FeedMeta, prepared: Sequence[_Prepared], fmt: str) -> FeedGenerator:
    fg = FeedGenerator()
    fg.id(xml_safe(meta.feed_id))
    fg.title(xml_safe(meta.title))
    fg.subtitle(xml_safe(meta.subtitle))
    fg.description(xml_safe(meta.subtitle))
    fg.author({"name": xml_safe(meta.author), **({"email": meta.author_email} if meta.author_email else {})})
    # feedgen takes the RSS <link> from the last link added: the alternate one comes last.
    fg.link(href=meta.self_urls[fmt], rel="self")
    if meta.hub_url and fmt == "atom":
        fg.link(href=meta.hub_url, rel="hub")
    if meta.hub_url and fmt == "rss":
        fg.register_extension("thoonkhub", _HubLinks, BaseEntryExtension, atom=False, rss=True)
        fg.thoonkhub.hub = meta.hub_url  # type: ignore[attr-defined]
    fg.link(href=meta.link, rel="alternate")
    if meta.language:
        fg.language(meta.language)
    fg.generator("thoonk-bridge", uri="https://github.com/thoonk")
    newest = max((p.updated for p in prepared), default=_EPOCH)
    fg.updated(newest)
    fg.lastBuildDate(newest)
    # feedgen lists entries in the order added, newest first unless order="append" is used.
    for p in prepared:
        fe = fg.add_entry(order="append")
        fe.id(p.atom_id)
        fe.title(p.title)
        if p.link:
            fe.link(href=p.link, rel="alternate")
        fe.updated(p.updated)
        fe.published(p.published)
        if p.author:
            author = {"name": p.author}
            if p.author_email:
                author["email"] = p.author_email
            if p.author_uri:
                author["uri"] = p.author_uri
            fe.author(author)
        for term in p.categories:
            fe.category({"term": term})
        if p.summary is not None:
            fe.summary(p.summary, type=p.summary_type)
        if p.content is not None:
            fe.content(p.content, type="CDATA" if fmt == "rss" and p.content_type == "html" else p.content_type)
        elif not p.link and p.summary is None:
            fe.content(p.title, type="text")  # Atom: an entry needs content or an alternate link
        elif not p.link:
            fe.content(p.summary, type=p.summary_type)
    return fg


def _json_feed(meta: FeedMeta, prepared: Sequence[_Prepared]) -> bytes:
    doc: dict[str, object] = {
        "version": "https://jsonfeed.org/version/1.1",
        "title": meta.title,
        "home_page_url": meta.link,
        "feed_url": meta.self_urls["json"],
        "description": meta.subtitle,
        "authors": [{"name": meta.author}],
    }
    if meta.language:
        doc["language"] = meta.language
    if meta.hub_url:
        doc["hubs"] = [{"type": "WebSub", "url": meta.hub_url}]
    items = []
    for p in prepared:
        item: dict[str, object] = {"id": p.item_id, "title": p.title}
        if p.link:
            item["url"] = p.link
        if p.content is not None:
            item["content_html" if p.content_type == "html" else "content_text"] = p.content
        if p.summary is not None:
            item["summary"] = html_to_text(p.summary) if p.summary_type == "html" else p.summary
        if "content_html" not in item and "content_text" not in item:
            item["content_text"] = item.get("summary") or p.title  # JSON Feed: one of them is required
        item["date_published"] = p.published.isoformat().replace("+00:00", "Z")
        item["date_modified"] = p.updated.isoformat().replace("+00:00", "Z")
        if p.author:
            author: dict[str, str] = {"name": p.author}
            if p.author_uri:
                author["url"] = p.author_uri
            item["authors"] = [author]
        if p.categories:
            item["tags"] = p.categories
        items.append(item)
    doc["items"] = items
    return json.dumps(doc, ensure_ascii=False, indent=1).encode("utf-8", "replace")


def render_documents(meta: FeedMeta, items: Sequence[StoredItem], formats: Sequence[str]) -> dict[str, bytes]:
    """Bytes of each requested document; ``items`` newest first (already cut to ``max_items``)."""
    prepared = [prepare(meta, item) for item in items]
    out: dict[str, bytes] = {}
    for fmt in formats:
        if fmt == "json":
            out[fmt] = _json_feed(meta, prepared)
        elif fmt == "atom":
            out[fmt] = _generator(meta, prepared, "atom").atom_str(pretty=True, encoding="UTF-8")
        elif fmt == "rss":
            out[fmt] = _generator(meta, prepared, "rss").rss_str(pretty=True, encoding="UTF-8")
        else:
            raise ValueError(f"unknown document format {fmt!r}")
    return out
