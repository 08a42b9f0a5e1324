"""Sorted feeds (the original README's ``list``): order you set, position events."""

from __future__ import annotations

import pytest

from tests.support.redis_state import snapshot
from thoonk_bridge.thoonk import AsyncThoonk, ItemDoesNotExist, SortedFeed

# Every test here runs on one server and on a three-master Redis Cluster (conftest.py): feed names
# carry a {hash tag} so each feed's keys share one cluster slot.
pytestmark = pytest.mark.redis_topologies("single", "cluster")


@pytest.fixture
def sf(pubsub):
    feed = pubsub.sorted_feed("{sorted}")
    for item in ("hi", "bye", "thanks", "you're welcome"):
        feed.publish(item)
    return feed


def test_publish_appends_with_counter_ids(sf, raw_redis):
    assert isinstance(sf, SortedFeed)
    assert sf.get_ids() == ["1", "2", "3", "4"]
    assert sf.get_items() == {"1": "hi", "2": "bye", "3": "thanks", "4": "you're welcome"}
    assert sf.get_all() == sf.get_items()
    assert raw_redis.lrange("feed.ids:{sorted}", 0, -1) == ["1", "2", "3", "4"]
    assert raw_redis.get("feed.idincr:{sorted}") == "4"
    assert sf.append("five") == "5"
    assert sf.length() == 5


def test_list_is_an_alias(pubsub):
    assert isinstance(pubsub.list("{also-sorted}"), SortedFeed)
    assert pubsub.feed_type("{also-sorted}") == "sorted_feed"


def test_prepend_before_after(sf):
    assert sf.prepend("first") == "5"
    assert sf.publish_before("2", "before-2") == "6"
    assert sf.publish_after("2", "after-2") == "7"
    assert sf.get_ids() == ["5", "1", "6", "2", "7", "3", "4"]
    assert list(sf.get_all()) == ["5", "1", "6", "2", "7", "3", "4"]


def test_edit_in_place(sf):
    sf.edit("1", "bar")
    assert sf.get_ids() == ["1", "2", "3", "4"]
    assert sf.get_item("1") == "bar"


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        (lambda f: f.move_first("4"), ["4", "1", "2", "3"]),
        (lambda f: f.move_last("2"), ["1", "3", "4", "2"]),
        (lambda f: f.move_before("1", "2"), ["2", "1", "3", "4"]),
        (lambda f: f.move_after("1", "4"), ["1", "4", "2", "3"]),
        (lambda f: f.move(":3", "1"), ["2", "1", "3", "4"]),
    ],
)
def test_moves(sf, action, expected):
    action(sf)
    assert sf.get_ids() == expected


def test_retract(sf):
    assert sf.retract("3") is True
    assert sf.retract("3") is False
    assert sf.get_ids() == ["1", "2", "4"]
    assert sf.get_item("3") is None


def test_position_and_publish_events(pubsub, raw_redis):
    feed = pubsub.sorted_feed("{evs}")
    listener = raw_redis.pubsub()
    listener.subscribe("feed.publish:{evs}", "feed.position:{evs}", "feed.retract:{evs}")
    for _ in range(3):
        assert listener.get_message(timeout=2)["type"] == "subscribe"
    feed.publish("a")
    feed.prepend("b")
    feed.publish_before("1", "c")
    feed.publish_after("1", "d")
    feed.move_last("2")
    feed.edit("1", "A")
    feed.retract("3")
    got = []
    while len(got) < 11:
        m = listener.get_message(timeout=2)
        assert m is not None, got
        got.append((m["channel"].split(":")[0], m["data"]))
    assert got == [
        ("feed.publish", "1\x00a"), ("feed.position", "1\x00:end"),
        ("feed.publish", "2\x00b"), ("feed.position", "2\x00begin:"),
        ("feed.publish", "3\x00c"), ("feed.position", "3\x00:1"),
        ("feed.publish", "4\x00d"), ("feed.position", "4\x001:"),
        ("feed.position", "2\x00:end"),
        ("feed.publish", "1\x00A"),
        ("feed.retract", "3"),
    ]
    listener.close()


def test_missing_items_and_bad_positions_change_nothing(sf, redis_url):
    before = snapshot(redis_url)
    with pytest.raises(ItemDoesNotExist, match="sorted"):
        sf.publish_before("99", "x")
    with pytest.raises(ItemDoesNotExist, match="99"):
        sf.publish_after("99", "x")
    with pytest.raises(ItemDoesNotExist):
        sf.edit("99", "x")
    with pytest.raises(ItemDoesNotExist):
        sf.move_first("99")
    with pytest.raises(ItemDoesNotExist):
        sf.move_before("99", "1")
    with pytest.raises(ValueError, match="itself"):
        sf.move_after("1", "1")
    with pytest.raises(ValueError, match="position"):
        sf.move("nowhere", "1")
    with pytest.raises(TypeError, match="sorted"):
        sf.publish(3.5)
    assert snapshot(redis_url) == before


async def test_async_sorted_feed(redis_url):
    t = AsyncThoonk(redis_url)
    try:
        feed = await t.sorted_feed("{asorted}")
        a = await feed.publish("a")
        b = await feed.prepend("b")
        await feed.move_last(b)
        await feed.edit(a, "A")
        assert await feed.get_ids() == [a, b]
        assert await feed.get_items() == {a: "A", b: "b"}
    finally:
        await t.aclose()
