"""One Redis server, two databases: pub/sub is server-wide, so same-named feeds hear each other.

Thoonk channels (``feed.publish:NAME``, ...) carry no database number: a subscriber on db 7 gets the
events of feed ``news`` in db 11 of the same server. These tests run two databases of one real
redis-server and check that we find such feeds, warn about them, and drop their events.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis
import structlog

from tests.support.bridge_process import cli
from thoonk_bridge.plugin import EventKind
from thoonk_bridge.plugins.thoonk.source import ThoonkSource
from thoonk_bridge.testing import running_bridge, wait_until
from thoonk_bridge.thoonk import AsyncThoonk, Event
from thoonk_bridge.thoonk.embedded import EmbeddedRedis

OURS, THEIRS, ELSEWHERE = 7, 11, 3


@pytest.fixture
def db_urls(redis_server: EmbeddedRedis) -> Iterator[dict[int, str]]:
    """URLs of databases 7, 11 and 3 of the session's redis-server; the whole server (db 0, which other
    tests use, included) is empty before and after, so only what a test writes is there to find."""
    base = redis_server.url.rsplit("/", 1)[0]
    urls = {db: f"{base}/{db}" for db in (OURS, THEIRS, ELSEWHERE)}

    def flush() -> None:
        client = redis.Redis.from_url(redis_server.url)
        client.flushall()
        client.close()

    flush()
    yield urls
    flush()


@pytest.fixture
async def clients(db_urls: dict[int, str]) -> AsyncIterator[dict[int, AsyncThoonk]]:
    made = {db: AsyncThoonk(url) for db, url in db_urls.items()}
    try:
        yield made
    finally:
        for client in made.values():
            await client.aclose()


async def next_event(events) -> Event:
    return await asyncio.wait_for(events.__anext__(), 5)


async def test_databases_sharing_names_the_other_databases_and_feeds(clients, db_urls) -> None:
    ours, theirs, elsewhere = clients[OURS], clients[THEIRS], clients[ELSEWHERE]
    await ours.feed("news")
    await theirs.feed("news")
    await theirs.feed("sports")
    await elsewhere.feed("unrelated")
    assert await ours.databases_sharing("news", "sports", "weather") == {THEIRS: ["news", "sports"]}
    assert await theirs.databases_sharing("news") == {OURS: ["news"]}
    assert await ours.databases_sharing("weather") == {}
    # the connection that looked into the other databases never serves our operations afterwards
    for n in range(20):
        await (await ours.feed("news")).publish(str(n), id=str(n))
    assert await (await ours.feed("news")).length() == 20
    assert await (await theirs.feed("news")).length() == 0
    assert redis.Redis.from_url(db_urls[ELSEWHERE]).smembers("feeds") == {b"unrelated"}


async def test_confirmed_events_drop_the_other_database_s_events(clients) -> None:
    ours, theirs = await clients[OURS].feed("news"), await clients[THEIRS].feed("news")
    async with clients[OURS].events("news") as plain, clients[OURS].events("news", confirm=True) as confirmed:
        await theirs.publish("foreign", id="x")
        await ours.publish("ours", id="a")
        await theirs.publish("their a", id="a")  # same id as one of ours, other payload
        await theirs.retract("a")  # would retract ours downstream
        await ours.publish("ours b", id="b")
        # the premise: without confirm, db 11's events reach a subscriber of db 7
        assert [await next_event(plain) for _ in range(5)] == [
            Event("publish", "news", "x", "foreign"),
            Event("publish", "news", "a", "ours"),
            Event("publish", "news", "a", "their a"),
            Event("retract", "news", "a"),
            Event("publish", "news", "b", "ours b"),
        ]
        assert [await next_event(confirmed) for _ in range(2)] == [
            Event("publish", "news", "a", "ours"),
            Event("publish", "news", "b", "ours b"),
        ]
        assert await confirmed.get(timeout=0.3) is None
        assert confirmed.dropped == 3


async def test_confirmed_events_end_in_our_database_s_state(clients) -> None:
    # Events our database no longer agrees with were superseded; the last one per id always agrees.
    feed = await clients[OURS].feed("news")
    async with clients[OURS].events("news", confirm=True) as confirmed:
        await feed.publish("1", id="a")
        await feed.publish("2", id="a")
        await feed.publish("x", id="c")
        await feed.retract("c")
        await feed.publish("y", id="c")
        await feed.publish("z", id="d")
        await feed.retract("d")
        state: dict[str, str] = {}
        kept = []
        while (event := await confirmed.get(timeout=0.5)) is not None:
            kept.append(event)
            if event.kind == "retract":
                state.pop(event.id, None)
            else:
                state[event.id] = event.item
    assert state == await feed.get_all() == {"a": "2", "c": "y"}
    assert kept[-1] == Event("retract", "news", "d")
    assert len(kept) + confirmed.dropped == 7


async def test_thoonk_source_drops_events_of_a_same_named_feed_in_another_database(clients) -> None:
    await clients[THEIRS].feed("news")
    source = ThoonkSource(clients[OURS], "news")
    await source.open()
    try:
        follow = source.follow()
        await (await clients[THEIRS].feed("news")).publish("foreign", id="x")
        await (await clients[THEIRS].feed("news")).retract("a")
        await (await clients[OURS].feed("news")).publish("ours", id="a")
        first = await asyncio.wait_for(follow.__anext__(), 5)
        assert (first.kind, first.id, first.payload) == (EventKind.PUBLISH, "a", "ours")
        await follow.aclose()
    finally:
        await source.close()


async def test_daemon_warns_about_same_named_feeds_in_other_databases(clients, db_urls, tmp_path: Path) -> None:
    await clients[THEIRS].feed("in")
    route = {"name": "copy", "from": "thoonk:in", "to": "thoonk:out"}
    with structlog.testing.capture_logs() as logs:
        async with running_bridge({"routes": [route]}, redis_url=db_urls[OURS], tmp_path=tmp_path,
                                  plugins={}) as daemon:
            ours, theirs = await clients[OURS].feed("in"), await clients[THEIRS].feed("in")
            out = await daemon.thoonk.feed("out")
            await ours.publish("first", id="first")
            await wait_until(lambda: out.get_item("first"), message="the route follows")
            # one server, one pub/sub connection: x's event comes to the route before a's
            await theirs.publish("foreign", id="x")
            await ours.publish("ours", id="a")
            await wait_until(lambda: out.get_item("a"), message="our item copied")
            assert await out.get_ids() == ["first", "a"]
    warnings = [entry for entry in logs if entry.get("log_level") == "warning" and "databases" in entry]
    assert len(warnings) == 1, logs
    assert warnings[0]["databases"] == {str(THEIRS): ["in"]}
    assert f"this is db {OURS}" in warnings[0]["detail"] and f"db {THEIRS}: in" in warnings[0]["detail"]


def test_check_live_warns_about_same_named_feeds_in_other_databases(db_urls, tmp_path: Path) -> None:
    redis.Redis.from_url(db_urls[THEIRS]).sadd("feeds", "out")
    path = tmp_path / "live.yaml"
    path.write_text(f"redis: {db_urls[OURS]}\nroutes:\n  - name: c\n    from: thoonk:in\n    to: thoonk:out\n")
    result = cli("check", str(path), "--live")
    assert result.returncode == 0, result.stderr
    assert f"live: warning: other databases of this Redis server hold feeds named like ours (this is db {OURS}): " \
           f"db {THEIRS}: out." in result.stderr
