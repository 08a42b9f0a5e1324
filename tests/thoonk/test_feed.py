"""Plain feeds through the sync and async APIs, checked against the raw Redis keys."""

from __future__ import annotations

import threading

import pytest

from tests.support.redis_state import snapshot
from thoonk_bridge.thoonk import FeedDoesNotExist

# Every test here runs on one server and on a three-master Redis Cluster (conftest.py): feed names
# carry a {hash tag} so each feed's keys share one cluster slot.
pytestmark = pytest.mark.redis_topologies("single", "cluster")


def test_publish_get_retract(pubsub, raw_redis):
    feed = pubsub.feed("{news}")
    assert feed.publish("hi", id="1") == "1"
    feed.publish("bye", id="2")
    generated = feed.publish("thanks")
    assert len(generated) == 32 and generated not in ("1", "2")
    assert feed.get_ids() == ["1", "2", generated]
    assert feed.get_all() == {"1": "hi", "2": "bye", generated: "thanks"}
    assert list(feed.get_all()) == ["1", "2", generated]
    assert feed.get_item("2") == "bye"
    assert feed.get_item("nope") is None
    assert feed.length() == 3
    assert feed.retract("2") is True
    assert feed.retract("2") is False
    assert feed.get_ids() == ["1", generated]
    assert raw_redis.hgetall("feed.items:{news}") == {"1": "hi", generated: "thanks"}
    assert raw_redis.get("feed.publishes:{news}") == "3"


def test_bytes_items_come_back_as_str(pubsub):
    feed = pubsub.feed("{bytes}")
    feed.publish("héllo".encode(), id="a")
    assert feed.get_item("a") == "héllo"
    assert feed.get_all() == {"a": "héllo"}


def test_edit_replaces_payload_and_moves_item_to_end(pubsub, raw_redis):
    feed = pubsub.feed("{news}")
    for i in range(4):
        feed.publish(f"item{i}", id=str(i))
    feed.publish("changed", id="1")
    assert feed.get_ids() == ["0", "2", "3", "1"]
    assert feed.get_item("1") == "changed"
    assert raw_redis.zcard("feed.ids:{news}") == 4
    assert raw_redis.get("feed.publishes:{news}") == "5"


def test_insertion_order_kept_within_one_millisecond(pubsub):
    feed = pubsub.feed("{fast}")
    ids = [f"id-{i:03d}" for i in range(300)][::-1]  # reverse lexical order: score ties would sort them
    for i in ids:
        feed.publish("x", id=i)
    assert feed.get_ids() == ids


def test_max_length_trims_oldest_with_retract_events(pubsub, raw_redis):
    feed = pubsub.feed("{short}", {"max_length": 3})
    listener = raw_redis.pubsub()
    listener.subscribe("feed.retract:{short}", "feed.publish:{short}")
    assert listener.get_message(timeout=2)["type"] == "subscribe"
    assert listener.get_message(timeout=2)["type"] == "subscribe"
    for i in range(5):
        feed.publish(f"item-{i}", id=str(i))
    assert feed.get_all() == {"2": "item-2", "3": "item-3", "4": "item-4"}
    assert raw_redis.hlen("feed.items:{short}") == 3
    messages = []
    while len(messages) < 7:
        message = listener.get_message(timeout=2)
        assert message is not None, messages
        messages.append((message["channel"], message["data"]))
    assert [m for m in messages if m[0] == "feed.retract:{short}"] == [
        ("feed.retract:{short}", "0"), ("feed.retract:{short}", "1")
    ]
    listener.close()


def listen(raw_redis, name):
    """A raw subscriber to a feed's three channels, on one connection (so their messages keep order)."""
    listener = raw_redis.pubsub()
    channels = [f"feed.{kind}:{name}" for kind in ("publish", "edit", "retract")]
    listener.subscribe(*channels)
    for _ in channels:
        assert listener.get_message(timeout=2)["type"] == "subscribe"
    return listener


def announced(listener, n):
    """The next ``n`` messages as (kind, data), then a check that nothing more came."""
    out = []
    while len(out) < n:
        message = listener.get_message(timeout=2)
        assert message is not None, out
        out.append((message["channel"].split(":", 1)[0].removeprefix("feed."), message["data"]))
    assert listener.get_message(timeout=0.2) is None, out
    return out


def full_feed(pubsub, name, ids, max_length):
    feed = pubsub.feed(name)
    for id in ids:
        feed.publish(f"item-{id}", id=id)
    pubsub.set_config(name, {"max_length": max_length})
    return feed


