"""Item payload formats and the conversions between them.

Every item that moves along a route is ``(id, payload)`` where the payload is a string in one of
three formats (:class:`Format`):

``atom``
    One Atom 1.0 ``<entry>`` element (RFC 4287) in the Atom namespace, serialized as XML.
``json``
    One JSON object with the keys ``id``, ``title``, ``link``, ``content``, ``content_type``,
    ``summary``, ``summary_type``, ``author``, ``author_email``, ``author_uri``, ``published``,
    ``updated``, ``categories``.
``text``
    Anything else: plain text.

All conversions go through the neutral :class:`Entry`: :func:`parse` turns a payload into an
``Entry`` and :func:`render` turns an ``Entry`` into a payload; :func:`convert` is the two together.
The module is pure logic: no I/O, no global state, safe to call from any thread or event loop.

Decisions, in one place (each is repeated where it applies):

* Untrusted XML is parsed with defusedxml: DTDs, entity declarations and external references are
  refused, elements nested deeper than :data:`MAX_XML_DEPTH` are refused, and payloads over
  ``max_bytes`` (default :data:`MAX_PAYLOAD_BYTES`) are refused before any parsing.
* Bytes are decoded before parsing: a UTF-16/UTF-32 byte-order mark, else the encoding named by an
  XML declaration at the very start, else UTF-8 (strict; invalid bytes are a :class:`PayloadError`).
* Conversion always normalizes: Atom extension elements and attributes that :class:`Entry` has no
  field for are dropped; a router that wants an Atom payload passed through untouched should not
  convert when :func:`detect_format` already gives the wanted format.
* Unknown JSON keys are ignored (not kept, not an error).
* Rendering XML strips the characters XML 1.0 forbids (C0 controls other than tab/LF/CR, lone
  surrogates, U+FFFE/U+FFFF) so the output is always well-formed; every render strips lone
  surrogates, which cannot be encoded as UTF-8 at all. Every other character is kept.
* A rendered Atom entry always has a ``<title>`` (derived from the summary or content when the entry
  has none, else empty) but no ``<updated>`` unless the entry has one: sinks that need one add it.
* HTML is never sanitised here; sinks call :func:`sanitize_html` when they publish HTML.
"""

from __future__ import annotations

import codecs
import hashlib
import html
import json
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import nh3
from defusedxml import DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden
from defusedxml.ElementTree import DefusedXMLParser

__all__ = [
    "ATOM_NS",
    "CONTENT_TYPES",
    "MAX_HTML_DEPTH",
    "MAX_PAYLOAD_BYTES",
    "MAX_TITLE_CHARS",
    "MAX_XML_DEPTH",
    "XEP0335_NS",
    "XHTML_NS",
    "Entry",
    "Format",
    "PayloadError",
    "content_hash",
    "convert",
    "derive_title",
    "detect_format",
    "element_to_payload",
    "entry_to_element",
    "html_to_text",
    "json_to_element",
    "limit_html_depth",
    "parse",
    "render",
    "sanitize_html",
]

ATOM_NS = "http://www.w3.org/2005/Atom"
XHTML_NS = "http://www.w3.org/1999/xhtml"
XEP0335_NS = "urn:xmpp:json:0"

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


def _xml_safe(text: str) -> str:
    return _XML_FORBIDDEN.sub("", text)


def _no_surrogates(text: str) -> str:
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


_BREAK_TAGS = re.compile(r"<br\s*/?>", re.IGNORECASE)
_BLOCK_END_TAGS = re.compile(
    r"</(?:p|div|li|h[1-6]|blockquote|pre|tr|ul|ol|table|dl|dd|dt|section|article|figure)\s*>",
    re.IGNORECASE,
)


