"""The subscriber side against an outside publisher + hub on loopback (websub.rocks subscriber cases)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
import structlog

from tests.plugins.websub.outside import Outside, atom
from tests.plugins.websub.support import Node, start_node, wait_for
from tests.support.loop_probe import LoopProbe
from thoonk_bridge import feedparse
from thoonk_bridge.plugin import Endpoint, EventKind, Resync, RouteContext
from thoonk_bridge.plugins.websub.settings import WebSubSourceOptions
from thoonk_bridge.plugins.websub.subscriber import WebSubSource, discover_links, parse_link_header


def route(name: str = "in", mirror: bool = False) -> RouteContext:
    async def dead(*_: Any) -> None:
        return None

    return RouteContext(name=name, mirror=mirror, format=None, initial="all", log=structlog.get_logger(),
                        dead_letter=dead)


@pytest.fixture
async def outside():
    o = await Outside().start()
    yield o
    await o.server.close()


@pytest.fixture
async def node(redis_url: str):
    n = await start_node(redis_url, renew_at=0.8)
    yield n
    await n.stop()


async def open_source(node: Node, url: str, name: str = "in", mirror: bool = False, **opts: Any) -> WebSubSource:
    opts.setdefault("secret", True)  # the loopback hub is plain http: ask for a secret anyway
    src = node.plugin.source(Endpoint("websub", url, WebSubSourceOptions(address=url, **opts)), route(name, mirror))
    await src.open()
    return src  # type: ignore[return-value]


async def verified(outside: Outside, n: int = 1) -> dict[str, str]:
    await wait_for(lambda: len(outside.verify_results) >= n)
    assert outside.verify_results[n - 1][0] == 200
    return outside.subscribe_posts[-1][1]


@pytest.mark.parametrize(
    ("kind", "expected_self"),
    [
        ("header", "/topic/header"),  # websub.rocks 100
        ("split-header", "/topic/split-header"),
        ("html", "/topic/html"),  # 101
        ("atom", "/topic/atom"),  # 102
        ("rss", "/topic/rss"),  # 103
        ("priority", "/topic/priority"),  # 104
        ("otherself", "/topic/otherself?self=other"),  # 200
        ("r302", "/topic/header"),  # 201
        ("r301", "/topic/header"),  # 202
    ],
)
async def test_discovery_and_subscription(node: Node, outside: Outside, kind: str, expected_self: str) -> None:
    src = await open_source(node, outside.url(f"/topic/{kind}"))
    try:
        form = await verified(outside)
        assert form["hub.mode"] == "subscribe"
        assert form["hub.topic"] == outside.url(expected_self)
        assert form["hub.callback"].startswith(node.url + "/websub/callback/")
        assert len(form["hub.callback"].rsplit("/", 1)[1]) >= 32  # unguessable
        assert 0 < len(form["hub.secret"].encode()) < 200
        assert all("error" not in path for path, _ in outside.subscribe_posts)
        assert outside.verify_results[0][1]  # the challenge came back
        await wait_for(lambda: _state(src, "active"))
    finally:
        await src.close()


async def _state(src: WebSubSource, want: str) -> bool:
    return (await src.state()).get("state") == want


@pytest.mark.parametrize("code", ["307", "308"])
async def test_hub_redirects_are_followed(node: Node, outside: Outside, code: str) -> None:
    """websub.rocks 203/204: re-POST to Location."""
    src = await open_source(node, outside.url(f"/topic/hub{code}"))
    try:
        await verified(outside)
        paths = [p for p, _ in outside.subscribe_posts]
        assert paths[:2] == [f"/hub?redirect={code}", "/hub"]
        assert outside.subscribe_posts[0][1] == outside.subscribe_posts[1][1]
    finally:
        await src.close()


async def test_wrong_topic_in_verification_gets_404(node: Node, outside: Outside) -> None:
    """websub.rocks 205."""
    outside.topic_suffix = "?invalid"
    src = await open_source(node, outside.url("/topic/header"))
    try:
        await wait_for(lambda: outside.verify_results)
        assert outside.verify_results[0][0] == 404
        assert not await _state(src, "active")
        form = outside.subscribe_posts[-1][1]
        async with aiohttp.ClientSession() as s:
            async with s.get(form["hub.callback"] + "x", params={"hub.mode": "subscribe", "hub.topic": "t",
                                                                "hub.challenge": "c"}) as resp:
                assert resp.status == 404  # unknown callback
            async with s.post(form["hub.callback"] + "x", data=b"x") as resp:
                assert resp.status == 410  # unknown callback: the hub may drop it
    finally:
        await src.close()


async def test_unsubscribe_verification_only_when_pending(node: Node, outside: Outside) -> None:
    src = await open_source(node, outside.url("/topic/header"))
    try:
        form = await verified(outside)
        await outside.verify(form, mode="unsubscribe")  # we did not ask for that
        assert outside.verify_results[-1][0] == 404
        await src.unsubscribe()
        await wait_for(lambda: len(outside.subscribe_posts) == 2)
        unsub = outside.subscribe_posts[-1][1]
        assert unsub["hub.mode"] == "unsubscribe"
        await wait_for(lambda: len(outside.verify_results) == 3)
        assert outside.verify_results[-1][0] == 200
        await wait_for(lambda: _state(src, "unsubscribed"))
    finally:
        await src.close()


async def test_deliveries_signatures_and_events(node: Node, outside: Outside) -> None:
    """websub.rocks 300-302, then items as publish/edit events."""
    src = await open_source(node, outside.url("/topic/header"))
    try:
        form = await verified(outside)
        await wait_for(lambda: _state(src, "active"))
        await src.snapshot()  # as the router does before following
        follow = src.follow()
        body = atom(entries=(("e1", "first"), ("e2", "second")))
        assert await outside.deliver(form, body) in (200, 202)  # 300
        event = await asyncio.wait_for(follow.__anext__(), 5)  # e1 came with the snapshot
        assert (event.kind, event.id) == (EventKind.PUBLISH, "urn:e2")
        assert await outside.deliver(form, atom(entries=(("e1", "FORGED"),)), signature="bad") == 202  # 301
        assert await outside.deliver(form, atom(entries=(("e1", "FORGED"),)), signature=None) == 403  # 302
        assert node.metric("thoonk_bridge_websub_subscriber_requests_total", result="invalid_signature") == 1
        assert node.metric("thoonk_bridge_websub_subscriber_requests_total", result="missing_signature") == 1
        edited = atom(entries=(("e1", "first, edited"), ("e2", "second")))
        assert await outside.deliver(form, edited, method="sha512") == 202
        event = await asyncio.wait_for(follow.__anext__(), 5)
        assert (event.kind, event.id) == (EventKind.EDIT, "urn:e1")
        assert "edited" in (event.payload or "")
        assert "FORGED" not in (event.payload or "")
        # a body that is no feed is one item, id = hash of the body
        assert await outside.deliver(form, b"plain words", ctype="text/plain") == 202
        event = await asyncio.wait_for(follow.__anext__(), 5)
        assert event.kind is EventKind.PUBLISH and event.id.startswith("sha256:")
        assert event.payload == "plain words"
        await follow.aclose()
    finally:
        await src.close()


async def test_oversize_delivery_refused(redis_url: str, outside: Outside) -> None:
    node = await start_node(redis_url, max_delivery_bytes=2048)
    src = await open_source(node, outside.url("/topic/header"))
    try:
        form = await verified(outside)
        assert await outside.deliver(form, b"x" * 5000) == 413
    finally:
        await src.close()
        await node.stop()


async def test_renewal_before_the_lease_ends(node: Node, outside: Outside) -> None:
    outside.lease = 1  # renewed at 80 %: after 0.8 s
    src = await open_source(node, outside.url("/topic/header"))
    try:
        first = await verified(outside)
        await wait_for(lambda: len(outside.verify_results) >= 2, timeout=10)
        second = outside.subscribe_posts[1][1]
        assert second["hub.mode"] == "subscribe"
        assert second["hub.callback"] == first["hub.callback"]
        assert outside.verify_results[1][0] == 200
    finally:
        await src.close()


async def test_denial_then_polling(node: Node, outside: Outside) -> None:
    src = await open_source(node, outside.url("/topic/header"), poll_after=0.2)
    try:
        form = await verified(outside)
        assert await outside.deny(form) == 200
        await wait_for(lambda: _state(src, "denied"))
        follow = src.follow()
        with pytest.raises(Resync):
            await asyncio.wait_for(follow.__anext__(), 5)
        outside.entries = (("e1", "first"), ("e9", "polled"))
        items = await src.snapshot()
        assert {i for i, _ in items} == {"urn:e1", "urn:e9"}
    finally:
        await src.close()


async def test_quiet_hub_falls_back_to_polling(node: Node, outside: Outside) -> None:
    src = await open_source(node, outside.url("/topic/header"), poll_after=0.3)
    try:
        await verified(outside)
        await wait_for(lambda: _state(src, "active"))
        await src.snapshot()
        follow = src.follow()
        with pytest.raises(Resync):
            await asyncio.wait_for(follow.__anext__(), 5)
    finally:
        await src.close()


async def test_restart_resumes_without_resubscribing(redis_url: str, outside: Outside) -> None:
    node = await start_node(redis_url)
    src = await open_source(node, outside.url("/topic/header"))
    form = await verified(outside)
    await wait_for(lambda: _state(src, "active"))
    await src.close()
    await node.stop()
    node2 = await start_node(redis_url)
    try:
        node2.context.public_url = node.url  # same public URL after the restart
        src2 = await open_source(node2, outside.url("/topic/header"))
        await wait_for(lambda: src2.checks >= 1)  # the upkeep loop looked at the state ...
        assert len(outside.subscribe_posts) == 1  # ... and saw no need for a new subscription request
        # a delivery that arrived while no route was running is not lost
        await src2.close()
        await outside.deliver({**form, "hub.callback": form["hub.callback"].replace(node.url, node2.url)},
                              atom(entries=(("e5", "while away"),)))
        src3 = await open_source(node2, outside.url("/topic/header"))
        await src3.snapshot()
        follow = src3.follow()
        event = await asyncio.wait_for(follow.__anext__(), 5)
        assert event.id == "urn:e5"
        await follow.aclose()
        await src3.close()
    finally:
        await node2.stop()


async def test_verification_after_the_snapshot_reconciles_once(node: Node, outside: Outside) -> None:
    """Changes between the first snapshot and the hub's verification are not left for the next push."""
    src = await open_source(node, outside.url("/topic/header"))
    try:
        await src.snapshot()  # taken before the subscription is verified
        follow = src.follow()
        await verified(outside)
        with pytest.raises(Resync, match="verified"):
            await asyncio.wait_for(follow.__anext__(), 5)
        await src.snapshot()
        follow = src.follow()
        form = outside.subscribe_posts[-1][1]
        await outside.deliver(form, atom(entries=(("e7", "pushed"),)))
        event = await asyncio.wait_for(follow.__anext__(), 5)
        assert event.id == "urn:e7"
        await follow.aclose()
    finally:
        await src.close()


