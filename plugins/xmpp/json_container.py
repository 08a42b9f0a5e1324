"""XEP-0335 JSON containers: a JSON payload travels in PubSub as a ``{urn:xmpp:json:0}json``
element whose text is the JSON."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from thoonk_bridge.payload.model import xml_safe

XEP0335_NS = "urn:xmpp:json:0"
JSON_TAG = f"{{{XEP0335_NS}}}json"


def json_to_element(payload: str) -> ET.Element:
    """A XEP-0335 ``{urn:xmpp:json:0}json`` element carrying ``payload`` as its text."""
    elem = ET.Element(JSON_TAG)
    elem.text = xml_safe(payload)
    return elem


def container_json(elem: ET.Element) -> str | None:
    """The JSON text of a XEP-0335 container (unchecked), ``None`` when ``elem`` is not one."""
    if elem.tag != JSON_TAG:
        return None
    return elem.text or ""
