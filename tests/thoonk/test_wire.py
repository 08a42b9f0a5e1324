"""Wire compatibility with the Thoonk contract (thoonk.py 1.0 / thoonk.js), read and written raw.

Raw writes here are done the way thoonk.py 1.0 does them (plain redis-py commands on the contract's
keys); raw reads are what thoonk.py would read back.
"""

from __future__ import annotations

import time

import pytest
import redis

from thoonk_bridge.thoonk import FeedTypeMismatch


def subscribed(raw_redis, *channels):
    listener = raw_redis.pubsub()
    listener.subscribe(*channels)
    for _ in channels:
        assert listener.get_message(timeout=2)["type"] == "subscribe"
    return listener


def messages(listener, n):
    out = []
    while len(out) < n:
        m = listener.get_message(timeout=2)
        assert m is not None, out
        out.append((m["channel"], m["data"]))
    return out


def test_feed_keys_and_channels(pubsub, raw_redis):
    listener = subscribed(raw_redis, "newfeed", "conffeed", "delfeed",
                          "feed.publish:w", "feed.edit:w", "feed.retract:w")
    feed = pubsub.feed("w", {"max_length": 10})
    before_ms = time.time() * 1000
    feed.publish("payload one", id="a")
    feed.publish("payload two", id="a")
    feed.retract("a")
    feed.publish("p", id="b")
    pubsub.delete_feed("w")
    assert messages(listener, 7) == [
        ("newfeed", f"w\x00{pubsub.instance}"),
        ("conffeed", f"w\x00{pubsub.instance}"),
        ("feed.publish:w", "a\x00payload one"),
        ("feed.edit:w", "a\x00payload two"),
        ("feed.retract:w", "a"),
        ("feed.publish:w", "b\x00p"),
        ("delfeed", f"w\x00{pubsub.instance}"),
    ]
    listener.close()
    assert raw_redis.smembers("feeds") == set()
    feed = pubsub.feed("w2", {"max_length": 10})
    feed.publish("x", id="i")
    assert raw_redis.smembers("feeds") == {"w2"}
    assert raw_redis.type("feed.config:w2") == "hash"
    assert raw_redis.hgetall("feed.config:w2") == {"type": "feed", "max_length": "10"}
    assert raw_redis.type("feed.ids:w2") == "zset"
    score = raw_redis.zscore("feed.ids:w2", "i")
    assert before_ms - 60_000 < score < time.time() * 1000 + 60_000  # milliseconds, not seconds
    assert raw_redis.hgetall("feed.items:w2") == {"i": "x"}
    assert raw_redis.get("feed.publishes:w2") == "1"


def test_feed_written_the_thoonk_py_way_reads_back(pubsub, raw_redis):
    # thoonk.py 1.0: SADD feeds, HSET config fields, then publish: ZADD ids (seconds!), INCR, HSET
    raw_redis.sadd("feeds", "legacy")
    raw_redis.hset("feed.config:legacy", mapping={"type": "feed", "max_length": "3"})
    now = time.time()
    for n, (id, item) in enumerate([("1", "one"), ("2", "two"), ("3", "three")]):
        raw_redis.zadd("feed.ids:legacy", {id: now + n})
        raw_redis.incr("feed.publishes:legacy")
        raw_redis.hset("feed.items:legacy", id, item)
    assert pubsub.feed_exists("legacy")
    feed = pubsub.feed("legacy")
    assert feed.get_ids() == ["1", "2", "3"]
    assert feed.get_all() == {"1": "one", "2": "two", "3": "three"}
    feed.publish("four", id="4")  # our ms scores sort after their second scores; max_length applies
    assert feed.get_ids() == ["2", "3", "4"]
    # what thoonk.py reads back
    assert raw_redis.zrange("feed.ids:legacy", 0, -1) == ["2", "3", "4"]
    assert raw_redis.hget("feed.items:legacy", "4") == "four"
    assert raw_redis.hgetall("feed.items:legacy") == {"2": "two", "3": "three", "4": "four"}


def test_config_without_type_is_a_plain_feed(pubsub, raw_redis):
    raw_redis.sadd("feeds", "untyped")
    raw_redis.hset("feed.config:untyped", "max_length", "0")
    assert pubsub.feed_type("untyped") == "feed"
    pubsub.feed("untyped").publish("x", id="1")
    assert raw_redis.hget("feed.items:untyped", "1") == "x"


