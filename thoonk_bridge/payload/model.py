"""The item model: :class:`Entry`, :class:`Format`, :class:`PayloadError`, the limits, and the
small field helpers every format shares (characters XML forbids, titles, dates, hashing)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum

ATOM_NS = "http://www.w3.org/2005/Atom"
XHTML_NS = "http://www.w3.org/1999/xhtml"

MAX_PAYLOAD_BYTES = 1_000_000
"""Default size limit of :func:`parse`, in bytes (UTF-8 bytes for a ``str`` payload)."""

MAX_XML_DEPTH = 100
"""Deepest element nesting accepted in an Atom payload (the entry element is depth 1)."""

MAX_HTML_DEPTH = 256
"""Deepest HTML element nesting :func:`sanitize_html` and :func:`html_to_text` keep: tags nested
deeper are dropped (their text kept) before the HTML parser sees them, because html5ever's cost
grows with the square of the depth (50,000 nested ``<div>`` took 8.5 s)."""

MAX_TITLE_CHARS = 80
"""Longest title :func:`derive_title` produces, ellipsis included."""

CONTENT_TYPES = ("text", "html", "xhtml")
"""Values allowed for :attr:`Entry.content_type` and :attr:`Entry.summary_type`."""


class Format(StrEnum):
    """The three payload formats."""

    ATOM = "atom"
    JSON = "json"
    TEXT = "text"


class PayloadError(ValueError):
    """A payload that cannot be parsed or rendered; the message says what was wrong.

    Messages start with the format (``"atom: "``, ``"json: "``, ``"text: "``) when the problem is
    in one, e.g. ``"atom: <entry> has no <title>"`` or ``"json: line 1 column 5: Expecting value"``.
    """


@dataclass
class Entry:
    """The neutral form every payload format converts through.

    Fields:
        id: the entry's own id (Atom ``<id>``); ``render(..., item_id=...)`` fills it when missing.
        title: plain text (Atom html/xhtml titles are reduced to their text).
        link: the ``rel="alternate"`` link (an Atom link without ``rel`` counts as alternate).
        content: the body; its markup depends on ``content_type``.
        content_type: ``"text"``, ``"html"`` (escaped HTML markup) or ``"xhtml"`` (the markup *inside*
            the XHTML ``<div>``, the way feedgen takes it).
        summary, summary_type: as ``content``/``content_type``.
        author, author_email, author_uri: the first author's name, email and URI.
        published, updated: timezone-aware datetimes (a naive one is taken as UTC when rendered).
        categories: category terms, in order.
    """

    id: str | None = None
    title: str | None = None
    link: str | None = None
    content: str | None = None
    content_type: str = "text"
    summary: str | None = None
    author: str | None = None
    published: datetime | None = None
    updated: datetime | None = None
    categories: list[str] = field(default_factory=list)
    summary_type: str = "text"
    author_email: str | None = None
    author_uri: str | None = None


# --------------------------------------------------------------------------------------------------
# Characters


# Characters XML 1.0 does not allow anywhere (section 2.2), as they can occur in a Python str.
_XML_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def xml_safe(text: str) -> str:
    """``text`` without the characters XML 1.0 forbids."""
    return _XML_FORBIDDEN.sub("", text)


def no_surrogates(text: str) -> str:
    """``text`` without lone surrogates (they cannot be encoded as UTF-8)."""
    return _LONE_SURROGATE.sub("", text)


# --------------------------------------------------------------------------------------------------
# Small helpers shared by the formats


def derive_title(text: str | None, max_chars: int = MAX_TITLE_CHARS) -> str | None:
    """The title plain text gets: its first non-blank line, whitespace collapsed.

    A line longer than ``max_chars`` is cut at the last space that fits (or mid-word when there is
    none) and ends with ``"…"``. Returns ``None`` when ``text`` is ``None`` or blank.
    """
    if text is None:
        return None
    for line in text.splitlines():
        line = " ".join(line.split())
        if line:
            break
    else:
        return None
    if len(line) <= max_chars:
        return line
    cut = line[: max_chars - 1]
    space = cut.rfind(" ")
    if space > max_chars // 2:
        cut = cut[:space]
    return cut.rstrip() + "…"


_RFC3339 = re.compile(
    r"(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})\Z",
)


def parse_date(value: str, where: str) -> datetime:
    """Parse an RFC 3339 date-time; ``where`` names the field in the error."""
    match = _RFC3339.match(value.strip())
    if match is None:
        raise PayloadError(f"{where} is not an RFC 3339 date-time: {value!r}")
    day, clock, fraction, offset = match.groups()
    fraction = ((fraction or "") + "000000")[:6]
    offset = "+00:00" if offset in ("Z", "z") else offset
    try:
        return datetime.fromisoformat(f"{day}T{clock}.{fraction}{offset}")
    except ValueError as exc:
        raise PayloadError(f"{where} is not a valid date-time: {value!r} ({exc})") from None


def format_date(value: datetime) -> str:
    """RFC 3339, ``Z`` for UTC; a naive datetime is taken as UTC."""
    if value.tzinfo is None or value.utcoffset() is None:
        value = value.replace(tzinfo=UTC)
    offset = value.utcoffset() or timedelta(0)
    if offset.seconds % 60 or offset.microseconds:  # RFC 3339 offsets are whole minutes
        value = value.astimezone(UTC)
    text = value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def check_type(kind: str, what: str) -> None:
    """Raise :class:`PayloadError` unless ``kind`` is one of :data:`CONTENT_TYPES`."""
    if kind not in CONTENT_TYPES:
        raise PayloadError(f"entry: {what} must be one of {', '.join(CONTENT_TYPES)}, not {kind!r}")


def atom(local: str) -> str:
    """Clark name of an element in the Atom namespace."""
    return f"{{{ATOM_NS}}}{local}"


def content_hash(payload: str | bytes) -> str:
    """SHA-256 hex digest of the payload's UTF-8 bytes (lone surrogates kept as-is), for idempotence.

    Equal payload strings always give equal hashes, across processes and Python versions; no
    normalisation is done, so compare payloads in the same format (e.g. both rendered).
    """
    data = payload if isinstance(payload, bytes) else payload.encode("utf-8", "surrogatepass")
    return hashlib.sha256(data).hexdigest()
