"""Hub requests that must be refused (and how), SSRF refusals without a packet, raw topics, fuzzing."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.plugins.websub.support import (
    Node,
    StubResolver,
    Subscriber,
    Tarpit,
    hub_post,
    start_node,
    subscribe,
    subscribed,
    wait_for,
)
from thoonk_bridge.plugin import Endpoint, EventKind, ItemEvent, RouteContext
from thoonk_bridge.plugins.websub.settings import WebSubSinkOptions

ATOM = b'<feed xmlns="http://www.w3.org/2005/Atom"><title>x</title></feed>'


async def _form(node: Node, **fields: str) -> tuple[int, str, dict[str, str]]:
    data = {k.replace("_", ".", 1): v for k, v in fields.items()}
    return await hub_post(node, data)


@pytest.mark.parametrize(
    ("fields", "status", "words"),
    [
        ({}, 400, "hub.mode is required"),
        ({"hub_mode": "subscribe"}, 400, "hub.callback is required"),
        ({"hub_mode": "subscribe", "hub_callback": "http://127.0.0.1:1/cb"}, 400, "hub.topic is required"),
        ({"hub_mode": "fetch", "hub_callback": "http://127.0.0.1:1/", "hub_topic": "http://x/"}, 400,
         "unsupported hub.mode"),
        ({"hub_mode": "subscribe", "hub_callback": "ftp://127.0.0.1/cb", "hub_topic": "http://x/"}, 400,
         "http or https"),
        ({"hub_mode": "subscribe", "hub_callback": "/relative", "hub_topic": "http://x/"}, 400, "absolute"),
        ({"hub_mode": "subscribe", "hub_callback": "http://127.0.0.1:1/cb#frag", "hub_topic": "http://x/"}, 400,
         "fragment"),
        ({"hub_mode": "subscribe", "hub_callback": "http://127.0.0.1:1/c b", "hub_topic": "http://x/"}, 400,
         "spaces"),
        ({"hub_mode": "subscribe", "hub_callback": "http://127.0.0.1:99999/", "hub_topic": "http://x/"}, 400,
         "not a valid URL"),
        ({"hub_mode": "subscribe", "hub_callback": "http://127.0.0.1:1/", "hub_topic": "mailto:x@y"}, 400,
         "hub.topic"),
        ({"hub_mode": "subscribe", "hub_callback": "http://127.0.0.1:1/", "hub_topic": "http://x/",
          "hub_lease_seconds": "-5"}, 400, "lease_seconds"),
        ({"hub_mode": "subscribe", "hub_callback": "http://127.0.0.1:1/", "hub_topic": "http://x/",
          "hub_lease_seconds": "1e9"}, 400, "lease_seconds"),
        ({"hub_mode": "subscribe", "hub_callback": "http://127.0.0.1:1/", "hub_topic": "http://x/",
          "hub_secret": "x" * 200}, 400, "less than 200 bytes"),
        ({"hub_mode": "subscribe", "hub_callback": "http://127.0.0.1:1/", "hub_topic": "http://x/",
          "hub_secret": "é" * 100}, 400, "less than 200 bytes"),
        ({"hub_mode": "subscribe", "hub_callback": "http://127.0.0.1:1/" + "a" * 3000, "hub_topic": "http://x/"},
         400, "longer than"),
    ],
)
async def test_malformed_requests(node: Node, fields: dict[str, str], status: int, words: str) -> None:
    got, text, headers = await _form(node, **fields)
    assert got == status
    assert words in text
    assert headers["Content-Type"].startswith("text/plain")


async def test_secret_of_199_bytes_is_fine(node: Node, sub: Subscriber) -> None:
    topic = node.topic("/feeds/a.atom", ATOM)
    await subscribed(node, sub, sub.url(), topic, **{"hub.secret": "s" * 199})


async def test_wrong_content_type_and_size(node: Node) -> None:
    status, text, _ = await hub_post(node, b'{"hub.mode": "subscribe"}', {"Content-Type": "application/json"})
    assert status == 415 and "x-www-form-urlencoded" in text
    big = b"hub.mode=subscribe&foo=" + b"x" * 20000
    status, text, _ = await hub_post(node, big, {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 413
    status, text, _ = await hub_post(node, b"hub.mode=\xff\xfe", {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 400 and "UTF-8" in text
    many = "&".join(f"p{i}=1" for i in range(150)).encode()
    status, text, _ = await hub_post(node, many, {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 400 and "too many" in text
    status, text, _ = await hub_post(node, b"hub.mode=subscribe&hub.mode=unsubscribe",
                                     {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 400 and "more than once" in text


async def test_oversize_chunked_body_refused(node: Node) -> None:
    async def gen():
        for _ in range(100):
            yield b"x" * 1000

    async with aiohttp.ClientSession() as s, s.post(
        node.hub, data=gen(), headers={"Content-Type": "application/x-www-form-urlencoded"}
    ) as resp:
        assert resp.status == 413


async def test_rate_limit_per_callback(redis_url: str, sub: Subscriber) -> None:
    node = await start_node(redis_url, subscribe_rate=3, subscribe_rate_window=3600)
    try:
        topic = node.topic("/feeds/a.atom", ATOM)
        codes = [(await subscribe(node, sub.url(), topic))[0] for _ in range(4)]
        assert codes == [202, 202, 202, 429]
        status, _, headers = await _form(node, hub_mode="subscribe", hub_callback=sub.url(), hub_topic=topic)
        assert status == 429 and int(headers["Retry-After"]) > 0
        assert (await subscribe(node, sub.url("/other"), topic))[0] == 202  # another callback is fine
    finally:
        await node.stop()


# ------------------------------------------------------------------ starving the hub (issue 11 §5)


@pytest.fixture
async def tarpits():
    """Eight callback "hosts" (127.0.0.2 .. 127.0.0.9) that accept verifications and never answer."""
    pits = [await Tarpit(f"127.0.0.{i}").start() for i in range(2, 10)]
    yield pits
    for pit in pits:
        await pit.close()


async def test_tarpit_callbacks_do_not_delay_a_legitimate_verification(redis_url: str, sub: Subscriber,
                                                                       tarpits: list[Tarpit]) -> None:
    """40 subscriptions whose callbacks never answer (query strings varied, spread over 8 hosts),
    then a legitimate one: it is verified while the tarpits still hold their verifications, and no
    tarpit host ever holds more than ``verify_per_host`` of them."""
    node = await start_node(redis_url, verify_timeout=5.0, verify_per_host=2)
    try:
        topic = node.topic("/feeds/a.atom", ATOM)
        for n in range(40):
            status, text = await subscribe(node, tarpits[n % 8].url(f"/cb?n={n}"), topic)
            assert status == 202, text
        # the tarpits are holding verifications when the legitimate request comes in
        await wait_for(lambda: sum(pit.holding for pit in tarpits) >= 2)
        await subscribed(node, sub, sub.url(), topic)  # waits at most 10 s (sequentially: 100 s)
        assert len(await node.plugin.subscriptions()) == 1
        assert all(pit.most <= 2 for pit in tarpits)
        assert any(pit.holding for pit in tarpits)  # the legitimate one did not wait the tarpits out
    finally:
        await node.stop()


async def test_verifier_survives_a_redis_error(redis_url: str, sub: Subscriber, tarpits: list[Tarpit]) -> None:
    """A Redis error while a job is put back (its host busy) costs that job a delay, not the verifier."""
    node = await start_node(redis_url, verify_timeout=5.0, verify_per_host=1)
    queue = node.plugin.queues["websub.verify"]
    real_finish = queue.finish
    failures = []

    async def finish_failing_once(job_id: str) -> None:
        if not failures:
            failures.append(job_id)
            raise ConnectionError("redis went away for a moment")
        await real_finish(job_id)

    queue.finish = finish_failing_once  # type: ignore[method-assign]
    try:
        topic = node.topic("/feeds/a.atom", ATOM)
        for n in range(2):  # the second one finds its host busy and is put back: that finish fails
            assert (await subscribe(node, tarpits[0].url(f"/cb?n={n}"), topic))[0] == 202
        await wait_for(lambda: failures)
        await subscribed(node, sub, sub.url(), topic)
    finally:
        await node.stop()


async def test_subscription_requests_are_limited_per_client_address(redis_url: str, sub: Subscriber) -> None:
    node = await start_node(redis_url, subscribe_rate_per_client=3, subscribe_rate_window=3600)
    try:
        topic = node.topic("/feeds/a.atom", ATOM)
        codes = []
        for n in range(4):  # a different callback each time: only the client's own limit applies
            status, _, headers = await _form(node, hub_mode="subscribe", hub_callback=sub.url(f"/c{n}"),
                                             hub_topic=topic)
            codes.append(status)
        assert codes == [202, 202, 202, 429]
        assert 0 < int(headers["Retry-After"]) <= 3600
        status, _, _ = await hub_post(node, {"hub.mode": "subscribe", "hub.callback": sub.url("/c9"),
                                             "hub.topic": topic}, source="127.0.0.2")
        assert status == 202  # another client address is not held back
        assert node.metric("thoonk_bridge_websub_hub_refusals_total", reason="client_rate") == 1
    finally:
        await node.stop()


async def test_subscription_requests_are_limited_per_callback_host(redis_url: str, sub: Subscriber,
                                                                   tarpits: list[Tarpit]) -> None:
    node = await start_node(redis_url, subscribe_rate_per_host=3, subscribe_rate_window=3600, verify_timeout=0.2)
    try:
        topic = node.topic("/feeds/a.atom", ATOM)
        codes = [(await subscribe(node, sub.url(f"/c{n}?x={n}"), topic))[0] for n in range(4)]
        assert codes == [202, 202, 202, 429]
        assert (await subscribe(node, tarpits[0].url("/cb"), topic))[0] == 202  # another host
        assert node.metric("thoonk_bridge_websub_hub_refusals_total", reason="host_rate") == 1
    finally:
        await node.stop()


async def test_publish_pings_are_limited_per_client_address(redis_url: str, sub: Subscriber) -> None:
    """Each ping renders and hashes the topics it names: pings count against the client's budget."""
    node = await start_node(redis_url, subscribe_rate_per_client=2, subscribe_rate_window=3600)
    try:
        topic = node.topic("/feeds/a.atom", ATOM)
        codes = [(await hub_post(node, {"hub.mode": "publish", "hub.url": topic}))[0] for _ in range(3)]
        assert codes == [204, 204, 429]
        assert (await hub_post(node, {"hub.mode": "publish", "hub.url": topic}, source="127.0.0.2"))[0] == 204
    finally:
        await node.stop()


