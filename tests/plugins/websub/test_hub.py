"""The hub, end to end on loopback: subscribe/verify, distribution, signatures, leases, failures."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.plugins.websub.support import (
    Node,
    Subscriber,
    check_signature,
    hub_post,
    start_node,
    subscribe,
    subscribed,
    wait_for,
)
from thoonk_bridge.plugin import Topic

ATOM1 = b'<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom"><title>one</title></feed>'
ATOM2 = b'<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom"><title>two</title></feed>'
ATOM3 = b'<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom"><title>three</title></feed>'


async def test_typical_subscription_and_delivery(node: Node, sub: Subscriber) -> None:
    """websub.rocks hub 100: 202, verification GET, full content with exact type and Link, no signature."""
    topic = node.topic("/feeds/news.atom", ATOM1)
    status, text = await subscribe(node, sub.url(), topic)
    assert status == 202
    await wait_for(lambda: sub.verifications)
    v = sub.verifications[0]
    assert v["hub.mode"] == "subscribe"
    assert v["hub.topic"] == topic
    assert len(v["hub.challenge"]) >= 32
    assert int(v["hub.lease_seconds"]) == 864000  # 10 days by default
    await wait_for(lambda: node.metric("thoonk_bridge_websub_verifications_total", mode="subscribe", result="verified"))
    await node.change("/feeds/news.atom", ATOM2)
    await wait_for(lambda: sub.deliveries)
    d = sub.deliveries[0]
    assert d.body == ATOM2
    assert d.headers["Content-Type"] == "application/atom+xml"
    assert d.headers["Link"] == f'<{node.hub}>; rel="hub", <{topic}>; rel="self"'
    assert "X-Hub-Signature" not in d.headers
    await wait_for(lambda: node.metric("thoonk_bridge_websub_deliveries_total", result="ok") == 1)


async def test_challenges_are_single_use(node: Node, sub: Subscriber) -> None:
    topic = node.topic("/feeds/news.atom", ATOM1)
    for _ in range(2):
        await subscribed(node, sub, sub.url(), topic)
    assert sub.verifications[0]["hub.challenge"] != sub.verifications[1]["hub.challenge"]


@pytest.mark.parametrize("method", ["sha256", "sha1", "sha512"])
async def test_secret_signs_deliveries(redis_url: str, sub: Subscriber, method: str) -> None:
    """websub.rocks hub 101: X-Hub-Signature over the raw body with the configured method."""
    node = await start_node(redis_url, signature=method)
    try:
        topic = node.topic("/feeds/news.atom", ATOM1)
        await subscribed(node, sub, sub.url(), topic, **{"hub.secret": "s3cret-" * 3})
        await node.change("/feeds/news.atom", ATOM2)
        await wait_for(lambda: sub.deliveries)
        expected = "sha256" if method == "sha1" else method  # sha1 only for https callbacks (§8.3)
        assert sub.deliveries[0].headers["X-Hub-Signature"].startswith(expected + "=")
        assert check_signature("s3cret-" * 3, sub.deliveries[0])
    finally:
        await node.stop()


async def test_unknown_parameters_are_ignored(node: Node, sub: Subscriber) -> None:
    """websub.rocks hub 102."""
    topic = node.topic("/feeds/news.atom", ATOM1)
    await subscribed(node, sub, sub.url(), topic, foo="bar", **{"hub.foo": "hub.bar"})
    await node.change("/feeds/news.atom", ATOM2)
    await wait_for(lambda: sub.deliveries)


async def test_resubscribe_updates_the_one_subscription(node: Node, sub: Subscriber) -> None:
    """websub.rocks hub 103: one notification per change; the new secret applies once verified."""
    topic = node.topic("/feeds/news.atom", ATOM1)
    await subscribed(node, sub, sub.url(), topic, **{"hub.secret": "first"})
    await subscribed(node, sub, sub.url(), topic, **{"hub.secret": "second"})
    subs = await node.plugin.subscriptions()
    assert len(subs) == 1
    await node.change("/feeds/news.atom", ATOM2)
    await wait_for(lambda: sub.deliveries)
    await node.change("/feeds/news.atom", ATOM3)
    await wait_for(lambda: len(sub.deliveries) == 2)
    await wait_for(node.idle)  # every job done: a duplicate would have arrived by now
    assert sub.bodies() == [ATOM2, ATOM3]
    assert all(check_signature("second", d) for d in sub.deliveries)


async def test_failed_verification_leaves_state_unchanged(node: Node, sub: Subscriber) -> None:
    topic = node.topic("/feeds/news.atom", ATOM1)
    await subscribed(node, sub, sub.url(), topic, **{"hub.secret": "kept"})
    for mode in ("wrong", "404", "redirect"):
        sub.verify_mode = mode
        failed = node.metric("thoonk_bridge_websub_verifications_total", mode="subscribe", result="failed")
        status, _ = await subscribe(node, sub.url(), topic, **{"hub.secret": "not-this-one"})
        assert status == 202  # the answer never depends on the verification
        await wait_for(lambda f=failed: node.metric("thoonk_bridge_websub_verifications_total", mode="subscribe",
                                                     result="failed") > f)
    sub.verify_mode = "echo"
    await node.change("/feeds/news.atom", ATOM2)
    await wait_for(lambda: sub.deliveries)
    assert check_signature("kept", sub.deliveries[0])


async def test_failed_first_verification_creates_nothing(node: Node, sub: Subscriber) -> None:
    topic = node.topic("/feeds/news.atom", ATOM1)
    sub.verify_mode = "wrong"
    assert (await subscribe(node, sub.url(), topic))[0] == 202
    await wait_for(lambda: node.metric("thoonk_bridge_websub_verifications_total", mode="subscribe", result="failed"))
    assert await node.plugin.subscriptions() == []


async def test_unsubscribe_stops_deliveries(node: Node, sub: Subscriber) -> None:
    """websub.rocks hub 104."""
    topic = node.topic("/feeds/news.atom", ATOM1)
    await subscribed(node, sub, sub.url(), topic)
    status, _, _ = await hub_post(node, {"hub.mode": "unsubscribe", "hub.callback": sub.url(), "hub.topic": topic,
                                         "hub.lease_seconds": "abc"})  # ignored on unsubscribe
    assert status == 202
    await wait_for(lambda: node.metric("thoonk_bridge_websub_verifications_total", mode="unsubscribe",
                                       result="verified"))
    assert sub.verifications[-1]["hub.mode"] == "unsubscribe"
    assert await node.plugin.subscriptions() == []
    await node.change("/feeds/news.atom", ATOM2)
    await wait_for(lambda: node.metric("thoonk_bridge_websub_distributions_total", result="queued") >= 1)
    await wait_for(node.idle)
    assert sub.deliveries == []


async def test_callback_query_string_is_kept(node: Node, sub: Subscriber) -> None:
    topic = node.topic("/feeds/news.atom", ATOM1)
    callback = sub.url("/cb") + "?token=a%2Fb&hub.mode=theirs"
    await subscribed(node, sub, callback, topic)
    assert sub.verification_paths[0].startswith("/cb?token=a%2Fb&hub.mode=theirs&hub.mode=subscribe&")
    await node.change("/feeds/news.atom", ATOM2)
    await wait_for(lambda: sub.deliveries)
    assert sub.deliveries[0].path_qs == "/cb?token=a%2Fb&hub.mode=theirs"
    assert sub.deliveries[0].body == ATOM2


async def test_percent_encoded_topic_matches(node: Node, sub: Subscriber) -> None:
    topic = node.topic("/feeds/news~1.atom", ATOM1)
    encoded = topic.replace("~", "%7E").replace("http://", "HTTP://")
    await subscribed(node, sub, sub.url(), encoded)
    assert sub.verifications[0]["hub.topic"] == encoded  # echoed as given
    await node.change("/feeds/news~1.atom", ATOM2)
    await wait_for(lambda: sub.deliveries)


async def test_unserved_topic_is_denied(node: Node, sub: Subscriber) -> None:
    status, _ = await subscribe(node, sub.url(), "https://elsewhere.example/feed")
    assert status == 202
    await wait_for(lambda: sub.verifications)
    v = sub.verifications[0]
    assert v["hub.mode"] == "denied"
    assert v["hub.topic"] == "https://elsewhere.example/feed"
    assert v["hub.reason"]
    assert "hub.challenge" not in v
    assert await node.plugin.subscriptions() == []


async def test_documents_without_a_websub_sink_are_not_hub_topics(node: Node, sub: Subscriber) -> None:
    """Only documents a route distributes (``to: websub:NAME``) are hub topics: another route's document
    is served without a hub link, subscriptions to it are denied (§5.2), its changes are not distributed."""
    news = node.topic("/feeds/news.atom", ATOM1)
    private = node.topic("/feeds/private.atom", ATOM1, hub=False)
    status, _ = await subscribe(node, sub.url(), private)
    assert status == 202  # the answer never depends on the outcome (§5.1.2)
    await wait_for(lambda: sub.verifications)
    assert sub.verifications[0]["hub.mode"] == "denied"
    assert "hub.challenge" not in sub.verifications[0]
    await subscribed(node, sub, sub.url(), news)
    await node.change("/feeds/private.atom", ATOM2)
    status, _, _ = await hub_post(node, {"hub.mode": "publish", "hub.url": private})
    assert status == 204
    assert node.metric("thoonk_bridge_websub_distributions_total", result="queued") == 0
    await node.change("/feeds/news.atom", ATOM2)
    assert node.metric("thoonk_bridge_websub_distributions_total", result="queued") == 1
    await wait_for(lambda: sub.deliveries)
    await wait_for(node.idle)
    assert [d.headers["Link"] for d in sub.deliveries] == [f'<{node.hub}>; rel="hub", <{news}>; rel="self"']
    topics = node.context.topics  # what the feeds plugin advertises (Link header and the document's links)
    assert topics.hub_for("/feeds/news.atom") == node.hub
    assert topics.hub_for("/feeds/news.rss") == node.hub
    assert topics.hub_for("/feeds/private.atom") is None


async def test_a_change_is_handed_off_with_its_body(node: Node, sub: Subscriber,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The serving plugin's ``changed(path, body)`` returns before the hub touches Redis (its render
    loop is not held up), and the hub distributes that body without asking for a render."""
    renders: list[str] = []

    async def render() -> bytes:
        renders.append("/feeds/news.atom")
        return ATOM1

    node.topic("/feeds/news.atom", ATOM1)
    node.context.topics.register(Topic("/feeds/news.atom", "application/atom+xml", render, name="news"))
    topic = node.url + "/feeds/news.atom"
    await subscribed(node, sub, sub.url(), topic)
    release = asyncio.Event()
    store = node.plugin.store
    original = store.next_distribution

    async def slow_redis(*args: Any, **kwargs: Any) -> Any:
        await release.wait()
        return await original(*args, **kwargs)

    monkeypatch.setattr(store, "next_distribution", slow_redis)
    await asyncio.wait_for(node.context.topics.changed("/feeds/news.atom", ATOM2), 1)  # not waiting on Redis
    assert node.metric("thoonk_bridge_websub_distributions_total", result="queued") == 0
    release.set()
    await wait_for(lambda: sub.deliveries)
    assert sub.bodies() == [ATOM2]
    assert renders == []


