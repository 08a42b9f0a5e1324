"""The xmpp plugin inside a whole daemon: Thoonk -> node, node -> Thoonk, both ways, restarts of the
daemon and of the XMPP server, readiness. Every test runs against Prosody and against ejabberd, each
with its own defaults. Outside XMPP clients are independent slixmpp clients."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.ejabberd_server import EjabberdServer
from tests.support.prosody_server import PUBSUB, Outsider, ProsodyServer, atom
from thoonk_bridge.payload import Entry, Format, render
from thoonk_bridge.router import RetryPolicy
from thoonk_bridge.testing import running_bridge, wait_until

pytestmark = pytest.mark.xmpp

XmppServer = ProsodyServer | EjabberdServer


@pytest.fixture(params=["prosody", "ejabberd"])
def xmpp_server(request: pytest.FixtureRequest) -> XmppServer:
    """Each test runs against both servers as they are: Prosody and ejabberd (defaults differ)."""
    server: XmppServer = request.getfixturevalue(request.param)
    return server


@pytest.fixture(params=["prosody", "ejabberd"])
def fresh_xmpp_server(request: pytest.FixtureRequest) -> XmppServer:
    server: XmppServer = request.getfixturevalue(f"fresh_{request.param}")
    return server

ATOM = "{http://www.w3.org/2005/Atom}"


def config(server: XmppServer, routes: list[dict[str, Any]], **account: Any) -> dict[str, Any]:
    return {"plugins": {"xmpp": server.account("bridge", **account)}, "routes": routes}


def entry(title: str, item_id: str) -> str:
    return render(Entry(title=title, content=f"{title} body"), Format.ATOM, item_id=item_id)


async def node_titles(client: Outsider, node: str) -> dict[str, str]:
    return {i: el.find(f"{ATOM}title").text for i, el in await client.items(node) if el is not None}


async def feed_titles(daemon: Any, name: str) -> dict[str, str]:
    from thoonk_bridge.payload import parse

    feed = await daemon.thoonk.feed(name)
    return {i: parse(p).title or "" for i, p in (await feed.get_all()).items()}


async def ready(daemon: Any, *routes: str) -> None:
    for name in routes:
        await wait_until(lambda name=name: daemon.routes[name].ready, timeout=20, message=f"route {name} ready")


def drain(queue: asyncio.Queue[Any]) -> list[Any]:
    out = []
    while not queue.empty():
        out.append(queue.get_nowait())
    return out


async def test_thoonk_to_node_and_daemon_restart(
    xmpp_server: XmppServer, node_name: str, redis_url: str, tmp_path: Path
) -> None:
    routes = [
        {
            "name": "out",
            "from": "thoonk:news",
            "to": [{"endpoint": f"xmpp:{PUBSUB}/{node_name}", "title": "News", "max_items": 20}],
            "format": "atom",
            "mirror": True,
        }
    ]
    async with Outsider(xmpp_server, "bob") as bob:
        async with running_bridge(config(xmpp_server, routes), redis_url=redis_url, tmp_path=tmp_path) as daemon:
            await ready(daemon, "out")
            await bob.ps.subscribe(PUBSUB, node_name)
            feed = await daemon.thoonk.feed("news")
            await feed.publish(json.dumps({"title": "one"}), id="1")
            await feed.publish(entry("two", "2"), id="2")
            await feed.publish("three, as text", id="3")
            await wait_until(
                lambda: _equals(node_titles(bob, node_name), {"1": "one", "2": "two", "3": "three, as text"})
            )
            await feed.publish(json.dumps({"title": "one, edited"}), id="1")
            await feed.retract("2")
            await wait_until(lambda: _equals(node_titles(bob, node_name), {"3": "three, as text", "1": "one, edited"}))
            events = drain(bob.events)
            assert ("retract", node_name, "2", None) in events
            assert [e[2] for e in events if e[0] == "item"] == ["1", "2", "3", "1"]
        # while the daemon is down
        import redis.asyncio as aioredis

        from thoonk_bridge.thoonk import AsyncThoonk

        client = aioredis.Redis.from_url(redis_url)
        feed = AsyncThoonk(redis=client)
        news = await feed.feed("news")
        await news.publish(json.dumps({"title": "while down"}), id="4")
        await news.retract("3")
        await client.aclose()
        async with running_bridge(config(xmpp_server, routes), redis_url=redis_url, tmp_path=tmp_path) as daemon:
            await ready(daemon, "out")
            await wait_until(lambda: _equals(node_titles(bob, node_name), {"1": "one, edited", "4": "while down"}))
            await asyncio.sleep(0.3)
            # the reconcile republished nothing that was already there unchanged
            events = drain(bob.events)
            assert sorted((e[0], e[2]) for e in events) == [("item", "4"), ("retract", "3")]


async def _equals(value: Any, expected: Any) -> bool:
    return (await value) == expected


async def test_node_to_thoonk_and_daemon_restart(
    xmpp_server: XmppServer, node_name: str, redis_url: str, tmp_path: Path
) -> None:
    routes = [{"name": "in", "from": f"xmpp:{PUBSUB}/{node_name}", "to": "thoonk:updates", "mirror": True}]
    async with Outsider(xmpp_server, "bridge", "admin") as admin, Outsider(xmpp_server, "alice") as alice:
        await admin.create(node_name, max_items=20)
        await admin.ps.modify_affiliations(PUBSUB, node_name, [("alice@localhost", "publisher")])
        await alice.publish(node_name, "before", atom("before", "published before the bridge"))
        async with running_bridge(config(xmpp_server, routes), redis_url=redis_url, tmp_path=tmp_path) as daemon:
            await ready(daemon, "in")
            await wait_until(lambda: _equals(feed_titles(daemon, "updates"), {"before": "published before the bridge"}))
            await alice.publish(node_name, "a", atom("a", "from alice"))
            await wait_until(lambda: _has(feed_titles(daemon, "updates"), "a"))
            await alice.publish(node_name, "a", atom("a", "from alice, edited"))
            await alice.ps.retract(PUBSUB, node_name, "before", notify=True)
            await wait_until(lambda: _equals(feed_titles(daemon, "updates"), {"a": "from alice, edited"}))
        # while the daemon is down
        await alice.publish(node_name, "b", atom("b", "while the bridge was away"))
        await alice.ps.retract(PUBSUB, node_name, "a", notify=True)
        async with running_bridge(config(xmpp_server, routes), redis_url=redis_url, tmp_path=tmp_path) as daemon:
            await ready(daemon, "in")
            await wait_until(lambda: _equals(feed_titles(daemon, "updates"), {"b": "while the bridge was away"}))
            feed = await daemon.thoonk.feed("updates")
            assert (await feed.get_item("b")).startswith(f'<entry xmlns="{ATOM[1:-1]}">')


async def _has(value: Any, key: str) -> bool:
    return key in await value


async def test_both_ways_converge_without_echo(
    xmpp_server: XmppServer, node_name: str, redis_url: str, tmp_path: Path
) -> None:
    node = f"xmpp:{PUBSUB}/{node_name}"
    routes = [
        {"name": "out", "from": "thoonk:mirror", "to": [{"endpoint": node, "max_items": 20}], "format": "atom"},
        {"name": "in", "from": node, "to": "thoonk:mirror", "format": "atom"},
    ]
    async with Outsider(xmpp_server, "bob") as bob:
        async with running_bridge(config(xmpp_server, routes), redis_url=redis_url, tmp_path=tmp_path) as daemon:
            await ready(daemon, "out", "in")
            await bob.ps.subscribe(PUBSUB, node_name)
            feed = await daemon.thoonk.feed("mirror")
            await feed.publish(json.dumps({"title": "from thoonk"}), id="t1")
            async with Outsider(xmpp_server, "bridge", "outside") as outside:
                await outside.publish(node_name, "x1", atom("x1", "from xmpp"))
            want = {"t1": "from thoonk", "x1": "from xmpp"}
            await wait_until(lambda: _equals(feed_titles(daemon, "mirror"), want))
            await wait_until(lambda: _equals(node_titles(bob, node_name), want))
            await feed.publish(json.dumps({"title": "edited in thoonk"}), id="x1")
            want = {"t1": "from thoonk", "x1": "edited in thoonk"}
            await wait_until(lambda: _equals(node_titles(bob, node_name), want))
            await wait_until(lambda: _equals(feed_titles(daemon, "mirror"), want))
            # settled: no write goes round in circles
            await asyncio.sleep(0.5)
            drain(bob.events)
            published = _sample(daemon, "thoonk_bridge_xmpp_items_published_total", route="out")
            await asyncio.sleep(1.0)
            assert drain(bob.events) == []
            assert _sample(daemon, "thoonk_bridge_xmpp_items_published_total", route="out") == published
            assert published <= 3  # t1, x1 (from the node, echoed at most once), x1 edit


def _sample(daemon: Any, name: str, **labels: str) -> float:
    return daemon.metrics.registry.get_sample_value(name, labels) or 0.0


async def test_server_restart_loses_nothing(
    fresh_xmpp_server: XmppServer, node_name: str, redis_url: str, tmp_path: Path
) -> None:
    server = fresh_xmpp_server
    out_node, in_node = f"{node_name}/out", f"{node_name}/in"
    routes = [
        {
            "name": "out",
            "from": "thoonk:out",
            "to": [{"endpoint": f"xmpp:{PUBSUB}/{out_node}", "max_items": 20}],
            "format": "atom",
        },
        {"name": "in", "from": f"xmpp:{PUBSUB}/{in_node}", "to": "thoonk:in"},
    ]
    async with Outsider(server, "bridge", "admin") as admin:
        await admin.create(in_node, max_items=20)
    async with running_bridge(config(server, routes), redis_url=redis_url, tmp_path=tmp_path) as daemon:
        await ready(daemon, "out", "in")
        out_feed = await daemon.thoonk.feed("out")
        in_feed = await daemon.thoonk.feed("in")
        await out_feed.publish(json.dumps({"title": "before"}), id="o1")
        async with Outsider(server, "bridge", "admin") as admin:
            await admin.publish(in_node, "i1", atom("i1", "before"))
            await wait_until(lambda: _has(node_titles(admin, out_node), "o1"))
        await wait_until(lambda: _has(_ids(in_feed), "i1"))

        server.stop()
        await wait_until(lambda: daemon.plugins["xmpp"].health().status.value == "degraded", message="degraded")
        await out_feed.publish(json.dumps({"title": "while the server was down"}), id="o2")
        await out_feed.retract("o1")
        server.start()
        # published on the node right after the restart, maybe before the bridge is back
        async with Outsider(server, "bridge", "admin") as admin:
            await admin.publish(in_node, "i2", atom("i2", "right after the restart"))
            await wait_until(lambda: _equals(_ids(in_feed), ["i1", "i2"]), timeout=20)
            await wait_until(
                lambda: _equals(node_titles(admin, out_node), {"o2": "while the server was down"}), timeout=20
            )
            await admin.publish(in_node, "i3", atom("i3", "later"))
            await wait_until(lambda: _equals(_ids(in_feed), ["i1", "i2", "i3"]))
        assert daemon.plugins["xmpp"].health().status.value == "ready"
        ok, _ = await daemon.readiness()
        assert ok


async def _ids(feed: Any) -> Any:
    return await feed.get_ids()


async def test_wrong_password_makes_the_daemon_not_ready(
    xmpp_server: XmppServer, node_name: str, redis_url: str, tmp_path: Path
) -> None:
    routes = [{"name": "in", "from": f"xmpp:{PUBSUB}/{node_name}", "to": "thoonk:in"}]
    cfg = config(xmpp_server, routes, password="wrong")
    async with running_bridge(cfg, redis_url=redis_url, tmp_path=tmp_path) as d:
        ok, body = await d.readiness()
        assert not ok
        assert body["plugins"]["xmpp"]["status"] == "failed"
        assert "wrong password" in body["plugins"]["xmpp"]["detail"]


async def test_reconcile_fills_a_small_node_with_the_newest_items_only(
    xmpp_server: XmppServer, node_name: str, redis_url: str, tmp_path: Path
) -> None:
    from thoonk_bridge.thoonk import Thoonk

    with Thoonk(url=redis_url) as pubsub:
        for i in range(10):
            pubsub.feed("many").publish(json.dumps({"title": f"item {i}"}), id=str(i))
    routes = [{"name": "small", "from": "thoonk:many",
               "to": [{"endpoint": f"xmpp:{PUBSUB}/{node_name}", "max_items": 3}], "mirror": True,
               "format": "atom"}]
    async with Outsider(xmpp_server, "bob") as bob:
        async with running_bridge(config(xmpp_server, routes), redis_url=redis_url, tmp_path=tmp_path) as daemon:
            await ready(daemon, "small")
            await wait_until(lambda: _equals(node_titles(bob, node_name), {str(i): f"item {i}" for i in (7, 8, 9)}))
            worker = daemon.routes["small"].workers[0]
            await worker.wait_idle()
            assert worker.sink.capacity == 3
        # A restart does not refill the node with the seven older items it trimmed.
        async with running_bridge(config(xmpp_server, routes), redis_url=redis_url, tmp_path=tmp_path) as daemon:
            await ready(daemon, "small")
            worker = daemon.routes["small"].workers[0]
            await worker.wait_idle()
            assert daemon.metrics.items_out.labels("small", worker.name)._value.get() == 0
            assert await node_titles(bob, node_name) == {str(i): f"item {i}" for i in (7, 8, 9)}


# ---------------------------------------------------------------------- servers as they are (issue 10 §8)


async def test_node_keeping_no_items_is_followed_live_without_a_reconcile(
    prosody: ProsodyServer, node_name: str, redis_url: str, tmp_path: Path
) -> None:
    # Prosody only: ejabberd lists the items of a persist_items=false node like any other's
    from thoonk_bridge.thoonk import Thoonk

    with Thoonk(url=redis_url) as pubsub:  # delivered on an earlier run: no snapshot says it is gone
        pubsub.feed("live").publish(entry("earlier", "earlier"), id="earlier")
    routes = [{"name": "in", "from": f"xmpp:{PUBSUB}/{node_name}", "to": "thoonk:live", "mirror": True}]
    async with Outsider(prosody, "bridge", "admin") as admin:
        await admin.create(node_name, persist_items=False)  # get_items: feature-not-implemented
        async with running_bridge(config(prosody, routes), redis_url=redis_url, tmp_path=tmp_path) as daemon:
            await ready(daemon, "in")
            ok, body = await daemon.readiness()
            assert ok
            assert "no snapshot" in body["routes"]["in"]["detail"]
            assert "keeps no items" in body["routes"]["in"]["detail"]
            await admin.publish(node_name, "live", atom("live", "relayed live"))
            want = {"earlier": "earlier", "live": "relayed live"}
            await wait_until(lambda: _equals(feed_titles(daemon, "live"), want))
            # followed, not retried: one snapshot attempt, the route never failed
            assert daemon.routes["in"].state()["state"] == "following"
            assert _sample(daemon, "thoonk_bridge_xmpp_errors_total", account="default", kind="iq") == 0


class _SlowRetry(RetryPolicy):
    """Every retry waits 300 s: only a wake-up can deliver within the test's timeouts."""

    def delay(self, attempt: int) -> float:
        return 300.0