async def test_pending_verifications_are_capped(redis_url: str, tarpits: list[Tarpit]) -> None:
    node = await start_node(redis_url, max_pending_verifications=3, verify_timeout=5.0)
    try:
        topic = node.topic("/feeds/a.atom", ATOM)
        for n in range(3):
            assert (await subscribe(node, tarpits[n].url("/cb"), topic))[0] == 202
        status, text, headers = await _form(node, hub_mode="subscribe", hub_callback=tarpits[3].url("/cb"),
                                            hub_topic=topic)
        assert status == 429 and "waiting for verification" in text
        assert int(headers["Retry-After"]) > 0
        assert tarpits[3].seen == 0
        assert node.metric("thoonk_bridge_websub_hub_refusals_total", reason="pending_full") == 1
    finally:
        await node.stop()


async def test_subscriptions_are_capped(redis_url: str, sub: Subscriber) -> None:
    """At ``max_subscriptions`` new pairs are refused (429); a renewal of a stored one still goes
    through; a request admitted before the cap was reached is not verified once it is."""
    from thoonk_bridge.plugins.websub.hub import VerifyItem
    from thoonk_bridge.plugins.websub.urls import normalize_url

    node = await start_node(redis_url, max_subscriptions=2)
    try:
        topic = node.topic("/feeds/a.atom", ATOM)
        await subscribed(node, sub, sub.url("/c0"), topic)
        await subscribed(node, sub, sub.url("/c1"), topic)
        status, text, headers = await _form(node, hub_mode="subscribe", hub_callback=sub.url("/c2"), hub_topic=topic)
        assert status == 429 and "as many subscriptions" in text and int(headers["Retry-After"]) > 0
        assert node.metric("thoonk_bridge_websub_hub_refusals_total", reason="subscriptions_full") == 1
        await subscribed(node, sub, sub.url("/c0"), topic)  # a renewal
        late = VerifyItem(mode="subscribe", topic=topic, topic_key=normalize_url(topic), callback=sub.url("/c3"),
                          lease=3600)
        await node.plugin.hub.run_verification(late)  # queued while there was room
        assert node.metric("thoonk_bridge_websub_verifications_total", mode="subscribe", result="refused") == 1
        assert len(await node.plugin.subscriptions()) == 2
        assert [v["hub.mode"] for v in sub.verifications] == ["subscribe"] * 3  # no challenge for c2, c3
    finally:
        await node.stop()


