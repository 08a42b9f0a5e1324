"""xmpp plugin against a real Prosody: connection, settings, sink and source driven directly."""

from __future__ import annotations

import asyncio
import json
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import ValidationError

from tests.support.prosody_server import (
    AUTO_PUBSUB,
    PUBSUB,
    Outsider,
    ProsodyServer,
    atom,
    eventually,
    make_context,
    make_route,
    metric,
)
from thoonk_bridge.payload import Entry, Format, content_hash, entry_to_element, render
from thoonk_bridge.plugin import DeliveryError, Endpoint, EventKind, Health, ItemEvent, NoSnapshot, Resync
from thoonk_bridge.plugins.xmpp import plugin as XmppPlugin
from thoonk_bridge.plugins.xmpp.json_container import json_to_element
from thoonk_bridge.plugins.xmpp.settings import XmppSettings, XmppSinkOptions, XmppSourceOptions, split_address

pytestmark = pytest.mark.xmpp


async def start_plugin(server: ProsodyServer, user: str = "bridge", **extra: Any) -> Any:
    settings = XmppSettings(**server.account(user, **extra))
    plugin = XmppPlugin(settings, make_context())
    assert plugin.validate() == []
    await plugin.setup()
    await plugin.start()
    return plugin


@pytest.fixture
async def bridge(prosody: ProsodyServer) -> AsyncIterator[Any]:
    plugin = await start_plugin(prosody)
    try:
        yield plugin
    finally:
        await plugin.stop()


def endpoint(node: str, kind: type = XmppSinkOptions, **options: Any) -> Endpoint:
    address = f"{PUBSUB}/{node}"
    return Endpoint("xmpp", address, kind(address=address, **options))


async def next_event(agen: Any, timeout: float = 10) -> ItemEvent:
    return await asyncio.wait_for(agen.__anext__(), timeout)


# ---------------------------------------------------------------------- settings


def test_settings_and_addresses() -> None:
    assert split_address("pubsub.example.org/a/b/c") == ("pubsub.example.org", "a/b/c")
    with pytest.raises(ValueError):
        split_address("pubsub.example.org")
    with pytest.raises(ValidationError):
        XmppSinkOptions(address="pubsub.example.org/")
    with pytest.raises(ValidationError, match="loopback"):
        XmppSettings(jid="a@example.org", password="x", host="example.org", tls="disabled")
    ok = XmppSettings(jid="a@example.org", password="x", host="example.org", tls="disabled", allow_insecure=True)
    assert ok.full_jid == "a@example.org/thoonk-bridge"
    with pytest.raises(ValidationError):
        XmppSettings(jid="a@example.org", password="x", surprise=1)
    multi = XmppSettings(jid="a@example.org", password="x", accounts={"other": {"jid": "b@x.org", "password": "y"}})
    assert set(multi.all_accounts()) == {"default", "other"}
    assert multi.all_accounts()["default"].tls == "required"
    assert "secret" not in repr(XmppSettings(jid="a@example.org", password="secret"))


# ---------------------------------------------------------------------- connection


async def test_connects_and_is_ready(bridge: Any) -> None:
    assert bridge.health().status is Health.READY, bridge.health()
    assert metric(bridge.context, "thoonk_bridge_xmpp_connected", account="default") == 1
    assert await bridge.check_live() == []


async def test_wrong_password_is_reported(prosody: ProsodyServer) -> None:
    plugin = await start_plugin(prosody, password="nope")
    try:
        state = plugin.health()
        assert state.status is Health.FAILED
        assert "wrong password" in state.detail
        problems = await plugin.check_live()
        assert len(problems) == 1 and "wrong password" in problems[0], problems
        assert metric(plugin.context, "thoonk_bridge_xmpp_errors_total", account="default", kind="auth") >= 1
    finally:
        await plugin.stop()


async def test_unreachable_server_is_degraded(prosody: ProsodyServer) -> None:
    from tests.support.xmpp_server import free_port

    plugin = await start_plugin(prosody, port=free_port())
    try:
        assert plugin.health().status is Health.DEGRADED
        assert "cannot connect" in plugin.health().detail
        problems = await plugin.check_live()
        assert problems and "cannot connect" in problems[0]
    finally:
        await plugin.stop()