def html_to_text(markup: str, *, max_depth: int = MAX_HTML_DEPTH) -> str:
    """Plain text of an HTML (or XHTML) fragment: tags dropped, entities decoded.

    ``<br>`` becomes a line break and the end of a block element (``p``, ``div``, ``li``, headings…) a
    blank line; ``script``/``style`` elements are dropped with their content. Nesting deeper than
    ``max_depth`` is flattened first (see :func:`limit_html_depth`).
    """
    text = _BREAK_TAGS.sub("\n", limit_html_depth(markup, max_depth))
    text = _BLOCK_END_TAGS.sub("\n\n", text)
    text = html.unescape(nh3.clean(text, tags=set()))
    text = re.sub(r"[ \t]*\n[ \t]*", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _as_text(value: str | None, kind: str) -> str | None:
    """Plain text of a text construct of type ``kind``."""
    if value is None or kind == "text":
        return value
    return html_to_text(value)


_RFC3339 = re.compile(
    r"(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})\Z",
)


def _parse_date(value: str, where: str) -> datetime:
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


def _format_date(value: datetime) -> str:
    """RFC 3339, ``Z`` for UTC; a naive datetime is taken as UTC."""
    if value.tzinfo is None or value.utcoffset() is None:
        value = value.replace(tzinfo=UTC)
    offset = value.utcoffset() or timedelta(0)
    if offset.seconds % 60 or offset.microseconds:  # RFC 3339 offsets are whole minutes
        value = value.astimezone(UTC)
    text = value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _check_type(kind: str, what: str) -> None:
    if kind not in CONTENT_TYPES:
        raise PayloadError(f"entry: {what} must be one of {', '.join(CONTENT_TYPES)}, not {kind!r}")


# --------------------------------------------------------------------------------------------------
# Bytes, sizes, detection

_XML_DECL_ENCODING = re.compile(rb"<\?xml[^>]*?encoding\s*=\s*[\"']([A-Za-z0-9._-]+)[\"']")


def _decode(data: bytes) -> str:
    """Bytes to str: BOM, else the encoding of a leading XML declaration, else strict UTF-8."""
    for bom, name in (
        (codecs.BOM_UTF32_LE, "utf-32"),
        (codecs.BOM_UTF32_BE, "utf-32"),
        (codecs.BOM_UTF8, "utf-8-sig"),
        (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"),
    ):
        if data.startswith(bom):
            encoding = name
            break
    else:
        encoding = "utf-8"
        match = _XML_DECL_ENCODING.match(data)
        if match is not None:
            declared = match.group(1).decode("ascii")
            try:
                info = codecs.lookup(declared)
            except LookupError:
                raise PayloadError(f"atom: unknown encoding {declared!r} in the XML declaration") from None
            # A declaration readable as ASCII cannot be UTF-16/32 without a BOM; trust the bytes.
            if not info.name.startswith(("utf-16", "utf-32")):
                encoding = info.name
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        bad = data[exc.start : exc.start + 1].hex()
        label = "UTF-8" if encoding in ("utf-8", "utf-8-sig") else encoding
        raise PayloadError(f"payload is not valid {label}: byte 0x{bad} at offset {exc.start}") from None


def _check_size(payload: str | bytes, max_bytes: int | None) -> None:
    if max_bytes is None:
        return
    if isinstance(payload, bytes):
        size = len(payload)
    elif len(payload) > max_bytes:  # every character is at least one byte
        size = len(payload)
    elif len(payload) * 4 <= max_bytes:  # and at most four
        return
    else:
        size = len(payload.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise PayloadError(f"payload is too large: over {max_bytes} bytes (at least {size})")


class _RootFound(Exception):
    def __init__(self, tag: str) -> None:
        super().__init__(tag)
        self.tag = tag


class _RootSniffer:
    """Parser target that stops at the first start tag."""

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        raise _RootFound(tag)

    def close(self) -> None:
        return None


_SNIFF_CHUNK = 65536


def _sniff_root(text: str) -> str | None:
    """Tag of the root element (Clark notation), ``""`` when the XML is refused as hostile,
    ``None`` when there is no well-formed start of a root element."""
    parser = DefusedXMLParser(target=_RootSniffer(), forbid_dtd=False)
    try:
        for start in range(0, len(text), _SNIFF_CHUNK):
            parser.feed(text[start : start + _SNIFF_CHUNK])
        parser.close()
    except _RootFound as found:
        return found.tag
    except (DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden):
        return ""
    except (ET.ParseError, UnicodeError, ValueError):
        return None
    return None


def detect_format(payload: str) -> Format:
    """Guess the format of a payload.

    * Starts with ``<`` (after whitespace or a BOM): :attr:`Format.ATOM` when the root element is
      ``{ATOM_NS}entry`` (even if the XML breaks later on, so that :func:`parse` reports the
      breakage), and also when the XML declares entities or external references before its root
      (refused as hostile by :func:`parse` rather than passed on as text); otherwise
      :attr:`Format.TEXT` (HTML, other XML, ``<3 you``...).
    * Starts with ``{``: :attr:`Format.JSON` when the whole payload parses as a JSON object,
      otherwise :attr:`Format.TEXT`. (Broken JSON is text: pass ``fmt`` to :func:`parse` when the
      format is known, to get the JSON error instead.)
    * Anything else: :attr:`Format.TEXT`.
    """
    text = payload.lstrip().removeprefix("\ufeff").lstrip()
    if text.startswith("<"):
        tag = _sniff_root(text)
        return Format.ATOM if tag in (f"{{{ATOM_NS}}}entry", "") else Format.TEXT
    if text.startswith("{"):
        try:
            value = json.loads(text, strict=False)
        except (ValueError, RecursionError):
            return Format.TEXT
        return Format.JSON if isinstance(value, dict) else Format.TEXT
    return Format.TEXT


# --------------------------------------------------------------------------------------------------
# Parsing


def parse(
    payload: str | bytes,
    fmt: Format | str | None = None,
    *,
    max_bytes: int | None = MAX_PAYLOAD_BYTES,
) -> Entry:
    """Parse a payload into an :class:`Entry`; raises :class:`PayloadError`.

    Args:
        payload: the payload; ``bytes`` are decoded first (BOM, else a leading XML declaration's
            encoding, else strict UTF-8).
        fmt: the payload's format (a :class:`Format` or its value); ``None`` detects it with
            :func:`detect_format`.
        max_bytes: refuse payloads larger than this many bytes (UTF-8 size for ``str``), checked
            before anything else; ``None`` for no limit.

    Per format:

    * atom: the root must be ``{ATOM_NS}entry`` and have a ``<title>``; DTDs, entities and nesting
      deeper than :data:`MAX_XML_DEPTH` are refused. Read: ``id``, ``title`` (html/xhtml reduced to
      text), the first ``link`` with ``rel`` alternate or absent, ``content`` (``text``/``html``/
      ``xhtml``; MIME type ``text/html`` as html, other ``text/*`` as text, any other MIME type or
      out-of-line ``src=`` content is dropped, its ``src`` used as ``link`` when there is none),
      ``summary``, the first ``author``, ``published``, ``updated`` (RFC 3339), ``category/@term``.
      Other elements are ignored. Title, id, link, author and dates are whitespace-trimmed; content
      and summary are kept exactly.
    * json: must be an object; see the module docstring for keys. Values must be strings (``null``
      means absent), ``categories`` a list of strings, ``content_type``/``summary_type`` one of
      :data:`CONTENT_TYPES`, dates RFC 3339. Unknown keys are ignored. Raw control characters in
      strings are accepted.
    * text: the whole payload becomes ``content`` (type text), the title is :func:`derive_title`.
    """
    _check_size(payload, max_bytes)
    text = _decode(payload) if isinstance(payload, bytes) else payload
    text = text.removeprefix("\ufeff")
    if fmt is None:
        fmt = detect_format(text)
    else:
        try:
            fmt = Format(fmt)
        except ValueError:
            raise PayloadError(f"unknown payload format {fmt!r}") from None
    if fmt is Format.ATOM:
        return _parse_atom(text)
    if fmt is Format.JSON:
        return _parse_json(text)
    return _parse_text(text)


def _parse_text(text: str) -> Entry:
    return Entry(title=derive_title(text), content=text, content_type="text")


# JSON ------------------------------------------------------------------------------------------

_JSON_STRINGS = ("id", "title", "link", "content", "summary", "author", "author_email", "author_uri")
_JSON_TYPE_NAMES: dict[type, str] = {
    dict: "object",
    list: "array",
    str: "string",
    int: "number",
    float: "number",
    bool: "boolean",
    type(None): "null",
}


def _json_type(value: Any) -> str:
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def _parse_json(text: str) -> Entry:
    try:
        data = json.loads(text, strict=False)
    except json.JSONDecodeError as exc:
        raise PayloadError(f"json: line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise PayloadError("json: nested too deeply") from None
    except ValueError as exc:  # e.g. numbers with too many digits
        raise PayloadError(f"json: {exc}") from None
    if not isinstance(data, dict):
        raise PayloadError(f"json: not an object (got {_json_type(data)})")

    values: dict[str, Any] = {}
    for key in _JSON_STRINGS:
        value = data.get(key)
        if value is not None and not isinstance(value, str):
            raise PayloadError(f'json: "{key}" must be a string, got {_json_type(value)}')
        values[key] = value
    entry = Entry(**values)

    for key in ("content_type", "summary_type"):
        value = data.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or value not in CONTENT_TYPES:
            shown = value if isinstance(value, str) else _json_type(value)
            raise PayloadError(f'json: "{key}" must be one of {", ".join(CONTENT_TYPES)}, got {shown!r}')
        setattr(entry, key, value)

    for key in ("published", "updated"):
        value = data.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise PayloadError(f'json: "{key}" must be an RFC 3339 date-time string, got {_json_type(value)}')
        setattr(entry, key, _parse_date(value, f'json: "{key}"'))

    categories = data.get("categories")
    if categories is not None:
        if not isinstance(categories, list):
            raise PayloadError(f'json: "categories" must be a list of strings, got {_json_type(categories)}')
        for index, term in enumerate(categories):
            if not isinstance(term, str):
                raise PayloadError(f'json: "categories"[{index}] must be a string, got {_json_type(term)}')
        entry.categories = list(categories)
    return entry


# Atom ------------------------------------------------------------------------------------------


class _DepthLimitedBuilder(ET.TreeBuilder):
    """TreeBuilder that refuses elements nested deeper than :data:`MAX_XML_DEPTH`."""

    def __init__(self) -> None:
        super().__init__()
        self._depth = 0

    def start(self, tag: Any, attrs: Any) -> ET.Element:
        self._depth += 1
        if self._depth > MAX_XML_DEPTH:
            raise PayloadError(f"atom: elements nested deeper than {MAX_XML_DEPTH} levels")
        return super().start(tag, attrs)

    def end(self, tag: Any) -> ET.Element:
        self._depth -= 1
        return super().end(tag)


def _parse_xml(text: str, what: str) -> ET.Element:
    """Parse untrusted XML text with defusedxml; every failure is a PayloadError."""
    parser = DefusedXMLParser(
        target=_DepthLimitedBuilder(), forbid_dtd=True, forbid_entities=True, forbid_external=True
    )
    try:
        parser.feed(text.lstrip())
        root: ET.Element = parser.close()
    except DTDForbidden as exc:
        raise PayloadError(f"{what}: DTDs are not allowed (<!DOCTYPE {exc.name}>)") from None
    except EntitiesForbidden as exc:
        raise PayloadError(f"{what}: entity declarations are not allowed ({exc.name!r})") from None
    except ExternalReferenceForbidden as exc:
        raise PayloadError(f"{what}: external references are not allowed ({exc.sysid!r})") from None
    except ET.ParseError as exc:
        raise PayloadError(f"{what}: not well-formed XML: {exc}") from None
    except UnicodeError as exc:
        raise PayloadError(f"{what}: cannot be encoded for the XML parser: {exc}") from None
    return root


def _describe_tag(tag: str) -> str:
    if tag.startswith("{"):
        namespace, _, local = tag[1:].partition("}")
        return f"<{local}> in namespace {namespace}"
    return f"<{tag}> in no namespace"


def _atom(local: str) -> str:
    return f"{{{ATOM_NS}}}{local}"


def _child_text(parent: ET.Element, local: str) -> str | None:
    child = parent.find(_atom(local))
    if child is None:
        return None
    return (child.text or "").strip()


def _inner_xhtml(div: ET.Element) -> str:
    """Markup inside an XHTML div; XHTML is the default namespace it is written in."""
    parts = [_escape_text(div.text or "")]
    for child in div:
        _write_xml(child, XHTML_NS, parts)
        parts.append(_escape_text(child.tail or ""))
    return _xml_safe("".join(parts))


def _read_text_construct(elem: ET.Element, what: str) -> tuple[str, str]:
    """(value, type) of an Atom text construct (title, summary)."""
    kind = (elem.get("type") or "text").strip().lower()
    if kind == "xhtml":
        div = elem.find(f"{{{XHTML_NS}}}div")
        if div is None:
            raise PayloadError(f'atom: <{what} type="xhtml"> has no XHTML <div>')
        return _inner_xhtml(div), "xhtml"
    if kind in ("text", "html"):
        return elem.text or "", kind
    raise PayloadError(f"atom: <{what}> has unknown type {kind!r}")


def _parse_atom(text: str) -> Entry:
    root = _parse_xml(text, "atom")
    if root.tag != _atom("entry"):
        raise PayloadError(f"atom: root element is {_describe_tag(root.tag)}, expected <entry> in namespace {ATOM_NS}")
    entry = Entry(id=_child_text(root, "id") or None)

    title = root.find(_atom("title"))
    if title is None:
        raise PayloadError("atom: <entry> has no <title>")
    value, kind = _read_text_construct(title, "title")
    entry.title = (_as_text(value, kind) or "").strip()

    for link in root.findall(_atom("link")):
        if (link.get("rel") or "alternate").strip() == "alternate" and link.get("href"):
            entry.link = (link.get("href") or "").strip()
            break

    content = root.find(_atom("content"))
    if content is not None:
        kind = (content.get("type") or "text").strip().lower()
        src = content.get("src")
        if src is not None:
            entry.link = entry.link or src.strip()
        elif kind in CONTENT_TYPES:
            entry.content, entry.content_type = _read_text_construct(content, "content")
        elif kind.split(";")[0].strip() == "text/html":
            entry.content, entry.content_type = content.text or "", "html"
        elif kind.startswith("text/"):
            entry.content, entry.content_type = content.text or "", "text"

    summary = root.find(_atom("summary"))
    if summary is not None:
        entry.summary, entry.summary_type = _read_text_construct(summary, "summary")

    author = root.find(_atom("author"))
    if author is not None:
        entry.author = _child_text(author, "name") or None
        entry.author_email = _child_text(author, "email") or None
        entry.author_uri = _child_text(author, "uri") or None

    for local in ("published", "updated"):
        stamp = _child_text(root, local)
        if stamp is not None:
            setattr(entry, local, _parse_date(stamp, f"atom: <{local}>"))

    entry.categories = [
        (category.get("term") or "").strip()
        for category in root.findall(_atom("category"))
        if (category.get("term") or "").strip()
    ]
    return entry


# --------------------------------------------------------------------------------------------------
# Rendering


def render(entry: Entry, fmt: Format | str, *, item_id: str | None = None) -> str:
    """Render an :class:`Entry` as a payload of format ``fmt``; raises :class:`PayloadError`.

    Args:
        entry: what to render (not modified).
        fmt: the target format.
        item_id: used as the entry's id when ``entry.id`` is empty.

    Per format:

    * atom: ``<entry xmlns="http://www.w3.org/2005/Atom">`` without an XML declaration; see
      :func:`entry_to_element` for what it contains. Characters XML forbids are stripped.
    * json: one object, keys in a fixed order, ``None`` fields and empty ``categories`` left out,
      ``content_type`` present whenever ``content`` is, ``summary_type`` whenever ``summary`` is not
      text; dates RFC 3339 (``Z`` for UTC); non-ASCII kept as is.
    * text: the title, a blank line, then the body (the content, else the summary; html/xhtml
      reduced to plain text), then the link on its own paragraph when the body does not contain it.
      The title is left out when it is what :func:`derive_title` gives for the body, so plain text
      round-trips unchanged.
    """
    try:
        fmt = Format(fmt)
    except ValueError:
        raise PayloadError(f"unknown payload format {fmt!r}") from None
    _check_type(entry.content_type, "content_type")
    _check_type(entry.summary_type, "summary_type")
    if fmt is Format.ATOM:
        return _tostring(entry_to_element(entry, item_id))
    if fmt is Format.JSON:
        return _render_json(entry, item_id)
    return _render_text(entry)


def _render_json(entry: Entry, item_id: str | None) -> str:
    data: dict[str, Any] = {}
    data["id"] = entry.id or item_id
    data["title"] = entry.title
    data["link"] = entry.link
    data["author"] = entry.author
    data["author_email"] = entry.author_email
    data["author_uri"] = entry.author_uri
    data["published"] = _format_date(entry.published) if entry.published else None
    data["updated"] = _format_date(entry.updated) if entry.updated else None
    data["categories"] = list(entry.categories) or None
    data["summary"] = entry.summary
    if entry.summary is not None and entry.summary_type != "text":
        data["summary_type"] = entry.summary_type
    data["content"] = entry.content
    if entry.content is not None:
        data["content_type"] = entry.content_type
    data = {key: value for key, value in data.items() if value is not None}
    return _no_surrogates(json.dumps(data, ensure_ascii=False))


def _render_text(entry: Entry) -> str:
    if entry.content is not None:
        body = _as_text(entry.content, entry.content_type) or ""
    else:
        body = _as_text(entry.summary, entry.summary_type) or ""
    if entry.link and entry.link not in body:
        body = f"{body}\n\n{entry.link}" if body else entry.link
    title = entry.title
    if title and (derive_title(body) == title or body.startswith(title)):
        title = None
    if title and body:
        text = f"{title}\n\n{body}"
    else:
        text = title or body
    return _no_surrogates(text)


def _text_construct(parent: ET.Element, local: str, value: str, kind: str) -> None:
    elem = ET.SubElement(parent, _atom(local))
    value = _xml_safe(value)
    if kind == "xhtml":
        try:
            div = _parse_xml(f'<div xmlns="{XHTML_NS}">{value}</div>', "xhtml")
        except PayloadError:
            kind = "html"  # not well-formed XHTML: ship it as (escaped) HTML instead
        else:
            elem.set("type", "xhtml")
            elem.append(div)
            return
    if kind == "html":
        elem.set("type", "html")
    elem.text = value


def entry_to_element(entry: Entry, item_id: str | None = None) -> ET.Element:
    """An ``{ATOM_NS}entry`` element for ``entry`` (what the XMPP plugin publishes).

    Children, in order: ``id`` (``entry.id``, else ``item_id``, else none), ``title`` (always: the
    title, else derived from the summary or content, else empty), ``updated`` and ``published``
    when set (no ``updated`` is invented: sinks that need one add it), ``author`` (``name``, else the
    email as name; ``email``; ``uri``), ``link rel="alternate"``, ``category term=...`` per
    category, ``summary`` and ``content`` with ``type="html"``/``"xhtml"`` when not text. XHTML that
    is not well-formed is sent as ``type="html"``. Characters XML forbids are stripped from every
    value; raises :class:`PayloadError` for an unknown content or summary type.
    """
    _check_type(entry.content_type, "content_type")
    _check_type(entry.summary_type, "summary_type")
    root = ET.Element(_atom("entry"))

    def add(local: str, value: str | None, **attrib: str) -> None:
        if value is None:
            return
        child = ET.SubElement(root, _atom(local), {k: _xml_safe(v) for k, v in attrib.items()})
        child.text = _xml_safe(value)

    identity = entry.id or item_id
    add("id", identity)
    title = entry.title
    if title is None:
        title = derive_title(_as_text(entry.summary, entry.summary_type)) or derive_title(
            _as_text(entry.content, entry.content_type)
        )
    add("title", title or "")
    if entry.updated is not None:
        add("updated", _format_date(entry.updated))
    if entry.published is not None:
        add("published", _format_date(entry.published))
    name = entry.author or entry.author_email
    if name or entry.author_uri:
        author = ET.SubElement(root, _atom("author"))
        parts: tuple[tuple[str, str | None], ...] = (
            ("name", name or ""),
            ("email", entry.author_email),
            ("uri", entry.author_uri),
        )
        for local, value in parts:
            if value is not None:
                ET.SubElement(author, _atom(local)).text = _xml_safe(value)
    if entry.link:
        ET.SubElement(root, _atom("link"), {"rel": "alternate", "href": _xml_safe(entry.link)})
    for term in entry.categories:
        ET.SubElement(root, _atom("category"), {"term": _xml_safe(term)})
    if entry.summary is not None:
        _text_construct(root, "summary", entry.summary, entry.summary_type)
    if entry.content is not None:
        _text_construct(root, "content", entry.content, entry.content_type)
    return root


_XML_NS = "http://www.w3.org/XML/1998/namespace"


def _escape_text(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")


def _escape_attr(text: str) -> str:
    return _escape_text(text).replace('"', "&quot;").replace("\n", "&#10;").replace("\t", "&#9;")


def _split_tag(tag: str) -> tuple[str, str]:
    if tag.startswith("{"):
        namespace, _, local = tag[1:].partition("}")
        return namespace, local
    return "", tag


def _write_xml(elem: ET.Element, scope: str, out: list[str]) -> None:
    """Append ``elem`` (not its tail) to ``out``; ``scope`` is the default namespace in effect.

    Element namespaces are written as default-namespace declarations where they change (so an Atom
    entry reads ``<entry xmlns="...Atom">`` and its XHTML ``<div xmlns="...xhtml">``); namespaced
    attributes get ``nsN`` prefixes declared on their element (``xml:`` needs none). Comments are
    kept, processing instructions dropped. ElementTree's own ``default_namespace`` cannot be used:
    it refuses unqualified attributes such as Atom's ``type`` and ``href``.
    """
    tag: object = elem.tag
    if tag is ET.Comment:
        comment = (elem.text or "").replace("--", "- -")
        out.append(f"<!--{comment} -->" if comment.endswith("-") else f"<!--{comment}-->")
        return
    if not isinstance(tag, str):  # processing instruction or something stranger
        return
    namespace, local = _split_tag(tag)
    declarations: list[str] = []
    if namespace != scope:
        declarations.append(f' xmlns="{_escape_attr(namespace)}"')
        scope = namespace
    attributes: list[str] = []
    prefixes: dict[str, str] = {}
    for key, value in elem.items():
        key_namespace, key_local = _split_tag(str(key))
        if not key_namespace:
            name = key_local
        elif key_namespace == _XML_NS:
            name = f"xml:{key_local}"
        else:
            if key_namespace not in prefixes:
                prefixes[key_namespace] = f"ns{len(prefixes)}"
                declarations.append(f' xmlns:{prefixes[key_namespace]}="{_escape_attr(key_namespace)}"')
            name = f"{prefixes[key_namespace]}:{key_local}"
        attributes.append(f' {name}="{_escape_attr(str(value))}"')
    out.append(f"<{local}{''.join(declarations)}{''.join(attributes)}")
    if not elem.text and len(elem) == 0:
        out.append(" />")
        return
    out.append(">")
    out.append(_escape_text(elem.text or ""))
    for child in elem:
        _write_xml(child, scope, out)
        out.append(_escape_text(child.tail or ""))
    out.append(f"</{local}>")


def _tostring(elem: ET.Element) -> str:
    """Serialize ``elem`` alone (not its tail), its namespace as default, no XML declaration.

    Characters XML forbids are stripped; carriage returns are written as ``&#13;`` so that they
    survive XML's line-end normalisation.
    """
    out: list[str] = []
    try:
        _write_xml(elem, "", out)
    except RecursionError:
        raise PayloadError("xml: elements nested too deeply to serialize") from None
    return _xml_safe("".join(out))


# --------------------------------------------------------------------------------------------------
# Conversion, hashing, XMPP elements, HTML


def convert(
    payload: str | bytes,
    to: Format | str,
    *,
    source: Format | str | None = None,
    item_id: str | None = None,
    max_bytes: int | None = MAX_PAYLOAD_BYTES,
) -> str:
    """``render(parse(payload, source), to, item_id=item_id)``: always a normalized payload.

    ``source=None`` detects the format. Converting to the payload's own format still normalizes it
    (and fills the id); anything :class:`Entry` has no field for is dropped. Raises
    :class:`PayloadError`.
    """
    return render(parse(payload, source, max_bytes=max_bytes), to, item_id=item_id)


def content_hash(payload: str | bytes) -> str:
    """SHA-256 hex digest of the payload's UTF-8 bytes (lone surrogates kept as-is), for idempotence.

    Equal payload strings always give equal hashes, across processes and Python versions; no
    normalisation is done, so compare payloads in the same format (e.g. both rendered).
    """
    data = payload if isinstance(payload, bytes) else payload.encode("utf-8", "surrogatepass")
    return hashlib.sha256(data).hexdigest()


def element_to_payload(elem: ET.Element) -> tuple[Format, str]:
    """Format and payload of an XMPP PubSub item's payload element (``xml.etree.ElementTree``).

    * ``{ATOM_NS}entry``: ``(Format.ATOM, the entry serialized with Atom as default namespace)``,
      extensions included (it is not validated; :func:`parse` does that).
    * ``{urn:xmpp:json:0}json`` (XEP-0335): ``(Format.JSON, its text)``, unchecked.
    * any other element: ``(Format.TEXT, the element serialized as XML)``, its own namespace as
      default namespace; the payload is XML but travels as text.

    The element's tail is never included, and characters XML forbids are stripped.
    """
    if elem.tag == _atom("entry"):
        return Format.ATOM, _tostring(elem)
    if elem.tag == f"{{{XEP0335_NS}}}json":
        return Format.JSON, elem.text or ""
    return Format.TEXT, _tostring(elem)


def json_to_element(payload: str) -> ET.Element:
    """A XEP-0335 ``{urn:xmpp:json:0}json`` element carrying ``payload`` as its text."""
    elem = ET.Element(f"{{{XEP0335_NS}}}json")
    elem.text = _xml_safe(payload)
    return elem


_SAFE_TAGS = frozenset(
    {
        "a", "abbr", "b", "blockquote", "br", "caption", "cite", "code", "dd", "del", "details",
        "dfn", "div", "dl", "dt", "em", "figcaption", "figure", "h1", "h2", "h3", "h4", "h5", "h6",
        "hr", "i", "img", "ins", "kbd", "li", "mark", "ol", "p", "pre", "q", "s", "samp", "small",
        "span", "strong", "sub", "summary", "sup", "table", "tbody", "td", "tfoot", "th", "thead",
        "time", "tr", "u", "ul",
    }
)  # fmt: skip
_SAFE_ATTRIBUTES: dict[str, set[str]] = {
    "*": {"lang", "dir", "title"},
    "a": {"href"},
    "img": {"src", "alt", "width", "height"},
    "td": {"colspan", "rowspan"},
    "th": {"colspan", "rowspan", "scope"},
    "time": {"datetime"},
    "ol": {"start"},
    "blockquote": {"cite"},
    "q": {"cite"},
}
_SAFE_SCHEMES = frozenset({"http", "https", "mailto"})

# A start or end tag as HTML tokenizes it, for counting nesting: ``<name ...>`` or ``</name ...>``.
# An attribute value is quoted only when a quote comes first after ``=`` (a quote elsewhere is an
# ordinary character, as in HTML); possessive matching keeps the scan linear on any input.
_TAG = re.compile(r"""<(/?)([A-Za-z][^\s/>]*)(?:[^>"'=]++|=\s*+"[^"]*+"|=\s*+'[^']*+'|[="'])*+>""")
_VOID_TAGS = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "keygen", "link", "meta", "param",
     "source", "track", "wbr"}
)  # fmt: skip
# Elements whose end tag HTML implies: a parser closes them when a parent closes, and ``p``/``li``/
# ``dd``/``dt``/``option`` close an open sibling of their kind (table elements are left out: scope
# rules make the parser ignore some of their end tags, and counting too deep is the safe side).
_IMPLIED_END = frozenset({"dd", "dt", "li", "optgroup", "option", "p", "rb", "rp", "rt", "rtc"})
_SIBLING_CLOSES = {"p": {"p"}, "li": {"li"}, "dd": {"dd", "dt"}, "dt": {"dd", "dt"}, "option": {"option"}}


def limit_html_depth(markup: str, max_depth: int = MAX_HTML_DEPTH) -> str:
    """``markup`` with the start and end tags nested deeper than ``max_depth`` removed (text kept).

    One linear scan, done before an HTML parser sees untrusted markup: html5ever (nh3) takes time
    that grows with the square of the nesting depth. The scan follows the open elements on a
    stack the way an HTML parser would, closer to over-counting than under-counting: an end tag
    closes elements only when it matches the innermost one (or only elements with implied end tags
    lie above its match); other end tags change nothing. Markup within the limit is returned
    unchanged (the same object).
    """
    if markup.count("<") <= max_depth:
        return markup  # too few tags to nest that deep: the common case costs one count
    stack: list[str] = []
    drop: list[tuple[int, int]] = []
    for match in _TAG.finditer(markup):
        name = match.group(2).lower()
        if match.group(1):  # end tag
            closes = 0
            for above in range(len(stack) - 1, -1, -1):
                if stack[above] == name:
                    closes = len(stack) - above
                    break
                if stack[above] not in _IMPLIED_END:
                    break
            if len(stack) > max_depth or closes == 0 and len(stack) >= max_depth:
                drop.append(match.span())  # its start tag was dropped too, or it closes nothing
            if closes:
                del stack[len(stack) - closes :]
            continue
        if name in _VOID_TAGS:
            continue
        if stack and stack[-1] in _SIBLING_CLOSES.get(name, ()):
            stack.pop()
        stack.append(name)
        if len(stack) > max_depth:
            drop.append(match.span())
    if not drop:
        return markup
    parts: list[str] = []
    position = 0
    for start, end in drop:
        parts.append(markup[position:start])
        position = end
    parts.append(markup[position:])
    return "".join(parts)


def sanitize_html(markup: str, *, max_depth: int = MAX_HTML_DEPTH) -> str:
    """Sanitise untrusted HTML with nh3 for publishing in a feed.

    Conservative allow-list: text formatting, headings, lists, tables, links and images only; no
    ``script``/``style``/``iframe``/``object``/forms (``script`` and ``style`` lose their content
    too), no ``on*``, ``style`` or ``class`` attributes, URLs only ``http``, ``https``, ``mailto`` or
    relative; links get ``rel="noopener noreferrer"``; comments dropped. Tags nested deeper than
    ``max_depth`` are dropped first, their text kept (:func:`limit_html_depth`), so that the time
    taken stays linear in the size of the markup.
    """
    return nh3.clean(
        limit_html_depth(_no_surrogates(markup), max_depth),
        tags=set(_SAFE_TAGS),
        clean_content_tags={"script", "style"},
        attributes=_SAFE_ATTRIBUTES,
        url_schemes=set(_SAFE_SCHEMES),
        link_rel="noopener noreferrer",
        strip_comments=True,
    )
