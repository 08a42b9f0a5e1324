"""Parse an outside Atom / RSS / JSON Feed document into items (shared by ``feeds`` and ``websub``).

:func:`parse_feed` takes the fetched bytes (and the response's Content-Type) and returns a
:class:`ParsedFeed`: the document's own metadata (title, link, WebSub hub and self URLs) and its
items as ``(item_id, payload)`` pairs.

Decisions:

* **Order**: items are returned **oldest first** (the order of ``Source.snapshot()``), which is the
  *reverse* of document order: Atom, RSS and JSON Feed documents list the newest entry first by
  convention (JSON Feed requires it). Dates are not used for ordering (they are often missing or
  wrong).
* **Payload**: each item is rendered by :func:`thoonk_bridge.payload.render` in the neutral JSON
  format by default (``fmt=Format.ATOM`` for Atom entries). The rendered entry carries its item id
  in ``id``.
* **Identity** (:class:`Identity`): ``auto`` (default) uses the entry's guid / ``atom:id`` /
  JSON Feed ``id``, else its link, else a hash of its content; ``id`` and ``link`` use only that
  field (entries without it are skipped and reported in ``problems``); ``hash`` always uses
  ``sha256:<hex>`` of title, link, content and summary (an edited entry then gets a new id).
  Ids longer than :data:`MAX_ID_CHARS` are replaced by ``sha256:<hex>`` of the id. When two
  entries share an id the first in document order (the newest) wins and the other is reported.
* **Untrusted input**: documents larger than ``max_bytes`` (default :data:`MAX_FEED_BYTES`) are
  refused before parsing. XML is first parsed with defusedxml: entity declarations and external
  references are refused as hostile, and a document that is not well-formed (truncated, broken)
  is refused, except for undefined named entities (``&nbsp;`` in sloppy RSS), which feedparser's
  loose parser handles. A bare ``<!DOCTYPE>`` (old RSS 0.91) is allowed. feedparser then reads
  the bytes from a stream, never from a URL or path. JSON Feed (1.0 and 1.1) is parsed by this
  module, not by feedparser.
* **Entry cap** (``max_entries``, default :data:`MAX_FEED_ENTRIES`): only the first entries in
  document order (the newest) are kept; the rest are ignored and counted in
  :attr:`ParsedFeed.ignored_entries` (callers log a note). An XML document over the cap is cut
  down to its first entries right after the well-formedness check, before feedparser sees it,
  so a document of 290,000 tiny entries costs the time of ``max_entries`` entries, not minutes.
* **Off the event loop**: parsing and sanitising a large document is pure-Python work (seconds).
  The daemon calls :func:`parse_feed_async`, which runs :func:`parse_feed` on a small dedicated
  thread pool (:data:`PARSE_THREADS` threads, so many routes polling at once queue instead of
  multiplying the load). A thread, not a process: the loop still gets the GIL at every switch
  interval (5 ms); measured with a 30,000-entry document parsed in a thread, ``/healthz``
  answered within 70 ms throughout (README, "HTTP").
* **Refused documents** raise :class:`FeedParseError` with a clear message: empty document, HTML
  page, XML whose root is not a feed, truncated or broken XML, hostile XML, JSON that is not a
  JSON Feed. An entry that cannot be used (no title, link, content or summary; no id under
  ``identity: id``...) is skipped and described in :attr:`ParsedFeed.problems`; the rest is kept.
"""

from __future__ import annotations

import asyncio
import calendar
import hashlib
import io
import json
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TypeVar

import feedparser
from defusedxml import DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden
from defusedxml.ElementTree import DefusedXMLParser

from thoonk_bridge.payload import Entry, Format, PayloadError, html_to_text, render

__all__ = [
    "MAX_FEED_BYTES",
    "MAX_FEED_ENTRIES",
    "MAX_ID_CHARS",
    "FeedParseError",
    "Identity",
    "ParsedFeed",
    "entry_identity",
    "in_parser_thread",
    "parse_feed",
    "parse_feed_async",
]

MAX_FEED_BYTES = 10 * 1024 * 1024
"""Default size limit of a fetched document, in bytes (after HTTP decoding)."""

MAX_FEED_ENTRIES = 1000
"""Default number of entries kept from one outside document (the newest, in document order)."""

PARSE_THREADS = 2
"""Threads parsing outside documents at once (more documents wait for a free one)."""

MAX_ID_CHARS = 1000
"""Longest item id kept as is; longer ones are replaced by a hash."""

