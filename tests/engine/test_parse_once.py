"""A payload is parsed once per event on its way to the sinks: the router's format conversion and
every sink share the event's parse (ItemEvent.parsed); a converted event carries what its new payload
parses as (render_parsed), exactly what parsing it again would give."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from thoonk_bridge import plugin as plugin_module
from thoonk_bridge.discovery import discover_plugins
from thoonk_bridge.payload import (
    MAX_XML_DEPTH,
    Entry,
    Format,
    Parsed,
    PayloadError,
    parse,
    parse_payload,
    render,
    render_parsed,
)
from thoonk_bridge.payload import parsing as parse_module
from thoonk_bridge.payload.xml_writer import tostring
from thoonk_bridge.plugin import Endpoint, EndpointKind, EventKind, ItemEvent, Plugin, RouteContext, Settings, Sink
from thoonk_bridge.plugins.xmpp import xml as xmpp_xml
from thoonk_bridge.testing import running_bridge, wait_until

# --------------------------------------------------------------------------------------------------
# render_parsed: what the rendered payload parses as, without parsing it

_TEXT = st.text(max_size=30) | st.sampled_from(
    ["", " ", "<b>bold</b> &amp; more", "<p>open", "\r\n\t", "\x00\x01\ufffe", "\ud800 lone", "{\"a\": 1}",
     "<entry xmlns='http://www.w3.org/2005/Atom'><title>t</title></entry>", "\ufeffbom", " x ", "]]>"]
)  # fmt: skip
_OPTIONAL = st.none() | _TEXT
_WHEN = st.none() | st.datetimes(
    min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1),
    timezones=st.none() | st.just(UTC) | st.builds(lambda m: timezone(timedelta(minutes=m)), st.integers(-900, 900))
    | st.builds(lambda s: timezone(timedelta(seconds=s)), st.integers(-50_000, 50_000)),
)  # fmt: skip
_KIND = st.sampled_from(["text", "html", "xhtml"])
ENTRIES = st.builds(
    Entry,
    id=_OPTIONAL, title=_OPTIONAL, link=_OPTIONAL, content=_OPTIONAL, content_type=_KIND, summary=_OPTIONAL,
    summary_type=_KIND, author=_OPTIONAL, author_email=_OPTIONAL, author_uri=_OPTIONAL, published=_WHEN,
    updated=_WHEN, categories=st.lists(_TEXT, max_size=3),
)  # fmt: skip


def _same(known: Parsed, payload: str) -> None:
    again = parse_payload(payload, max_bytes=None)
    assert known.format is again.format
    assert known.entry == again.entry
    if again.element is None:
        assert known.element is None
    else:
        assert known.element is not None and tostring(known.element) == tostring(again.element) == payload


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ENTRIES, st.sampled_from(list(Format)), st.none() | st.just("item-1"))
def test_render_parsed_is_render_then_parse(entry: Entry, fmt: Format, item_id: str | None) -> None:
    payload, known = render_parsed(entry, fmt, item_id=item_id)
    assert payload == render(entry, fmt, item_id=item_id)
    if known is not None:
        _same(known, payload)


def test_render_parsed_leaves_what_it_cannot_tell_to_a_parse() -> None:
    # XHTML nested as deep as a parse accepts, inside <entry><content><div>: too deep for the entry
    depth = MAX_XML_DEPTH - 2
    deep = Entry(title="deep", content="<p>" * depth + "x" + "</p>" * depth, content_type="xhtml")
    payload, known = render_parsed(deep, Format.ATOM)
    assert known is None  # nested deeper than a parse accepts: the sink's parse refuses it, as before
    with pytest.raises(PayloadError, match="nested deeper"):
        parse(payload)
    for text in ("<p>looks like XML</p>", '{"title": "looks like JSON"}', "\ufeffstarts with a BOM"):
        payload, known = render_parsed(Entry(content=text), Format.TEXT)
        assert payload == text and known is None
    payload, known = render_parsed(Entry(content="plain"), Format.TEXT)
    assert known is not None
    _same(known, payload)
    with pytest.raises(PayloadError, match="content_type"):
        render_parsed(Entry(content="x", content_type="rtf"), Format.JSON)


# --------------------------------------------------------------------------------------------------
# ItemEvent: one parse, shared


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Payloads parsed (parse_payload, which parse() and ItemEvent use) and XML read by the xmpp sink."""
    counts: Counter[str] = Counter()

    def counting(original: Any) -> Any:
        def parse_payload(payload: Any, *args: Any, **kwargs: Any) -> Any:
            counts[payload] += 1
            return original(payload, *args, **kwargs)

        return parse_payload

    monkeypatch.setattr(parse_module, "parse_payload", counting(parse_module.parse_payload))
    monkeypatch.setattr(plugin_module, "parse_payload", counting(plugin_module.parse_payload))
    monkeypatch.setattr(xmpp_xml, "_xml", counting(xmpp_xml._xml))
    return counts