async def test_rate_limit_tables_are_bounded(redis_url: str, sub: Subscriber, raw_redis: Any) -> None:
    """Each window's table holds at most ``rate_limit_max_keys`` senders, and expires with the window:
    a flood from ever new addresses gets 429 instead of growing Redis."""
    node = await start_node(redis_url, rate_limit_max_keys=2, subscribe_rate_window=600)
    try:
        topic = node.topic("/feeds/a.atom", ATOM)
        codes = []
        for n, source in enumerate(("127.0.0.1", "127.0.0.2", "127.0.0.3")):
            status, text, _ = await hub_post(node, {"hub.mode": "subscribe", "hub.callback": sub.url(f"/c{n}"),
                                                    "hub.topic": topic}, source=source)
            codes.append(status)
        assert codes == [202, 202, 429]
        assert "too many different" in text
        keys = list(raw_redis.scan_iter("websub:rl:*"))
        assert keys
        for key in keys:
            assert raw_redis.hlen(key) <= 2
            assert 0 < raw_redis.ttl(key) <= 601
    finally:
        await node.stop()


async def test_forwarded_for_counts_only_behind_a_trusted_proxy(redis_url: str, sub: Subscriber,
                                                                raw_redis: Any) -> None:
    async def codes(node: Node) -> list[int]:
        topic = node.topic("/feeds/a.atom", ATOM)
        out = []
        for n, client in enumerate(("203.0.113.5", "203.0.113.5", "203.0.113.6")):
            status, _, _ = await hub_post(node, {"hub.mode": "subscribe", "hub.callback": sub.url(f"/c{n}"),
                                                 "hub.topic": topic}, {"X-Forwarded-For": f"10.9.9.9, {client}"})
            out.append(status)
        return out

    node = await start_node(redis_url, subscribe_rate_per_client=1, trusted_proxies=["127.0.0.0/8"])
    try:
        assert await codes(node) == [202, 429, 202]  # one client per forwarded address
    finally:
        await node.stop()
    for key in raw_redis.scan_iter("websub:rl:*"):  # a fresh count for the second daemon
        raw_redis.delete(key)
    node = await start_node(redis_url, subscribe_rate_per_client=1)
    try:
        assert await codes(node) == [202, 429, 429]  # not trusted: the header is ignored
    finally:
        await node.stop()


