"""Jobs: claim, finish, cancel, stall, retry, retract, results, maintenance, many workers."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from tests.support.redis_state import snapshot
from thoonk_bridge.thoonk import AsyncThoonk, Empty, Job, JobNotClaimed, JobNotStalled

# Every test here runs on one server and on a three-master Redis Cluster (conftest.py): feed names
# carry a {hash tag} so each feed's keys share one cluster slot.
pytestmark = pytest.mark.redis_topologies("single", "cluster")


def test_put_get_finish(pubsub, raw_redis):
    job = pubsub.job("{jobs}")
    assert isinstance(job, Job)
    assert job.get_ids() == []
    id = job.put("9.0")
    assert raw_redis.zscore("feed.published:{jobs}", id) > time.time() * 1000 - 60_000  # milliseconds
    got_id, item, cancelled = job.get(timeout=3)
    assert (got_id, item, cancelled) == (id, "9.0", 0)
    assert raw_redis.zscore("feed.claimed:{jobs}", id) is not None
    job.finish(id)
    assert job.get_ids() == []
    assert raw_redis.get("feed.finishes:{jobs}") == "1"
    assert raw_redis.zcard("feed.claimed:{jobs}") == 0
    assert raw_redis.zcard("feed.published:{jobs}") == 0


def test_fifo_and_high_priority(pubsub):
    job = pubsub.job("{order}")
    a, b = job.put("a"), job.put("b")
    c = job.put("c", priority=job.HIGH)
    assert [job.get(timeout=1)[0] for _ in range(3)] == [c, a, b]


def test_put_many_queues_in_order_in_few_round_trips(pubsub, raw_redis):
    job = pubsub.job("{many}")
    ids = job.put_many([f"task {i}" for i in range(450)])  # more than one script call's chunk
    assert len(ids) == len(set(ids)) == 450
    assert int(raw_redis.get("feed.publishes:{many}")) == 450
    got = [job.get(timeout=1) for _ in range(450)]
    assert [(i, item) for i, item, _ in got] == [(ids[n], f"task {n}") for n in range(450)]
    assert job.put_many([]) == []
    with pytest.raises(TypeError):
        job.put_many(["fine", 5])
    assert job.get_ids() == [i for i, _, _ in got]  # nothing of the refused batch was queued


def test_cancel_counts_failures(pubsub):
    j = pubsub.job("{cancel}")
    id = j.put("9.0")
    assert j.get()[2] == 0
    j.cancel(id)
    assert j.get_failure_count(id) == 1
    id2, content, cancelled = j.get()
    assert (id2, content, cancelled) == (id, "9.0", 1)
    j.cancel(id)
    assert j.get()[2] == 2
    assert j.retract(id) is True
    assert j.retract(id) is False
    assert j.get_ids() == []


def test_stall_and_retry(pubsub, raw_redis):
    j = pubsub.job("{stall}")
    id = j.put("x")
    j.get()
    j.stall(id)
    assert raw_redis.smembers("feed.stalled:{stall}") == {id}
    with pytest.raises(Empty):
        j.get(timeout=0.1)
    j.retry(id)
    assert raw_redis.smembers("feed.stalled:{stall}") == set()
    assert j.get(timeout=1)[0] == id
    with pytest.raises(JobNotStalled, match=id):
        j.retry(id)


def test_finish_with_result(pubsub):
    j = pubsub.job("{results}")
    id = j.put("query")
    j.get()
    j.finish(id, "answer", result=True, timeout=5)
    assert j.get_result(id, timeout=1) == ("query", "answer")
    with pytest.raises(Empty, match="results"):
        j.get_result(id, timeout=0.1)


def test_result_key_expires_when_asked(pubsub, raw_redis):
    j = pubsub.job("{ttl}")
    id = j.put("q")
    j.get()
    j.finish(id, "r", result=True, timeout=30)
    assert 0 < raw_redis.ttl(f"feed.jobfinished:{{ttl}}\x00{id}") <= 30


def test_unclaimed_jobs_cannot_be_finished_cancelled_or_stalled(pubsub, redis_url):
    j = pubsub.job("{strict}")
    id = j.put("x")
    before = snapshot(redis_url)
    for action in (j.finish, j.cancel, j.stall):
        with pytest.raises(JobNotClaimed, match="strict"):
            action(id)
    with pytest.raises(JobNotClaimed):
        j.finish("unknown")
    with pytest.raises(ValueError, match="strict"):
        j.finish("")
    with pytest.raises(TypeError, match="strict"):
        j.put(123)
    with pytest.raises(ValueError, match="strict"):
        j.finish(id, "r", result=True, timeout=-3)
    assert snapshot(redis_url) == before


def test_maintenance_puts_back_timed_out_claims(pubsub, raw_redis):
    j = pubsub.job("{slow}", {"timeout": 30})
    id = j.put("work")
    j.get()
    assert j.maintenance() == 0  # claimed just now: not timed out
    raw_redis.zadd("feed.claimed:{slow}", {id: time.time() * 1000 - 31_000})  # claimed 31 s ago
    assert j.maintenance() == 1
    got, item, cancelled = j.get(timeout=1)
    assert (got, item, cancelled) == (id, "work", 1)
    j.finish(id)
    assert j.maintenance() == 0


def test_no_timeout_configured_keeps_claims(pubsub, raw_redis):
    j = pubsub.job("{patient}")
    id = j.put("work")
    j.get()
    raw_redis.zadd("feed.claimed:{patient}", {id: 1})
    assert j.maintenance() == 0
    assert raw_redis.zscore("feed.claimed:{patient}", id) == 1


def test_maintenance_requeues_orphans(pubsub, raw_redis):
    j = pubsub.job("{orphans}")
    id = j.put("lost")
    raw_redis.rpop("feed.ids:{orphans}")  # a worker took it with BRPOP and died before claiming
    with pytest.raises(Empty):
        j.get(timeout=0.1)
    assert j.maintenance() == 1
    assert j.get(timeout=1)[:2] == (id, "lost")


def test_duplicate_id_left_by_maintenance_is_not_claimed_twice(pubsub, raw_redis):
    j = pubsub.job("{race}")
    id = j.put("once")
    raw_redis.rpop("feed.ids:{race}")  # worker A has BRPOPped it ...
    j.maintenance()  # ... maintenance sees an orphan and queues it again ...
    raw_redis.lpush("feed.ids:{race}", id)  # ... (and A's own copy comes back for the test)
    assert j.get(timeout=1)[0] == id  # claimed once
    with pytest.raises(Empty):  # the duplicate is dropped, not claimed a second time
        j.get(timeout=0.2)
    assert raw_redis.llen("feed.ids:{race}") == 0


def test_worker_threads_claim_each_job_once(pubsub):
    j = pubsub.job("{pool}", {"timeout": 60})
    ids = {j.put(str(i)) for i in range(300)}
    claimed: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def worker() -> None:
        while True:
            try:
                id, _, _ = j.get(timeout=1)
            except Empty:
                return
            with lock:
                claimed.append(id)
            j.finish(id)

    def janitor() -> None:  # maintenance running while workers claim: still nothing twice
        while not stop.is_set():
            j.maintenance()
            time.sleep(0.005)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    side = threading.Thread(target=janitor)
    side.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    stop.set()
    side.join(5)
    assert len(claimed) == len(set(claimed)) == 300
    assert set(claimed) == ids
    assert j.length() == 0


async def test_async_workers_claim_each_job_once(redis_url):
    t = AsyncThoonk(redis_url)
    try:
        j = await t.job("{apool}")
        ids = set(await asyncio.gather(*(j.put(f"job{i}") for i in range(300))))
        claimed: list[str] = []

        async def worker() -> None:
            while True:
                try:
                    id, item, _ = await j.get(timeout=0.5)
                except Empty:
                    return
                claimed.append(id)
                await j.finish(id, f"done {item}")

        await asyncio.gather(*(worker() for _ in range(10)))
        assert len(claimed) == len(set(claimed)) == 300
        assert set(claimed) == ids
        assert await j.get_ids() == []
        assert await j.maintenance() == 0
    finally:
        await t.aclose()