def test_sorted_feed_raw_both_ways(pubsub, raw_redis):
    raw_redis.sadd("feeds", "lst")
    raw_redis.hset("feed.config:lst", "type", "sorted_feed")
    for item in ("a", "b"):
        id = raw_redis.incr("feed.idincr:lst")
        raw_redis.rpush("feed.ids:lst", id)
        raw_redis.hset("feed.items:lst", id, item)
    sf = pubsub.sorted_feed("lst")
    assert sf.get_ids() == ["1", "2"]
    assert sf.prepend("c") == "3"
    assert raw_redis.lrange("feed.ids:lst", 0, -1) == ["3", "1", "2"]
    assert raw_redis.type("feed.ids:lst") == "list"


def test_queue_raw_both_ways(pubsub, raw_redis):
    q = pubsub.queue("rq")
    # thoonk.py put: LPUSH id, HSET item, INCR publishes
    raw_redis.lpush("feed.ids:rq", "legacy-id")
    raw_redis.hset("feed.items:rq", "legacy-id", "from thoonk.py")
    q.put("from us")
    assert q.get(timeout=1) == "from thoonk.py"
    # thoonk.py get: BRPOP ids, then HGET + HDEL item
    _, id = raw_redis.brpop("feed.ids:rq", 1)
    assert raw_redis.hget("feed.items:rq", id) == "from us"


def test_job_keys_and_finish_channel(pubsub, raw_redis):
    j = pubsub.job("rj")
    listener = subscribed(raw_redis, "job.finish:rj")
    id = j.put("query")
    assert raw_redis.lrange("feed.ids:rj", 0, -1) == [id]
    assert raw_redis.hget("feed.items:rj", id) == "query"
    assert raw_redis.type("feed.published:rj") == "zset"
    j.get()
    assert raw_redis.zrank("feed.claimed:rj", id) == 0
    j.cancel(id)
    assert raw_redis.hget("feed.cancelled:rj", id) == "1"
    j.get()
    j.stall(id)
    assert raw_redis.smembers("feed.stalled:rj") == {id}
    assert raw_redis.hget("feed.cancelled:rj", id) is None
    j.retry(id)
    j.get()
    j.finish(id, "the result", result=True)
    assert messages(listener, 1) == [("job.finish:rj", f"{id}\x00the result")]
    assert raw_redis.get("feed.finishes:rj") == "1"
    assert raw_redis.lrange(f"feed.jobfinished:rj\x00{id}", 0, -1) == ["query\x00the result"]
    listener.close()


def test_job_written_raw_is_claimed_through_api(pubsub, raw_redis):
    pubsub.job("legacyjobs")
    raw_redis.lpush("feed.ids:legacyjobs", "jid")
    raw_redis.hset("feed.items:legacyjobs", "jid", "payload")
    raw_redis.zadd("feed.published:legacyjobs", {"jid": int(time.time() * 1000)})
    j = pubsub.job("legacyjobs")
    assert j.get(timeout=1) == ("jid", "payload", 0)
    j.finish("jid")
    assert raw_redis.hlen("feed.items:legacyjobs") == 0


def test_delete_removes_every_feed_key(pubsub, raw_redis):
    j = pubsub.job("doomed")
    id = j.put("x")
    j.get()
    j.cancel(id)
    j.get()
    j.stall(id)
    pubsub.delete_feed("doomed")
    assert [k for k in raw_redis.keys("*") if "doomed" in k] == []


# --- the peers' own bugs, tolerated when reading (docs/thoonk-keys.md, "What we tolerate") -------


def test_job_claimed_by_thoonk_py_in_seconds_is_not_timed_out_early(pubsub, raw_redis):
    # thoonk.py's Job.get: BRPOP, then ZADD feed.claimed with time.time() -- seconds, not ms
    j = pubsub.job("pyjobs", {"timeout": 60})
    running = j.put("running")
    _, id = raw_redis.brpop("feed.ids:pyjobs", 1)
    assert id == running
    raw_redis.zadd("feed.claimed:pyjobs", {id: time.time()})
    assert j.maintenance() == 0  # claimed a moment ago by a thoonk.py worker: leave it alone
    assert raw_redis.zrange("feed.claimed:pyjobs", 0, -1) == [id]
    assert raw_redis.llen("feed.ids:pyjobs") == 0
    raw_redis.zadd("feed.claimed:pyjobs", {id: time.time() - 120})  # its worker went away 2 min ago
    assert j.maintenance() == 1
    assert raw_redis.zcard("feed.claimed:pyjobs") == 0
    assert j.get(timeout=1) == (id, "running", 1)


