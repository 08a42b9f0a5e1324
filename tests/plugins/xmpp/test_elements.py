"""The xmpp plugin's payload elements: Atom entries and XEP-0335 JSON containers, to and from the
route's payloads (moved from tests/engine/test_payload.py with the code they test)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from tests.support.entries import FULL, A
from thoonk_bridge.payload import ATOM_NS, Entry, Format, detect_format, entry_to_element, parse, render
from thoonk_bridge.plugins.xmpp.json_container import XEP0335_NS, json_to_element
from thoonk_bridge.plugins.xmpp.xml import element_to_payload


def test_entry_to_element_is_the_atom_render() -> None:
    elem = entry_to_element(FULL)
    assert isinstance(elem, ET.Element)
    assert elem.tag == A + "entry"
    assert element_to_payload(elem) == (Format.ATOM, render(FULL, Format.ATOM))


def test_element_to_payload_atom_entry_keeps_extensions_and_drops_tail() -> None:
    wrapper = ET.fromstring(
        f'<item xmlns="http://jabber.org/protocol/pubsub#event" id="1">'
        f'<entry xmlns="{ATOM_NS}" xmlns:thr="http://purl.org/syndication/thread/1.0" xml:lang="en">'
        f'<title>From XMPP</title><thr:in-reply-to ref="x" /><content type="html">&lt;b&gt;</content>'
        f"</entry>tail text</item>"
    )
    fmt, payload = element_to_payload(wrapper[0])
    assert fmt is Format.ATOM
    assert payload.startswith(f'<entry xmlns="{ATOM_NS}" xml:lang="en">')
    assert "tail text" not in payload
    assert '<in-reply-to xmlns="http://purl.org/syndication/thread/1.0" ref="x" />' in payload
    assert parse(payload, fmt) == Entry(title="From XMPP", content="<b>", content_type="html")


def test_element_to_payload_xep0335_json() -> None:
    elem = ET.fromstring(f'<json xmlns="{XEP0335_NS}">{{"title": "J &amp; son"}}</json>')
    fmt, payload = element_to_payload(elem)
    assert (fmt, payload) == (Format.JSON, '{"title": "J & son"}')
    assert parse(payload, fmt).title == "J & son"
    assert element_to_payload(ET.Element(f"{{{XEP0335_NS}}}json")) == (Format.JSON, "")
    made = json_to_element(render(FULL, Format.JSON))
    assert made.tag == f"{{{XEP0335_NS}}}json"
    assert parse(element_to_payload(made)[1], Format.JSON) == FULL


def test_element_to_payload_unknown_namespaces_stay_xml_text() -> None:
    elem = ET.fromstring(
        '<geoloc xmlns="http://jabber.org/protocol/geoloc" xmlns:x="urn:x" x:attr="1" note="a&quot;b&#10;c">'
        "<lat>45.44</lat><plain xmlns=''>t &amp; &lt;</plain><!-- gone --><?pi gone?></geoloc>"
    )
    fmt, payload = element_to_payload(elem)
    assert fmt is Format.TEXT
    assert payload == (
        '<geoloc xmlns="http://jabber.org/protocol/geoloc" xmlns:ns0="urn:x" ns0:attr="1" note="a&quot;b&#10;c">'
        '<lat>45.44</lat><plain xmlns="">t &amp; &lt;</plain></geoloc>'
    )
    again = ET.fromstring(payload)
    assert again.tag == "{http://jabber.org/protocol/geoloc}geoloc"
    assert again.get("{urn:x}attr") == "1" and again.get("note") == 'a"b\nc'
    assert again[1].tag == "plain"
    # carried as text, and recognised as text again
    assert detect_format(payload) is Format.TEXT
    assert parse(payload).content == payload
    no_ns = ET.fromstring("<thing a='1'>x</thing>")
    assert element_to_payload(no_ns) == (Format.TEXT, '<thing a="1">x</thing>')


def test_element_to_payload_strips_forbidden_characters() -> None:
    elem = ET.Element("{urn:x}bad", {"a": "x\x01y"})
    elem.text = "nul\x00"
    fmt, payload = element_to_payload(elem)
    assert fmt is Format.TEXT and payload == '<bad xmlns="urn:x" a="xy">nul</bad>'
    ET.fromstring(payload)
