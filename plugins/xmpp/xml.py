"""XML helpers shared by the xmpp source and sink."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from thoonk_bridge.payload import Format
from thoonk_bridge.payload.model import atom
from thoonk_bridge.payload.xml_writer import tostring

from .json_container import container_json


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