async def test_unknown_service(bridge: Any) -> None:
    route = make_route()
    sink = bridge.sink(
        Endpoint("xmpp", "pubsub.nowhere.invalid/n", XmppSinkOptions(address="pubsub.nowhere.invalid/n")), route
    )
    with pytest.raises(Exception, match="unknown or unreachable service"):
        await sink.open()
    assert bridge.health().status is Health.DEGRADED
    problems = await bridge.check_live()
    assert any("pubsub.nowhere.invalid" in p and "unknown or unreachable" in p for p in problems), problems
    source = bridge.source(
        Endpoint("xmpp", "pubsub.nowhere.invalid/n", XmppSourceOptions(address="pubsub.nowhere.invalid/n")), route
    )
    with pytest.raises(Exception, match="pubsub.nowhere.invalid"):
        await source.open()
    await source.close()


# ---------------------------------------------------------------------- sink


async def test_sink_creates_publishes_edits_retracts(bridge: Any, prosody: ProsodyServer, node_name: str) -> None:
    route = make_route(fmt="atom")
    sink = bridge.sink(endpoint(node_name, title="News", max_items=5, access_model="open"), route)
    async with Outsider(prosody, "alice") as alice:
        await sink.open()
        cfg = await bridge.connection("default").call(lambda c: c.plugin["xep_0060"].get_node_config(PUBSUB, node_name))
        values = cfg["pubsub_owner"]["configure"]["form"].get_values()
        assert values["pubsub#title"] == "News" and str(values["pubsub#max_items"]) == "5"
        assert values["pubsub#notify_retract"] in (True, "1", "true")
        await alice.ps.subscribe(PUBSUB, node_name)

        p1 = render(Entry(title="one", content="first"), Format.ATOM, item_id="e1")
        await sink.apply(ItemEvent(EventKind.PUBLISH, "e1", p1))
        kind, node, item_id, payload = await asyncio.wait_for(alice.events.get(), 10)
        assert (kind, node, item_id) == ("item", node_name, "e1")
        assert payload.tag == "{http://www.w3.org/2005/Atom}entry"
        assert payload.find("{http://www.w3.org/2005/Atom}title").text == "one"

        p1b = render(Entry(title="one, edited", content="first"), Format.ATOM, item_id="e1")
        await sink.apply(ItemEvent(EventKind.EDIT, "e1", p1b))
        kind, _, item_id, payload = await asyncio.wait_for(alice.events.get(), 10)
        assert (kind, item_id) == ("item", "e1")
        assert payload.find("{http://www.w3.org/2005/Atom}title").text == "one, edited"
        assert [i for i, _ in await alice.items(node_name)] == ["e1"]

        # ids() gives the hash of the payload as the router sends it
        assert await sink.ids() == {"e1": content_hash(p1b)}

        await sink.apply(ItemEvent(EventKind.RETRACT, "e1"))
        kind, _, item_id, _ = await asyncio.wait_for(alice.events.get(), 10)
        assert (kind, item_id) == ("retract", "e1")
        await sink.apply(ItemEvent(EventKind.RETRACT, "e1"))  # idempotent
        assert await sink.ids() == {}
    assert metric(bridge.context, "thoonk_bridge_xmpp_items_published_total", route="r") == 2


