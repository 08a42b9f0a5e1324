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
The package is pure logic: no I/O, no global state, safe to call from any thread or event loop.
Its parts: :mod:`.model` (the item model, limits, field helpers), :mod:`.detect` (bytes, size,
format detection, defused XML reading), :mod:`.parsing`, :mod:`.render`, :mod:`.xml_writer` and
:mod:`.sanitize` (HTML). XEP-0335 JSON containers live in the xmpp plugin, their only user.

A payload is parsed once per event on its way to the sinks: :func:`parse_payload` (behind
:func:`parse`) returns a :class:`Parsed` (format, entry, and for Atom the element read) that
``ItemEvent.parsed()`` keeps for the router's conversion and every sink, and :func:`render_parsed`
tells what a payload it renders parses as, so a converted event needs no second parse.

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

from .detect import detect_format
from .model import (
    ATOM_NS,
    CONTENT_TYPES,
    MAX_HTML_DEPTH,
    MAX_PAYLOAD_BYTES,
    MAX_TITLE_CHARS,
    MAX_XML_DEPTH,
    XHTML_NS,
    Entry,
    Format,
    PayloadError,
    content_hash,
    derive_title,
)
from .parsing import Parsed, parse, parse_payload
from .render import convert, entry_to_element, render, render_parsed
from .sanitize import html_to_text, limit_html_depth, sanitize_html

__all__ = [
    "ATOM_NS",
    "CONTENT_TYPES",
    "MAX_HTML_DEPTH",
    "MAX_PAYLOAD_BYTES",
    "MAX_TITLE_CHARS",
    "MAX_XML_DEPTH",
    "XHTML_NS",
    "Entry",
    "Format",
    "Parsed",
    "PayloadError",
    "content_hash",
    "convert",
    "derive_title",
    "detect_format",
    "entry_to_element",
    "html_to_text",
    "limit_html_depth",
    "parse",
    "parse_payload",
    "render",
    "render_parsed",
    "sanitize_html",
]
