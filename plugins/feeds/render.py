"""Documents from items: Atom 1.0 and RSS 2.0 through feedgen, JSON Feed 1.1 by hand. Pure logic.

Output is deterministic: the same items and metadata always give the same bytes (the feed's
``updated``/``lastBuildDate`` is derived from the entries, never "now"), so ETags stay stable across
re-renders and restarts.

Items are untrusted, and feed readers show documents in web views, so what goes out is safe to
render whatever the items hold:

- HTML is sanitised (:func:`thoonk_bridge.payload.sanitize_html`), plain text written where a
  format means HTML (RSS ``<description>``/``<content:encoded>``) is HTML-escaped, and an RSS
  ``<title>`` that looks like markup is escaped too (readers differ on whether it is HTML).
- Links keep only the schemes of :data:`LINK_SCHEMES` (:data:`AUTHOR_URI_SCHEMES` for an author's
  URI); relative ones are resolved against the feed's ``link``; RSS gets URIs (IRIs converted).
- An entry id is written once per document (a later item with the same Atom id is left out).
"""

from __future__ import annotations

import html
import json
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urljoin, urlsplit, urlunsplit

import nh3
from feedgen.ext.base import BaseEntryExtension, BaseExtension
from feedgen.feed import FeedGenerator

from thoonk_bridge.payload import MAX_HTML_DEPTH, Entry, derive_title, html_to_text, model, sanitize_html

ATOM_NS = "http://www.w3.org/2005/Atom"
CONTENT_TYPES = {
    "atom": "application/atom+xml; charset=utf-8",
    "rss": "application/rss+xml; charset=utf-8",
    "json": "application/feed+json; charset=utf-8",
}
# An absolute IRI (RFC 3987) as far as an id needs: a scheme, then no space, control or the ASCII
# characters IRIs exclude.
_IRI = re.compile(r'^[A-Za-z][A-Za-z0-9+.-]*:[^\s<>"{}|\\^`\x00-\x1f\x7f]+$')
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
LINK_SCHEMES = frozenset({"http", "https"})
"""Schemes an entry's link may have; other links are left out (with a logged note)."""
AUTHOR_URI_SCHEMES = frozenset({"http", "https", "mailto"})
"""Schemes an author's URI may have."""
# Characters an IRI may not hold as they are (RFC 3987): percent-encoded where a link keeps them.
_NOT_IN_IRI = re.compile(r'[\s<>"{}|\\^`\x00-\x1f\x7f]')
_EMAIL = re.compile(r"^[^@\s<>()\[\],;:\\\"]+@[^@\s<>()\[\],;:\\\"]+\.[^@\s<>()\[\],;:\\\"]+$")
# What makes a plain-text RSS title act as markup in a reader that takes it as HTML: a comment,
# processing instruction or end tag, a tag with attributes (event handlers work on any element,
# known or not), or an element HTML knows. "Fish <and> chips" stays as it is.
_KNOWN_TAGS = frozenset(nh3.ALLOWED_TAGS) | {
    "applet", "audio", "base", "body", "button", "dialog", "embed", "form", "frame", "frameset",
    "head", "html", "iframe", "image", "input", "isindex", "keygen", "link", "marquee", "math",
    "meta", "noscript", "object", "plaintext", "portal", "script", "select", "source", "style",
    "svg", "template", "textarea", "title", "video", "xmp",
}  # fmt: skip
_TAG_START = re.compile(r"<(?:[!?/]|[A-Za-z][^\s/>]*(?=[\s/])|([A-Za-z][^\s/>]*)>)")


def _looks_like_markup(text: str) -> bool:
    return any(m.group(1) is None or m.group(1).lower() in _KNOWN_TAGS for m in _TAG_START.finditer(text))

Note = Callable[[str, str], None]
"""Called with (item id, what was left out) when an item's field cannot be published."""


def xml_safe(text: str | None) -> str | None:
    """``text`` without the characters XML 1.0 forbids (lxml refuses them); None stays None."""
    return None if text is None else model.xml_safe(text)


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
    max_html_depth: int = MAX_HTML_DEPTH
    updated_when_empty: float = 0.0  # the feed's ``updated`` while it holds no entry (epoch seconds)


def _ts(value: float) -> datetime:
    # Sub-second precision kept: an edit within the second of the first sighting still moves
    # ``updated`` (readers compare it to notice edits).
    return datetime.fromtimestamp(value, tz=UTC)


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None or value.utcoffset() is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _uri(iri: str) -> str:
    """``iri`` as a URI (RFC 3987 section 3.1): the host in IDNA, other non-ASCII percent-encoded."""
    parts = urlsplit(iri)
    netloc = parts.netloc
    if not netloc.isascii():
        userinfo, at, hostport = netloc.rpartition("@")
        host, colon, port = hostport.partition(":") if not hostport.startswith("[") else (hostport, "", "")
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            host = quote(host, safe="")
        netloc = (quote(userinfo, safe=":%") + at if at else "") + host + colon + port
    def encode(part: str) -> str:
        return quote(part, safe="!#$%&'()*+,/:;=?@[]~")
    return urlunsplit((parts.scheme, netloc, encode(parts.path), encode(parts.query), encode(parts.fragment)))