@pytest.mark.parametrize("fmt", ["json", "text", None])
async def test_sink_formats_roundtrip_hashes(
    bridge: Any, prosody: ProsodyServer, node_name: str, fmt: str | None
) -> None:
    route = make_route(fmt=fmt)
    sink = bridge.sink(endpoint(node_name, max_items=10), route)
    await sink.open()
    entry = Entry(title="Hello", content="Hello world, from thoonk", link="https://example.org/1")
    payloads = {
        "j": render(entry, Format.JSON, item_id="j"),
        "t": "just some text\n\nwith two paragraphs",
        "a": render(entry, Format.ATOM, item_id="a"),
        "x": '<foo xmlns="urn:example:foo"><bar>1</bar></foo>',
    }
    sent = {}
    for item_id, payload in payloads.items():
        if fmt is not None:
            from thoonk_bridge.payload import convert

            payload = convert(payload, fmt, item_id=item_id)
        sent[item_id] = payload
        await sink.apply(ItemEvent(EventKind.PUBLISH, item_id, payload))
    async with Outsider(prosody, "bob") as bob:
        items = dict(await bob.items(node_name))
    if fmt == "json":
        assert all(el.tag == "{urn:xmpp:json:0}json" for el in items.values())
        assert json.loads(items["j"].text)["title"] == "Hello"
    elif fmt == "text":
        assert all(el.tag == "{http://www.w3.org/2005/Atom}entry" for el in items.values())
    else:
        assert items["j"].tag == "{urn:xmpp:json:0}json"
        assert items["a"].tag == "{http://www.w3.org/2005/Atom}entry"
        assert items["t"].tag == "{http://www.w3.org/2005/Atom}entry"
        assert items["x"].tag == "{urn:example:foo}foo"
    held = await sink.ids()
    expected = {i: content_hash(p) for i, p in sent.items()}
    # exact for every item, the text one too: the sink remembers what it published for which payload
    assert held == expected


async def test_sink_too_large_is_not_retryable(bridge: Any, node_name: str) -> None:
    sink = bridge.sink(endpoint(node_name), make_route(fmt="json"))
    await sink.open()
    huge = json.dumps({"title": "big", "content": "x" * 300_000})
    with pytest.raises(DeliveryError) as info:
        await sink.apply(ItemEvent(EventKind.PUBLISH, "big", huge))
    assert info.value.retryable is False
    assert "stanza size limit" in str(info.value)
    # the connection is untouched and the next item goes through
    await sink.apply(ItemEvent(EventKind.PUBLISH, "small", json.dumps({"title": "ok"})))
    assert set(await sink.ids()) == {"small"}
    assert metric(bridge.context, "thoonk_bridge_xmpp_items_rejected_total", route="r", reason="too-large") == 1


async def test_sink_invalid_payload_is_not_retryable(bridge: Any, node_name: str) -> None:
    sink = bridge.sink(endpoint(node_name), make_route(fmt="atom"))
    await sink.open()
    bad = '<entry xmlns="http://www.w3.org/2005/Atom"><content>no title</content></entry>'
    with pytest.raises(DeliveryError) as info:
        await sink.apply(ItemEvent(EventKind.PUBLISH, "bad", bad))
    assert info.value.retryable is False


async def test_sink_forbidden_create(prosody: ProsodyServer, node_name: str) -> None:
    alice = await start_plugin(prosody, "alice")
    try:
        sink = alice.sink(endpoint(node_name), make_route())
        with pytest.raises(Exception, match="forbidden") as info:
            await sink.open()
        assert "alice@localhost" in str(info.value) and node_name in str(info.value)
        assert alice.health().status is Health.DEGRADED
        assert "forbidden" in alice.health().detail
    finally:
        await alice.stop()


async def test_sink_not_connected_is_retryable(prosody: ProsodyServer, node_name: str) -> None:
    plugin = await start_plugin(prosody, password="wrong")
    try:
        sink = plugin.sink(endpoint(node_name), make_route())
        with pytest.raises(DeliveryError) as info:
            await sink.apply(ItemEvent(EventKind.PUBLISH, "a", "text"))
        assert info.value.retryable is True
    finally:
        await plugin.stop()


# ---------------------------------------------------------------------- source


