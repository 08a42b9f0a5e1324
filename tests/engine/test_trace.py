"""The path of one item: the per-route trace ring and ``thoonk-bridge trace FEED ID`` (a subprocess)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.support.bridge_process import cli
from tests.support.memory_plugin import PLUGINS, SINKS, idle, route
from thoonk_bridge import trace as trace_module
from thoonk_bridge.plugin import DeliveryError
from thoonk_bridge.testing import running_bridge, wait_until
from thoonk_bridge.trace import trace_key


@pytest.fixture(autouse=True)
def _fresh_sinks() -> None:
    SINKS.clear()


async def trace(redis_url: str, feed: str, item_id: str) -> list[dict[str, Any]]:
    result = await asyncio.to_thread(cli, "trace", feed, item_id, "--json", "--redis", redis_url)
    assert result.returncode == 0, result.stderr
    found: list[dict[str, Any]] = json.loads(result.stdout)
    return found


def outcomes(path: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [(r["route"], r["sink"], r["outcome"]) for r in path]


async def test_trace_shows_routes_sinks_and_outcomes(redis_url: str, tmp_path: Path) -> None:
    config = {"routes": [route("fan", "thoonk:in", ["memory:good", "memory:bad"]),
                         route("other", "thoonk:elsewhere", "memory:x")]}
    async with running_bridge(config, redis_url=redis_url, tmp_path=tmp_path, plugins=PLUGINS) as daemon:
        await idle(daemon)
        feed = await daemon.thoonk.feed("in")
        SINKS["bad"].fail = DeliveryError("too large for the node", retryable=False)
        await feed.publish("one", id="i1")
        await wait_until(lambda: "i1" in SINKS["good"].items)
        await feed.retract("i1")
        await wait_until(lambda: "i1" not in SINKS["good"].items)
        expected = {("fan", "memory:good", "delivered"), ("fan", "memory:good", "retracted"),
                    ("fan", "memory:bad", "dead-lettered")}
        path = await wait_until(lambda: _has(redis_url, "in", "i1", expected), message="ring written")
        good = [r["outcome"] for r in path if r["sink"] == "memory:good"]
        assert good == ["delivered", "retracted"]  # in order, with times
        dead = next(r for r in path if r["outcome"] == "dead-lettered")
        assert dead["reason"] == "memory:bad: too large for the node"
        assert all(isinstance(r["at"], float) for r in path)
        # The feed by endpoint or by name; a feed no route reads, an id never seen: nothing.
        by_cli = await trace(redis_url, "thoonk:in", "i1")
        assert outcomes(by_cli) == outcomes(path)
        assert next(r for r in by_cli if r["outcome"] == "dead-lettered")["reason"] == dead["reason"]
        assert await trace(redis_url, "elsewhere", "i1") == []
        text = await asyncio.to_thread(cli, "trace", "in", "never", "--redis", redis_url)
        assert "no route has a record of item 'never' of 'in'" in text.stdout


async def test_coalesced_events_are_traced(redis_url: str, tmp_path: Path) -> None:
    config = {"routes": [route("r", "thoonk:in", "memory:slow")]}
    async with running_bridge(config, redis_url=redis_url, tmp_path=tmp_path, plugins=PLUGINS) as daemon:
        await idle(daemon)
        feed = await daemon.thoonk.feed("in")
        SINKS["slow"].fail = DeliveryError("server busy", retryable=True)
        await feed.publish("first", id="other")  # the worker is stuck retrying this one
        await wait_until(lambda: daemon.routes["r"].workers[0].state.startswith("retrying"))
        for version in ("v1", "v2", "v3"):
            await feed.publish(version, id="c")
        await wait_until(lambda: len(daemon.routes["r"].workers[0].pending) == 2)
        SINKS["slow"].fail = None
        await wait_until(lambda: SINKS["slow"].items.get("c") == "v3")
        path = await wait_until(lambda: _has(redis_url, "in", "c", {("r", "memory:slow", "delivered")}))
        assert [r["outcome"] for r in path] == ["coalesced", "coalesced", "delivered"]
        assert [e.payload for e in SINKS["slow"].applied if e.id == "c"] == ["v3"]


async def test_ring_is_bounded_and_written_once_per_batch(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(trace_module, "TRACE_MAX", 50)
    raw = redis.Redis.from_url(redis_url)
    config = {"routes": [route("r", "thoonk:in", "memory:m")]}
    async with running_bridge(config, redis_url=redis_url, tmp_path=tmp_path, plugins=PLUGINS) as daemon:
        await idle(daemon)
        feed = await daemon.thoonk.feed("in")
        SINKS["m"].fail = DeliveryError("down", retryable=True)
        await feed.publish("x", id="first")
        await wait_until(lambda: daemon.routes["r"].workers[0].state.startswith("retrying"))
        await feed.publish_many([(f"n{i}", "x") for i in range(600)])
        await wait_until(lambda: len(daemon.routes["r"].workers[0].pending) == 601)
        raw.config_resetstat()
        SINKS["m"].fail = None
        await wait_until(lambda: len(SINKS["m"].items) == 601)
        await idle(daemon)
        await wait_until(lambda: raw.lindex(trace_key("r"), -1) is not None
                         and raw.lindex(trace_key("r"), -1).endswith(b"\tn599"))
        assert raw.llen(trace_key("r")) == 50  # the newest 50 of 601 outcomes
        stats = raw.info("commandstats")
        # 601 deliveries in batches of up to 256: a ring write per batch, not per event.
        assert stats["cmdstat_rpush"]["calls"] <= 5, stats["cmdstat_rpush"]
    assert await trace(redis_url, "in", "first") == []  # trimmed away
    assert outcomes(await trace(redis_url, "in", "n599")) == [("r", "memory:m", "delivered")]
    raw.close()


def _has(redis_url: str, feed: str, item_id: str, expected: set[tuple[str, str, str]]) -> list[dict[str, Any]]:
    client = redis.Redis.from_url(redis_url)
    try:
        path = trace_module.read_trace(client, feed, item_id)
    finally:
        client.close()
    for record in path:
        if record["outcome"] == "dead-lettered":
            record["reason"] = _reason(redis_url, record["route"], item_id)
    return path if expected <= set(outcomes(path)) else []


def _reason(redis_url: str, route_name: str, item_id: str) -> str:
    from thoonk_bridge.deadletters import entries_of_item
    from thoonk_bridge.thoonk import Thoonk

    with Thoonk(url=redis_url) as pubsub:
        found = entries_of_item(pubsub, route_name, item_id)
    return found[0].reason if found else ""
