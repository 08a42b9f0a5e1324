"""Several daemons on one Redis: one owner per route, takeover after a kill -9, nothing lost."""

from __future__ import annotations

import gzip
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import redis

from tests.plugins.websub.receiver import Receiver
from tests.support.bridge_process import BridgeProcess, cli, wait
from thoonk_bridge.plugins.websub.cli import list_subscriptions
from thoonk_bridge.thoonk import Thoonk
from thoonk_bridge.thoonk.embedded import free_tcp_port

ROUTES = [
    {"name": "copy", "from": "thoonk:in", "to": "thoonk:out", "mirror": True},
    {"name": "other", "from": "thoonk:in2", "to": "thoonk:out2"},
]




def holder(raw: redis.Redis, route: str) -> str | None:
    value = raw.get(f"bridge.lease:{{route:{route}}}")
    return value.rsplit(":", 1)[0] if value else None


def test_three_daemons_one_owner_each_route_and_takeover_after_kill(tmp_path: Path, redis_url: str) -> None:
    raw = redis.Redis.from_url(redis_url, decode_responses=True)
    daemons = []
    for n in range(3):
        config = {"redis": redis_url, "lease_seconds": 1.0, "instance": f"d{n}", "routes": ROUTES,
                  "state_dir": str(tmp_path / f"state{n}")}
        daemons.append(BridgeProcess(tmp_path, config, name=f"d{n}").start())
    pubsub = Thoonk(url=redis_url)
    stop = threading.Event()
    published: list[str] = []

    def publisher() -> None:
        feed = pubsub.feed("in")
        i = 0
        while not stop.is_set() and i < 2000:
            feed.publish(f"item {i}", id=f"i{i}")
            published.append(f"i{i}")
            i += 1
            time.sleep(0.005)

    try:
        for d in daemons:
            d.wait_ready()
        owner = wait(lambda: holder(raw, "copy"), message="an owner for route copy")
        owners = [d for d in daemons if d.readyz()[1]["owned_routes"].count("copy")]
        assert [d.readyz()[1]["instance"] for d in owners] == [owner]  # exactly one daemon runs it
        standby = [d for d in daemons if "copy" in d.readyz()[1]["standby_routes"]]
        assert len(standby) == 2

        thread = threading.Thread(target=publisher)
        thread.start()
        wait(lambda: len(published) > 200, message="items flowing")
        victim = next(d for d in daemons if d.readyz()[1]["instance"] == owner)
        victim.kill9()
        new_owner = wait(lambda: (h := holder(raw, "copy")) not in (None, owner) and h, message="takeover")
        assert new_owner in {"d0", "d1", "d2"} - {owner}
        wait(lambda: len(published) > 600, message="more items after the takeover")
        stop.set()
        thread.join()
        expected = pubsub.feed("in").get_all()
        wait(lambda: pubsub.feed("out").get_all() == expected, timeout=60, message="out equals in")
        assert len(expected) == len(published)

        # The fleet as `thoonk-bridge status` sees it.
        result = cli("status", "--json", env={"THOONK_BRIDGE_REDIS": redis_url})
        assert result.returncode == 0, result.stderr
        fleet = json.loads(result.stdout)
        assert fleet["leases"]["copy"] == new_owner
        live = {i["instance"]: i for i in fleet["instances"]}
        assert "copy" in live[new_owner]["owns"]
        assert live[new_owner]["phase"] == "running" and not live[new_owner]["stale"]
        text = cli("status", env={"THOONK_BRIDGE_REDIS": redis_url}).stdout
        assert f"route copy: held by {new_owner}" in text
    finally:
        stop.set()
        for d in daemons:
            d.stop()
        pubsub.close()
        raw.close()


def test_graceful_stop_releases_the_route_lease(tmp_path: Path, redis_url: str) -> None:
    raw = redis.Redis.from_url(redis_url, decode_responses=True)
    # A long lease: only the release on SIGTERM can explain a quick handover.
    configs = [{"redis": redis_url, "lease_seconds": 600, "instance": f"g{n}", "routes": ROUTES[:1],
                "state_dir": str(tmp_path / f"g{n}")} for n in range(2)]
    first = BridgeProcess(tmp_path, configs[0], name="g0").start()
    first.wait_ready()
    assert holder(raw, "copy") == "g0"
    second = BridgeProcess(tmp_path, configs[1], name="g1").start()
    try:
        second.wait_ready()
        assert second.readyz()[1]["standby_routes"] == ["copy"]
        assert first.stop() == 0
        # Released, not left to expire: the standby takes it at its next check instead of after 600 s.
        wait(lambda: holder(raw, "copy") is None, message="lease released on stop")
    finally:
        second.stop()
        raw.close()


# --------------------------------------------------------------------------- documents and WebSub in a fleet

