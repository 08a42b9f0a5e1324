"""Many event streams over one pub/sub connection (AsyncThoonk.events(..., shared=True))."""

from __future__ import annotations

import asyncio

import pytest
import redis

from thoonk_bridge.thoonk import AsyncThoonk, RedisUnavailable


def pubsub_connections(raw: redis.Redis) -> int:
    return sum(1 for c in raw.client_list() if int(c.get("sub", 0)) + int(c.get("psub", 0)) > 0)


async def test_many_streams_share_one_connection_and_each_gets_its_own_feed(redis_url: str) -> None:
    raw = redis.Redis.from_url(redis_url)
    pubsub = AsyncThoonk(redis_url)
    streams = []
    try:
        feeds = [await pubsub.feed(f"f{i}") for i in range(50)]
        for feed in feeds:
            streams.append(await pubsub.events(feed.name, shared=True).start())
        assert pubsub_connections(raw) == 1
        for i, feed in enumerate(feeds):  # published right after subscribing: nothing is lost
            await feed.publish(f"item {i}", id=str(i))
        for i, stream in enumerate(streams):
            event = await stream.get(5)
            assert event is not None and (event.feed, event.id, event.item) == (f"f{i}", str(i), f"item {i}")
            assert await stream.get(0.05) is None  # nothing of the other feeds
    finally:
        for stream in streams:
            await stream.aclose()
        await pubsub.aclose()
        raw.close()


async def test_a_channel_stays_subscribed_while_one_stream_still_reads_it(redis_url: str) -> None:
    raw = redis.Redis.from_url(redis_url)
    pubsub = AsyncThoonk(redis_url)
    try:
        feed = await pubsub.feed("news")
        first = await pubsub.events("news", shared=True).start()
        second = await pubsub.events("news", shared=True).start()
        await feed.publish("both", id="1")
        assert (await first.get(5)).id == "1"  # type: ignore[union-attr]
        assert (await second.get(5)).id == "1"  # type: ignore[union-attr]
        await first.aclose()
        assert raw.pubsub_numsub("feed.publish:news") == [(b"feed.publish:news", 1)]
        await feed.publish("second only", id="2")
        assert (await second.get(5)).id == "2"  # type: ignore[union-attr]
        await second.aclose()

        async def unsubscribed() -> bool:
            return raw.pubsub_numsub("feed.publish:news") == [(b"feed.publish:news", 0)]

        for _ in range(100):
            if await unsubscribed():
                break
            await asyncio.sleep(0.02)
        assert await unsubscribed()
    finally:
        await pubsub.aclose()
        raw.close()


async def test_a_lost_connection_ends_every_stream_and_the_next_one_reconnects(redis_url: str) -> None:
    raw = redis.Redis.from_url(redis_url)
    pubsub = AsyncThoonk(redis_url)
    try:
        feed = await pubsub.feed("a")
        streams = [await pubsub.events("a", shared=True).start(), await pubsub.events(shared=True).start()]
        raw.client_kill_filter(_type="pubsub")
        for stream in streams:
            with pytest.raises(RedisUnavailable):
                await asyncio.wait_for(stream.__anext__(), 5)
        again = await pubsub.events("a", shared=True).start()
        await feed.publish("after", id="x")
        event = await again.get(5)
        assert event is not None and event.id == "x"
        assert pubsub_connections(raw) == 1
        await again.aclose()
    finally:
        await pubsub.aclose()
        raw.close()