async def test_no_secret_sent_to_a_plain_http_hub_by_default(node: Node, outside: Outside) -> None:
    src = await open_source(node, outside.url("/topic/header"), secret="https")
    try:
        form = await verified(outside)
        assert "hub.secret" not in form
        await wait_for(lambda: _state(src, "active"))
        assert await outside.deliver(form, atom(entries=(("e3", "x"),)), signature=None) == 202
    finally:
        await src.close()


async def test_no_hub_advertised_is_reported(node: Node, outside: Outside) -> None:
    src = await open_source(node, outside.url("/topic/nohub"), poll_after=0.2)
    try:
        await wait_for(lambda: _state(src, "failed"))
        assert "no WebSub hub" in (await src.state())["error"]
        items = await src.snapshot()  # polling still works
        assert [i for i, _ in items] == ["urn:e1"]
    finally:
        await src.close()


async def test_topic_on_a_private_address_refused(redis_url: str, outside: Outside) -> None:
    node = await start_node(redis_url, outbound={})
    src = await open_source(node, outside.url("/topic/header"))
    try:
        await wait_for(lambda: _state(src, "failed"))
        assert "loopback" in (await src.state())["error"]
        assert outside.subscribe_posts == []
    finally:
        await src.close()
        await node.stop()


def test_link_header_parsing() -> None:
    links = parse_link_header(['<https://h/>; rel="hub", <https://s/?a=1,2>; rel=self; title="x, y"',
                               '<https://h2/>; rel="alternate hub"'])
    assert links == [("https://h/", {"hub"}), ("https://s/?a=1,2", {"self"}), ("https://h2/", {"alternate", "hub"})]