DOC_ROUTES = [{"name": "news", "from": "thoonk:news", "to": ["feeds:news", "websub:news"]}]


def doc_config(redis_url: str, tmp_path: Path, name: str, port: int, public_url: str | None = None) -> dict:
    http = {"listen": f"127.0.0.1:{port}"}
    if public_url:
        http["public_url"] = public_url
    return {
        "redis": redis_url, "lease_seconds": 1.0, "instance": name, "routes": DOC_ROUTES,
        "state_dir": str(tmp_path / f"state-{name}"), "http": http,
        "plugins": {
            "feeds": {"quiet": 0.01, "max_staleness": 0.1},
            "websub": {"outbound": {"allow_loopback": True}, "job_timeout": 2, "retry_base": 0.2},
        },
    }


def fetch(url: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    """GET without decompressing."""
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def item(n: int, title: str) -> str:
    return json.dumps({"title": title, "link": f"https://example.org/{n}", "content": f"body of {title}"})


def start_pair(tmp_path: Path, redis_url: str, shared_public_url: bool) -> list[BridgeProcess]:
    """Daemon a (started first: the owner of the route), then b (standby)."""
    ports = [free_tcp_port(), free_tcp_port()]
    public = f"http://127.0.0.1:{ports[0]}" if shared_public_url else None
    a = BridgeProcess(tmp_path, doc_config(redis_url, tmp_path, "a", ports[0], public), name="a")
    b = BridgeProcess(tmp_path, doc_config(redis_url, tmp_path, "b", ports[1], public), name="b")
    a.port, b.port = ports
    a.start().wait_ready()
    b.start().wait_ready()
    return [a, b]


def test_every_daemon_serves_the_documents_of_a_route_it_does_not_own(tmp_path: Path, redis_url: str) -> None:
    raw = redis.Redis.from_url(redis_url, decode_responses=True)
    pubsub = Thoonk(url=redis_url)
    a, b = start_pair(tmp_path, redis_url, shared_public_url=False)
    try:
        assert holder(raw, "news") == "a"
        assert b.readyz()[1]["standby_routes"] == ["news"]
        pubsub.feed("news").publish(item(1, "First news"), id="n1")
        for fmt in ("atom", "rss", "json"):
            path = f"/feeds/news.{fmt}"
            wait(lambda p=path: b"First news" in fetch(b.url + p)[2], message=f"{path} from the non-owner")
            wait(lambda p=path: fetch(a.url + p)[1].get("ETag") == fetch(b.url + p)[1].get("ETag"),
                 message=f"{path}: the same ETag from both")
            status_a, headers_a, body_a = fetch(a.url + path)
            status_b, headers_b, body_b = fetch(b.url + path)
            assert status_a == status_b == 200 and body_a == body_b
            for header in ("ETag", "Last-Modified", "Content-Type", "Cache-Control", "Vary"):
                assert headers_a[header] == headers_b[header], header
            assert headers_b["Link"] == f'<{b.url}/websub/hub>; rel="hub", <{b.url}{path}>; rel="self"'
            assert fetch(b.url + path, **{"If-None-Match": headers_b["ETag"]})[0] == 304
            assert fetch(b.url + path, **{"If-Modified-Since": headers_b["Last-Modified"]})[0] == 304
            status, gz_headers, gz_body = fetch(b.url + path, **{"Accept-Encoding": "gzip"})
            assert status == 200 and gz_headers["Content-Encoding"] == "gzip"
            assert gzip.decompress(gz_body) == body_b
            assert gz_headers["ETag"] == headers_a["ETag"][:-1] + '-gzip"'
            assert fetch(b.url + path, **{"Accept-Encoding": "gzip", "If-None-Match": gz_headers["ETag"]})[0] == 304
        assert fetch(b.url + "/feeds/nothing.atom")[0] == 404
        assert fetch(b.url + "/feeds/news.xml")[0] == 404
        # A change reaches the non-owner too; the non-owner wrote no files of its own.
        pubsub.feed("news").publish(item(2, "Second news"), id="n2")
        wait(lambda: b"Second news" in fetch(b.url + "/feeds/news.atom")[2], message="the change from b")
        assert not list((tmp_path / "state-b").rglob("news.*"))
        assert list((tmp_path / "state-a").rglob("news.atom"))
    finally:
        for d in (a, b):
            d.stop()
        pubsub.close()
        raw.close()


def test_load_balanced_fleet_websub_through_the_non_owner_and_takeover(tmp_path: Path, redis_url: str) -> None:
    """Both daemons behind one public URL (a's); every request goes to b, the standby, directly."""
    raw = redis.Redis.from_url(redis_url, decode_responses=True)
    pubsub = Thoonk(url=redis_url)
    receiver = Receiver()
    a, b = start_pair(tmp_path, redis_url, shared_public_url=True)
    public = a.url
    topic = f"{public}/feeds/news.atom"
    try:
        assert holder(raw, "news") == "a"
        pubsub.feed("news").publish(item(1, "Before subscribing"), id="n1")
        wait(lambda: b"Before subscribing" in fetch(b.url + "/feeds/news.atom")[2], message="document from b")
        status, headers, body = fetch(b.url + "/feeds/news.atom")
        assert headers["Link"] == f'<{public}/websub/hub>; rel="hub", <{topic}>; rel="self"'
        assert body == fetch(a.url + "/feeds/news.atom")[2]

        # Subscribe through the hub of b, which does not hold the document.
        form = urllib.parse.urlencode({"hub.mode": "subscribe", "hub.topic": topic,
                                       "hub.callback": receiver.url}).encode()
        with urllib.request.urlopen(urllib.request.Request(b.url + "/websub/hub", data=form), timeout=5) as resp:
            assert resp.status == 202
        wait(lambda: receiver.verified == ["subscribe"], message="verification of intent")
        wait(lambda: list_subscriptions(redis_url, topic), message="subscription active")

        pubsub.feed("news").publish(item(2, "Delivered news"), id="n2")
        wait(lambda: receiver.got("Delivered news"), message="delivery of the new item")
        assert b"Before subscribing" in receiver.deliveries[-1]

        # The owner dies; b takes the route over; publishing goes on.
        a.kill9()
        wait(lambda: holder(raw, "news") == "b", message="b takes over the route")
        pubsub.feed("news").publish(item(3, "After the takeover"), id="n3")
        wait(lambda: receiver.got("After the takeover"), message="delivery after the takeover")
        wait(lambda: b"After the takeover" in fetch(b.url + "/feeds/news.atom")[2], message="document after takeover")
        status, headers, body = fetch(b.url + "/feeds/news.atom")
        assert status == 200 and b"Delivered news" in body
        assert fetch(b.url + "/feeds/news.atom", **{"If-None-Match": headers["ETag"]})[0] == 304
    finally:
        for d in (a, b):
            d.stop()
        receiver.close()
        pubsub.close()
        raw.close()



async def test_a_started_daemon_reports_itself_running_at_once(redis_url: str, tmp_path: Path) -> None:
    from thoonk_bridge.fleet import read_fleet
    from thoonk_bridge.testing import running_bridge

    # A long lease: the next heartbeat is 200 s away, so only the first one can be read here.
    config = {"lease_seconds": 600, "instance": "solo", "routes": ROUTES[:1]}
    async with running_bridge(config, redis_url=redis_url, tmp_path=tmp_path, plugins={}):
        raw = redis.Redis.from_url(redis_url)
        fleet = read_fleet(raw)
        raw.close()
        (solo,) = fleet["instances"]
        assert solo["instance"] == "solo" and solo["phase"] == "running"
        assert set(solo["owns"]) == {"copy"} and fleet["leases"] == {"copy": "solo"}


def test_two_configs_giving_one_route_name_two_definitions_is_a_conflict(tmp_path: Path, redis_url: str) -> None:
    def config(instance: str, feed: str) -> dict:
        return {"redis": redis_url, "lease_seconds": 1.0, "instance": instance,
                "state_dir": str(tmp_path / f"state-{instance}"),
                "routes": [{"name": "shared", "from": f"thoonk:{feed}-in", "to": f"thoonk:{feed}-out"}]}

    alpha = BridgeProcess(tmp_path, config("alpha", "a"), name="alpha").start()
    standby = BridgeProcess(tmp_path, config("alpha-twin", "a"), name="alpha-twin")
    beta = BridgeProcess(tmp_path, config("beta", "b"), name="beta")
    try:
        assert alpha.wait_ready()["owned_routes"] == ["shared"]
        standby.start()
        assert standby.wait_ready()["standby_routes"] == ["shared"]  # same definition: a standby, ready
        beta.start()

        def conflict() -> dict | None:
            try:
                status, body = beta.readyz()
            except OSError:  # not listening yet
                return None
            return body if status == 503 and body.get("conflicting_routes") else None

        body = wait(conflict, message="beta reports the conflicting route")
        assert body["conflicting_routes"] == {"shared": {"holder": "alpha"}}
        assert body["owned_routes"] == []
        errors = [e for e in beta.log_events() if e.get("level") == "error" and e.get("route") == "shared"]
        assert len(errors) == 1 and errors[0]["holder"] == "alpha" and "conflict" in errors[0]["event"]
        _, metrics = beta.get("/metrics")
        assert 'thoonk_bridge_route_conflicts_total{route="shared"} 1.0' in metrics
        assert standby.readyz()[0] == 200  # the twin is not in conflict
    finally:
        for d in (beta, standby, alpha):
            d.stop()
