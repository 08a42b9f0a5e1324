"""Feed management, handles, construction (URL, host/port, shared client, embedded), bad input."""

from __future__ import annotations

import asyncio

import pytest
import redis
import redis.asyncio

from tests.support.redis_state import snapshot
from thoonk_bridge.thoonk import (
    AsyncThoonk,
    Feed,
    FeedDoesNotExist,
    FeedExists,
    FeedTypeMismatch,
    Job,
    Queue,
    RedisUnavailable,
    SortedFeed,
    Thoonk,
)
from thoonk_bridge.thoonk.embedded import free_tcp_port


def test_create_exists_names_delete(pubsub, raw_redis):
    assert not pubsub.feed_exists("a")
    feed = pubsub.create_feed("a", {"max_length": 50})
    assert isinstance(feed, Feed)
    assert pubsub.feed_exists("a")
    with pytest.raises(FeedExists, match="'a'"):
        pubsub.create_feed("a", {})
    pubsub.queue("b")
    assert pubsub.get_feed_names() == {"a", "b"}
    assert pubsub.get_config("a") == {"type": "feed", "max_length": "50"}
    assert raw_redis.hgetall("feed.config:a") == {"type": "feed", "max_length": "50"}
    feed.publish("x", id="1")
    pubsub.delete_feed("a")
    assert not pubsub.feed_exists("a")
    assert raw_redis.keys("feed.*:a") == []
    with pytest.raises(FeedDoesNotExist, match="'a'"):
        pubsub.delete_feed("a")


def test_handles_create_if_missing_and_check_type(pubsub):
    assert isinstance(pubsub.feed("f"), Feed)
    assert isinstance(pubsub.feed("f"), Feed)  # existing: same type, fine
    assert isinstance(pubsub.queue("q"), Queue)
    assert isinstance(pubsub.job("j"), Job)
    assert isinstance(pubsub.sorted_feed("s"), SortedFeed)
    assert [pubsub.feed_type(n) for n in ("f", "q", "j", "s")] == ["feed", "queue", "job", "sorted_feed"]
    with pytest.raises(FeedTypeMismatch) as info:
        pubsub.queue("f")
    assert (info.value.feed, info.value.actual, info.value.wanted) == ("f", "feed", "queue")
    assert "'f'" in str(info.value)
    with pytest.raises(FeedTypeMismatch, match="'q'"):
        pubsub.feed("q")
    with pytest.raises(FeedTypeMismatch):
        pubsub.job("s")
    with pytest.raises(FeedTypeMismatch):
        pubsub.sorted_feed("j")
    assert isinstance(pubsub.create_feed("typed", {"type": "job"}), Job)


def test_set_config_merges_and_announces(pubsub, raw_redis):
    pubsub.feed("c", {"max_length": 5})
    pubsub.set_config("c", {"title": "Hello", "max_length": 7})
    assert pubsub.get_config("c") == {"type": "feed", "max_length": "7", "title": "Hello"}
    pubsub.set_config("c", {"title": None})
    assert pubsub.get_config("c") == {"type": "feed", "max_length": "7"}


def test_config_numbers_are_stored_as_given(pubsub, raw_redis):
    # A peer reads these with int(): "30" must stay "30" (we once wrote "30.0").
    pubsub.job("j", {"timeout": "30"})
    assert raw_redis.hget("feed.config:j", "timeout") == "30"
    # numbers as redis-py (thoonk.py) writes them
    for given, stored in [(30, "30"), (2.5, "2.5"), (30.0, "30.0"), ("0.25", "0.25")]:
        pubsub.set_config("j", {"timeout": given})
        assert raw_redis.hget("feed.config:j", "timeout") == stored, given
    # max_length is read with int() by every peer: integers only, an integral float as an int
    for given, stored in [("5", "5"), (7, "7"), (8.0, "8")]:
        pubsub.set_config("j", {"max_length": given})
        assert raw_redis.hget("feed.config:j", "max_length") == stored, given
    pubsub.feed("f", {"max_length": "3"})
    assert raw_redis.hgetall("feed.config:f") == {"type": "feed", "max_length": "3"}


def test_bad_config_numbers_are_refused_and_change_nothing(pubsub, redis_url):
    pubsub.job("j", {"timeout": "30", "max_length": "5"})
    before = snapshot(redis_url)
    for key, value in [("timeout", "nan"), ("timeout", float("inf")), ("timeout", -1), ("timeout", True),
                       ("timeout", "soon"), ("max_length", 3.5), ("max_length", "3.0"), ("max_length", "inf")]:
        with pytest.raises(ValueError, match=f"'j': {key} must be"):
            pubsub.set_config("j", {key: value})
    assert snapshot(redis_url) == before