def test_discovery_order() -> None:
    from multidict import CIMultiDict

    body = atom("https://body-hub/", "https://body-self/")
    hubs, me, where = discover_links(CIMultiDict({"Link": '<https://hdr-hub/>; rel="hub"'}), body, "https://t/")
    assert (hubs, me, where) == (["https://hdr-hub/"], None, "header")
    hubs, me, where = discover_links(CIMultiDict({"Content-Type": "text/xml"}), body, "https://t/")
    assert (hubs, me, where) == (["https://body-hub/"], "https://body-self/", "xml")


async def test_a_huge_delivery_is_parsed_off_the_loop_and_capped(
    redis_url: str, outside: Outside, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = await start_node(redis_url, renew_at=0.8, max_delivery_entries=15_000)
    src = await open_source(node, outside.url("/topic/header"), name="huge")
    try:
        form = await verified(outside)
        await wait_for(lambda: _state(src, "active"))
        await src.snapshot()
        follow = src.follow()
        # 20,000 entries, newest first: seconds of parsing, which once ran on the event loop.
        body = atom(entries=tuple((f"n{n}", "t") for n in range(20_000, 0, -1)))
        assert await outside.deliver(form, body) in (200, 202)
        async with LoopProbe() as probe:
            monkeypatch.setattr(feedparse, "parse_feed", probe.wrap(feedparse.parse_feed))
            with structlog.testing.capture_logs() as logs:
                first = await asyncio.wait_for(follow.__anext__(), 60)
        assert first.id == "urn:n5001"  # the oldest of the 15,000 newest; the rest ignored
        assert probe.off_loop  # the loop ran while the document was parsed
        notes = [line for line in logs if line["event"] == "websub.entries_ignored"]
        assert len(notes) == 1 and notes[0]["ignored"] == 5000
        await follow.aclose()
    finally:
        await src.close()
        await node.stop()


async def test_discovery_in_a_huge_topic_document_runs_off_the_loop(
    node: Node, outside: Outside, monkeypatch: pytest.MonkeyPatch
) -> None:
    from thoonk_bridge.plugins.websub import subscriber

    outside.entries = tuple((f"n{n}", "t") for n in range(60_000))  # ~2 MB: a DOM of it takes a while
    src = await open_source(node, outside.url("/topic/atom"), name="huge-topic")
    try:
        async with LoopProbe() as probe:
            monkeypatch.setattr(subscriber, "discover_links", probe.wrap(subscriber.discover_links))
            hubs, self_url, where = await src.discover()
        assert hubs == [outside.url("/hub")] and where == "xml"
        assert probe.off_loop  # the loop ran while the document was read
    finally:
        await src.close()


async def test_the_seen_ids_of_a_topic_stay_bounded(redis_url: str, outside: Outside) -> None:
    # Each push names new entries only (a diffing hub, or a busy topic): what the source remembers
    # of the ids it saw must not grow with every push.
    from thoonk_bridge.plugins.websub.subscriber import SEEN_PER_ENTRY_CAP, seen_key

    node = await start_node(redis_url, max_delivery_entries=3)
    src = await open_source(node, outside.url("/topic/header"))
    try:
        form = await verified(outside)
        await wait_for(lambda: _state(src, "active"))
        await src.snapshot()
        follow = src.follow()
        for push in range(20):
            entries = tuple((f"p{push}-{i}", f"entry {push} {i}") for i in range(3))
            assert await outside.deliver(form, atom(entries=entries)) in (200, 202)
            for _ in range(3):
                event = await asyncio.wait_for(follow.__anext__(), 5)
                assert event.kind is EventKind.PUBLISH
            held = await node.context.redis.hlen(seen_key(src.key))
            assert held <= SEEN_PER_ENTRY_CAP * 3 + 3, (push, held)
        await follow.aclose()
    finally:
        await src.close()
        await node.stop()
