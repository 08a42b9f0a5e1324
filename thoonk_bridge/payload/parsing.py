"""Parsing payloads (Atom, JSON, text) into an :class:`Entry`.

:func:`parse_payload` is the one place a payload's text is parsed; :func:`parse` is its entry.
What reads an already parsed JSON object or Atom element (:func:`entry_from_json`,
:func:`entry_from_atom`) is apart, so that :func:`~thoonk_bridge.payload.render.render_parsed` can
tell what a payload it renders will parse as without parsing it again.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

from .detect import check_size, decode, detect_format, detect_json, parse_xml
from .model import (
    ATOM_NS,
    CONTENT_TYPES,
    MAX_PAYLOAD_BYTES,
    XHTML_NS,
    Entry,
    Format,
    PayloadError,
    atom,
    derive_title,
    parse_date,
    xml_safe,
)
from .sanitize import as_text
from .xml_writer import escape_text, write_xml


@dataclass(frozen=True, slots=True)
class Parsed:
    """A payload parsed once, for everything downstream to share (``ItemEvent.parsed``).

    Fields:
        format: the payload's format (detected, or as given to :func:`parse_payload`).
        entry: what :func:`parse` returns for the payload.
        element: for an Atom payload, its ``<entry>`` element as read (what the xmpp sink
            publishes); ``None`` for the other formats.

    Shared by the router and every sink of a route: never modify ``entry`` or ``element``.
    """

    format: Format
    entry: Entry
    element: ET.Element | None = None


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
    return parse_payload(payload, fmt, max_bytes=max_bytes).entry


def parse_payload(
    payload: str | bytes,
    fmt: Format | str | None = None,
    *,
    max_bytes: int | None = MAX_PAYLOAD_BYTES,
) -> Parsed:
    """:func:`parse`, returning the detected format and (Atom) the element read along with the
    entry; raises :class:`PayloadError`. A JSON payload is decoded once, detection included."""
    check_size(payload, max_bytes)
    text = decode(payload) if isinstance(payload, bytes) else payload
    text = text.removeprefix("\ufeff")
    data: Any = None
    if fmt is None:
        fmt, data = detect_json(text)
        if data is not None and not text.lstrip(" \t\n\r").startswith("{"):
            data = None  # detection strips more than JSON's whitespace: let json.loads say what is wrong
    else:
        try:
            fmt = Format(fmt)
        except ValueError:
            raise PayloadError(f"unknown payload format {fmt!r}") from None
    if fmt is Format.ATOM:
        root = parse_xml(text, "atom")
        return Parsed(fmt, entry_from_atom(root), root)
    if fmt is Format.JSON:
        return Parsed(fmt, entry_from_json(_load_json(text) if data is None else data))
    return Parsed(fmt, parse_text(text))


def detect_parsed(payload: str) -> tuple[Format, Parsed | PayloadError | None]:
    """:func:`~thoonk_bridge.payload.detect.detect_format`, and the payload's parse (no size limit)
    or the error it raises where detecting decodes the whole payload anyway (one starting with
    ``{``: a JSON payload is then decoded once); ``None`` where detection only sniffed it."""
    if not payload.lstrip().removeprefix("\ufeff").lstrip().startswith("{"):
        return detect_format(payload), None
    try:
        parsed = parse_payload(payload, max_bytes=None)
    except PayloadError as exc:
        return Format.JSON, exc  # detected as a JSON object: text (anything else) always parses
    return parsed.format, parsed


def parse_text(text: str) -> Entry:
    """The entry of a text payload (BOM already removed)."""
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


def _load_json(text: str) -> Any:
    try:
        return json.loads(text, strict=False)
    except json.JSONDecodeError as exc:
        raise PayloadError(f"json: line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise PayloadError("json: nested too deeply") from None
    except ValueError as exc:  # e.g. numbers with too many digits
        raise PayloadError(f"json: {exc}") from None


def entry_from_json(data: Any) -> Entry:
    """The entry of a decoded JSON payload; raises :class:`PayloadError` (not an object, wrong types)."""
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
        setattr(entry, key, parse_date(value, f'json: "{key}"'))

    categories = data.get("categories")
    if categories is not None:
        if not isinstance(categories, list):
            raise PayloadError(f'json: "categories" must be a list of strings, got {_json_type(categories)}')
        for index, term in enumerate(categories):
            if not isinstance(term, str):
                raise PayloadError(f'json: "categories"[{index}] must be a string, got {_json_type(term)}')
        entry.categories = list(categories)
    return entry


def _describe_tag(tag: str) -> str:
    if tag.startswith("{"):
        namespace, _, local = tag[1:].partition("}")
        return f"<{local}> in namespace {namespace}"
    return f"<{tag}> in no namespace"


def _child_text(parent: ET.Element, local: str) -> str | None:
    child = parent.find(atom(local))
    if child is None:
        return None
    return (child.text or "").strip()


def _inner_xhtml(div: ET.Element) -> str:
    """Markup inside an XHTML div; XHTML is the default namespace it is written in."""
    parts = [escape_text(div.text or "")]
    for child in div:
        write_xml(child, XHTML_NS, parts)
        parts.append(escape_text(child.tail or ""))
    return xml_safe("".join(parts))


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


def entry_from_atom(root: ET.Element) -> Entry:
    """The entry of a parsed Atom payload; raises :class:`PayloadError` (not an entry, no title...)."""
    if root.tag != atom("entry"):
        raise PayloadError(f"atom: root element is {_describe_tag(root.tag)}, expected <entry> in namespace {ATOM_NS}")
    entry = Entry(id=_child_text(root, "id") or None)

    title = root.find(atom("title"))
    if title is None:
        raise PayloadError("atom: <entry> has no <title>")
    value, kind = _read_text_construct(title, "title")
    entry.title = (as_text(value, kind) or "").strip()

    for link in root.findall(atom("link")):
        if (link.get("rel") or "alternate").strip() == "alternate" and link.get("href"):
            entry.link = (link.get("href") or "").strip()
            break

    content = root.find(atom("content"))
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

    summary = root.find(atom("summary"))
    if summary is not None:
        entry.summary, entry.summary_type = _read_text_construct(summary, "summary")

    author = root.find(atom("author"))
    if author is not None:
        entry.author = _child_text(author, "name") or None
        entry.author_email = _child_text(author, "email") or None
        entry.author_uri = _child_text(author, "uri") or None

    for local in ("published", "updated"):
        stamp = _child_text(root, local)
        if stamp is not None:
            setattr(entry, local, parse_date(stamp, f"atom: <{local}>"))

    entry.categories = [
        (category.get("term") or "").strip()
        for category in root.findall(atom("category"))
        if (category.get("term") or "").strip()
    ]
    return entry


# --------------------------------------------------------------------------------------------------
# Rendering
