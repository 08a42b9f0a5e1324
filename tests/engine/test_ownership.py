"""The daemon's parts on their own, given only what they use: route ownership, the fleet's heartbeat,
job maintenance (the daemon's own tests cover them wired together)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aioredis
import structlog
import yaml

from thoonk_bridge import keys
from thoonk_bridge.config import RouteSpec, load_config
from thoonk_bridge.discovery import discover_plugins
from thoonk_bridge.fleet import Heartbeat, parse_heartbeat, read_fleet
from thoonk_bridge.lease import Lease
from thoonk_bridge.logs import get_logger
from thoonk_bridge.maintenance import JobMaintenance
from thoonk_bridge.metrics import BridgeMetrics
from thoonk_bridge.ownership import RouteOwnership, route_fingerprint
from thoonk_bridge.testing import wait_until
from thoonk_bridge.thoonk import AsyncThoonk


def route(tmp_path: Path, name: str = "r", target: str = "thoonk:out") -> RouteSpec:
    path = tmp_path / f"{name}-{target.replace(':', '_')}.yaml"
    path.write_text(yaml.safe_dump({"routes": [{"name": name, "from": "thoonk:in", "to": target}]}))
    return load_config(path, env={}, plugins=discover_plugins()).routes[0]


class Runs:
    """Stands for the daemon's run/halt: records what ownership asked for."""

    def __init__(self) -> None:
        self.running: set[str] = set()
        self.calls: list[tuple[str, str]] = []

    def run(self, spec: RouteSpec, lease: Lease) -> None:
        assert lease.held()
        self.running.add(spec.name)
        self.calls.append(("run", spec.name))

    async def halt(self, name: str, drain: float) -> None:
        self.running.discard(name)
        self.calls.append(("halt", name))


def ownership(client: Any, instance: str, runs: Runs) -> RouteOwnership:
    return RouteOwnership(client, instance, BridgeMetrics(), get_logger(instance=instance), run=runs.run,
                          halt=runs.halt)


async def test_one_owner_and_takeover_after_release(redis_url: str, tmp_path: Path) -> None:
    client = aioredis.Redis.from_url(redis_url)
    spec = route(tmp_path)
    a_runs, b_runs = Runs(), Runs()
    a, b = ownership(client, "a", a_runs), ownership(client, "b", b_runs)
    try:
        await a.acquire(spec, ttl=0.6)
        await b.acquire(spec, ttl=0.6)
        assert a.owned("r") and not b.owned("r")
        assert a_runs.running == {"r"} and b_runs.running == set()
        assert b.standby() == ["r"] and a.standby() == []
        assert list(a.owned_since()) == ["r"]
        assert await b.unowned({}) == []  # a holds it
        await a.release("r", drain=0)
        assert a_runs.calls == [("run", "r"), ("halt", "r")]
        await wait_until(lambda: b.owned("r"), 5, message="b takes the released route over")
        assert b_runs.running == {"r"}
    finally:
        await b.release("r", drain=0)
        await client.aclose()


async def test_a_lost_lease_halts_the_route_and_a_conflict_is_reported(redis_url: str, tmp_path: Path) -> None:
    client = aioredis.Redis.from_url(redis_url)
    raw = redis.Redis.from_url(redis_url)
    spec, other = route(tmp_path), route(tmp_path, target="thoonk:elsewhere")
    assert route_fingerprint(spec) != route_fingerprint(other)
    runs = Runs()
    a = ownership(client, "a", runs)
    a.start(lambda: redis.Redis.from_url(redis_url), ttl=0.6)  # the renewing thread finds the intruder
    try:
        await a.acquire(spec, ttl=0.6)
        assert a.owned("r")
        raw.set(keys.lease(keys.route_lease("r")), "intruder:99", px=5000)  # someone else holds it now
        with structlog.testing.capture_logs() as logs:
            await wait_until(lambda: not a.owned("r"), 5, message="the route stops")
        assert ("halt", "r") in runs.calls and runs.running == set()
        assert any("lost to another daemon" in line["event"] for line in logs)
        raw.delete(keys.lease(keys.route_lease("r")))
        rival = ownership(client, "b", Runs())
        await wait_until(lambda: a.owned("r"), 5, message="a takes it back")
        await rival.acquire(other, ttl=0.6)  # the same name, another definition
        assert rival.conflicts == {"r": "a"}
        await rival.release("r", drain=0)
    finally:
        await a.release("r", drain=0)
        await a.stop()
        await client.aclose()
        raw.close()


async def test_heartbeat_is_read_back_and_forgotten(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    raw = redis.Redis.from_url(redis_url)
    state = {"phase": "running", "owns": {"r": 1.0}, "standby": [], "conflicts": {}}
    beat = Heartbeat(client, "d1", lambda: 0.3, lambda: dict(state), get_logger(), started=123.0)
    try:
        await beat.start()
        raw.set(keys.lease(keys.route_lease("r")), "d1:4")
        fleet = read_fleet(raw)
        assert fleet["leases"] == {"r": "d1"}
        [record] = fleet["instances"]
        assert record["instance"] == "d1" and record["started"] == 123.0 and record["owns"] == {"r": 1.0}
        assert not record["stale"]
        state["phase"] = "draining"
        await wait_until(lambda: read_fleet(raw)["instances"][0]["phase"] == "draining", 5, message="next beat")
        await beat.stop()
        await beat.forget()
        assert read_fleet(raw)["instances"] == []
    finally:
        await beat.stop()
        await client.aclose()
        raw.close()
    old = json.dumps({"instance": "x", "heartbeat": time.time() - 100, "lease_seconds": 15})
    gone = parse_heartbeat(old, time.time())
    assert gone is not None and gone["stale"]
    assert parse_heartbeat("not json", time.time()) is None


async def test_job_maintenance_puts_back_an_orphaned_job(redis_url: str) -> None:
    thoonk = AsyncThoonk(url=redis_url)
    try:
        job = await thoonk.job("work", {"timeout": "0.1"})
        await job.put("payload")
        await job.get(timeout=1)  # claimed, never finished
        await asyncio.sleep(0.3)
        assert await JobMaintenance(thoonk, 30, get_logger()).run_once() == 1
        assert (await job.get(timeout=1))[1] == "payload"
    finally:
        await thoonk.aclose()