def test_feed_listed_without_config_hash_is_a_plain_feed(pubsub, raw_redis):
    # The contract's Create Feed is `SADD feeds NAME` + newfeed, with no config hash at all.
    raw_redis.sadd("feeds", "bare")
    assert pubsub.feed_exists("bare")
    assert pubsub.feed_type("bare") == "feed"
    assert pubsub.get_config("bare") == {"type": "feed"}
    feed = pubsub.feed("bare")
    feed.publish("x", id="1")
    assert feed.get_all() == {"1": "x"}
    assert raw_redis.hgetall("feed.config:bare") == {"type": "feed"}
    raw_redis.sadd("feeds", "bare2")
    with pytest.raises(FeedTypeMismatch):
        pubsub.sorted_feed("bare2")
    assert not raw_redis.exists("feed.config:bare2")  # a refused call writes nothing


def test_config_without_type_reads_as_plain_feed_everywhere(pubsub, raw_redis):
    raw_redis.sadd("feeds", "notype")
    raw_redis.hset("feed.config:notype", mapping={"max_length": "2", "title": "t"})
    assert pubsub.get_config("notype") == {"type": "feed", "max_length": "2", "title": "t"}
    feed = pubsub.feed("notype")
    for i in range(3):
        feed.publish(str(i), id=str(i))
    assert feed.get_ids() == ["1", "2"]  # its max_length is honoured
    pubsub.set_config("notype", {"title": "u"})
    assert raw_redis.hgetall("feed.config:notype") == {"type": "feed", "max_length": "2", "title": "u"}


def test_thoonk_py_items_scored_in_seconds_read_and_trim_as_peers_do(pubsub, raw_redis):
    # thoonk.py 1.0 scores feed items with time.time() (seconds): they sort before every item
    # scored in milliseconds, whenever they were published. We read them and keep ZRANGE order.
    feed = pubsub.feed("mixed", {"max_length": 3})
    feed.publish("ours", id="a")
    raw_redis.zadd("feed.ids:mixed", {"py": time.time()})  # thoonk.py publishing after us
    raw_redis.incr("feed.publishes:mixed")
    raw_redis.hset("feed.items:mixed", "py", "theirs")
    assert feed.get_ids() == ["py", "a"]
    assert feed.get_all() == {"py": "theirs", "a": "ours"}
    assert feed.get_item("py") == "theirs"
    feed.publish("ours 2", id="b")
    feed.publish("ours 3", id="c")  # full: ZRANGE 0 -3 is the seconds-scored item
    assert feed.get_ids() == ["a", "b", "c"]
    feed.publish("edited", id="a")  # an edit moves it past the others, seconds or not
    assert feed.get_ids()[-1] == "a"


def test_sorted_feed_written_by_thoonk_js_feed_edit(pubsub, raw_redis):
    # thoonk.js' Feed.edit is its plain-feed publish: on a sorted feed its ZADD hits the list with
    # WRONGTYPE inside MULTI, while HSET and INCR still apply and it announces feed.publish. An
    # existing id gets its payload replaced in place; a new id leaves an item that no list holds.
    sf = pubsub.sorted_feed("jslist")
    first, second = sf.publish("one"), sf.publish("two")
    for id, item in [(first, "one edited"), ("stray", "not in the list")]:
        with raw_redis.pipeline(transaction=True) as pipe:
            pipe.zadd("feed.ids:jslist", {id: time.time() * 1000})
            pipe.incr("feed.publishes:jslist")
            pipe.hset("feed.items:jslist", id, item)
            results = pipe.execute(raise_on_error=False)
        assert isinstance(results[0], redis.ResponseError) and "WRONGTYPE" in str(results[0])
    assert sf.get_ids() == [first, second]
    assert sf.get_all() == {first: "one edited", second: "two"}
    assert sf.length() == 2
    third = sf.publish("three")  # ids go on from feed.idincr, untouched by the stray item
    assert third == "3" and sf.get_ids() == [first, second, third]
    assert sf.retract("stray") is True  # and the stray item can be cleaned up
    assert not raw_redis.hexists("feed.items:jslist", "stray")
    assert sf.get_ids() == [first, second, third]
