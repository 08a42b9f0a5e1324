"""Queues: FIFO, priority, blocking get with timeout, many producers and consumers."""

from __future__ import annotations

import asyncio
import threading

import pytest

from thoonk_bridge.thoonk import HIGH, AsyncThoonk, Empty, Queue

# Every test here runs on one server and on a three-master Redis Cluster (conftest.py): feed names
# carry a {hash tag} so each feed's keys share one cluster slot.
pytestmark = pytest.mark.redis_topologies("single", "cluster")


def test_fifo_and_priority(pubsub, raw_redis):
    q = pubsub.queue("{work}")
    assert isinstance(q, Queue)
    for v in ("10", "20", "30", "40"):
        q.put(v)
    urgent = q.put("now", priority=HIGH)
    assert q.length() == 5
    assert q.get_ids()[0] == urgent
    assert raw_redis.lrange("feed.ids:{work}", -1, -1) == [urgent]  # RPUSH: taken next by RPOP/BRPOP
    assert [q.get(timeout=1) for _ in range(5)] == ["now", "10", "20", "30", "40"]
    assert raw_redis.hlen("feed.items:{work}") == 0
    assert raw_redis.get("feed.publishes:{work}") == "5"


def test_get_times_out_with_empty(pubsub):
    q = pubsub.queue("{idle}")
    with pytest.raises(Empty, match="idle"):
        q.get(timeout=0.2)


def test_blocking_get_wakes_on_put(pubsub):
    q = pubsub.queue("{wake}")
    got = []
    worker = threading.Thread(target=lambda: got.append(q.get(timeout=10)))
    worker.start()
    q.put("hello")
    worker.join(10)
    assert got == ["hello"]


def test_raw_orphan_id_without_item_is_skipped(pubsub, raw_redis):
    q = pubsub.queue("{orph}")
    raw_redis.lpush("feed.ids:{orph}", "ghost")  # an id whose item is gone
    q.put("real")
    assert q.get(timeout=1) == "real"
    assert raw_redis.llen("feed.ids:{orph}") == 0


def test_bad_input(pubsub):
    q = pubsub.queue("{strict}")
    with pytest.raises(TypeError, match="strict"):
        q.put(None)
    with pytest.raises(ValueError, match="strict"):
        q.put("x", priority=7)
    with pytest.raises(ValueError, match="strict"):
        q.get(timeout=-1)
    assert q.length() == 0


def test_threads_nothing_lost_or_taken_twice(pubsub):
    q = pubsub.queue("{busy}")
    n_producers, per_producer, n_consumers = 4, 150, 4
    total = n_producers * per_producer
    got: list[str] = []
    lock = threading.Lock()

    def consume() -> None:
        while True:
            try:
                value = q.get(timeout=1.5)
            except Empty:
                return
            with lock:
                got.append(value)

    def produce(p: int) -> None:
        for i in range(per_producer):
            q.put(f"{p}-{i}")

    threads = [threading.Thread(target=consume) for _ in range(n_consumers)]
    threads += [threading.Thread(target=produce, args=(p,)) for p in range(n_producers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(got) == total
    assert sorted(got) == sorted(f"{p}-{i}" for p in range(n_producers) for i in range(per_producer))


async def test_async_tasks_nothing_lost_or_taken_twice(redis_url):
    t = AsyncThoonk(redis_url)
    try:
        q = await t.queue("{abusy}")
        got: list[str] = []

        async def consume() -> None:
            while True:
                try:
                    got.append(await q.get(timeout=1))
                except Empty:
                    return

        consumers = [asyncio.create_task(consume()) for _ in range(8)]
        await asyncio.gather(*(q.put(str(i)) for i in range(400)))
        await asyncio.gather(*consumers)
        assert sorted(got, key=int) == [str(i) for i in range(400)]
    finally:
        await t.aclose()


async def test_async_fifo(redis_url):
    t = AsyncThoonk(redis_url)
    try:
        q = await t.queue("{afifo}")
        for i in range(5):
            await q.put(str(i))
        assert [await q.get() for _ in range(5)] == ["0", "1", "2", "3", "4"]
        with pytest.raises(Empty):
            await q.get(timeout=0.1)
    finally:
        await t.aclose()