# An id with a control character (NUL separates fields in Thoonk jobs) is replaced by its hash too.
_CONTROL = re.compile("[\x00-\x1f\x7f]")

ATOM_NS = "http://www.w3.org/2005/Atom"
_FEED_ROOTS = {
    f"{{{ATOM_NS}}}feed",
    "{http://purl.org/atom/ns#}feed",  # Atom 0.3
    "rss",
    "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}RDF",  # RSS 1.0
}
_ENTRY_NAMES = {"entry", "item"}  # local names of Atom entries and RSS (0.9x, 1.0, 2.0) items
_HTML_START = re.compile(rb"^\s*(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html[\s>])", re.IGNORECASE | re.DOTALL)
_UNDEFINED_ENTITY = 11  # expat XML_ERROR_UNDEFINED_ENTITY
_JSONFEED_VERSION = re.compile(r"^https?://jsonfeed\.org/version/1(\.\d+)?/?$")


class FeedParseError(ValueError):
    """The document cannot be read as a feed; the message says why."""


class Identity(StrEnum):
    """How an entry's item id is chosen (see the module docstring)."""

    AUTO = "auto"
    ID = "id"
    LINK = "link"
    HASH = "hash"


@dataclass
class ParsedFeed:
    """A parsed document.

    - ``kind``: ``"atom"``, ``"rss"`` or ``"json"`` (JSON Feed).
    - ``title``, ``link``: the feed's own title and home page, when given.
    - ``hubs``: WebSub hub URLs (Atom/RSS ``<link rel="hub">``, JSON Feed ``hubs``), in order.
    - ``self_url``: the ``rel="self"`` link (JSON Feed ``feed_url``), when given.
    - ``items``: ``(item_id, payload)``, oldest first.
    - ``problems``: one message per skipped entry or dropped field.
    - ``ignored_entries``: entries past ``max_entries``, not read at all.
    """

    kind: str
    title: str | None = None
    link: str | None = None
    hubs: list[str] = field(default_factory=list)
    self_url: str | None = None
    items: list[tuple[str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    ignored_entries: int = 0


def _hash_id(*parts: str | None) -> str:
    digest = hashlib.sha256("\x00".join(p or "" for p in parts).encode("utf-8", "surrogatepass"))
    return "sha256:" + digest.hexdigest()


def entry_identity(entry: Entry, identity: Identity | str = Identity.AUTO) -> str | None:
    """The item id of ``entry`` under ``identity`` (None when the field it needs is missing)."""
    identity = Identity(identity)
    own_id = (entry.id or "").strip() or None
    link = (entry.link or "").strip() or None
    value: str | None
    if identity is Identity.HASH:
        value = _hash_id(entry.title, entry.link, entry.content, entry.summary)
    elif identity is Identity.ID:
        value = own_id
    elif identity is Identity.LINK:
        value = link
    else:
        value = own_id or link or _hash_id(entry.title, entry.link, entry.content, entry.summary)
    if value is None:
        return None
    if len(value) > MAX_ID_CHARS or _CONTROL.search(value):
        return _hash_id(value)
    return value


def parse_feed(
    data: bytes,
    content_type: str | None = None,
    *,
    identity: Identity | str = Identity.AUTO,
    fmt: Format | str = Format.JSON,
    max_bytes: int = MAX_FEED_BYTES,
    base_url: str | None = None,
    sanitize: bool = True,
    max_entries: int = MAX_FEED_ENTRIES,
) -> ParsedFeed:
    """Parse a fetched document; raises :class:`FeedParseError`.

    This is seconds of CPU for a big document: from the event loop, call
    :func:`parse_feed_async`.

    ``content_type`` is the HTTP Content-Type (used to tell JSON Feed and HTML pages apart; the
    bytes decide when it is missing or generic). ``base_url`` resolves relative links (the URL the
    document was fetched from). ``sanitize`` lets feedparser clean HTML content (the ``feeds``
    sink sanitises again when it publishes). ``max_entries``: see the module docstring.
    """
    if not isinstance(data, bytes | bytearray):
        raise TypeError("parse_feed takes bytes")
    if len(data) > max_bytes:
        raise FeedParseError(f"document is too large: {len(data)} bytes, the limit is {max_bytes}")
    if max_entries < 1:
        raise ValueError("max_entries must be at least 1")
    identity = Identity(identity)
    fmt = Format(fmt)
    stripped = bytes(data).lstrip(b" \t\r\n\xef\xbb\xbf")
    if not stripped:
        raise FeedParseError("empty document")
    ctype = (content_type or "").split(";")[0].strip().lower()
    if stripped.startswith(b"{") or ctype in ("application/feed+json", "application/json"):
        return _parse_json_feed(bytes(data), identity, fmt, max_entries)
    if ctype == "text/html" or _HTML_START.match(stripped[:4096]):
        raise FeedParseError("document is an HTML page, not a feed")
    if not stripped.startswith(b"<"):
        raise FeedParseError(f"document is not XML or JSON (starts with {stripped[:20]!r})")
    target = _precheck_xml(bytes(data), max_entries)
    root = target.root or ""
    if root not in _FEED_ROOTS:
        local = root.rpartition("}")[2]
        if local.lower() == "html":
            raise FeedParseError("document is an HTML page, not a feed")
        raise FeedParseError(f"XML root element <{local}> is not an Atom, RSS or RDF feed")
    cut_out = 0
    if target.entries > max_entries:
        shorter = _cut_entries(bytes(data), target)
        if len(shorter) < len(data):
            data, cut_out = shorter, target.entries - max_entries
    result = _parse_xml_feed(bytes(data), content_type, identity, fmt, base_url, sanitize, max_entries)
    result.ignored_entries += cut_out
    return result


_parse_pool: ThreadPoolExecutor | None = None
_T = TypeVar("_T")


async def in_parser_thread(work: Callable[[], _T]) -> _T:
    """Run ``work`` (parsing an outsider's document) on the parser threads, off the event loop."""
    global _parse_pool  # noqa: PLW0603 - one pool per process, made on first use
    if _parse_pool is None:
        _parse_pool = ThreadPoolExecutor(max_workers=PARSE_THREADS, thread_name_prefix="feedparse")
    return await asyncio.get_running_loop().run_in_executor(_parse_pool, work)


async def parse_feed_async(data: bytes, content_type: str | None = None, **options: Any) -> ParsedFeed:
    """:func:`parse_feed` on the parser threads, so the event loop keeps serving meanwhile."""
    return await in_parser_thread(lambda: parse_feed(data, content_type, **options))


# --------------------------------------------------------------------------- XML


class _Target:
    """Parser target recording the root tag and where the entries are (the parse runs to the end
    to check the XML).

    Entries are the ``entry``/``item`` children of the element holding the first one. Byte
    offsets (from expat) mark where entry ``max_entries + 1`` starts and where the last entry's
    end tag starts, so :func:`_cut_entries` can drop the entries in between without parsing
    them again.
    """

    def __init__(self, max_entries: int) -> None:
        self.root: str | None = None
        self.max_entries = max_entries
        self.expat: Any = None  # the pyexpat parser, for byte offsets
        self.entries = 0
        self.cut_start: int | None = None  # offset of the first entry past the cap
        self.last_end: int | None = None  # offset of the last entry's end tag
        self._depth = 0
        self._entry_depth: int | None = None  # depth of the entries (children of one element)
        self._entry_parent: int | None = None  # ordinal of the element holding them
        self._open: list[int] = []  # ordinals of the open elements
        self._count = 0

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        if self.root is None:
            self.root = tag
        self._count += 1
        self._depth += 1
        parent = self._open[-1] if self._open else None
        self._open.append(self._count)
        if tag.rpartition("}")[2] not in _ENTRY_NAMES:
            return
        if self._entry_parent is None and self._depth > 1:
            self._entry_parent, self._entry_depth = parent, self._depth
        if parent is not None and parent == self._entry_parent:
            self.entries += 1
            if self.entries == self.max_entries + 1:
                self.cut_start = self.expat.CurrentByteIndex

    def end(self, tag: str) -> None:
        if self._depth == self._entry_depth and self.entries > self.max_entries:
            if tag.rpartition("}")[2] in _ENTRY_NAMES and len(self._open) > 1 and \
                    self._open[-2] == self._entry_parent:
                self.last_end = self.expat.CurrentByteIndex
        self._open.pop()
        self._depth -= 1

    def data(self, text: str) -> None:
        pass

    def close(self) -> str | None:
        return self.root


def _precheck_xml(data: bytes, max_entries: int = MAX_FEED_ENTRIES) -> _Target:
    target = _Target(max_entries)
    parser = DefusedXMLParser(target=target, forbid_dtd=False, forbid_entities=True, forbid_external=True)
    target.expat = parser.parser
    try:
        parser.feed(data)
        parser.close()
    except (DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden) as exc:
        raise FeedParseError(f"refusing hostile XML: {type(exc).__name__}") from None
    except ET.ParseError as exc:
        if exc.code != _UNDEFINED_ENTITY or target.root is None:
            line, column = exc.position
            reason = str(exc).split(":")[0]
            if reason in ("no element found", "unclosed token") or target.root is None and not data.strip():
                raise FeedParseError(f"truncated XML at line {line}, column {column}: {reason}") from None
            raise FeedParseError(f"XML is not well-formed at line {line}, column {column}: {reason}") from None
    if target.root is None:
        raise FeedParseError("XML document has no root element")
    return target


def _cut_entries(data: bytes, target: _Target) -> bytes:
    """``data`` without the entries past the cap (the bytes from the first of them to the end of
    the last entry); unchanged when that cannot be done safely (feedparser then reads them all
    and :func:`_collect` keeps the first ``max_entries``)."""
    start, last = target.cut_start, target.last_end
    if start is None or last is None or last < start or data[:2] in (b"\xff\xfe", b"\xfe\xff") \
            or b"\x00" in data[:4]:
        return data  # byte offsets of UTF-16/32 documents do not meet b">" searches
    end = data.find(b">", last)
    if end < 0:
        return data
    return data[:start] + data[end + 1:]


def _struct_to_dt(value: time.struct_time | None) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromtimestamp(calendar.timegm(value), tz=UTC)
    except (OverflowError, ValueError, OSError):
        return None


_TYPE_MAP = {"text/plain": "text", "text/html": "html", "application/xhtml+xml": "html"}


def _detail_type(detail: Any) -> str:
    kind = (detail.get("type") if detail else None) or "text/html"
    return _TYPE_MAP.get(kind, "html" if "html" in kind else "text")


def _xml_entry(raw: Any) -> Entry:
    entry = Entry()
    entry.id = (raw.get("id") or "").strip() or None
    title = raw.get("title")
    if title is not None:
        kind = _detail_type(raw.get("title_detail"))
        entry.title = (html_to_text(title) if kind == "html" else title).strip()
    entry.link = (raw.get("link") or "").strip() or None
    contents = raw.get("content") or []
    if contents:
        first = contents[0]
        entry.content = first.get("value")
        entry.content_type = _detail_type(first)
    summary = raw.get("summary")
    if summary is not None and (not contents or summary != entry.content):
        entry.summary = summary
        entry.summary_type = _detail_type(raw.get("summary_detail"))
    if raw.get("author"):
        entry.author = raw.get("author_detail", {}).get("name") or raw.get("author")
        entry.author_email = raw.get("author_detail", {}).get("email") or None
        entry.author_uri = raw.get("author_detail", {}).get("href") or None
    entry.published = _struct_to_dt(raw.get("published_parsed"))
    entry.updated = _struct_to_dt(dict.get(raw, "updated_parsed"))  # no feedparser fallback mapping
    entry.categories = [t.get("term").strip() for t in raw.get("tags") or [] if (t.get("term") or "").strip()]
    return entry


def _parse_xml_feed(
    data: bytes,
    content_type: str | None,
    identity: Identity,
    fmt: Format,
    base_url: str | None,
    sanitize: bool,
    max_entries: int,
) -> ParsedFeed:
    headers = {"content-type": content_type or "application/xml"}
    if base_url:
        headers["content-location"] = base_url
    try:
        parsed = feedparser.parse(
            io.BytesIO(data), response_headers=headers, resolve_relative_uris=True, sanitize_html=sanitize
        )
    except Exception as exc:  # noqa: BLE001 - feedparser may raise anything on hostile input
        raise FeedParseError(f"feed parser failed: {type(exc).__name__}: {exc}") from None
    version = parsed.get("version") or ""
    kind = "atom" if version.startswith("atom") else "rss"
    feed_meta = parsed.get("feed", {})
    result = ParsedFeed(kind=kind, title=feed_meta.get("title"), link=feed_meta.get("link"))
    for link in feed_meta.get("links", []):
        rel, href = link.get("rel"), link.get("href")
        if not href:
            continue
        if rel == "hub" and href not in result.hubs:
            result.hubs.append(href)
        elif rel == "self" and result.self_url is None:
            result.self_url = href
    raw_entries = parsed.get("entries", [])
    result.ignored_entries = max(0, len(raw_entries) - max_entries)
    entries: list[Entry | None] = [_xml_entry(raw) for raw in raw_entries[:max_entries]]
    _collect(result, entries, identity, fmt)
    return result


# --------------------------------------------------------------------------- JSON Feed


def _json_date(value: Any, where: str, problems: list[str]) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip().replace("z", "Z"))
        except ValueError:
            pass
        else:
            return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
    problems.append(f"{where}: not an RFC 3339 date, dropped: {value!r}")
    return None


def _opt_str(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def _load_json_feed(data: bytes) -> tuple[dict[str, Any], list[Any]]:
    """The JSON Feed object and its items array; FeedParseError naming what is not a JSON Feed."""
    try:
        doc = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise FeedParseError(f"JSON Feed is not valid UTF-8 (offset {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise FeedParseError(f"not valid JSON: line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise FeedParseError("JSON nested too deeply") from None
    if not isinstance(doc, dict):
        raise FeedParseError("JSON document is not an object, so not a JSON Feed")
    version = doc.get("version")
    if not isinstance(version, str) or not _JSONFEED_VERSION.match(version):
        raise FeedParseError(f"not a JSON Feed: version is {version!r}")
    items = doc.get("items")
    if not isinstance(items, list):
        raise FeedParseError("JSON Feed has no items array")
    return doc, items


def _parse_json_feed(data: bytes, identity: Identity, fmt: Format, max_entries: int) -> ParsedFeed:
    doc, items = _load_json_feed(data)
    result = ParsedFeed(
        kind="json",
        title=_opt_str(doc.get("title")),
        link=_opt_str(doc.get("home_page_url")),
        self_url=_opt_str(doc.get("feed_url")),
    )
    for hub in doc.get("hubs") or []:
        if isinstance(hub, dict) and isinstance(hub.get("url"), str):
            if str(hub.get("type", "")).lower() == "websub" and hub["url"] not in result.hubs:
                result.hubs.append(hub["url"])
    result.ignored_entries = max(0, len(items) - max_entries)
    entries: list[Entry | None] = []
    for index, item in enumerate(items[:max_entries]):
        if not isinstance(item, dict):
            result.problems.append(f"items[{index}]: not an object, skipped")
            entries.append(None)  # keeps positions for the messages
            continue
        entries.append(_json_feed_entry(item, f"items[{index}]", result.problems))
    _collect(result, entries, identity, fmt)
    return result


def _json_feed_entry(item: dict[str, Any], where: str, problems: list[str]) -> Entry:
    entry = Entry(
        id=(_opt_str(item.get("id")) or "").strip() or None,
        title=_opt_str(item.get("title")),
        link=_opt_str(item.get("url")) or _opt_str(item.get("external_url")),
        summary=_opt_str(item.get("summary")),
    )
    if isinstance(item.get("content_html"), str):
        entry.content, entry.content_type = item["content_html"], "html"
    elif isinstance(item.get("content_text"), str):
        entry.content, entry.content_type = item["content_text"], "text"
    authors = item.get("authors")
    if not isinstance(authors, list):
        authors = [item["author"]] if isinstance(item.get("author"), dict) else []
    if authors and isinstance(authors[0], dict):
        entry.author = _opt_str(authors[0].get("name"))
        entry.author_uri = _opt_str(authors[0].get("url"))
    entry.published = _json_date(item.get("date_published"), f"{where}.date_published", problems)
    entry.updated = _json_date(item.get("date_modified"), f"{where}.date_modified", problems)
    tags = item.get("tags")
    if isinstance(tags, list):
        entry.categories = [t.strip() for t in tags if isinstance(t, str) and t.strip()]
    return entry


# --------------------------------------------------------------------------- common


def _collect(result: ParsedFeed, entries: list[Entry | None], identity: Identity, fmt: Format) -> None:
    seen: set[str] = set()
    kept: list[tuple[str, str]] = []
    for index, entry in enumerate(entries):
        where = f"entry {index + 1}"
        if entry is None:
            continue
        if not (entry.title or entry.link or entry.content or entry.summary):
            result.problems.append(f"{where}: no title, link, content or summary, skipped")
            continue
        item_id = entry_identity(entry, identity)
        if item_id is None:
            result.problems.append(f"{where}: no {identity.value} for identity {identity.value!r}, skipped")
            continue
        if item_id in seen:
            result.problems.append(f"{where}: duplicate id {item_id!r}, skipped")
            continue
        seen.add(item_id)
        entry.id = item_id
        try:
            payload = render(entry, fmt, item_id=item_id)
        except PayloadError as exc:
            result.problems.append(f"{where} ({item_id!r}): {exc}, skipped")
            continue
        kept.append((item_id, payload))
    kept.reverse()  # documents list newest first; items are oldest first
    result.items = kept