async def test_source_snapshot_and_follow(bridge: Any, prosody: ProsodyServer, node_name: str) -> None:
    route = make_route()
    async with Outsider(prosody, "bridge", "admin") as admin:
        await admin.create(node_name, max_items=20)
        await admin.publish(node_name, "a1", atom("a1", "first"))
        await admin.publish(node_name, "j1", json_to_element('{"title": "json item"}'))
        source = bridge.source(endpoint(node_name, XmppSourceOptions), route)
        await source.open()
        snap = await source.snapshot()
        assert [i for i, _ in snap] == ["a1", "j1"]
        assert snap[0][1].startswith('<entry xmlns="http://www.w3.org/2005/Atom">')
        assert json.loads(snap[1][1]) == {"title": "json item"}
        events = source.follow()

        await admin.publish(node_name, "a2", atom("a2", "second"))
        ev = await next_event(events)
        assert (ev.kind, ev.id) == (EventKind.PUBLISH, "a2") and "second" in ev.payload
        await admin.publish(node_name, "a1", atom("a1", "first, edited"))
        ev = await next_event(events)
        assert (ev.kind, ev.id) == (EventKind.EDIT, "a1") and "edited" in ev.payload
        await admin.ps.retract(PUBSUB, node_name, "j1", notify=True)
        ev = await next_event(events)
        assert (ev.kind, ev.id) == (EventKind.RETRACT, "j1")

        # unknown namespace: kept as XML text
        foreign = ET.Element("{urn:example:weather}report", {"city": "Paris"})
        foreign.text = "sunny"
        await admin.publish(node_name, "w1", foreign)
        ev = await next_event(events)
        assert ev.id == "w1" and ev.payload == '<report xmlns="urn:example:weather" city="Paris">sunny</report>'

        await admin.ps.purge(PUBSUB, node_name)
        got = {(await next_event(events)).id for _ in range(3)}
        assert got == {"a1", "a2", "w1"}
        await admin.ps.delete_node(PUBSUB, node_name)
        with pytest.raises(Exception, match="deleted"):
            await next_event(events)
        await source.close()
    assert metric(bridge.context, "thoonk_bridge_xmpp_items_received_total", route="r", format="atom") == 3


async def test_source_multi_item_message(bridge: Any, prosody: ProsodyServer, node_name: str) -> None:
    """A notification carrying several items (Prosody sends one per message; another server may not)."""
    source = bridge.source(endpoint(node_name, XmppSourceOptions), make_route())
    conn = bridge.connection("default")
    source_events = source.follow()
    msg = conn.client.Message()
    msg["from"] = PUBSUB
    event = ET.SubElement(msg.xml, "{http://jabber.org/protocol/pubsub#event}event")
    items = ET.SubElement(event, "{http://jabber.org/protocol/pubsub#event}items", {"node": node_name})
    for i in range(3):
        item = ET.SubElement(items, "{http://jabber.org/protocol/pubsub#event}item", {"id": f"m{i}"})
        item.append(atom(f"m{i}", f"multi {i}"))
    ET.SubElement(items, "{http://jabber.org/protocol/pubsub#event}retract", {"id": "m0"})
    conn.add_listener(PUBSUB, node_name, source._on_event)
    conn._on_event(msg)
    got = [(await next_event(source_events)) for _ in range(4)]
    assert [(e.kind, e.id) for e in got] == [
        (EventKind.PUBLISH, "m0"),
        (EventKind.PUBLISH, "m1"),
        (EventKind.PUBLISH, "m2"),
        (EventKind.RETRACT, "m0"),
    ]
    # notifications claiming to come from another JID are not this node's
    msg["from"] = "alice@localhost"
    conn._on_event(msg)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(source_events.__anext__(), 0.3)
    await source.close()


async def test_source_malformed_payloads(bridge: Any, prosody: ProsodyServer, node_name: str) -> None:
    route = make_route()
    async with Outsider(prosody, "bridge", "admin") as admin:
        await admin.create(node_name, max_items=20)
        no_title = ET.Element("{http://www.w3.org/2005/Atom}entry")
        ET.SubElement(no_title, "{http://www.w3.org/2005/Atom}content").text = "untitled"
        await admin.publish(node_name, "bad-atom", no_title)
        await admin.publish(node_name, "bad-json", json_to_element("{not json"))
        await admin.publish(node_name, "good", atom("good", "fine"))
        source = bridge.source(endpoint(node_name, XmppSourceOptions, max_payload_bytes=20_000), route)
        await source.open()
        snap = await source.snapshot()
        assert [i for i, _ in snap] == ["good"]
        assert {i for i, _, _ in route.dead_letter.items} == {"bad-atom", "bad-json"}
        events = source.follow()
        huge = entry_to_element(Entry(title="huge", content="x" * 50_000), "huge")
        await admin.publish(node_name, "huge", huge)
        await admin.publish(node_name, "after", atom("after", "still relayed"))
        ev = await next_event(events)
        assert ev.id == "after"
        assert "max_payload_bytes" in route.dead_letter.items[-1][2]
        # a second snapshot does not dead-letter the same items again
        await source.snapshot()
        assert len(route.dead_letter.items) == 3
        await source.close()
    ctx = bridge.context
    assert metric(ctx, "thoonk_bridge_xmpp_malformed_items_total", route="r", reason="invalid") >= 2
    assert metric(ctx, "thoonk_bridge_xmpp_malformed_items_total", route="r", reason="too-large") >= 1