async def test_stop_distributes_the_changes_already_notified(node: Node, sub: Subscriber,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A change notified just before the plugin stops (a route's final render) is still queued for
    its subscribers: stop() lets the hand-off finish (bounded)."""
    topic = node.topic("/feeds/news.atom", ATOM1)
    await subscribed(node, sub, sub.url(), topic)
    store = node.plugin.store
    original = store.next_distribution

    async def slow_redis(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(0.2)
        return await original(*args, **kwargs)

    monkeypatch.setattr(store, "next_distribution", slow_redis)
    await node.context.topics.changed("/feeds/news.atom", ATOM2)
    await asyncio.sleep(0.05)  # being handled (waiting on Redis), none left waiting
    await node.plugin.stop()
    assert node.metric("thoonk_bridge_websub_distributions_total", result="queued") == 1


async def test_lease_is_clamped_and_expires(redis_url: str, sub: Subscriber) -> None:
    node = await start_node(redis_url, lease_min=0.5, lease_max=1000, lease_default=100)
    try:
        topic = node.topic("/feeds/news.atom", ATOM1)
        await subscribed(node, sub, sub.url(), topic, **{"hub.lease_seconds": "99999999"})
        assert sub.verifications[-1]["hub.lease_seconds"] == "1000"
        await subscribed(node, sub, sub.url(), topic, **{"hub.lease_seconds": "1"})
        assert sub.verifications[-1]["hub.lease_seconds"] == "1"
        await wait_for(lambda: node.plugin.subscriptions(), timeout=5)
        # the sweeper removes it once the lease ended; nothing is delivered after that
        await wait_for(lambda: _empty(node), timeout=10)
        await node.change("/feeds/news.atom", ATOM2)
        await wait_for(lambda: node.metric("thoonk_bridge_websub_distributions_total", result="queued") >= 1)
        await wait_for(node.idle)
        assert sub.deliveries == []
    finally:
        await node.stop()


async def _empty(node: Node) -> bool:
    return await node.plugin.subscriptions() == []


async def test_gone_ends_the_subscription(node: Node, sub: Subscriber) -> None:
    topic = node.topic("/feeds/news.atom", ATOM1)
    await subscribed(node, sub, sub.url(), topic)
    sub.status = [410]
    await node.change("/feeds/news.atom", ATOM2)
    await wait_for(lambda: node.metric("thoonk_bridge_websub_deliveries_total", result="gone"))
    assert await node.plugin.subscriptions() == []
    assert len(sub.deliveries) == 1


async def test_retries_then_drop_keeps_the_subscription(node: Node, sub: Subscriber) -> None:
    """Failures (5xx and redirects) are retried with backoff, then that notification is dropped;
    the subscription stays and gets the next change."""
    topic = node.topic("/feeds/news.atom", ATOM1)
    await subscribed(node, sub, sub.url(), topic)
    sub.status = [500, 302, 500]  # then 500 forever
    await node.change("/feeds/news.atom", ATOM2)
    await wait_for(lambda: node.metric("thoonk_bridge_websub_delivery_drops_total", reason="retries_exhausted") == 1)
    attempts = len(sub.deliveries)
    assert attempts >= 3
    assert node.metric("thoonk_bridge_websub_delivery_retries_total") == attempts - 1
    subs = await node.plugin.subscriptions()
    assert len(subs) == 1 and subs[0]["failures"] == attempts
    sub.status = [200]
    await node.change("/feeds/news.atom", ATOM3)
    await wait_for(lambda: sub.deliveries[-1].body == ATOM3 and node.metric("thoonk_bridge_websub_deliveries_total",
                                                                             result="ok"))
    assert (await node.plugin.subscriptions())[0]["failures"] == 0


async def test_retry_survives_a_restart(redis_url: str, sub: Subscriber) -> None:
    """A retry waiting in Redis when the daemon stops is sent by the next one."""
    node = await start_node(redis_url, retry_base=0.5, retry_max_delay=0.5)
    topic = node.topic("/feeds/news.atom", ATOM1)
    await subscribed(node, sub, sub.url(), topic)
    sub.status = [503, 200]
    await node.change("/feeds/news.atom", ATOM2)
    await wait_for(lambda: node.metric("thoonk_bridge_websub_delivery_retries_total") == 1)
    await node.stop()
    assert len(sub.deliveries) == 1
    node2 = await start_node(redis_url)
    try:
        node2.topic("/feeds/news.atom", ATOM2)
        await wait_for(lambda: len(sub.deliveries) == 2)
        assert sub.deliveries[1].body == ATOM2
        await wait_for(lambda: node2.metric("thoonk_bridge_websub_deliveries_total", result="ok") == 1)
    finally:
        await node2.stop()


async def test_delivery_claimed_by_a_dead_daemon_is_sent_by_another(redis_url: str, sub: Subscriber) -> None:
    node = await start_node(redis_url, job_timeout=0.3)
    topic = node.topic("/feeds/news.atom", ATOM1)
    await subscribed(node, sub, sub.url(), topic)
    sub.hang.clear()  # the callback holds the first delivery
    await node.change("/feeds/news.atom", ATOM2)
    await wait_for(lambda: sub.arrived == 1)  # the delivery is in flight
    await node.stop(kill=True)  # dies with the delivery job claimed
    sub.hang.set()
    node2 = await start_node(redis_url, job_timeout=0.3)
    try:
        await wait_for(lambda: node2.metric("thoonk_bridge_websub_deliveries_total", result="ok") == 1)
        assert ATOM2 in sub.bodies()
    finally:
        await node2.stop()


async def test_superseded_retry_is_dropped(redis_url: str, sub: Subscriber) -> None:
    """A failed notification whose topic changed again before its retry is not sent again: the newer
    notification carries the full content. The retry is due well after the second change (>= 1 s),
    so the drop is what the test sees, never a race won by the retry."""
    node = await start_node(redis_url, retry_base=2.0, retry_max_delay=2.0, retry_window=30)
    try:
        topic = node.topic("/feeds/news.atom", ATOM1)
        await subscribed(node, sub, sub.url(), topic)
        sub.status = [500, 200]
        await node.change("/feeds/news.atom", ATOM2)
        await wait_for(lambda: node.metric("thoonk_bridge_websub_delivery_retries_total") == 1)
        await node.change("/feeds/news.atom", ATOM3)
        await wait_for(lambda: node.metric("thoonk_bridge_websub_delivery_drops_total", reason="superseded") == 1)
        await wait_for(node.idle)
        assert sub.bodies() == [ATOM2, ATOM3]  # ATOM2 (failed) once, never retried; then ATOM3
        assert node.metric("thoonk_bridge_websub_deliveries_total", result="ok") == 1
    finally:
        await node.stop()


async def test_unchanged_content_is_not_sent_again(node: Node, sub: Subscriber) -> None:
    topic = node.topic("/feeds/news.atom", ATOM1)
    await subscribed(node, sub, sub.url(), topic)
    await node.change("/feeds/news.atom", ATOM2)
    await node.change("/feeds/news.atom", ATOM2)
    await wait_for(lambda: sub.deliveries)
    assert node.metric("thoonk_bridge_websub_distributions_total", result="unchanged") == 1
    await wait_for(node.idle)
    assert len(sub.deliveries) == 1


async def test_failing_host_is_paused_and_others_still_served(redis_url: str) -> None:
    from tests.plugins.websub.support import StubResolver

    good, bad = await Subscriber().start(), await Subscriber().start()
    resolver = StubResolver({"bad.test": "127.0.0.1", "good.test": "127.0.0.1"})
    node = await start_node(redis_url, resolver=resolver, breaker_threshold=2, breaker_cooldown=30,
                            retry_window=0.5)
    try:
        topic = node.topic("/feeds/news.atom", ATOM1)
        bad_cb = bad.url().replace("127.0.0.1", "bad.test")
        good_cb = good.url().replace("127.0.0.1", "good.test")
        await subscribed(node, bad, bad_cb, topic)
        await subscribed(node, good, good_cb, topic)
        bad.status = [500]
        await node.change("/feeds/news.atom", ATOM2)
        await wait_for(lambda: node.metric("thoonk_bridge_websub_breaker_opened_total") == 1)
        await wait_for(lambda: node.metric("thoonk_bridge_websub_delivery_drops_total",
                                           reason="retries_exhausted") == 1)
        assert len(bad.deliveries) == 2  # paused after two failures in a row
        assert node.metric("thoonk_bridge_websub_deliveries_total", result="deferred") >= 1
        await node.change("/feeds/news.atom", ATOM3)
        await wait_for(lambda: good.bodies() == [ATOM2, ATOM3])
        assert len(bad.deliveries) == 2
    finally:
        await node.stop()
        await good.close()
        await bad.close()


async def test_per_host_state_is_bounded(redis_url: str, sub: Subscriber) -> None:
    """Delivery slots exist only while a host has deliveries in flight, and failing hosts are
    remembered up to a cap: callbacks on ever new hosts leave nothing behind."""
    from tests.plugins.websub.support import StubResolver

    hosts = [f"h{i}.test" for i in range(5)]
    node = await start_node(redis_url, resolver=StubResolver(dict.fromkeys(hosts, "127.0.0.1")), retry_window=0)
    node.plugin.distributor.max_breakers = 2
    try:
        topic = node.topic("/feeds/news.atom", ATOM1)
        for host in hosts:
            await subscribed(node, sub, sub.url().replace("127.0.0.1", host), topic)
        await node.change("/feeds/news.atom", ATOM2)
        await wait_for(lambda: node.metric("thoonk_bridge_websub_deliveries_total", result="ok") == 5)
        assert len(node.plugin.distributor.host_slots) == 0
        sub.status = [500]
        await node.change("/feeds/news.atom", ATOM3)
        await wait_for(lambda: node.metric("thoonk_bridge_websub_deliveries_total", result="failed") == 5)
        assert len(node.plugin.distributor.breakers) == 2
        assert len(node.plugin.distributor.host_slots) == 0
    finally:
        await node.stop()


async def test_publish_ping_forms(node: Node, sub: Subscriber) -> None:
    topic = node.topic("/feeds/news.atom", ATOM1)
    other = node.topic("/feeds/other.atom", ATOM1)
    await subscribed(node, sub, sub.url(), topic)
    await subscribed(node, sub, sub.url(), other)
    node.docs["/feeds/news.atom"] = (ATOM2, "application/atom+xml")
    status, _, _ = await hub_post(node, {"hub.mode": "publish", "hub.url": topic})
    assert status == 204
    await wait_for(lambda: len(sub.deliveries) == 1)
    node.docs["/feeds/news.atom"] = (ATOM3, "application/atom+xml")
    node.docs["/feeds/other.atom"] = (ATOM3, "application/atom+xml")
    status, _, _ = await hub_post(node, [("hub.mode", "publish"), ("hub.url[]", topic),
                                         ("hub.url[]", "https://not.ours/x")])
    assert status == 204
    await wait_for(lambda: len(sub.deliveries) == 2)
    node.docs["/feeds/news.atom"] = (ATOM1, "application/atom+xml")
    node.docs["/feeds/other.atom"] = (ATOM2, "application/atom+xml")
    status, _, _ = await hub_post(node, {"hub.mode": "publish", "hub.url": f"{topic},{other}"})
    assert status == 204
    await wait_for(lambda: len(sub.deliveries) == 4)
    node.docs["/feeds/news.atom"] = (ATOM2, "application/atom+xml")
    status, _, _ = await hub_post(node, {"hub.mode": "publish", "hub.topic": topic})  # websub.rocks form
    assert status == 204
    await wait_for(lambda: len(sub.deliveries) == 5)
    status, text, _ = await hub_post(node, {"hub.mode": "publish"})
    assert status == 400 and "hub.url" in text


async def test_host_slots_limit_wait_and_cancel() -> None:
    """HostSlots: at most ``limit`` per host, waiters served in order, a cancelled waiter gives up its
    place (or passes on the slot it was just handed), and an idle host leaves no entry."""
    import asyncio

    from thoonk_bridge.plugins.websub.limits import HostSlots

    slots = HostSlots(1)
    order: list[str] = []
    release = asyncio.Event()

    async def user(name: str) -> None:
        async with slots.hold("h"):
            order.append(name)
            await release.wait()

    first = asyncio.create_task(user("a"))
    await wait_for(lambda: order == ["a"])
    assert slots.busy("h") and not slots.try_take("h") and not slots.busy("other")
    second, third = asyncio.create_task(user("b")), asyncio.create_task(user("c"))
    await wait_for(lambda: len(slots._hosts["h"].waiters) == 2)
    second.cancel()  # waiting: leaves the line
    release.set()
    await asyncio.gather(first, third, return_exceptions=True)
    assert order == ["a", "c"]
    assert len(slots) == 0
    assert slots.try_take("x") and slots.busy("x")
    slots.release("x")
    assert len(slots) == 0