def test_bad_input_names_the_feed_and_changes_nothing(pubsub, redis_url):
    pubsub.feed("plain").publish("kept", id="1")
    pubsub.queue("q")
    before = snapshot(redis_url)
    with pytest.raises(FeedDoesNotExist, match="'nope'"):
        pubsub.set_config("nope", {"max_length": 3})
    with pytest.raises(FeedDoesNotExist, match="'nope'"):
        pubsub.get_config("nope")
    with pytest.raises(FeedDoesNotExist, match="'nope'"):
        pubsub.feed_type("nope")
    with pytest.raises(FeedTypeMismatch, match="'plain'"):
        pubsub.set_config("plain", {"type": "queue"})
    with pytest.raises(FeedTypeMismatch, match="'plain'"):
        pubsub.queue("plain")
    with pytest.raises(FeedTypeMismatch, match="'q'"):
        pubsub.job("q", {"timeout": 5})
    with pytest.raises(ValueError, match="'plain'"):
        pubsub.set_config("plain", {"max_length": -1})
    with pytest.raises(ValueError, match="'plain'"):
        pubsub.set_config("plain", {"max_length": "many"})
    with pytest.raises(TypeError, match="'plain'"):
        pubsub.set_config("plain", {"title": ["a"]})
    with pytest.raises(ValueError, match="'new'"):
        pubsub.create_feed("new", {"type": "teapot"})
    with pytest.raises(TypeError):
        pubsub.feed(42)
    with pytest.raises(ValueError):
        pubsub.feed("")
    with pytest.raises(ValueError):
        pubsub.feed("a\x00b")
    assert snapshot(redis_url) == before


def test_unreachable_redis_names_the_address():
    port = free_tcp_port()
    t = Thoonk("127.0.0.1", port, 0)
    try:
        with pytest.raises(RedisUnavailable, match=f"127.0.0.1:{port}") as info:
            t.feed("x")
        assert isinstance(info.value, ConnectionError)
    finally:
        t.close()


async def test_async_unreachable_redis_names_the_address():
    port = free_tcp_port()
    with pytest.raises(RedisUnavailable, match=f"127.0.0.1:{port}"):
        await AsyncThoonk.connect(f"redis://127.0.0.1:{port}/0")


def test_host_port_and_url_forms(redis_server, redis_url):
    for t in (Thoonk("127.0.0.1", redis_server.port, 0), Thoonk(redis_url), Thoonk(url=redis_url)):
        try:
            assert t.ping()
            t.feed("same").publish("x", id="1")
            assert t.feed("same").get_item("1") == "x"
        finally:
            t.close()


def test_shared_client_is_not_closed(redis_url):
    client = redis.Redis.from_url(redis_url, decode_responses=True)  # also with decode_responses
    t = Thoonk(redis=client)
    feed = t.feed("shared")
    feed.publish(b"bytes", id="1")
    assert feed.get_all() == {"1": "bytes"}
    t.close()
    assert client.ping()
    client.close()


def test_embedded_default_starts_and_stops_a_private_server(tmp_path):
    state = tmp_path / "redis"
    t = Thoonk(state_dir=state)
    try:
        assert t.embedded is not None
        process = t.embedded.process
        t.feed("local").publish("kept", id="1")
        assert (state / "redis.sock").exists()
    finally:
        t.close()
    assert process.poll() is not None  # stopped with us
    t2 = Thoonk(state_dir=state)  # data persisted in the state dir
    try:
        assert t2.feed("local").get_item("1") == "kept"
    finally:
        t2.close()


async def test_async_embedded_default(tmp_path):
    t = AsyncThoonk(state_dir=tmp_path / "r")
    process = t.embedded.process
    feed = await t.feed("x")
    await feed.publish("y", id="1")
    assert await feed.get_item("1") == "y"
    await t.aclose()
    assert process.poll() is not None


def test_async_construction_needs_no_running_loop(redis_url):
    t = AsyncThoonk(redis_url)  # no loop here

    async def use() -> list[str]:
        feed = await t.feed("noloop")
        await feed.publish("a", id="1")
        ids = await feed.get_ids()
        await t.aclose()
        return ids

    assert asyncio.run(use()) == ["1"]


async def test_async_shared_client_and_management(redis_url):
    client = redis.asyncio.Redis.from_url(redis_url)
    t = AsyncThoonk(redis=client)
    await t.create_feed("m", {"max_length": 2})
    assert await t.feed_exists("m")
    assert await t.get_feed_names() == {"m"}
    await t.set_config("m", {"max_length": 3})
    assert await t.get_config("m") == {"type": "feed", "max_length": "3"}
    assert await t.feed_type("m") == "feed"
    with pytest.raises(FeedDoesNotExist, match="'zz'"):
        await t.set_config("zz", {})
    with pytest.raises(FeedTypeMismatch):
        await t.queue("m")
    await t.delete_feed("m")
    assert not await t.feed_exists("m")
    await t.aclose()
    assert await client.ping()
    await client.aclose()


def test_scripts_reload_after_script_flush(pubsub, raw_redis):
    feed = pubsub.feed("reload")
    feed.publish("a", id="1")
    raw_redis.script_flush()
    feed.publish("b", id="2")
    raw_redis.script_flush()
    feed.publish_many([(str(i), "x") for i in range(500)])
    assert feed.length() == 500