def safe_link(value: str | None, base: str, schemes: frozenset[str]) -> tuple[str | None, str | None]:
    """(the link to publish or None, why it was left out or None).

    Relative links are resolved against ``base`` (the feed's ``link``); the result must have one of
    ``schemes`` (and a host, for http/https). Characters IRIs exclude (spaces, ``<``, quotes...)
    are percent-encoded; non-ASCII is kept (an IRI; :func:`_uri` converts where needed).
    """
    if value is None:
        return None, None
    text = (xml_safe(value) or "").strip()
    if not text:
        return None, None
    try:
        resolved = text if _SCHEME.match(text) else urljoin(base, text)
        parts = urlsplit(resolved)  # also drops tabs and line breaks, the way browsers do
        scheme = parts.scheme.lower()
        if scheme not in schemes:
            return None, f"link with scheme {scheme or '(none)'!r} left out"
        if scheme in ("http", "https") and not parts.hostname:
            return None, "link without a host left out"
        link = urlunsplit(parts)
    except ValueError as exc:  # a bad port or IPv6 literal
        return None, f"malformed link left out ({exc})"
    link = _NOT_IN_IRI.sub(lambda m: quote(m.group(0), safe=""), link)
    return link, None


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
    seen: datetime  # when this version reached the sink (never in the future)
    categories: list[str]
    notes: list[str] = field(default_factory=list)  # fields left out, for the log
    rss: _RssFields | None = None  # made on the first RSS render, then reused


@dataclass(frozen=True)
class _RssFields:
    """An item's fields as RSS needs them: URIs, and HTML where RSS means HTML."""

    title: str
    link: str | None
    author_uri: str | None
    description: str | None
    content: str | None


def _rss_fields(p: _Prepared) -> _RssFields:
    if p.rss is None:
        # RSS titles are plain text by the profile, but some readers take them as HTML.
        title = html.escape(p.title, quote=False) if _looks_like_markup(p.title) else p.title
        # <description> and <content:encoded> are HTML by definition: text goes in escaped.
        content = None if p.content is None else _as_html(p.content, p.content_type)
        if content is None and not p.link and p.summary is None:
            content = html.escape(p.title, quote=False)
        p.rss = _RssFields(
            title=title,
            link=None if p.link is None else _uri(p.link),
            author_uri=None if p.author_uri is None else _uri(p.author_uri),
            description=None if p.summary is None else _as_html(p.summary, p.summary_type),
            content=content,
        )
    return p.rss


def entry_atom_id(meta: FeedMeta, item: StoredItem) -> str:
    """The entry's Atom id / RSS guid: its own id when it is an IRI, else a UUID derived from the
    feed id and the item id (stable across re-renders, restarts and machines)."""
    own = (item.entry.id if item.entry else None) or ""
    own = own.strip()
    if own and _IRI.match(own):
        return own
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, meta.feed_id + '#' + (own or item.id))}"


def _markup(value: str | None, kind: str, meta: FeedMeta) -> tuple[str | None, str]:
    if value is None:
        return None, "text"
    if kind in ("html", "xhtml"):
        return xml_safe(sanitize_html(value, max_depth=meta.max_html_depth) if meta.sanitize else value), "html"
    return xml_safe(value), "text"


def _as_html(value: str, kind: str) -> str:
    """HTML for a format whose field is HTML by definition (RSS description): text is escaped."""
    return value if kind == "html" else html.escape(value, quote=False)


def prepare(meta: FeedMeta, item: StoredItem, note: Note | None = None) -> _Prepared:
    """The item's fields as the documents show them (cached on the item: one sanitise per version).

    ``note`` hears about the fields left out, once per item version.
    """
    if isinstance(item.prepared, _Prepared):
        return item.prepared
    prepared = _prepare(meta, item)
    if note is not None:
        for message in prepared.notes:
            note(item.id, message)
    item.prepared = prepared
    return prepared