def test_event_parses_its_payload_once(parses: Counter[str]) -> None:
    payload = json.dumps({"title": "once", "content": "x"})
    event = ItemEvent(EventKind.PUBLISH, "1", payload)
    assert event.payload_format() is Format.JSON  # a JSON payload is parsed to be detected...
    assert event.entry() == parse(payload) and event.parsed().format is Format.JSON
    assert event.entry() is event.entry()  # ...and never again
    assert parses[payload] == 2  # the event's parse, and the parse() compared with above
    with pytest.raises(PayloadError, match="too large"):
        event.parsed(max_bytes=10)  # each caller's size limit holds
    assert event == ItemEvent(EventKind.PUBLISH, "1", payload)  # the cache is no part of the event


def test_event_remembers_a_parse_error(parses: Counter[str]) -> None:
    broken = '<entry xmlns="http://www.w3.org/2005/Atom"><id>x</id></entry>'
    event = ItemEvent(EventKind.EDIT, "1", broken)
    assert event.payload_format() is Format.ATOM
    for _ in range(3):
        with pytest.raises(PayloadError, match="no <title>"):
            event.parsed()
    assert parses[broken] == 1
    with pytest.raises(ValueError, match="no payload"):
        ItemEvent(EventKind.RETRACT, "1").parsed()


# --------------------------------------------------------------------------------------------------
# A route with a format conversion, into the feeds sink and an xmpp-like sink


class _XmppLikeSink(Sink):
    """Publishes what the xmpp sink would: payload_to_element() of each event."""

    def __init__(self, fmt: Format | None) -> None:
        self.format = fmt
        self.published: dict[str, str] = {}

    async def ids(self) -> dict[str, str | None] | None:
        return None

    async def apply(self, event: ItemEvent) -> None:
        if event.kind is EventKind.RETRACT:
            self.published.pop(event.id, None)
            return
        self.published[event.id] = ET.tostring(xmpp_xml.payload_to_element(event, self.format), encoding="unicode")


XMPP_LIKE: dict[str, _XmppLikeSink] = {}


class _Options(Settings):
    address: str


class XmppLikePlugin(Plugin):
    name = "xmpplike"
    endpoint_kinds = (EndpointKind("xmpplike", sink_options=_Options),)

    def sink(self, endpoint: Endpoint, route: RouteContext) -> Sink:
        return XMPP_LIKE.setdefault(endpoint.address, _XmppLikeSink(Format(route.format) if route.format else None))


@pytest.mark.parametrize("fmt", ["atom", "json", "text", None])
async def test_one_parse_per_delivered_event(redis_url: str, tmp_path: Path, parses: Counter[str],
                                             fmt: str | None) -> None:  # fmt: skip
    XMPP_LIKE.clear()
    plugins = {"feeds": discover_plugins()["feeds"], "xmpplike": XmppLikePlugin}
    route: dict[str, Any] = {"name": "r", "from": "thoonk:in", "to": ["feeds:news", "xmpplike:node"]}
    if fmt is not None:
        route["format"] = fmt
    config = {
        "plugins": {"feeds": {"quiet": 0.005, "max_staleness": 0.05, "output_dir": str(tmp_path / "docs")}},
        "routes": [route],
    }
    sources = {
        "j": json.dumps({"title": "From JSON", "content": "<b>x</b>", "content_type": "html"}),
        "a": '<entry xmlns="http://www.w3.org/2005/Atom"><title>From Atom</title><id>urn:a</id></entry>',
        "t": "From text\n\nthe body",
    }
    async with running_bridge(config, redis_url=redis_url, tmp_path=tmp_path, plugins=plugins) as daemon:
        await wait_until(lambda: daemon.routes["r"].ready, message="route ready")
        parses.clear()  # (opening the documents parses nothing yet; the source's snapshot was empty)
        feed = await daemon.thoonk.feed("in")
        for item_id, payload in sources.items():
            await feed.publish(payload, id=item_id)
        sink = XMPP_LIKE["node"]
        await wait_until(lambda: len(sink.published) == len(sources), message="published to the xmpp-like sink")
        worker = next(w for w in daemon.routes["r"].workers if w.name == "feeds:news")
        await wait_until(lambda: not worker.pending and len(worker.sink.document.items) == len(sources))
        stored = {i: item.payload for i, item in worker.sink.document.items.items()}
        entries = {i: item.entry for i, item in worker.sink.document.items.items()}
        delivery_parses = Counter(parses)

    for item_id, source in sources.items():
        delivered = stored[item_id]
        # what the sinks hold is what parsing the delivered payload gives
        assert entries[item_id] == parse(delivered)
        expected = xmpp_xml._xml(delivered) if delivered.startswith("<") else None
        if expected is not None and parse_payload(delivered).format is Format.ATOM:
            assert sink.published[item_id] == ET.tostring(expected, encoding="unicode")
        # one parse per event, whatever the conversion: of the source's payload when the router
        # converts it (the converted payload's parse comes with it), else of the delivered one
        counted = {p: n for p, n in delivery_parses.items() if p in (source, delivered)}
        assert sum(counted.values()) == 1, (item_id, fmt, counted)
