"""XML helpers shared by the xmpp source and sink: payloads to elements and back, canonical forms."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring as safe_fromstring

from thoonk_bridge.payload import Format, PayloadError, content_hash, convert, entry_to_element, parse
from thoonk_bridge.payload.model import atom
from thoonk_bridge.payload.xml_writer import tostring
from thoonk_bridge.plugin import ItemEvent

from .json_container import container_json, json_to_element


def canonical(element: ET.Element) -> ET.Element:
    """A copy with every element's attributes in sorted order: Prosody keeps attributes in a Lua
    table, so their order in what it sends back is not the order they were published in."""
    copy = ET.Element(element.tag, dict(sorted(element.attrib.items())))
    copy.text, copy.tail = element.text, element.tail
    copy.extend(canonical(child) for child in element)
    return copy


def element_to_payload(elem: ET.Element) -> tuple[Format, str]:
    """Format and payload of an XMPP PubSub item's payload element (``xml.etree.ElementTree``).

    * ``{ATOM_NS}entry``: ``(Format.ATOM, the entry serialized with Atom as default namespace)``,
      extensions included (it is not validated; :func:`thoonk_bridge.payload.parse` does that).
    * ``{urn:xmpp:json:0}json`` (XEP-0335, see :mod:`.json_container`): ``(Format.JSON, its text)``,
      unchecked.
    * any other element: ``(Format.TEXT, the element serialized as XML)``, its own namespace as
      default namespace; the payload is XML but travels as text.

    The element's tail is never included, and characters XML forbids are stripped.
    """
    if elem.tag == atom("entry"):
        return Format.ATOM, tostring(elem)
    text = container_json(elem)
    if text is not None:
        return Format.JSON, text
    return Format.TEXT, tostring(elem)


def payload_to_element(event: ItemEvent, fmt: Format | None) -> ET.Element:
    """The element published for an event's payload (raises PayloadError).

    Route format ``atom`` or an Atom payload: the Atom entry (as given, when it is one already);
    ``json``: a XEP-0335 container; ``text``: an Atom entry built from the text. With no route
    format, a payload that is XML of another namespace is published as that element.

    The payload is parsed once per event (``event.parsed()``: shared with the router's conversion
    and the route's other sinks); an Atom payload's element is the one that parse read.
    """
    payload, item_id = event.payload or "", event.id
    detected = event.payload_format()
    if fmt is Format.JSON:
        if detected is not Format.JSON:  # (the router converts to the route's format already)
            payload = convert(payload, Format.JSON, source=detected, item_id=item_id)
            parse(payload, Format.JSON)
        else:
            event.parsed()  # validates
        return json_to_element(payload)
    if fmt is None and detected is Format.JSON:
        return json_to_element(payload)
    if detected is Format.ATOM:
        element = event.parsed().element  # validates (DTDs, depth, size, title)
        # Read from the str: the same tree as _xml() reads from UTF-8 bytes, but where an XML
        # declaration could name another encoding.
        if element is not None and payload.startswith("<") and not payload.startswith("<?"):
            return element
        return _xml(payload)
    if fmt is None and payload.lstrip().startswith("<"):
        try:
            return _xml(payload)
        except PayloadError:
            pass  # not XML after all: plain text
    entry = event.entry() if detected is Format.TEXT else parse(payload, Format.TEXT)
    return entry_to_element(entry, item_id)


def _xml(payload: str) -> ET.Element:
    try:
        return safe_fromstring(payload.strip().encode("utf-8", "surrogatepass"), forbid_dtd=True)
    except (ET.ParseError, DefusedXmlException, ValueError) as exc:
        raise PayloadError(f"xml: {exc}") from None


def canonical_hash(element: ET.Element) -> str:
    return content_hash(ET.tostring(canonical(element), encoding="unicode"))


def roundtrip_hash(element: ET.Element | None, fmt: Format | None, item_id: str) -> str | None:
    """``content_hash`` of the payload the router would hand ``apply()`` to get ``element``.

    Exact for what this sink published when the route has a ``format`` (and for Atom, JSON and
    XML payloads without one); ``None`` when the item cannot be compared.
    """
    if element is None:
        return None
    natural, text = element_to_payload(canonical(element))
    if fmt is None or fmt is natural:
        return content_hash(text)
    try:
        return content_hash(convert(text, fmt, source=natural, item_id=item_id))
    except PayloadError:
        return None