def _prepare(meta: FeedMeta, item: StoredItem) -> _Prepared:
    entry = item.entry or Entry()
    notes: list[str] = []
    content, content_type = _markup(entry.content, entry.content_type, meta)
    summary, summary_type = _markup(entry.summary, entry.summary_type, meta)
    link, why = safe_link(entry.link, meta.link, LINK_SCHEMES)
    if why:
        notes.append(f"link: {why}")
    author_uri, why = safe_link(entry.author_uri, meta.link, AUTHOR_URI_SCHEMES)
    if why:
        notes.append(f"author_uri: {why}")
    author_email = xml_safe(entry.author_email)
    if author_email is not None and not _EMAIL.match(author_email.strip()):
        notes.append("author_email: not an email address, left out")
        author_email = None
    title = entry.title
    if not title:
        title = derive_title(
            html_to_text(summary) if summary is not None and summary_type == "html" else summary
        ) or derive_title(html_to_text(content) if content is not None and content_type == "html" else content)
    title = xml_safe(title) or link or xml_safe(item.id) or "-"
    seen = _ts(item.first_seen if item.edited_at is None else item.edited_at)
    updated = _aware(entry.updated) or _ts(item.first_seen)
    if item.edited_at is not None:
        updated = max(updated, _ts(item.edited_at))
    published = _aware(entry.published) or _aware(entry.updated) or _ts(item.first_seen)
    return _Prepared(
        atom_id=xml_safe(entry_atom_id(meta, item)) or item.id,
        item_id=item.id,
        title=title,
        link=link,
        content=content,
        content_type=content_type,
        summary=summary,
        summary_type=summary_type,
        author=xml_safe(entry.author or author_email),
        author_email=author_email.strip() if author_email else None,
        author_uri=author_uri,
        published=min(published, updated),
        updated=updated,
        seen=seen,
        categories=[c for c in (xml_safe(t) for t in entry.categories) if c],
        notes=notes,
    )


def feed_updated(meta: FeedMeta, prepared: Sequence[_Prepared]) -> datetime:
    """The feed's ``updated``: the newest entry's, where an entry dated in the future counts as of
    when it reached the sink (a payload's date is not trusted to be in the past); an empty feed
    gives ``meta.updated_when_empty`` (the time it last changed), never 1970."""
    newest = max((min(p.updated, p.seen) for p in prepared), default=None)
    return newest if newest is not None else _ts(meta.updated_when_empty)


class _HubLinks(BaseExtension):
    """Adds ``<atom:link rel="hub">`` to an RSS channel (feedgen writes only rel="self")."""

    hub: str | None = None

    def extend_ns(self) -> dict[str, str]:
        return {"atom": ATOM_NS}

    def extend_rss(self, feed: Any) -> Any:
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
    fg.link(href=meta.self_urls[fmt], rel="self", type=CONTENT_TYPES[fmt].split(";")[0])
    if meta.hub_url and fmt == "atom":
        fg.link(href=meta.hub_url, rel="hub")
    if meta.hub_url and fmt == "rss":
        fg.register_extension("thoonkhub", _HubLinks, BaseEntryExtension, atom=False, rss=True)
        fg.thoonkhub.hub = meta.hub_url  # type: ignore[attr-defined]
    fg.link(href=meta.link, rel="alternate")
    if meta.language:
        fg.language(meta.language)
    fg.generator("thoonk-bridge", uri="https://github.com/thoonk")
    newest = feed_updated(meta, prepared)
    fg.updated(newest)
    fg.lastBuildDate(newest)
    # feedgen lists entries in the order added, newest first unless order="append" is used.
    for p in prepared:
        _add_entry(fg.add_entry(order="append"), p, fmt)
    return fg


def _add_entry(fe: Any, p: _Prepared, fmt: str) -> None:
    """One entry of the document ``fmt`` (feedgen's FeedEntry ``fe``)."""
    fe.id(p.atom_id)
    rss = _rss_fields(p) if fmt == "rss" else None
    link = rss.link if rss is not None else p.link
    fe.title(rss.title if rss is not None else p.title)
    if link:
        fe.link(href=link, rel="alternate")
    fe.updated(p.updated)
    fe.published(p.published)
    if p.author:
        author = {"name": p.author}
        if p.author_email:
            author["email"] = p.author_email
        if p.author_uri:
            author["uri"] = rss.author_uri or p.author_uri if rss is not None else p.author_uri
        fe.author(author)
    for term in p.categories:
        fe.category({"term": term})
    if rss is not None:
        # No CDATA: a "]]>" in the content would break it; XML escaping says the same.
        if rss.description is not None:
            fe.summary(rss.description)
        if rss.content is not None:
            fe.content(rss.content)
        return
    if p.summary is not None:
        fe.summary(p.summary, type=p.summary_type)
    if p.content is not None:
        fe.content(p.content, type=p.content_type)
    elif not p.link and p.summary is None:
        fe.content(p.title, type="text")  # Atom: an entry needs content or an alternate link
    elif not p.link:
        fe.content(p.summary, type=p.summary_type)


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


def render_documents(
    meta: FeedMeta, items: Sequence[StoredItem], formats: Sequence[str], note: Note | None = None
) -> dict[str, bytes]:
    """Bytes of each requested document; ``items`` newest first (already cut to ``max_items``).

    An item whose Atom id an earlier (newer) item already has is left out: ids are unique within
    a document. ``note`` hears about fields left out (see :func:`prepare`).
    """
    prepared: list[_Prepared] = []
    ids: set[str] = set()
    for item in items:
        fresh = not isinstance(item.prepared, _Prepared)
        p = prepare(meta, item, note)
        if p.atom_id in ids:
            if note is not None and fresh:  # said once per item version, not on every render
                note(item.id, f"entry id {p.atom_id!r} already in the document: item left out")
            continue
        ids.add(p.atom_id)
        prepared.append(p)
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