# ------------------------------------------------------------------ SSRF


@pytest.mark.parametrize(
    ("callback", "reason"),
    [
        ("http://10.1.2.3/cb", "private address"),
        ("http://169.254.169.254/latest", "metadata"),
        ("http://[::1]/cb", "loopback"),
        ("http://127.0.0.1:9/cb", "loopback"),
        ("http://[fd00::1]/cb", "unique local"),
        ("http://100.64.1.1/cb", "CGNAT"),
        ("http://[::ffff:192.168.1.1]/cb", "private address"),
    ],
)
async def test_literal_private_callbacks_refused_at_once(redis_url: str, callback: str, reason: str) -> None:
    node = await start_node(redis_url, outbound={})  # the default policy: no loopback either
    try:
        topic = node.topic("/feeds/a.atom", ATOM)
        status, text, _ = await _form(node, hub_mode="subscribe", hub_callback=callback, hub_topic=topic)
        assert status == 400
        assert "refused by policy" in text and reason in text
    finally:
        await node.stop()


async def test_names_resolving_to_private_addresses_are_never_contacted(redis_url: str, sub: Subscriber) -> None:
    """The check is on the resolved address (stub resolver: no real lookup, no packet sent)."""
    port = sub.server.port
    resolver = StubResolver({"intranet.test": "10.0.0.7", "meta.test": "169.254.169.254",
                             "sneaky.test": "127.0.0.1"})
    node = await start_node(redis_url, resolver=resolver, outbound={})
    try:
        topic = node.topic("/feeds/a.atom", ATOM)
        for host in ("intranet.test", "meta.test", "sneaky.test"):
            status, _ = await subscribe(node, f"http://{host}:{port}/cb", topic)
            assert status == 202  # the answer does not depend on the verification
        await wait_for(lambda: node.metric("thoonk_bridge_websub_verifications_total", mode="subscribe",
                                           result="failed") == 3)
        assert sub.verifications == []  # sneaky.test -> 127.0.0.1 is the real subscriber: never reached
        assert sorted(set(resolver.asked)) == ["intranet.test", "meta.test", "sneaky.test"]
        assert await node.plugin.subscriptions() == []
    finally:
        await node.stop()


