"""Events: thoonk.py-style handlers (sync) and ``async for`` over ``events()`` (asyncio)."""

from __future__ import annotations

import asyncio
import queue
import threading

import pytest

from thoonk_bridge.thoonk import AsyncThoonk, Event, RedisUnavailable, Thoonk
from thoonk_bridge.thoonk.embedded import EmbeddedRedis


def test_register_handler_all_kinds(redis_url):
    t = Thoonk(url=redis_url)
    seen: queue.Queue[tuple] = queue.Queue()
    try:
        for kind in ("create", "delete", "config", "publish", "edit", "retract", "position", "finish"):
            t.register_handler(kind, lambda *args, kind=kind: seen.put((kind, *args)))

        def expect(*wanted: tuple) -> None:
            got = [seen.get(timeout=5) for _ in wanted]
            assert got == list(wanted)

        feed = t.feed("ev")
        expect(("create", "ev"), ("config", "ev"))
        feed.publish("a", id="1")
        expect(("publish", "ev", "a", "1"))
        feed.publish("b", id="1")
        expect(("edit", "ev", "b", "1"))
        feed.retract("1")
        expect(("retract", "ev", "1"))
        t.set_config("ev", {"max_length": 2})
        expect(("config", "ev"))
        s = t.sorted_feed("sev")
        expect(("create", "sev"), ("config", "sev"))
        s.publish("x")
        expect(("publish", "sev", "x", "1"), ("position", "sev", "1", ":end"))
        j = t.job("jev")
        expect(("create", "jev"), ("config", "jev"))
        id = j.put("q")
        j.get()
        j.finish(id, "result")
        expect(("finish", "jev", id, "result"))
        t.delete_feed("ev")
        expect(("delete", "ev"))
    finally:
        t.close()


def test_failing_handler_does_not_stop_others(redis_url):
    t = Thoonk(url=redis_url)
    got = threading.Event()
    try:
        t.register_handler("publish", lambda *a: 1 / 0)
        t.register_handler("publish", lambda *a: got.set())
        t.feed("x").publish("y")
        assert got.wait(5)
    finally:
        t.close()


def test_unknown_event_name(redis_url):
    t = Thoonk(url=redis_url)
    try:
        with pytest.raises(ValueError, match="bogus"):
            t.register_handler("bogus", print)
    finally:
        t.close()


async def next_event(events) -> Event:
    return await asyncio.wait_for(events.__anext__(), 5)


async def test_subscribe_snapshot_then_follow(redis_url):
    t = AsyncThoonk(redis_url)
    try:
        feed = await t.feed("live", {"max_length": 2})
        await feed.publish("old", id="0")
        async with t.events("live") as events:
            snapshot = await feed.get_all()  # subscribed already: nothing after this can be missed
            await feed.publish("one", id="1")
            await feed.publish("two", id="2")
            await feed.publish("one again", id="1")
            await feed.retract("2")
            got = [await next_event(events) for _ in range(5)]
        assert snapshot == {"0": "old"}
        assert got == [
            Event("publish", "live", "1", "one"),
            Event("retract", "live", "0"),  # trimmed by max_length before the publish of "2"
            Event("publish", "live", "2", "two"),
            Event("edit", "live", "1", "one again"),
            Event("retract", "live", "2"),
        ]
    finally:
        await t.aclose()


async def test_events_filter_named_feeds_and_lifecycle(redis_url):
    t = AsyncThoonk(redis_url)
    try:
        async with t.events("mine", lifecycle=True) as events:
            other = await t.feed("other")
            await other.publish("not mine")
            mine = await t.feed("mine")
            await mine.publish("x", id="1")
            got = [await next_event(events) for _ in range(3)]
        assert [(e.kind, e.feed) for e in got] == [("create", "mine"), ("config", "mine"), ("publish", "mine")]
        assert got[0].extra == t.instance
    finally:
        await t.aclose()


async def test_events_of_all_feeds_with_async_for(redis_url):
    t = AsyncThoonk(redis_url)
    try:
        events = t.events()
        await events.start()
        s = await t.sorted_feed("s")
        await s.publish("a")
        j = await t.job("j")
        id = await j.put("work")
        await j.get()
        await j.finish(id, "ok")
        got = []
        async for event in events:
            got.append(event)
            if len(got) == 3:
                break
        await events.aclose()
        assert got == [
            Event("publish", "s", "1", "a"),
            Event("position", "s", "1", extra=":end"),
            Event("finish", "j", id, extra="ok"),
        ]
    finally:
        await t.aclose()


async def test_lost_connection_raises_so_caller_can_resubscribe(tmp_path):
    server = EmbeddedRedis(tmp_path / "r", persistent=False).start()
    t = AsyncThoonk(server.url)
    try:
        feed = await t.feed("f")
        async with t.events("f") as events:
            await feed.publish("a", id="1")
            assert (await next_event(events)).id == "1"
            server.kill()
            with pytest.raises(RedisUnavailable, match="resubscribe|subscribe again") as info:
                await next_event(events)
            assert isinstance(info.value, ConnectionError)
    finally:
        await t.aclose()
        server.stop()