async def test_source_full_jid_subscription(bridge: Any, prosody: ProsodyServer, node_name: str) -> None:
    async with Outsider(prosody, "bridge", "admin") as admin:
        await admin.create(node_name)
        source = bridge.source(endpoint(node_name, XmppSourceOptions, subscribe="full"), make_route())
        await source.open()
        assert await source.snapshot() == []
        subs = await admin.ps.get_node_subscriptions(PUBSUB, node_name)
        jids = [str(s["jid"]) for s in subs["pubsub_owner"]["subscriptions"]]
        assert jids == [f"bridge@localhost/thoonk-bridge-{bridge.context.instance_id}"]  # one resource per daemon
        events = source.follow()
        await admin.publish(node_name, "x", atom("x", "full"))
        assert (await next_event(events)).id == "x"
        await source.close()


async def test_source_missing_node_then_resync_on_reconnect(
    bridge: Any, prosody: ProsodyServer, node_name: str
) -> None:
    source = bridge.source(endpoint(node_name, XmppSourceOptions), make_route())
    with pytest.raises(Exception, match="does not exist"):
        await source.open()
    async with Outsider(prosody, "bridge", "admin") as admin:
        await admin.create(node_name)
        await source.open()
        assert await source.snapshot() == []
        events = source.follow()
        # drop the bridge's stream: the source resubscribes on the new session and asks for a resync
        conn = bridge.connection("default")
        conn.client.abort()
        with pytest.raises(Resync):
            await next_event(events)
        await admin.publish(node_name, "after", atom("after", "after reconnect"))
        assert [i for i, _ in await source.snapshot()] == ["after"]
        events = source.follow()
        await admin.publish(node_name, "live", atom("live", "live"))
        # notifications that arrived while the snapshot was taken are replayed (idempotent)
        seen = [(await next_event(events)).id]
        while seen[-1] != "live":
            seen.append((await next_event(events)).id)
        assert set(seen) <= {"after", "live"}
        await source.close()
    assert metric(bridge.context, "thoonk_bridge_xmpp_disconnects_total", account="default") >= 1


async def test_sink_retryable_while_disconnected(bridge: Any, node_name: str) -> None:
    sink = bridge.sink(endpoint(node_name), make_route())
    await sink.open()
    conn = bridge.connection("default")
    conn.client.abort()
    await eventually(lambda: not conn.ready, 5, 0.001)
    with pytest.raises(DeliveryError) as info:
        await sink.apply(ItemEvent(EventKind.PUBLISH, "a", "text"))
    assert info.value.retryable is True
    assert bridge.health().status in (Health.DEGRADED, Health.READY)
    await conn.wait_ready()
    await sink.apply(ItemEvent(EventKind.PUBLISH, "a", "text"))
    assert set(await sink.ids()) == {"a"}


# ---------------------------------------------------------------------- servers as they are (issue 10 §8)


def service_endpoint(service: str, node: str, kind: type = XmppSinkOptions, **options: Any) -> Endpoint:
    address = f"{service}/{node}"
    return Endpoint("xmpp", address, kind(address=address, **options))


async def node_config(admin: Outsider, node: str, service: str = PUBSUB) -> dict[str, Any]:
    result = await admin.ps.get_node_config(service, node)
    return dict(result["pubsub_owner"]["configure"]["form"].get_values())


