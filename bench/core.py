"""Benchmark of the Thoonk core against the original WATCH/MULTI/EXEC way and a pipelined ceiling.

One run, one private redis-server (EmbeddedRedis on a loopback TCP port, no persistence):

    python bench/core.py            # about 30-40 s
    python bench/core.py --scale 0.3   # quicker, noisier

Prints ops/s for: feed publish through our API (sync; async with 50 tasks on one feed), the
same publish done the original thoonk.py 1.0 way (WATCH/MULTI/EXEC with retry, re-implemented
below; one client, and 50 contending clients), ``redis-benchmark -P 16`` running EVALSHA of our
publish script (the ceiling; skipped when redis-benchmark is not on PATH), ``publish_many``, queue
put+get and job put+get+finish; then the ratios the issue sets goals for.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from thoonk_bridge.thoonk import AsyncThoonk, Thoonk
from thoonk_bridge.thoonk.embedded import EmbeddedRedis
from thoonk_bridge.thoonk.keys import FeedKeys
from thoonk_bridge.thoonk.scripts import SCRIPTS

PAYLOAD = "<entry><title>benchmark item</title><content>" + "x" * 200 + "</content></entry>"


# --- the baseline: thoonk.py 1.0's publish, WATCH/MULTI/EXEC with retry ------------------------


def baseline_publish(client: redis.Redis, feed: str, item: str, id: str | None = None) -> tuple[str, int]:
    """Publish the thoonk.py 1.0 way; returns (id, WATCH conflicts retried)."""
    k = FeedKeys(feed)
    publish_id = id or uuid.uuid4().hex
    retries = 0
    with client.pipeline() as pipe:
        while True:
            try:
                pipe.watch(k.ids)
                max_length = int(pipe.hget(k.config, "max_length") or 0)
                delete_ids = pipe.zrange(k.ids, 0, -max_length) if max_length > 0 else []
                pipe.multi()
                for old in delete_ids:
                    if old != publish_id:
                        pipe.zrem(k.ids, old)
                        pipe.hdel(k.items, old)
                        pipe.publish(f"feed.retract:{feed}", old)
                pipe.zadd(k.ids, {publish_id: time.time() * 1000})
                pipe.incr(k.publishes)
                pipe.hset(k.items, publish_id, item)
                results = pipe.execute()
                break
            except redis.WatchError:
                retries += 1
    channel = "feed.publish" if results[-3] else "feed.edit"
    client.publish(f"{channel}:{feed}", f"{publish_id}\x00{item}")
    return publish_id, retries


def rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def bench_baseline_single(url: str, n: int) -> float:
    client = redis.Redis.from_url(url)
    Thoonk(redis=client).feed("base1")
    start = time.perf_counter()
    for _ in range(n):
        baseline_publish(client, "base1", PAYLOAD)
    elapsed = time.perf_counter() - start
    client.close()
    return rate(n, elapsed)


def bench_baseline_contending(url: str, clients: int, seconds: float) -> tuple[float, int]:
    Thoonk(url=url).feed("base50")
    done = [0] * clients
    conflicts = [0] * clients
    stop = threading.Event()
    barrier = threading.Barrier(clients + 1)

    def worker(i: int) -> None:
        client = redis.Redis.from_url(url)
        barrier.wait()
        while not stop.is_set():
            _, retried = baseline_publish(client, "base50", PAYLOAD)
            done[i] += 1
            conflicts[i] += retried
        client.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    elapsed = time.perf_counter() - start
    for t in threads:
        t.join()
    return rate(sum(done), elapsed), sum(conflicts)


# --- ours ----------------------------------------------------------------------------------------


def bench_sync_publish(url: str, n: int) -> float:
    t = Thoonk(url=url)
    feed = t.feed("sync")
    feed.publish(PAYLOAD)  # scripts loaded, connection open
    start = time.perf_counter()
    for _ in range(n):
        feed.publish(PAYLOAD)
    elapsed = time.perf_counter() - start
    t.close()
    return rate(n, elapsed)


async def _async_publish(url: str, tasks: int, per_task: int) -> float:
    t = AsyncThoonk(url)
    feed = await t.feed("async50")
    await feed.publish(PAYLOAD)

    async def worker() -> None:
        for _ in range(per_task):
            await feed.publish(PAYLOAD)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(tasks)))
    elapsed = time.perf_counter() - start
    await t.aclose()
    return rate(tasks * per_task, elapsed)


def bench_async_publish(url: str, tasks: int, per_task: int) -> float:
    return asyncio.run(_async_publish(url, tasks, per_task))


def bench_publish_many(url: str, n: int, batch: int) -> float:
    t = Thoonk(url=url)
    feed = t.feed("many")
    feed.publish_many([(None, PAYLOAD)] * 10)
    batches = [[(None, PAYLOAD)] * batch for _ in range(max(1, n // batch))]
    start = time.perf_counter()
    for entries in batches:
        feed.publish_many(entries)
    elapsed = time.perf_counter() - start
    t.close()
    return rate(len(batches) * batch, elapsed)


def bench_queue(url: str, n: int) -> float:
    t = Thoonk(url=url)
    q = t.queue("q")
    start = time.perf_counter()
    for _ in range(n):
        q.put(PAYLOAD)
        q.get(timeout=1)
    elapsed = time.perf_counter() - start
    t.close()
    return rate(n, elapsed)


def bench_job(url: str, n: int) -> float:
    t = Thoonk(url=url)
    j = t.job("j")
    start = time.perf_counter()
    for _ in range(n):
        j.put(PAYLOAD)
        id, _, _ = j.get(timeout=1)
        j.finish(id)
    elapsed = time.perf_counter() - start
    t.close()
    return rate(n, elapsed)


def bench_ceiling(server: EmbeddedRedis, requests: int) -> float | None:
    """redis-benchmark -P 16 -c 50 running EVALSHA of our publish script (random ids)."""
    tool = shutil.which("redis-benchmark")
    if tool is None:
        return None
    client = redis.Redis.from_url(server.url)
    Thoonk(redis=client).feed("ceiling")
    script = SCRIPTS["feed_publish"]
    client.script_load(script.source)
    client.close()
    k = FeedKeys("ceiling")
    cmd = [
        tool, "-h", "127.0.0.1", "-p", str(server.port), "-n", str(requests), "-c", "50", "-P", "16",
        "-r", "100000000", "-q",
        "EVALSHA", script.sha, "4", k.config, k.ids, k.items, k.publishes, "ceiling", "id:__rand_int__", PAYLOAD,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300).stdout
    found = re.findall(r"([\d.]+) requests per second", out.replace("\r", "\n"))
    return float(found[-1]) if found else None


def machine() -> str:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    server = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()
    version = next((w for w in server if w.startswith("v=")), "v=?")[2:]
    return (f"{cpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
            f"redis-server {version}, redis-py {redis.__version__}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every operation count (default 1)")
    args = parser.parse_args()

    def n(base: int) -> int:
        return max(10, int(base * args.scale))

    print(f"machine: {machine()}")
    print(f"payload: {len(PAYLOAD)} bytes; one redis-server on 127.0.0.1 (no persistence)\n")
    results: dict[str, float | None] = {}
    with EmbeddedRedis(port=0, persistent=False) as server:
        url = server.url
        rows = [
            ("baseline publish, WATCH/MULTI/EXEC, 1 client", "base1", lambda: bench_baseline_single(url, n(3000))),
            ("baseline publish, WATCH/MULTI/EXEC, 50 contending clients", "base50",
             lambda: bench_baseline_contending(url, 50, max(1.0, 4 * args.scale))),
            ("publish (sync, 1 client, one EVALSHA each)", "sync", lambda: bench_sync_publish(url, n(8000))),
            ("publish (async, 50 tasks on one feed)", "async50", lambda: bench_async_publish(url, 50, n(400))),
            ("publish_many (sync, batches of 1000)", "many", lambda: bench_publish_many(url, n(200_000), 1000)),
            ("ceiling: redis-benchmark -P 16 -c 50 EVALSHA publish", "ceiling",
             lambda: bench_ceiling(server, n(300_000))),
            ("queue put+get (sync, pairs/s)", "queue", lambda: bench_queue(url, n(4000))),
            ("job put+get+finish (sync, jobs/s)", "job", lambda: bench_job(url, n(3000))),
        ]
        for label, key, fn in rows:
            value = fn()
            extra = ""
            if isinstance(value, tuple):
                value, conflicts = value
                extra = f"   ({conflicts} WATCH conflicts retried)"
            results[key] = value
            shown = "n/a (redis-benchmark not on PATH)" if value is None else f"{value:12,.0f} ops/s"
            print(f"  {label:<62} {shown}{extra}", flush=True)

    def ratio(a: str, b: str) -> float | None:
        x, y = results.get(a), results.get(b)
        return x / y if x and y else None

    print("\nratios (goal):")
    for label, value, goal, fmt in [
        ("sync publish / baseline 1 client", ratio("sync", "base1"), 3.0, "x"),
        ("async 50 tasks / baseline 50 contending clients", ratio("async50", "base50"), 50.0, "x"),
        ("publish_many / redis-benchmark ceiling", ratio("many", "ceiling"), 0.40, "%"),
        ("async 50 tasks / sync 1 client", ratio("async50", "sync"), None, "x"),
    ]:
        if value is None:
            print(f"  {label:<52} n/a")
            continue
        shown = f"{value * 100:7.1f} %" if fmt == "%" else f"{value:7.1f} x"
        verdict = "" if goal is None else ("   ok" if value >= goal else "   BELOW GOAL") + (
            f" (goal >= {goal * 100:.0f} %)" if fmt == "%" else f" (goal >= {goal:.0f} x)")
        print(f"  {label:<52} {shown}{verdict}")


if __name__ == "__main__":
    main()
