"""Rendering an :class:`Entry` as a payload (Atom, JSON, text), the Atom ``<entry>`` element,
:func:`convert` (parse, then render), and :func:`render_parsed` (render, and know what the result
parses as without parsing it)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from typing import Any

from .detect import parse_xml
from .model import (
    MAX_PAYLOAD_BYTES,
    MAX_XML_DEPTH,
    XHTML_NS,
    Entry,
    Format,
    PayloadError,
    atom,
    check_type,
    derive_title,
    format_date,
    no_surrogates,
    xml_safe,
)
from .parsing import Parsed, entry_from_atom, entry_from_json, parse, parse_text
from .sanitize import as_text
from .xml_writer import tostring


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
    fmt = _checked(entry, fmt)
    if fmt is Format.ATOM:
        return tostring(entry_to_element(entry, item_id))
    if fmt is Format.JSON:
        return no_surrogates(json.dumps(_json_object(entry, item_id), ensure_ascii=False))
    return _render_text(entry)


def render_parsed(entry: Entry, fmt: Format | str, *, item_id: str | None = None) -> tuple[str, Parsed | None]:
    """:func:`render`, and what :func:`~thoonk_bridge.payload.parsing.parse_payload` gives for the
    result (without a size limit), known without parsing it: the router converts an event with it,
    so that its sinks need not parse the converted payload again. Raises :class:`PayloadError`.

    The second value is ``None`` where that cannot be told for sure (the result would be parsed
    then): an Atom entry nested deeper than :data:`MAX_XML_DEPTH` (its parse fails), text that starts
    like XML or JSON (detection decides what it parses as).
    """
    fmt = _checked(entry, fmt)
    if fmt is Format.ATOM:
        element = entry_to_element(entry, item_id)
        payload = tostring(element)
        if _depth(element) > MAX_XML_DEPTH:
            return payload, None
        # The element is what parsing the payload gives back: every value in it is already free of
        # the characters XML forbids, and the writer escapes what XML would normalise (CR, tabs and
        # line ends in attributes).
        return payload, Parsed(Format.ATOM, entry_from_atom(element), element)
    if fmt is Format.JSON:
        data = _json_object(entry, item_id)
        payload = no_surrogates(json.dumps(data, ensure_ascii=False))
        # json.loads(payload) is ``data`` without lone surrogates (the only change dumping made).
        decoded = {key: _without_surrogates(value) for key, value in data.items()}
        return payload, Parsed(Format.JSON, entry_from_json(decoded))
    payload = _render_text(entry)
    if payload.lstrip().removeprefix("\ufeff").lstrip().startswith(("<", "{")) or payload.startswith("\ufeff"):
        return payload, None
    return payload, Parsed(Format.TEXT, parse_text(payload))


def _checked(entry: Entry, fmt: Format | str) -> Format:
    try:
        fmt = Format(fmt)
    except ValueError:
        raise PayloadError(f"unknown payload format {fmt!r}") from None
    check_type(entry.content_type, "content_type")
    check_type(entry.summary_type, "summary_type")
    return fmt


def _depth(element: ET.Element) -> int:
    return 1 + max((_depth(child) for child in element), default=0)


def _without_surrogates(value: Any) -> Any:
    if isinstance(value, str):
        return no_surrogates(value)
    if isinstance(value, list):
        return [no_surrogates(item) for item in value]
    return value


def _json_object(entry: Entry, item_id: str | None) -> dict[str, Any]:
    """The JSON object of the json format (before dumping)."""
    data: dict[str, Any] = {}
    data["id"] = entry.id or item_id
    data["title"] = entry.title
    data["link"] = entry.link
    data["author"] = entry.author
    data["author_email"] = entry.author_email
    data["author_uri"] = entry.author_uri
    data["published"] = format_date(entry.published) if entry.published else None
    data["updated"] = format_date(entry.updated) if entry.updated else None
    data["categories"] = list(entry.categories) or None
    data["summary"] = entry.summary
    if entry.summary is not None and entry.summary_type != "text":
        data["summary_type"] = entry.summary_type
    data["content"] = entry.content
    if entry.content is not None:
        data["content_type"] = entry.content_type
    return {key: value for key, value in data.items() if value is not None}


def _render_text(entry: Entry) -> str:
    if entry.content is not None:
        body = as_text(entry.content, entry.content_type) or ""
    else:
        body = as_text(entry.summary, entry.summary_type) or ""
    if entry.link and entry.link not in body:
        body = f"{body}\n\n{entry.link}" if body else entry.link
    title = entry.title
    if title and (derive_title(body) == title or body.startswith(title)):
        title = None
    if title and body:
        text = f"{title}\n\n{body}"
    else:
        text = title or body
    return no_surrogates(text)


def _text_construct(parent: ET.Element, local: str, value: str, kind: str) -> None:
    elem = ET.SubElement(parent, atom(local))
    value = xml_safe(value)
    if kind == "xhtml":
        try:
            div = parse_xml(f'<div xmlns="{XHTML_NS}">{value}</div>', "xhtml")
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
    check_type(entry.content_type, "content_type")
    check_type(entry.summary_type, "summary_type")
    root = ET.Element(atom("entry"))

    def add(local: str, value: str | None, **attrib: str) -> None:
        if value is None:
            return
        child = ET.SubElement(root, atom(local), {k: xml_safe(v) for k, v in attrib.items()})
        child.text = xml_safe(value)

    identity = entry.id or item_id
    add("id", identity)
    title = entry.title
    if title is None:
        title = derive_title(as_text(entry.summary, entry.summary_type)) or derive_title(
            as_text(entry.content, entry.content_type)
        )
    add("title", title or "")
    if entry.updated is not None:
        add("updated", format_date(entry.updated))
    if entry.published is not None:
        add("published", format_date(entry.published))
    name = entry.author or entry.author_email
    if name or entry.author_uri:
        author = ET.SubElement(root, atom("author"))
        parts: tuple[tuple[str, str | None], ...] = (
            ("name", name or ""),
            ("email", entry.author_email),
            ("uri", entry.author_uri),
        )
        for local, value in parts:
            if value is not None:
                ET.SubElement(author, atom(local)).text = xml_safe(value)
    if entry.link:
        ET.SubElement(root, atom("link"), {"rel": "alternate", "href": xml_safe(entry.link)})
    for term in entry.categories:
        ET.SubElement(root, atom("category"), {"term": xml_safe(term)})
    if entry.summary is not None:
        _text_construct(root, "summary", entry.summary, entry.summary_type)
    if entry.content is not None:
        _text_construct(root, "content", entry.content, entry.content_type)
    return root


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