async def test_source_of_a_node_keeping_no_items_follows_without_snapshot(
    bridge: Any, prosody: ProsodyServer, node_name: str
) -> None:
    async with Outsider(prosody, "bridge", "admin") as admin:
        await admin.create(node_name, persist_items=False)
        source = bridge.source(endpoint(node_name, XmppSourceOptions), make_route())
        await source.open()
        # Prosody answers get_items with feature-not-implemented: no snapshot, and no endpoint problem
        with pytest.raises(NoSnapshot, match="keeps no items"):
            await source.snapshot()
        assert bridge.health().status is Health.READY
        events = source.follow()
        await admin.publish(node_name, "live", atom("live", "live only"))
        event = await next_event(events)
        assert (event.kind, event.id) == (EventKind.PUBLISH, "live")
        await source.close()


async def test_sink_of_a_node_keeping_no_items_leaves_reconcile_to_the_ledger(
    bridge: Any, prosody: ProsodyServer, node_name: str
) -> None:
    async with Outsider(prosody, "bridge", "admin") as admin:
        await admin.create(node_name, persist_items=False)
        sink = bridge.sink(endpoint(node_name), make_route())
        await sink.open()
        assert await sink.ids() is None  # cannot tell: the router goes by what it delivered
        await sink.apply(ItemEvent(EventKind.PUBLISH, "a", "text"))
        assert await sink.ids() is None
        assert bridge.health().status is Health.READY


async def test_sink_recreates_a_node_deleted_without_notice_at_the_next_reconcile(
    bridge: Any, prosody: ProsodyServer, node_name: str
) -> None:
    sink = bridge.sink(endpoint(node_name, title="Kept", max_items=7), make_route())
    await sink.open()
    await sink.apply(ItemEvent(EventKind.PUBLISH, "a", "text"))
    assert set(await sink.ids()) == {"a"}
    async with Outsider(prosody, "bridge", "admin") as admin:
        await admin.ps.delete_node(PUBSUB, node_name)  # the sink does not listen: nothing tells it
        assert await sink.ids() == {}  # the next reconcile: the node is back, empty, for the router to refill
        values = await node_config(admin, node_name)
        assert values["pubsub#title"] == "Kept" and str(values["pubsub#max_items"]) == "7"
    assert sink.capacity == 7


async def test_sink_gives_an_auto_created_node_the_routes_options(
    bridge: Any, prosody: ProsodyServer, node_name: str
) -> None:
    # autopubsub.localhost creates a missing node on publish with its defaults, as ejabberd does
    sink = bridge.sink(service_endpoint(AUTO_PUBSUB, node_name, title="Mine", max_items=3), make_route())
    await sink.open()
    async with Outsider(prosody, "bridge", "admin") as admin:
        await admin.ps.delete_node(AUTO_PUBSUB, node_name)
        await sink.apply(ItemEvent(EventKind.PUBLISH, "a", "text"))  # re-creates it: server defaults
        values = await node_config(admin, node_name, AUTO_PUBSUB)
        assert str(values["pubsub#max_items"]) != "3"
        assert set(await sink.ids()) == {"a"}  # the next reconcile checks the options
        values = await node_config(admin, node_name, AUTO_PUBSUB)
        assert values["pubsub#title"] == "Mine" and str(values["pubsub#max_items"]) == "3"
    assert sink.capacity == 3