async def test_allowed_networks_let_an_intranet_through(redis_url: str, sub: Subscriber) -> None:
    resolver = StubResolver({"intranet.test": "127.0.0.1"})
    node = await start_node(redis_url, resolver=resolver, outbound={"allowed_networks": ["127.0.0.0/8"]})
    try:
        topic = node.topic("/feeds/a.atom", ATOM)
        await subscribed(node, sub, f"http://intranet.test:{sub.server.port}/cb", topic)
    finally:
        await node.stop()


# ------------------------------------------------------------------ raw topics (to: websub:NAME)


def _route(fmt: str | None = None) -> RouteContext:
    import structlog

    async def dead(*_: object) -> None:
        return None

    return RouteContext(name="r", mirror=False, format=fmt, initial="all", log=structlog.get_logger(),
                        dead_letter=dead)


@pytest.mark.parametrize(
    ("payload", "options", "fmt", "ctype"),
    [
        ("hello, plain world", {"content_type": "text/plain"}, None, "text/plain"),  # websub.rocks hub 105
        ('{"title": "hi"}', {}, "json", "application/json"),  # websub.rocks hub 106
        ('{"title": "hi"}', {}, None, "application/json"),
        ("just text", {}, None, "text/plain; charset=utf-8"),
    ],
)
async def test_raw_topic_plaintext_and_json(node: Node, sub: Subscriber, payload: str, options: dict[str, str],
                                            fmt: str | None, ctype: str) -> None:
    sink = node.plugin.sink(Endpoint("websub", "news", WebSubSinkOptions(address="news", **options)), _route(fmt))
    await sink.open()
    topic = node.url + "/topics/news"
    await sink.apply(ItemEvent(EventKind.PUBLISH, "1", "first"))
    await subscribed(node, sub, sub.url(), topic)
    await sink.apply(ItemEvent(EventKind.PUBLISH, "2", payload))
    await wait_for(lambda: sub.deliveries)
    d = sub.deliveries[0]
    async with aiohttp.ClientSession() as s, s.get(topic) as resp:
        body = await resp.read()
        assert resp.headers["Content-Type"] == ctype
        assert f'<{node.hub}>; rel="hub"' in resp.headers["Link"]
        assert f'<{topic}>; rel="self"' in resp.headers["Link"]
    assert d.body == body == payload.encode()
    assert d.headers["Content-Type"] == ctype  # string-equal to the topic's
    queued = node.metric("thoonk_bridge_websub_distributions_total", result="queued")
    await sink.apply(ItemEvent(EventKind.RETRACT, "2"))  # a raw topic keeps its last item
    assert node.metric("thoonk_bridge_websub_distributions_total", result="queued") == queued  # nothing new to send
    await wait_for(node.idle)
    assert len(sub.deliveries) == 1