async def test_sink_waiting_out_a_retry_delay_is_woken_when_the_server_is_back(
    fresh_xmpp_server: XmppServer, node_name: str, redis_url: str, tmp_path: Path
) -> None:
    server = fresh_xmpp_server
    routes = [{"name": "out", "from": "thoonk:out", "to": [{"endpoint": f"xmpp:{PUBSUB}/{node_name}"}],
               "format": "atom"}]
    async with running_bridge(
        config(server, routes), redis_url=redis_url, tmp_path=tmp_path, retry=_SlowRetry()
    ) as daemon:
        await ready(daemon, "out")
        worker = daemon.routes["out"].workers[0]
        server.stop()
        await wait_until(lambda: daemon.plugins["xmpp"].health().status.value == "degraded", message="degraded")
        feed = await daemon.thoonk.feed("out")
        await feed.publish(json.dumps({"title": "waited"}), id="w1")
        await wait_until(lambda: worker.state.startswith("retrying"), message="the apply failed, waiting 300 s")
        server.start()
        async with Outsider(server, "bridge", "admin") as admin:
            await wait_until(lambda: _equals(node_titles(admin, node_name), {"w1": "waited"}), timeout=30)


async def test_node_deleted_silently_and_auto_created_gets_its_options_and_items_back(
    ejabberd: EjabberdServer, node_name: str, redis_url: str, tmp_path: Path
) -> None:
    # ejabberd as it is: no delete notification (notify_delete: false), a publish to the missing node
    # creates it with the server's defaults (max_items 1000, no title)
    server = ejabberd
    routes = [{"name": "out", "from": "thoonk:src", "format": "atom",
               "to": [{"endpoint": f"xmpp:{PUBSUB}/{node_name}", "title": "Ours", "max_items": 5}]}]
    async with Outsider(server, "bridge", "admin") as admin:
        async with running_bridge(config(server, routes), redis_url=redis_url, tmp_path=tmp_path) as daemon:
            await ready(daemon, "out")
            feed = await daemon.thoonk.feed("src")
            await feed.publish(json.dumps({"title": "one"}), id="1")
            await feed.publish(json.dumps({"title": "two"}), id="2")
            await wait_until(lambda: _equals(node_titles(admin, node_name), {"1": "one", "2": "two"}))
            await admin.ps.delete_node(PUBSUB, node_name)
            await feed.publish(json.dumps({"title": "three"}), id="3")
            await wait_until(lambda: _equals(_titles_if_any(admin, node_name), {"3": "three"}))
            values = await _node_config(admin, node_name)
            assert str(values["pubsub#max_items"]) != "5"  # auto-created: the server's defaults
        # the next reconcile: the route's options again, and the items the node lost
        async with running_bridge(config(server, routes), redis_url=redis_url, tmp_path=tmp_path) as daemon:
            await ready(daemon, "out")
            want = {"1": "one", "2": "two", "3": "three"}
            await wait_until(lambda: _equals(node_titles(admin, node_name), want))
            values = await _node_config(admin, node_name)
            assert values["pubsub#title"] == "Ours" and str(values["pubsub#max_items"]) == "5"


async def _titles_if_any(admin: Outsider, node: str) -> dict[str, str] | None:
    from slixmpp.exceptions import IqError

    try:
        return await node_titles(admin, node)
    except IqError:
        return None  # not there (yet)


async def _node_config(admin: Outsider, node: str) -> dict[str, Any]:
    result = await admin.ps.get_node_config(PUBSUB, node)
    return dict(result["pubsub_owner"]["configure"]["form"].get_values())