async def test_sink_created_on_an_earlier_run_gets_its_options_back(
    prosody: ProsodyServer, node_name: str, redis_url: str
) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url)
    plugin = XmppPlugin(XmppSettings(**prosody.account("bridge")), make_context(redis=client))
    await plugin.setup()
    await plugin.start()
    try:
        first = plugin.sink(service_endpoint(AUTO_PUBSUB, node_name, max_items=4), make_route())
        await first.open()
        async with Outsider(prosody, "bridge", "admin") as admin:
            await admin.ps.delete_node(AUTO_PUBSUB, node_name)
            await admin.publish(node_name, "x", atom("x", "auto-creates"), service=AUTO_PUBSUB)
            assert str((await node_config(admin, node_name, AUTO_PUBSUB))["pubsub#max_items"]) != "4"
            # a new run (a new sink): the node exists, configure is false, but the bridge made it
            second = plugin.sink(service_endpoint(AUTO_PUBSUB, node_name, max_items=4), make_route())
            await second.open()
            assert str((await node_config(admin, node_name, AUTO_PUBSUB))["pubsub#max_items"]) == "4"
            # a node the bridge did not create keeps its own options (configure: false)
            other = f"{node_name}-theirs"
            await admin.create(other, service=AUTO_PUBSUB, max_items=9)
            theirs = plugin.sink(service_endpoint(AUTO_PUBSUB, other, max_items=4), make_route())
            await theirs.open()
            assert str((await node_config(admin, other, AUTO_PUBSUB))["pubsub#max_items"]) == "9"
    finally:
        await plugin.stop()
        await client.aclose()


async def test_sink_retry_wait_ends_when_the_session_is_back(fresh_prosody: ProsodyServer, node_name: str) -> None:
    plugin = await start_plugin(fresh_prosody)
    try:
        sink = plugin.sink(endpoint(node_name), make_route())
        await sink.open()
        conn = plugin.connection("default")
        fresh_prosody.stop()
        await eventually(lambda: not conn.ready, 10)
        batch = [ItemEvent(EventKind.PUBLISH, i, f"text {i}") for i in ("a", "b", "c")]
        results = await sink.apply_many(batch)
        # no session: the first event fails (retryable), nothing more is sent
        assert len(results) == 1 and isinstance(results[0], DeliveryError) and results[0].retryable
        waiting = asyncio.ensure_future(sink.wait_retry(300))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        fresh_prosody.start()
        await asyncio.wait_for(waiting, 30)  # long before the 300 s delay
        await sink.apply(batch[0])
        # the other events that failed with that session do not wait either
        await asyncio.wait_for(sink.wait_retry(300), 5)
        await sink.apply_many(batch[1:])
        assert set(await sink.ids()) == {"a", "b", "c"}
        # a failure on a live session waits out its delay
        with pytest.raises(DeliveryError):
            await sink.apply(ItemEvent(EventKind.PUBLISH, "big", "x" * 300_000))
        slow = asyncio.ensure_future(sink.wait_retry(300))
        await asyncio.sleep(0.3)
        assert not slow.done()
        slow.cancel()
    finally:
        await plugin.stop()


async def test_sink_apply_many_pipelines_in_order_with_a_result_per_event(
    bridge: Any, prosody: ProsodyServer, node_name: str
) -> None:
    sink = bridge.sink(endpoint(node_name, max_items=50, max_in_flight=8), make_route(fmt="atom"))
    await sink.open()
    conn = bridge.connection("default")
    in_flight, most = 0, 0
    call = conn.call

    async def counting_call(make: Any) -> Any:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        try:
            return await call(make)
        finally:
            in_flight -= 1

    conn.call = counting_call  # type: ignore[method-assign]
    try:
        events = [ItemEvent(EventKind.PUBLISH, f"e{i}", json.dumps({"title": f"item {i}"})) for i in range(30)]
        events[10] = ItemEvent(EventKind.PUBLISH, "bad", "<entry xmlns='http://www.w3.org/2005/Atom'><oops")
        events[20] = ItemEvent(EventKind.RETRACT, "never-there")
        results = await sink.apply_many(events)
    finally:
        del conn.call
    assert len(results) == len(events)  # one result per event: a failure does not stop the others
    assert isinstance(results[10], DeliveryError) and not results[10].retryable  # dead-lettered alone
    assert [r for i, r in enumerate(results) if i != 10] == [None] * (len(events) - 1)
    assert 1 < most <= 8  # pipelined, within the window
    published = [e.id for e in events if e.kind is EventKind.PUBLISH and e.id != "bad"]
    async with Outsider(prosody, "bob") as bob:
        assert [i for i, _ in await bob.items(node_name)] == published  # the node got them in order
    held = await sink.ids()
    assert set(held) == set(published)
    assert all(held[e.id] == content_hash(e.payload) for e in events if e.id in held)  # one ledger write

