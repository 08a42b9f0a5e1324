"""XML helpers shared by the xmpp source and sink."""

from __future__ import annotations

import xml.etree.ElementTree as ET


def canonical(element: ET.Element) -> ET.Element:
    """A copy with every element's attributes in sorted order: Prosody keeps attributes in a Lua
    table, so their order in what it sends back is not the order they were published in."""
    copy = ET.Element(element.tag, dict(sorted(element.attrib.items())))
    copy.text, copy.tail = element.text, element.tail
    copy.extend(canonical(child) for child in element)
    return copy