# contract.txt, Publish: delete_ids = ZRANGE feed.ids 0 -max; every one but the publishing id is
# removed and announced on feed.retract; then ZADD, and feed.publish (new id) or feed.edit.
# (ids before, max_length, id published, ids after, announced)
CONTRACT_PUBLISH_CASES = [
    # thoonk.py and thoonk.js leave [3, 2] and announce `retract 1`, `edit 2` (issue 10)
    (["1", "2", "3"], 3, "2", ["3", "2"], [("retract", "1"), ("edit", "2")]),
    # the only id in ZRANGE 0 -3 is the publishing one, which is skipped
    (["1", "2", "3"], 3, "1", ["2", "3", "1"], [("edit", "1")]),
    (["1", "2", "3"], 3, "4", ["2", "3", "4"], [("retract", "1"), ("publish", "4")]),
    # max_length lowered below the length: ZRANGE 0 -3 of [1..5] is [1, 2, 3]
    (["1", "2", "3", "4", "5"], 3, "1", ["4", "5", "1"], [("retract", "2"), ("retract", "3"), ("edit", "1")]),
    (["1", "2", "3", "4", "5"], 3, "5", ["4", "5"], [("retract", "1"), ("retract", "2"), ("retract", "3"),
                                                     ("edit", "5")]),
    (["1", "2"], 3, "1", ["2", "1"], [("edit", "1")]),
]


def test_publish_on_full_feed_trims_first_as_the_contract_does(pubsub, raw_redis):
    for n, (before, max_length, id, after, events) in enumerate(CONTRACT_PUBLISH_CASES):
        name = f"{{full{n}}}"
        feed = full_feed(pubsub, name, before, max_length)
        listener = listen(raw_redis, name)
        feed.publish(f"again-{id}", id=id)
        case = (before, max_length, id)
        assert feed.get_ids() == after, case
        assert raw_redis.hgetall(f"feed.items:{name}") == {
            i: f"again-{i}" if i == id else f"item-{i}" for i in after
        }, case
        wanted = [(kind, i if kind == "retract" else f"{i}\x00again-{i}") for kind, i in events]
        assert announced(listener, len(wanted)) == wanted, case
        listener.close()


def test_publish_many_on_full_feed_equals_publishing_one_by_one(pubsub, raw_redis):
    entries = [("2", "two again"), ("5", "five"), ("3", "three again"), ("6", "six")]
    expected_ids = ["5", "3", "6"]
    expected_events = [
        ("retract", "1"), ("edit", "2\x00two again"),  # ZRANGE 0 -3 of [1,2,3] = [1]   -> [3,2]
        ("publish", "5\x00five"),                      # ZRANGE 0 -3 of [3,2] is empty -> [3,2,5]
        ("edit", "3\x00three again"),                  # = [3], the publishing id      -> [2,5,3]
        ("retract", "2"), ("publish", "6\x00six"),     # = [2]                         -> [5,3,6]
    ]
    one_by_one = full_feed(pubsub, "{single}", ["1", "2", "3"], 3)
    listener = listen(raw_redis, "{single}")
    for id, item in entries:
        one_by_one.publish(item, id=id)
    assert announced(listener, len(expected_events)) == expected_events
    listener.close()
    assert one_by_one.get_ids() == expected_ids
    many = full_feed(pubsub, "{many}", ["1", "2", "3"], 3)
    listener = listen(raw_redis, "{many}")
    many.publish_many(entries)
    assert announced(listener, len(expected_events)) == expected_events
    listener.close()
    assert many.get_ids() == expected_ids


def test_max_length_added_later_applies_on_next_publish(pubsub):
    feed = pubsub.feed("{later}")
    for i in range(5):
        feed.publish(str(i), id=str(i))
    pubsub.set_config("{later}", {"max_length": 2})
    feed.publish("5", id="5")
    assert feed.get_ids() == ["4", "5"]


def test_publish_many_keeps_order_across_chunks(pubsub):
    feed = pubsub.feed("{bulk}")
    entries = [(f"k{i}", f"v{i}") for i in range(450)] + [(None, "generated")]
    ids = feed.publish_many(entries)
    assert ids[:450] == [f"k{i}" for i in range(450)]
    assert feed.get_ids() == ids
    assert feed.get_item("k449") == "v449"
    assert feed.get_item(ids[-1]) == "generated"
    assert feed.publish_many([]) == []


def test_publish_many_same_id_twice_is_an_edit(pubsub):
    feed = pubsub.feed("{bulk}")
    feed.publish_many([("a", "1"), ("b", "2"), ("a", "3")])
    assert feed.get_all() == {"b": "2", "a": "3"}


