"""Several daemons on one Redis: one owner per route, takeover after a kill -9, nothing lost."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import redis
from bridge_process import BridgeProcess, cli, wait

from thoonk_bridge.thoonk import Thoonk

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
