"""Reading feeds of any size: pages of bounded size, at the boundaries, with edits during the read."""

from __future__ import annotations

import pytest
import redis

from thoonk_bridge.thoonk import AsyncThoonk, Thoonk
from thoonk_bridge.thoonk import feed as feed_module
from thoonk_bridge.thoonk.feed import PageCursor


@pytest.mark.parametrize("size", [0, 1, 7, 8, 9, 16, 17])
def test_get_all_reads_every_item_in_order_whatever_the_page_size(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    monkeypatch.setattr(feed_module, "READ_PAGE", 8)
    with Thoonk(url=redis_url) as pubsub:
        feed = pubsub.feed("big")
        feed.publish_many([(str(i), f"item {i}") for i in range(size)])
        got = feed.get_all()
        assert list(got.items()) == [(str(i), f"item {i}") for i in range(size)]
        ordered = pubsub.sorted_feed("sorted")
        for i in range(size):
            ordered.publish(f"s{i}")
        assert list(ordered.get_all().values()) == [f"s{i}" for i in range(size)]


@pytest.mark.parametrize("size", [7_999, 8_000, 8_001])
def test_feeds_past_the_lua_unpack_limit_read_whole(redis_url: str, size: int) -> None:
    # One HMGET over every id failed from 8,000 items on ("too many results to unpack").
    with Thoonk(url=redis_url) as pubsub:
        feed = pubsub.feed(f"huge{size}")
        feed.publish_many([(str(i), "x") for i in range(size)])
        assert len(feed.get_all()) == size
        ordered = pubsub.sorted_feed(f"shuge{size}")
        raw = redis.Redis.from_url(redis_url)
        raw.rpush(f"feed.ids:shuge{size}", *range(size))
        raw.hset(f"feed.items:shuge{size}", mapping={i: "x" for i in range(size)})
        raw.close()
        assert len(ordered.get_all()) == size


def test_pages_do_not_lose_items_that_share_a_score(redis_url: str) -> None:
    # Peers (thoonk.py) score by time and can give several items one score; a page boundary inside
    # such a run must neither skip nor repeat them.
    raw = redis.Redis.from_url(redis_url, decode_responses=True)
    with Thoonk(url=redis_url) as pubsub:
        feed = pubsub.feed("ties")
        for i in range(10):
            raw.zadd("feed.ids:ties", {f"id{i:02}": 1000 if i < 7 else 2000})
            raw.hset("feed.items:ties", f"id{i:02}", f"v{i}")
        seen: list[str] = []
        cursor: PageCursor | None = PageCursor()
        while cursor is not None:
            page = feed.read_page(cursor, 3)
            seen += [i for i, _ in page.items]
            cursor = page.next
        assert seen == [f"id{i:02}" for i in range(10)]
    raw.close()


def test_an_edit_during_a_paged_read_skips_no_other_item(redis_url: str) -> None:
    with Thoonk(url=redis_url) as pubsub:
        feed = pubsub.feed("moving")
        feed.publish_many([(str(i), f"v{i}") for i in range(10)])
        first = feed.read_page(None, 4)
        assert [i for i, _ in first.items] == ["0", "1", "2", "3"]
        feed.publish("v1 edited", id="1")  # moves to the end: by index, "4" would now be skipped
        feed.publish("v6 edited", id="6")
        rest: list[tuple[str, str]] = []
        cursor = first.next
        while cursor is not None:
            page = feed.read_page(cursor, 4)
            rest += page.items
            cursor = page.next
        assert [i for i, _ in rest] == ["4", "5", "7", "8", "9", "1", "6"]
        assert dict(rest)["1"] == "v1 edited"
        assert list(feed.get_all()) == ["0", "2", "3", "4", "5", "7", "8", "9", "1", "6"]


async def test_async_face_pages_too(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(feed_module, "READ_PAGE", 5)
    pubsub = AsyncThoonk(redis_url)
    try:
        feed = await pubsub.feed("af")
        await feed.publish_many([(str(i), str(i)) for i in range(12)])
        assert list(await feed.get_all()) == [str(i) for i in range(12)]
    finally:
        await pubsub.aclose()