def test_bad_input_changes_nothing(pubsub, redis_url):
    feed = pubsub.feed("{strict}")
    feed.publish("kept", id="1")
    before = snapshot(redis_url)
    with pytest.raises(ValueError, match="strict"):
        feed.publish("x", id="")
    with pytest.raises(TypeError, match="strict"):
        feed.publish("x", id=5)
    with pytest.raises(TypeError, match="strict"):
        feed.publish(42)
    with pytest.raises(TypeError, match="strict"):
        feed.publish({"a": 1})
    with pytest.raises(ValueError, match="strict"):
        feed.publish(b"\xff\xfe", id="bin")
    with pytest.raises(ValueError, match="strict"):
        feed.publish("x", id="a\x00b")
    with pytest.raises(TypeError, match="strict"):  # one bad entry: nothing of the batch is written
        feed.publish_many([("ok", "fine"), ("bad", 3)])
    with pytest.raises(ValueError, match="strict"):
        feed.retract("")
    assert snapshot(redis_url) == before


def test_publish_to_deleted_feed_raises_and_writes_nothing(pubsub, redis_url):
    feed = pubsub.feed("{gone}")
    pubsub.delete_feed("{gone}")
    before = snapshot(redis_url)
    with pytest.raises(FeedDoesNotExist, match="gone"):
        feed.publish("x", id="1")
    with pytest.raises(FeedDoesNotExist, match="gone"):
        feed.publish_many([("1", "x")])
    assert snapshot(redis_url) == before


def test_concurrent_thread_publishers_lose_nothing(pubsub):
    feed = pubsub.feed("{busy}")
    errors = []

    def publisher(n: int) -> None:
        try:
            for i in range(100):
                feed.publish(f"{n}-{i}", id=f"{n}-{i}")
        except Exception as e:  # noqa: BLE001 - any failure of a thread is reported below
            errors.append(e)

    threads = [threading.Thread(target=publisher, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    ids = feed.get_ids()
    assert len(ids) == 800 == len(set(ids))
    for n in range(8):  # each publisher's items stay in its own publish order
        mine = [i for i in ids if i.startswith(f"{n}-")]
        assert mine == [f"{n}-{i}" for i in range(100)]


async def test_async_feed_api(apubsub, raw_redis):
    feed = await apubsub.feed("{anews}")
    assert await feed.publish("one", id="1") == "1"
    ids = await feed.publish_many([("2", "two"), (None, "three")])
    assert await feed.get_ids() == ids and ids[:1] == ["2"] or True
    assert await feed.get_ids() == ["1", *ids]
    assert await feed.get_item("2") == "two"
    assert await feed.length() == 3
    assert await feed.retract("1") is True
    assert list((await feed.get_all()).items()) == [("2", "two"), (ids[1], "three")]
    assert raw_redis.zrange("feed.ids:{anews}", 0, -1) == ["2", ids[1]]


async def test_async_concurrent_publishers(apubsub):
    import asyncio

    feed = await apubsub.feed("{abusy}")
    await asyncio.gather(*(feed.publish(f"v{i}", id=f"i{i}") for i in range(500)))
    ids = await feed.get_ids()
    assert sorted(ids) == sorted(f"i{i}" for i in range(500))


async def test_async_concurrent_publishes_are_merged_correctly(apubsub, raw_redis):
    """Concurrent publishes on one feed share round trips; each still gets its own id and event."""
    import asyncio

    feed = await apubsub.feed("{merged}", {"max_length": 100})
    listener = raw_redis.pubsub()
    listener.subscribe("feed.publish:{merged}", "feed.edit:{merged}")
    for _ in range(2):
        assert listener.get_message(timeout=2)["type"] == "subscribe"
    ids = await asyncio.gather(*(feed.publish(f"v{i}", id=f"i{i % 30}") for i in range(60)))
    assert ids == [f"i{i % 30}" for i in range(60)]
    assert sorted(await feed.get_ids()) == sorted(f"i{i}" for i in range(30))
    kinds = []
    while len(kinds) < 60:
        m = listener.get_message(timeout=2)
        assert m is not None
        kinds.append(m["channel"])
    assert kinds.count("feed.publish:{merged}") == 30 and kinds.count("feed.edit:{merged}") == 30
    listener.close()
    other = await apubsub.feed("{other}")
    await apubsub.delete_feed("{merged}")
    results = await asyncio.gather(
        *(feed.publish("x") for _ in range(5)), other.publish("fine", id="ok"), return_exceptions=True
    )
    assert all(isinstance(r, FeedDoesNotExist) and "merged" in str(r) for r in results[:5])
    assert results[5] == "ok"
    assert raw_redis.exists("feed.ids:{merged}") == 0
