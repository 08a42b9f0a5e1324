"""The websub plugin inside a whole daemon: thoonk -> feeds documents -> hub -> subscribers, and an
outside topic (here: the daemon's own hub-advertised document) -> subscriber route -> Thoonk feed."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import feedparser

from tests.plugins.websub.support import Subscriber
from thoonk_bridge.testing import running_bridge, wait_until
from thoonk_bridge.thoonk.embedded import free_tcp_port

WEBSUB = {"outbound": {"allow_loopback": True}, "retry_base": 0.05, "retry_max_delay": 0.2, "retry_poll": 0.05,
          "lease_min": 1, "job_timeout": 2}


async def test_feed_documents_are_distributed_and_subscribed(redis_url: str, tmp_path: Path) -> None:
    port = free_tcp_port()
    base = f"http://127.0.0.1:{port}"
    config = {
        "http": {"listen": f"127.0.0.1:{port}", "public_url": base},
        "plugins": {"feeds": {"quiet": 0.005, "max_staleness": 0.05, "output_dir": str(tmp_path / "docs")},
                    "websub": WEBSUB},
        "routes": [
            {"name": "news-public", "from": "thoonk:news", "to": ["feeds:news", "websub:news"]},
            {"name": "partner-in", "from": f"websub:{base}/feeds/news.atom", "to": "thoonk:partner"},
            {"name": "private", "from": "thoonk:private", "to": "feeds:private"},
        ],
    }
    sub = await Subscriber().start()
    try:
        async with running_bridge(config, redis_url=redis_url, tmp_path=tmp_path) as daemon:
            await wait_until(lambda: daemon.routes["news-public"].ready, message="route ready")
            topic = base + "/feeds/news.atom"
            async with aiohttp.ClientSession() as s:
                async with s.get(topic) as resp:
                    assert f'<{base}/websub/hub>; rel="hub"' in resp.headers.get("Link", "")
                async with s.post(base + "/websub/hub", data={"hub.mode": "subscribe", "hub.topic": topic,
                                                              "hub.callback": sub.url(), "hub.secret": "pw"}) as r:
                    assert r.status == 202
            await wait_until(lambda: sub.verifications, message="verification")
            await _no_hub_for_a_route_without_websub(daemon, base, sub)
            feed = await daemon.thoonk.feed("news")
            await feed.publish(json.dumps({"title": "Hello", "link": "https://example.org/1"}), id="1")
            await wait_until(lambda: any(b"Hello" in b for b in sub.bodies()), message="delivery")
            async with aiohttp.ClientSession() as s, s.get(base + "/topics/news") as resp:
                assert resp.status == 404  # documents exist for "news": no raw topic besides them
            last = next(d for d in sub.deliveries if b"Hello" in d.body)
            assert last.headers["Content-Type"].startswith("application/atom+xml")
            assert [e.title for e in feedparser.parse(last.body).entries] == ["Hello"]
            # the subscriber route (our own hub, discovered from the document) fills thoonk:partner
            partner = await daemon.thoonk.feed("partner")
            await wait_until(lambda: _has_items(partner), timeout=20, message="partner feed filled")
            await feed.publish(json.dumps({"title": "Second", "link": "https://example.org/2"}), id="2")
            await wait_until(lambda: _count(partner, 2), timeout=20, message="second item relayed")
    finally:
        await sub.close()


async def _no_hub_for_a_route_without_websub(daemon, base: str, sub: Subscriber) -> None:
    """The route "private" has no websub sink: its documents name no hub (header or body), and a
    subscription request for them is denied."""
    await wait_until(lambda: daemon.routes["private"].ready, message="private route ready")
    private = base + "/feeds/private.atom"
    async with aiohttp.ClientSession() as s:
        for path in ("/feeds/private.atom", "/feeds/private.rss", "/feeds/private.json"):
            async with s.get(base + path) as resp:
                assert resp.status == 200
                assert 'rel="hub"' not in resp.headers.get("Link", "")
                assert b"/websub/hub" not in await resp.read()
        async with s.get(base + "/feeds/news.atom") as resp:
            assert b"/websub/hub" in await resp.read()  # the document of the route that asked for it
        denied = len(sub.verifications)
        async with s.post(base + "/websub/hub", data={"hub.mode": "subscribe", "hub.topic": private,
                                                      "hub.callback": sub.url("/private")}) as r:
            assert r.status == 202
    await wait_until(lambda: len(sub.verifications) > denied, message="answer to the private subscription")
    assert sub.verifications[-1]["hub.mode"] == "denied"


async def _has_items(feed) -> bool:
    return bool(await feed.get_ids())


async def _count(feed, n: int) -> bool:
    return len(await feed.get_ids()) >= n


async def test_documents_under_another_path_prefix_are_hub_topics(redis_url: str, tmp_path: Path) -> None:
    """The hub learns the feeds plugin's document paths from the topic registry (nothing assumes
    ``/feeds/``): with ``path_prefix: /docs/v2`` a subscription to the document is verified and a
    change is delivered; the body delivered is the one feeds rendered, never rendered again."""
    port = free_tcp_port()
    base = f"http://127.0.0.1:{port}"
    config = {
        "http": {"listen": f"127.0.0.1:{port}", "public_url": base},
        "plugins": {"feeds": {"quiet": 0.005, "max_staleness": 0.05, "output_dir": str(tmp_path / "docs"),
                              "path_prefix": "/docs/v2"},
                    "websub": WEBSUB},
        "routes": [{"name": "news-public", "from": "thoonk:news", "to": ["feeds:news", "websub:news"]}],
    }
    sub = await Subscriber().start()
    try:
        async with running_bridge(config, redis_url=redis_url, tmp_path=tmp_path) as daemon:
            await wait_until(lambda: daemon.routes["news-public"].ready, message="route ready")
            asked: list[str] = []  # topics the hub asked the registry to render
            render = daemon.topics.render

            async def counting_render(path: str) -> tuple[bytes, str] | None:
                asked.append(path)
                return await render(path)

            daemon.topics.render = counting_render  # type: ignore[method-assign]
            topic = base + "/docs/v2/news.atom"
            async with aiohttp.ClientSession() as s:
                async with s.get(topic) as resp:
                    assert resp.status == 200
                    assert resp.headers["Link"] == f'<{base}/websub/hub>; rel="hub", <{topic}>; rel="self"'
                async with s.get(base + "/feeds/news.atom") as resp:
                    assert resp.status == 404  # nothing under the default prefix
                async with s.post(base + "/websub/hub", data={"hub.mode": "subscribe", "hub.topic": topic,
                                                              "hub.callback": sub.url()}) as r:
                    assert r.status == 202
            await wait_until(lambda: sub.verifications, message="verification")
            assert sub.verifications[0]["hub.mode"] == "subscribe"  # a hub topic: not denied
            await wait_until(lambda: daemon.plugins["websub"].store.count_active(
                daemon.plugins["websub"].topics.url("/docs/v2/news.atom")), message="subscription stored")
            feeds = daemon.plugins["feeds"]
            renders = feeds.documents["news"].renders
            feed = await daemon.thoonk.feed("news")
            await feed.publish(json.dumps({"title": "Hello", "link": "https://example.org/1"}), id="1")
            await wait_until(lambda: any(b"Hello" in b for b in sub.bodies()), message="delivery")
            delivered = next(d for d in sub.deliveries if b"Hello" in d.body)
            assert delivered.headers["Link"] == f'<{base}/websub/hub>; rel="hub", <{topic}>; rel="self"'
            assert delivered.body == feeds.documents["news"].served["atom"].body  # what feeds rendered
            assert feeds.documents["news"].renders > renders  # rendered by feeds for the change...
            assert asked == []  # ...and not asked for again by the hub
    finally:
        await sub.close()
