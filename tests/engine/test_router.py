"""Router: reconcile then follow, per-sink progress, initial, mirror, dead letters, echoes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.support.memory_plugin import PLUGINS, SINKS, MemorySink, idle, items, route
from thoonk_bridge.payload import content_hash
from thoonk_bridge.plugin import (
    DeliveryError,
    Endpoint,
    EndpointKind,
    EventKind,
    ItemEvent,
    Plugin,
    RouteContext,
    Settings,
    Source,
)
from thoonk_bridge.router import EchoFilter, dead_letter_feed
from thoonk_bridge.testing import running_bridge, wait_until


@pytest.fixture(autouse=True)
def _fresh_sinks() -> None:
    SINKS.clear()


async def test_reconcile_copies_existing_items_then_follows(redis_url: str, tmp_path: Path) -> None:
    raw = redis.Redis.from_url(redis_url)
    from thoonk_bridge.thoonk import Thoonk

    pubsub = Thoonk(redis=raw)
    src = pubsub.feed("in")
    src.publish("one", id="1")
    src.publish("two", id="2")
    config = {"routes": [route("copy", "thoonk:in", "thoonk:out")]}
    async with running_bridge(config, redis_url=redis_url, tmp_path=tmp_path, plugins=PLUGINS) as daemon:
        await idle(daemon)
        assert await items(daemon, "out") == {"1": "one", "2": "two"}
        feed = await daemon.thoonk.feed("in")
        await feed.publish("three", id="3")
        await feed.publish("two, edited", id="2")
        await feed.retract("1")
        await wait_until(
            lambda: _eq(items(daemon, "out"), {"2": "two, edited", "3": "three"}), message="out follows in"
        )
        # Edits move the item to the end in the sink too, as in the source.
        assert await (await daemon.thoonk.feed("out")).get_ids() == ["3", "2"]
    pubsub.close()


async def _eq(coro: Any, expected: Any) -> bool:
    return await coro == expected


async def test_mirror_retracts_what_the_source_no_longer_has(redis_url: str, tmp_path: Path) -> None:
    config = {"routes": [route("m", "thoonk:in", "thoonk:out", mirror=True)]}
    async with running_bridge(config, redis_url=redis_url, tmp_path=tmp_path, plugins=PLUGINS) as daemon:
        out = await daemon.thoonk.feed("out")
        await idle(daemon)
    # While the daemon is down, the sink gets an extra item and the source loses nothing.
    await out.publish("stray", id="stray")
    async with running_bridge(config, redis_url=redis_url, tmp_path=tmp_path, plugins=PLUGINS) as daemon:
        await idle(daemon)
        assert await items(daemon, "out") == {}


async def test_without_mirror_reconcile_keeps_extra_items(redis_url: str, tmp_path: Path) -> None:
    from thoonk_bridge.thoonk import Thoonk

    config = {"routes": [route("m", "thoonk:in", "thoonk:out")]}
    async with running_bridge(config, redis_url=redis_url, tmp_path=tmp_path, plugins=PLUGINS) as daemon:
        await (await daemon.thoonk.feed("in")).publish("x", id="x")
        await wait_until(lambda: _eq(items(daemon, "out"), {"x": "x"}))
        await idle(daemon)
    # While the daemon is down, someone else writes into the sink: the next reconcile must keep it.
    with Thoonk(url=redis_url) as pubsub:
        pubsub.feed("out").publish("stray", id="stray")
        pubsub.feed("in").publish("y", id="y")
    async with running_bridge(config, redis_url=redis_url, tmp_path=tmp_path, plugins=PLUGINS) as daemon:
        await idle(daemon)
        assert daemon.routes["m"].status.reconciles == 1
        assert await items(daemon, "out") == {"x": "x", "stray": "stray", "y": "y"}


@pytest.mark.parametrize("sink", ["thoonk:out", "memory:out"])
async def test_retract_made_while_the_daemon_was_away_reaches_the_sink_without_mirror(
    redis_url: str, tmp_path: Path, sink: str
) -> None:
    from thoonk_bridge.thoonk import Thoonk

    config = {"routes": [route("r", "thoonk:in", sink)]}
    async with running_bridge(config, redis_url=redis_url, tmp_path=tmp_path, plugins=PLUGINS) as daemon:
        feed = await daemon.thoonk.feed("in")
        for i in "abc":
            await feed.publish(f"item {i}", id=i)
        await idle(daemon)
        await wait_until(lambda: _eq(_sink_items(daemon, sink), {i: f"item {i}" for i in "abc"}))
        await idle(daemon)
    with Thoonk(url=redis_url) as pubsub:
        pubsub.feed("in").retract("b")
        if sink.startswith("thoonk:"):
            pubsub.feed("out").publish("someone else's", id="stray")
    async with running_bridge(config, redis_url=redis_url, tmp_path=tmp_path, plugins=PLUGINS) as daemon:
        await idle(daemon)
        expected = {"a": "item a", "c": "item c"}
        if sink.startswith("thoonk:"):
            expected["stray"] = "someone else's"  # never delivered by the route: kept without mirror
        assert await _sink_items(daemon, sink) == expected


async def _sink_items(daemon: Any, sink: str) -> dict[str, str]:
    kind, name = sink.split(":", 1)
    if kind == "memory":
        return dict(SINKS[name].items)
    return await items(daemon, name)


async def test_reconcile_edits_items_whose_content_differs(redis_url: str, tmp_path: Path) -> None:
    config = {"routes": [route("e", "thoonk:in", "thoonk:out")]}
    async with running_bridge(config, redis_url=redis_url, tmp_path=tmp_path, plugins=PLUGINS) as daemon:
        await (await daemon.thoonk.feed("in")).publish("right", id="a")
        await (await daemon.thoonk.feed("out")).publish("wrong", id="a")
        # Restart the route: the reconcile must correct the sink.
        spec = daemon.config.routes[0]
        await daemon._stop_route("e", 1)
        await daemon._start_route(spec)
        await idle(daemon)
        assert await items(daemon, "out") == {"a": "right"}


@pytest.mark.parametrize(
    ("initial", "delivered_first"),
    [("all", ["1", "2", "3"]), ("none", []), ("latest:2", ["2", "3"])],
)
async def test_initial_decides_what_a_new_route_delivers(
    redis_url: str, tmp_path: Path, initial: str, delivered_first: list[str]
) -> None:
    from thoonk_bridge.thoonk import Thoonk

    pubsub = Thoonk(url=redis_url)
    for i in ("1", "2", "3"):
        pubsub.feed("in").publish(f"item {i}", id=i)
    pubsub.close()
    config = {"routes": [route("r", "thoonk:in", "memory:m", initial=initial)]}
    async with running_bridge(config, redis_url=redis_url, tmp_path=tmp_path, plugins=PLUGINS) as daemon:
        await idle(daemon)
        assert [e.id for e in SINKS["m"].applied] == delivered_first
        await (await daemon.thoonk.feed("in")).publish("item 4", id="4")
        await wait_until(lambda: "4" in SINKS["m"].items)
    # A restart is not a new route: nothing skipped earlier is sent now, nothing is sent twice.
    SINKS.clear()
    async with running_bridge(config, redis_url=redis_url, tmp_path=tmp_path, plugins=PLUGINS) as daemon:
        await idle(daemon)
        assert SINKS["m"].applied == []


async def test_failing_sink_does_not_hold_back_the_others(redis_url: str, tmp_path: Path) -> None:
    config = {"routes": [route("fan", "thoonk:in", ["memory:slow", "memory:fast"])]}
    async with running_bridge(config, redis_url=redis_url, tmp_path=tmp_path, plugins=PLUGINS) as daemon:
        await idle(daemon)
        SINKS["slow"].fail = DeliveryError("server busy", retryable=True)
        feed = await daemon.thoonk.feed("in")
        for i in range(20):
            await feed.publish(f"p{i}", id=str(i))
        await wait_until(lambda: len(SINKS["fast"].items) == 20, message="fast sink got everything")
        assert SINKS["slow"].items == {}
        worker = daemon.routes["fan"].workers[0]
        assert worker.state.startswith("retrying: server busy")
        status, body = await daemon.readiness()
        assert body["routes"]["fan"]["sinks"]["memory:slow"]["pending"] == 20
        SINKS["slow"].fail = None
        await wait_until(lambda: len(SINKS["slow"].items) == 20, message="slow sink caught up")
        assert SINKS["slow"].items == SINKS["fast"].items


async def test_undeliverable_item_goes_to_dead_letter_feed_and_route_goes_on(
    redis_url: str, tmp_path: Path
) -> None:
    config = {"routes": [route("dl", "thoonk:in", "memory:m")]}
    async with running_bridge(config, redis_url=redis_url, tmp_path=tmp_path, plugins=PLUGINS) as daemon:
        await idle(daemon)
        feed = await daemon.thoonk.feed("in")
        SINKS["m"].fail = DeliveryError("item too large for the node", retryable=False)
        await feed.publish("huge", id="big")
        dead = await daemon.thoonk.feed(dead_letter_feed("dl"))
        records = await wait_until(lambda: dead.get_all(), message="dead letter stored")
        record = json.loads(next(iter(records.values())))
        assert record["id"] == "big"
        assert record["payload"] == "huge"
        assert "memory:m: item too large for the node" in record["reason"]
        SINKS["m"].fail = None
        await feed.publish("fine", id="ok")
        await wait_until(lambda: "ok" in SINKS["m"].items)
        assert "big" not in SINKS["m"].items


async def test_route_format_converts_payloads(redis_url: str, tmp_path: Path) -> None:
    config = {"routes": [route("fmt", "thoonk:in", "memory:m", format="json")]}
    async with running_bridge(config, redis_url=redis_url, tmp_path=tmp_path, plugins=PLUGINS) as daemon:
        await idle(daemon)
        await (await daemon.thoonk.feed("in")).publish("Hello\n\nworld", id="t1")
        await wait_until(lambda: "t1" in SINKS["m"].items)
        converted = json.loads(SINKS["m"].items["t1"])
        assert converted["title"] == "Hello"
        assert "world" in converted["content"]


async def test_opposite_routes_converge_without_echo(redis_url: str, tmp_path: Path) -> None:
    config = {"routes": [route("a-to-b", "thoonk:a", "thoonk:b"), route("b-to-a", "thoonk:b", "thoonk:a")]}
    raw = redis.Redis.from_url(redis_url, decode_responses=True)
    async with running_bridge(config, redis_url=redis_url, tmp_path=tmp_path, plugins=PLUGINS) as daemon:
        await idle(daemon)
        await (await daemon.thoonk.feed("a")).publish("from a", id="x")
        await (await daemon.thoonk.feed("b")).publish("from b", id="y")
        await wait_until(lambda: _eq(items(daemon, "a"), {"x": "from a", "y": "from b"}))
        await wait_until(lambda: _eq(items(daemon, "b"), {"y": "from b", "x": "from a"}))
        # Each route saw the echo of the other's write and dropped it.
        echoes = daemon.metrics.echoes_dropped
        await wait_until(lambda: echoes.labels("b-to-a")._value.get() >= 1, message="b-to-a dropped an echo")
        await wait_until(lambda: echoes.labels("a-to-b")._value.get() >= 1, message="a-to-b dropped an echo")
        await idle(daemon)
        # One publish each, no ping-pong: Thoonk counts every publish in feed.publishes:NAME.
        assert int(raw.get("feed.publishes:a")) == 2
        assert int(raw.get("feed.publishes:b")) == 2
        await (await daemon.thoonk.feed("a")).retract("x")
        await wait_until(lambda: _eq(items(daemon, "b"), {"y": "from b"}))
    raw.close()


def test_echo_filter_knows_where_a_write_came_from() -> None:
    echoes = EchoFilter(ttl=60)
    event = ItemEvent(EventKind.PUBLISH, "1", "payload")
    echoes.wrote("thoonk:b", event, origin="thoonk:a")
    assert echoes.origin("thoonk:c", event) is None
    assert echoes.origin("thoonk:b", ItemEvent(EventKind.PUBLISH, "1", "other payload")) is None
    assert echoes.origin("thoonk:b", event) == "thoonk:a"
    echoes.consume("thoonk:b", event)
    assert echoes.origin("thoonk:b", event) is None  # one echo per write
    echoes.wrote("thoonk:b", ItemEvent(EventKind.RETRACT, "1"), origin="thoonk:a")
    assert echoes.origin("thoonk:b", ItemEvent(EventKind.RETRACT, "1")) == "thoonk:a"


def test_echo_filter_forgets_after_ttl() -> None:
    echoes = EchoFilter(ttl=-1)
    event = ItemEvent(EventKind.PUBLISH, "1", "p")
    echoes.wrote("e", event, origin="o")
    assert echoes.origin("e", event) is None


async def test_chain_through_an_endpoint_is_not_an_echo(redis_url: str, tmp_path: Path) -> None:
    # a -> mid -> b in one daemon: what the first route writes to mid, the second must carry on.
    config = {"routes": [route("first", "thoonk:a", "thoonk:mid"), route("second", "thoonk:mid", "thoonk:b")]}
    async with running_bridge(config, redis_url=redis_url, tmp_path=tmp_path, plugins=PLUGINS) as daemon:
        await idle(daemon)
        await (await daemon.thoonk.feed("a")).publish("travels", id="t")
        await wait_until(lambda: _eq(items(daemon, "b"), {"t": "travels"}), message="item reached the end")
        await (await daemon.thoonk.feed("a")).retract("t")
        await wait_until(lambda: _eq(items(daemon, "b"), {}), message="retract reached the end")
        assert daemon.metrics.echoes_dropped.labels("second")._value.get() == 0


def test_item_event_rejects_bad_ids_and_payloads() -> None:
    with pytest.raises(ValueError, match="non-empty string"):
        ItemEvent(EventKind.PUBLISH, "", "x")
    with pytest.raises(ValueError, match="needs a str payload"):
        ItemEvent(EventKind.EDIT, "1", None)


async def test_ledger_records_what_was_delivered(redis_url: str, tmp_path: Path) -> None:
    config = {"routes": [route("led", "thoonk:in", "memory:m")]}
    async with running_bridge(config, redis_url=redis_url, tmp_path=tmp_path, plugins=PLUGINS) as daemon:
        await idle(daemon)
        feed = await daemon.thoonk.feed("in")
        await feed.publish("v1", id="k")
        await wait_until(lambda: "k" in SINKS["m"].items)
        await idle(daemon)
        ledger = await daemon.routes["led"].workers[0].ledger.items()
        assert ledger == {"k": content_hash("v1")}
        await feed.retract("k")
        await wait_until(lambda: "k" not in SINKS["m"].items)
        await idle(daemon)
        assert await daemon.routes["led"].workers[0].ledger.items() == {}


async def test_route_survives_a_redis_restart_and_catches_up(tmp_path: Path) -> None:
    from thoonk_bridge.thoonk import Thoonk
    from thoonk_bridge.thoonk.embedded import EmbeddedRedis

    server = EmbeddedRedis(tmp_path / "redis", port=0).start()
    try:
        config = {"routes": [route("r", "thoonk:in", "thoonk:out")]}
        async with running_bridge(config, redis_url=server.url, tmp_path=tmp_path, plugins=PLUGINS) as daemon:
            await idle(daemon)
            await (await daemon.thoonk.feed("in")).publish("before", id="1")
            await wait_until(lambda: _eq(items(daemon, "out"), {"1": "before"}))
            await asyncio.to_thread(server.stop)
            await wait_until(lambda: not daemon.routes["r"].ready, message="route notices the lost connection")
            await asyncio.to_thread(server.start)
            # Published by someone else while the route was reconnecting: the reconcile finds it.
            with Thoonk(url=server.url) as other:
                other.feed("in").publish("during", id="2")
            await wait_until(lambda: daemon.routes["r"].ready, timeout=30, message="route back")
            await wait_until(lambda: _eq(items(daemon, "out"), {"1": "before", "2": "during"}), timeout=30)
            await (await daemon.thoonk.feed("in")).publish("after", id="3")
            await wait_until(lambda: _eq(items(daemon, "out"), {"1": "before", "2": "during", "3": "after"}))
    finally:
        server.stop()


async def test_initial_none_with_mirror_keeps_what_it_skipped(redis_url: str, tmp_path: Path) -> None:
    from thoonk_bridge.thoonk import Thoonk

    with Thoonk(url=redis_url) as pubsub:
        pubsub.feed("in").publish("old", id="old")
    config = {"routes": [route("r", "thoonk:in", "memory:m", initial="none", mirror=True)]}
    async with running_bridge(config, redis_url=redis_url, tmp_path=tmp_path, plugins=PLUGINS) as daemon:
        await idle(daemon)
        await (await daemon.thoonk.feed("in")).publish("new", id="new")
        await wait_until(lambda: "new" in SINKS["m"].items)
        await idle(daemon)
        assert [(e.kind, e.id) for e in SINKS["m"].applied] == [(EventKind.PUBLISH, "new")]


async def test_reconcile_sends_only_what_a_sink_with_a_capacity_keeps(redis_url: str, tmp_path: Path) -> None:
    from thoonk_bridge.thoonk import Thoonk

    with Thoonk(url=redis_url) as pubsub:
        for i in range(10):
            pubsub.feed("in").publish(f"p{i}", id=str(i))
    MemorySink.capacity = 3
    try:
        config = {"routes": [route("r", "thoonk:in", "memory:m", mirror=True)]}
        async with running_bridge(config, redis_url=redis_url, tmp_path=tmp_path, plugins=PLUGINS) as daemon:
            await idle(daemon)
            # Only the newest three, and mirror retracts nothing: the older ids are still in the source.
            assert [(e.kind, e.id) for e in SINKS["m"].applied] == [(EventKind.PUBLISH, i) for i in "789"]
    finally:
        MemorySink.capacity = None


@pytest.mark.parametrize("side", ["a", "b"])
async def test_opposite_routes_carry_a_retract_made_on_either_side_while_away(
    redis_url: str, tmp_path: Path, side: str
) -> None:
    from thoonk_bridge.thoonk import Thoonk

    config = {"routes": [route("a-to-b", "thoonk:a", "thoonk:b"), route("b-to-a", "thoonk:b", "thoonk:a")]}
    async with running_bridge(config, redis_url=redis_url, tmp_path=tmp_path, plugins=PLUGINS) as daemon:
        await idle(daemon)
        await (await daemon.thoonk.feed("a")).publish("from a", id="x")
        await (await daemon.thoonk.feed("b")).publish("from b", id="y")
        both = {"x": "from a", "y": "from b"}
        await wait_until(lambda: _eq(items(daemon, "a"), both), message="a has both")
        await wait_until(lambda: _eq(items(daemon, "b"), both), message="b has both")
        await idle(daemon)
    # While the daemon is down, one side loses both items: the one that came from it and the other.
    with Thoonk(url=redis_url) as pubsub:
        pubsub.feed(side).retract("x")
        pubsub.feed(side).retract("y")
        pubsub.feed(side).publish("new", id="z")
    async with running_bridge(config, redis_url=redis_url, tmp_path=tmp_path, plugins=PLUGINS) as daemon:
        await idle(daemon)
        await wait_until(lambda: _eq(items(daemon, "a"), {"z": "new"}), message="a converged")
        await wait_until(lambda: _eq(items(daemon, "b"), {"z": "new"}), message="b converged")


class WindowOptions(Settings):
    address: str


WINDOWS: dict[str, list[tuple[str, str]]] = {}


class WindowSource(Source):
    """A source keeping only its newest items (like an XMPP node with max_items)."""

    absence = "window"

    def __init__(self, name: str) -> None:
        self.name = name

    async def snapshot(self) -> list[tuple[str, str]]:
        return list(WINDOWS[self.name])

    async def follow(self) -> Any:
        await asyncio.Event().wait()
        yield  # pragma: no cover - never reached


class WindowPlugin(Plugin):
    name = "window"
    endpoint_kinds = (EndpointKind("window", source_options=WindowOptions),)

    def source(self, endpoint: Endpoint, route: RouteContext) -> Source:
        return WindowSource(endpoint.address)


async def test_a_window_source_trimming_is_no_retract_but_a_gap_in_it_is(redis_url: str, tmp_path: Path) -> None:
    plugins = {**PLUGINS, "window": WindowPlugin}
    config = {"routes": [route("w", "window:node", "thoonk:out")]}
    WINDOWS["node"] = [(str(i), f"v{i}") for i in range(3)]
    async with running_bridge(config, redis_url=redis_url, tmp_path=tmp_path, plugins=plugins) as daemon:
        await idle(daemon)
        assert list(await items(daemon, "out")) == ["0", "1", "2"]
    await asyncio.sleep(0.01)  # later deliveries get later ledger times (ms)
    WINDOWS["node"] = [(str(i), f"v{i}") for i in range(3, 6)]
    async with running_bridge(config, redis_url=redis_url, tmp_path=tmp_path, plugins=plugins) as daemon:
        await idle(daemon)
        # 0..2 were dropped from the window's old end: trimmed, not retracted; all six kept.
        assert list(await items(daemon, "out")) == ["0", "1", "2", "3", "4", "5"]
    # Now 4, delivered after the oldest item the window still holds (3), is missing: a retract.
    WINDOWS["node"] = [("3", "v3"), ("5", "v5")]
    async with running_bridge(config, redis_url=redis_url, tmp_path=tmp_path, plugins=plugins) as daemon:
        await idle(daemon)
        assert list(await items(daemon, "out")) == ["0", "1", "2", "3", "5"]


async def test_reconcile_pages_through_a_big_source_and_a_no_op_restart_sends_nothing(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from thoonk_bridge.router import worker
    from thoonk_bridge.thoonk import Thoonk
    from thoonk_bridge.thoonk import feed as feed_module

    monkeypatch.setattr(feed_module, "READ_PAGE", 7)  # many pages, page boundaries everywhere
    monkeypatch.setattr(worker, "RECONCILE_WINDOW", 10)  # back-pressure kicks in
    with Thoonk(url=redis_url) as pubsub:
        pubsub.feed("in").publish_many([(str(i), f"v{i}") for i in range(100)])
    config = {"routes": [route("big", "thoonk:in", ["thoonk:out", "memory:m"])]}
    async with running_bridge(config, redis_url=redis_url, tmp_path=tmp_path, plugins=PLUGINS) as daemon:
        await idle(daemon)
        assert list(await items(daemon, "out")) == [str(i) for i in range(100)]
        assert [e.id for e in SINKS["m"].applied] == [str(i) for i in range(100)]
    raw = redis.Redis.from_url(redis_url)
    publishes = int(raw.get("feed.publishes:out"))
    SINKS.clear()
    async with running_bridge(config, redis_url=redis_url, tmp_path=tmp_path, plugins=PLUGINS) as daemon:
        await idle(daemon)
        assert SINKS["m"].applied == []
    assert int(raw.get("feed.publishes:out")) == publishes == 100
    raw.close()


async def test_batched_delivery_keeps_order_and_the_ledger_exact(redis_url: str, tmp_path: Path) -> None:
    config = {"routes": [route("burst", "thoonk:in", ["thoonk:out", "memory:m"])]}
    async with running_bridge(config, redis_url=redis_url, tmp_path=tmp_path, plugins=PLUGINS) as daemon:
        await idle(daemon)
        feed = await daemon.thoonk.feed("in")
        await feed.publish_many([(str(i), f"v{i}") for i in range(600)])
        for i in range(0, 600, 3):
            await feed.retract(str(i))
        await feed.publish("v1, edited", id="1")
        expected = {str(i): f"v{i}" for i in range(600) if i % 3}
        expected["1"] = "v1, edited"
        await wait_until(lambda: _eq(items(daemon, "out"), expected), timeout=30, message="out caught up")
        await idle(daemon)
        assert list(await items(daemon, "out")) == list(await items(daemon, "in"))
        for worker in daemon.routes["burst"].workers:
            assert set(await worker.ledger.items()) == set(expected), worker.name
        assert SINKS["m"].items == expected


async def test_the_ledger_forgets_what_neither_side_has_and_dead_letters_are_bounded(
    redis_url: str, tmp_path: Path
) -> None:
    from thoonk_bridge.router import DEAD_LETTER_MAX
    from thoonk_bridge.thoonk import Thoonk

    config = {"routes": [route("r", "thoonk:in", "thoonk:out")]}
    async with running_bridge(config, redis_url=redis_url, tmp_path=tmp_path, plugins=PLUGINS) as daemon:
        feed = await daemon.thoonk.feed("in")
        await feed.publish("a", id="a")
        await feed.publish("b", id="b")
        await wait_until(lambda: _eq(items(daemon, "out"), {"a": "a", "b": "b"}))
        await idle(daemon)
        assert set(await daemon.routes["r"].workers[0].ledger.items()) == {"a", "b"}
    with Thoonk(url=redis_url) as pubsub:  # gone from both sides while the daemon was away
        pubsub.feed("in").retract("b")
        pubsub.feed("out").retract("b")
    async with running_bridge(config, redis_url=redis_url, tmp_path=tmp_path, plugins=PLUGINS) as daemon:
        await idle(daemon)
        assert set(await daemon.routes["r"].workers[0].ledger.items()) == {"a"}
        await daemon.routes["r"].context.dead_letter("x", "payload", "test")
        assert (await daemon.thoonk.get_config(dead_letter_feed("r")))["max_length"] == str(DEAD_LETTER_MAX)


async def test_a_clean_stop_lets_the_next_start_skip_what_did_not_change(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from thoonk_bridge.router import SinkWorker
    from thoonk_bridge.thoonk import Thoonk

    reconciled: list[str] = []
    begin = SinkWorker.begin_reconcile

    async def counting(self: SinkWorker) -> Any:
        reconciled.append(self.name)
        return await begin(self)

    monkeypatch.setattr(SinkWorker, "begin_reconcile", counting)
    config = {"routes": [route("cp", "thoonk:in", ["thoonk:out", "memory:m"])]}
    with Thoonk(url=redis_url) as pubsub:
        pubsub.feed("in").publish_many([(str(i), f"v{i}") for i in range(20)])
    async with running_bridge(config, redis_url=redis_url, tmp_path=tmp_path, plugins=PLUGINS) as daemon:
        await idle(daemon)
    assert reconciled == ["thoonk:out", "memory:m"]
    reconciled.clear()
    # Nothing changed: the thoonk sink is not compared again (the memory sink cannot tell: it is).
    async with running_bridge(config, redis_url=redis_url, tmp_path=tmp_path, plugins=PLUGINS) as daemon:
        await idle(daemon)
        assert reconciled == ["memory:m"]
        await (await daemon.thoonk.feed("in")).publish("live", id="live")
        await wait_until(lambda: _eq(items(daemon, "out"), {**{str(i): f"v{i}" for i in range(20)}, "live": "live"}))
    reconciled.clear()
    # Changed while away, on either side: compared again, and made right.
    with Thoonk(url=redis_url) as pubsub:
        pubsub.feed("in").retract("3")
    async with running_bridge(config, redis_url=redis_url, tmp_path=tmp_path, plugins=PLUGINS) as daemon:
        await idle(daemon)
        assert "thoonk:out" in reconciled
        assert "3" not in await items(daemon, "out")
    reconciled.clear()
    with Thoonk(url=redis_url) as pubsub:
        pubsub.feed("out").retract("4")  # someone else, in the sink
    async with running_bridge(config, redis_url=redis_url, tmp_path=tmp_path, plugins=PLUGINS) as daemon:
        await idle(daemon)
        assert "thoonk:out" in reconciled
        assert (await items(daemon, "out")).get("4") == "v4"
    reconciled.clear()
    # Another definition under the same name (here: mirror) does not trust the old checkpoint.
    mirrored = {"routes": [route("cp", "thoonk:in", ["thoonk:out", "memory:m"], mirror=True)]}
    async with running_bridge(mirrored, redis_url=redis_url, tmp_path=tmp_path, plugins=PLUGINS) as daemon:
        await idle(daemon)
        assert "thoonk:out" in reconciled


async def test_events_racing_a_clean_stop_are_not_lost_to_the_checkpoint(redis_url: str, tmp_path: Path) -> None:
    from thoonk_bridge.thoonk import AsyncThoonk, Thoonk

    config = {"routes": [route("race", "thoonk:in", "thoonk:out")]}
    other = AsyncThoonk(redis_url)  # another program, publishing through the daemon's stop
    try:
        for round_ in range(3):
            async with running_bridge(config, redis_url=redis_url, tmp_path=tmp_path, plugins=PLUGINS) as daemon:
                await idle(daemon)
                feed = await other.feed("in")

                async def burst(feed: Any = feed, round_: int = round_) -> None:
                    for i in range(300):
                        await feed.publish(f"r{round_} {i}", id=f"{round_}-{i}")

                publisher = asyncio.create_task(burst())
                await asyncio.sleep(0.01)
            await publisher  # it went on while the daemon stopped and after
    finally:
        await other.aclose()
    async with running_bridge(config, redis_url=redis_url, tmp_path=tmp_path, plugins=PLUGINS) as daemon:
        await idle(daemon)
        with Thoonk(url=redis_url) as pubsub:
            assert pubsub.feed("out").get_all() == pubsub.feed("in").get_all()
            assert len(pubsub.feed("out").get_ids()) == 900


async def test_a_burst_just_before_a_clean_stop_is_in_the_sink_or_reconciled(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from thoonk_bridge.thoonk import AsyncThoonk, Thoonk
    from thoonk_bridge.thoonk.shared_events import SharedEvents

    # Pub/sub messages reach the route late (in order): a stop that read the source's version
    # without waiting for them would record a checkpoint the sink does not match.
    receive = SharedEvents.deliver

    def late(self: SharedEvents, message: dict[str, Any]) -> None:
        asyncio.get_running_loop().call_later(0.2, receive, self, message)

    monkeypatch.setattr(SharedEvents, "deliver", late)
    config = {"routes": [route("burst", "thoonk:in", "thoonk:out")]}
    other = AsyncThoonk(redis_url)
    try:
        for round_ in range(3):
            async with running_bridge(config, redis_url=redis_url, tmp_path=tmp_path, plugins=PLUGINS) as daemon:
                await idle(daemon)
                # Published in one go, then the daemon stops at once: the events may still be on
                # their way through pub/sub when the stop reads the source's version.
                await (await other.feed("in")).publish_many([(f"{round_}-{i}", "x") for i in range(2000)])
        async with running_bridge(config, redis_url=redis_url, tmp_path=tmp_path, plugins=PLUGINS) as daemon:
            await idle(daemon)
            with Thoonk(url=redis_url) as pubsub:
                assert len(pubsub.feed("out").get_ids()) == 6000
    finally:
        await other.aclose()


async def test_a_sink_worker_outlives_redis_failing_under_its_ledger_write(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Seen during a Sentinel failover: the ledger write after a batch failed and the worker task died
    # silently, its events pending for ever.
    from thoonk_bridge.router import Ledger

    record = Ledger.record_batch
    failures = {"left": 2}

    async def flaky(self: Ledger, *args: Any, **kwargs: Any) -> None:
        if failures["left"] and args and args[0]:
            failures["left"] -= 1
            raise redis.ConnectionError("Redis is failing over")
        await record(self, *args, **kwargs)

    monkeypatch.setattr(Ledger, "record_batch", flaky)
    config = {"routes": [route("r", "thoonk:in", ["thoonk:out", "memory:m"])]}
    async with running_bridge(config, redis_url=redis_url, tmp_path=tmp_path, plugins=PLUGINS) as daemon:
        await idle(daemon)
        feed = await daemon.thoonk.feed("in")
        for i in range(5):
            await feed.publish(f"v{i}", id=str(i))
        expected = {str(i): f"v{i}" for i in range(5)}
        await wait_until(lambda: _eq(items(daemon, "out"), expected), message="out has every item")
        await wait_until(lambda: SINKS["m"].items == expected, message="memory sink has every item")
        await idle(daemon)
        assert failures["left"] == 0
        for worker in daemon.routes["r"].workers:
            assert set(await worker.ledger.items()) == set(expected), worker.name