async def test_documents_mode_does_nothing_per_item(node: Node, sub: Subscriber) -> None:
    node.topic("/feeds/news.atom", ATOM)
    sink = node.plugin.sink(Endpoint("websub", "news", WebSubSinkOptions(address="news")), _route())
    await sink.open()
    assert not sink.raw()
    await sink.apply(ItemEvent(EventKind.PUBLISH, "1", "x"))
    async with aiohttp.ClientSession() as s, s.get(node.url + "/topics/news") as resp:
        assert resp.status == 404


async def test_raw_topic_unknown_is_denied(node: Node, sub: Subscriber) -> None:
    await subscribe(node, sub.url(), node.url + "/topics/nothing")
    await wait_for(lambda: sub.verifications)
    assert sub.verifications[0]["hub.mode"] == "denied"


# ------------------------------------------------------------------ fuzzing


PARAM_NAMES = st.sampled_from(["hub.mode", "hub.callback", "hub.topic", "hub.secret", "hub.lease_seconds",
                               "hub.url", "hub.url[]", "foo", "hub.verify", ""])
PARAM_VALUES = st.one_of(
    st.sampled_from(["subscribe", "unsubscribe", "publish", "denied", "http://127.0.0.1:1/cb",
                     "http://[::1]/", "https://x.example/feed", "0", "-1", "99999999999999999999"]),
    st.text(max_size=300),
)


@settings(max_examples=150, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pairs=st.lists(st.tuples(PARAM_NAMES, PARAM_VALUES), max_size=8), raw=st.binary(max_size=200))
def test_fuzz_hub_endpoint_never_errors(fuzz_node: tuple[asyncio.AbstractEventLoop, Node],
                                        pairs: list[tuple[str, str]], raw: bytes) -> None:
    loop, node = fuzz_node

    async def go() -> None:
        for body in (pairs, raw):
            status, text, _ = await hub_post(node, body, {"Content-Type": "application/x-www-form-urlencoded"})
            assert status in (202, 204, 400, 413, 415, 429), (status, text)

    loop.run_until_complete(go())


@pytest.fixture
def fuzz_node(redis_url: str):
    loop = asyncio.new_event_loop()
    node = loop.run_until_complete(start_node(redis_url, subscribe_rate=100000, verify_timeout=0.2,
                                              subscribe_rate_per_client=10**6, subscribe_rate_per_host=10**6))
    try:
        yield loop, node
    finally:
        loop.run_until_complete(node.stop())
        loop.close()


def test_client_address_forms() -> None:
    """The address a hub request counts against: IPv6 per /64, IPv4-mapped as IPv4, the forwarded
    client only through trusted proxies (walking back over trusted hops, stopping at garbage)."""
    import ipaddress

    from thoonk_bridge.plugins.websub.limits import client_address

    proxies = (ipaddress.ip_network("10.0.0.0/8"),)
    assert client_address("2001:db8:1:2:3:4:5:6", None, ()) == "2001:db8:1:2::/64"
    assert client_address("::ffff:192.0.2.7", None, ()) == "192.0.2.7"
    assert client_address("192.0.2.7", "198.51.100.1", ()) == "192.0.2.7"  # no trusted proxy
    assert client_address("10.1.1.1", "198.51.100.1, 10.2.2.2", proxies) == "198.51.100.1"
    # the left part is whatever the client wrote: ignored
    assert client_address("10.1.1.1", "203.0.113.9, 198.51.100.1", proxies) == "198.51.100.1"
    assert client_address("10.1.1.1", "not-an-ip", proxies) == "10.1.1.1"
    assert client_address("10.1.1.1", "2001:db8::1", proxies) == "2001:db8::/64"
    assert client_address(None, None, ()) == "-"
