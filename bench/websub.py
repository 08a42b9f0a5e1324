"""Benchmark of WebSub distribution: one Thoonk publish fanned out to N verified subscribers.

One run, one private redis-server (EmbeddedRedis, no persistence), one receiver process (aiohttp,
its own process, answering verifications and counting deliveries with their arrival time):

    python bench/websub.py                      # 1,000 subscribers, 5 publishes; about 20-40 s
    python bench/websub.py --subscribers 200 --rounds 2   # quicker, noisier

Measured, all against the same receiver:

- **bridge**: a whole daemon (config loader, router, websub plugin) with a route
  ``thoonk:news -> websub:news``; each round publishes one item to the Thoonk feed and waits until
  every subscriber got it: deliveries/s (N / time from publish to the last arrival) and
  publish-to-delivery latency p50/p99 over all deliveries. Signing on (every subscriber has a
  secret, sha256), every delivery a Thoonk job tracked in Redis (outcome recorded per subscription).
- **naive baseline**: sequential POSTs of the same body, a fresh connection each.
- **ceiling**: a bare pooled aiohttp client posting the same bodies with the same concurrency as
  the plugin (delivery_workers x delivery_batch), no signing, no Redis.

Prints the figures and the ratios the issue sets goals for (>= 3x baseline, >= 60 % of ceiling).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from thoonk_bridge.thoonk.embedded import EmbeddedRedis, free_tcp_port

PAYLOAD = json.dumps({"title": "benchmark item", "content": "x" * 400, "link": "https://example.org/1"})


# ------------------------------------------------------------------------ receiver (own process)


def receiver_main(port: int, ready: multiprocessing.synchronize.Event) -> None:  # type: ignore[name-defined]
    from aiohttp import web

    arrivals: list[float] = []

    async def verify(request: web.Request) -> web.Response:
        return web.Response(text=request.query.get("hub.challenge", ""))

    async def deliver(request: web.Request) -> web.Response:
        await request.read()
        arrivals.append(time.time())
        return web.Response(status=204)

    async def stats(request: web.Request) -> web.Response:
        return web.json_response({"count": len(arrivals)})

    async def take(request: web.Request) -> web.Response:
        out = list(arrivals)
        arrivals.clear()
        return web.json_response(out)

    app = web.Application()
    app.router.add_get("/cb/{i}", verify)
    app.router.add_post("/cb/{i}", deliver)
    app.router.add_get("/stats", stats)
    app.router.add_post("/take", take)

    async def run() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, backlog=4096).start()
        ready.set()
        await asyncio.Event().wait()

    _event_loop()
    asyncio.run(run())


def _event_loop() -> str:
    """The daemon's choice of event loop (uvloop when installed, unless
    THOONK_BRIDGE_EVENT_LOOP=asyncio), for the bridge and the receiver alike."""
    try:
        from thoonk_bridge.cli import use_event_loop
    except ImportError:
        return "asyncio"
    return use_event_loop()


async def take(rx: str) -> list[float]:
    async with aiohttp.ClientSession() as s, s.post(rx + "/take") as r:
        return await r.json()


async def count(rx: str) -> int:
    async with aiohttp.ClientSession() as s, s.get(rx + "/stats") as r:
        return (await r.json())["count"]


async def wait_count(rx: str, n: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while await count(rx) < n:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {await count(rx)} of {n} deliveries arrived in {timeout}s")
        await asyncio.sleep(0.01)


# ------------------------------------------------------------------------ references


async def naive_baseline(rx: str, n: int, body: bytes) -> float:
    await take(rx)
    start = time.perf_counter()
    for i in range(n):
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
            async with s.post(f"{rx}/cb/{i}", data=body, headers={"Content-Type": "application/json"}) as r:
                await r.read()
    elapsed = time.perf_counter() - start
    assert len(await take(rx)) == n
    return n / elapsed


async def ceiling(rx: str, n: int, body: bytes, concurrency: int) -> float:
    await take(rx)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as s:
        sem = asyncio.Semaphore(concurrency)

        async def one(i: int) -> None:
            async with sem, s.post(f"{rx}/cb/{i}", data=body, headers={"Content-Type": "application/json"}) as r:
                await r.read()

        # warm the pool (as the plugin's pool is warm after the first round)
        await asyncio.gather(*(one(i) for i in range(min(n, concurrency))))
        await take(rx)
        start = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        elapsed = time.perf_counter() - start
    assert len(await take(rx)) == n
    return n / elapsed


# ------------------------------------------------------------------------ the bridge


async def subscribe(s: aiohttp.ClientSession, base: str, topic: str, rx: str, i: int) -> None:
    form = {"hub.mode": "subscribe", "hub.topic": topic, "hub.callback": f"{rx}/cb/{i}",
            "hub.secret": f"secret-{i:04d}-" + "k" * 20}
    async with s.post(base + "/websub/hub", data=form) as r:
        assert r.status == 202, await r.text()


async def bridge(redis_url: str, rx: str, n: int, rounds: int, tmp: Path, prof: object = None) -> dict[str, float]:
    from thoonk_bridge.testing import running_bridge

    # every callback is on one host and every request comes from one client: the hub's limits for
    # anonymous requests (per client, per callback host, pending verifications) are opened up
    websub = {"outbound": {"allow_loopback": True}, "subscribe_rate": 10**6, "per_host_concurrency": 1000,
              "subscribe_rate_per_client": 10**6, "subscribe_rate_per_host": 10**6,
              "max_pending_verifications": 10**6, "verify_per_host": 50, "rate_limit_max_keys": 10**6}
    config = {
        "log_level": "warning",
        "plugins": {"websub": websub},
        "routes": [{"name": "bench", "from": "thoonk:news", "to": "websub:news"}],
    }
    async with running_bridge(config, redis_url=redis_url, tmp_path=tmp) as daemon:
        base = daemon.base_url.rstrip("/")
        plugin = daemon.plugins["websub"]
        concurrency = plugin.settings.delivery_workers * plugin.settings.delivery_batch
        feed = await daemon.thoonk.feed("news")
        await feed.publish(PAYLOAD, id="warm-0")  # the raw topic exists once it has an item
        topic = base + "/topics/news"
        async with aiohttp.ClientSession() as s:  # the route has applied the first item: the topic exists
            while True:
                async with s.get(topic) as r:
                    if r.status == 200:
                        break
                await asyncio.sleep(0.02)
        t0 = time.perf_counter()
        from thoonk_bridge.plugins.websub.store import sub_id

        topic_key = plugin.topics.url("/topics/news")
        missing = list(range(n))
        for attempt in range(5):  # a verification that timed out on a loaded machine is asked again
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=50)) as s:
                await asyncio.gather(*(subscribe(s, base, topic, rx, i) for i in missing))
            deadline, active = time.monotonic() + 30, -1
            while (now_active := await plugin.store.count_active(topic_key)) < n and time.monotonic() < deadline:
                if await plugin.queues["websub.verify"].length() == 0:
                    break
                if now_active > active:  # still verifying: wait as long as it progresses
                    deadline, active = time.monotonic() + 30, now_active
                await asyncio.sleep(0.05)
            subs = await plugin.store.get_many([sub_id(topic_key, f"{rx}/cb/{i}") for i in range(n)])
            missing = [i for i in range(n) if sub_id(topic_key, f"{rx}/cb/{i}") not in subs]
            if not missing:
                break
            print(f"  {len(missing)} verifications failed (attempt {attempt + 1}); asking again", flush=True)
        else:
            raise SystemExit(f"{len(missing)} subscriptions could not be verified")
        subscribe_s = time.perf_counter() - t0
        # one warm-up round (connections, caches), not counted
        await take(rx)
        await feed.publish(PAYLOAD.replace("benchmark", "warm-up"), id="warm-1")
        await wait_count(rx, n)
        await take(rx)
        rates, latencies, naives, ceilings = [], [], [], []
        body = PAYLOAD.encode()
        for r in range(rounds):  # the three measurements interleaved, so that load from elsewhere hits all alike
            if prof is not None:
                prof.enable()  # type: ignore[attr-defined]
            t_pub = time.time()
            await feed.publish(PAYLOAD.replace("benchmark", f"round {r}"), id=f"item-{r}")
            await wait_count(rx, n)
            arrivals = await take(rx)
            if prof is not None:
                prof.disable()  # type: ignore[attr-defined]
            assert len(arrivals) == n, len(arrivals)
            rates.append(n / (max(arrivals) - t_pub))
            latencies += [a - t_pub for a in arrivals]
            ceilings.append(await ceiling(rx, n, body, concurrency))
            naives.append(await naive_baseline(rx, n, body))
            print(f"  round {r + 1}: bridge {rates[-1]:6.0f}/s  ceiling {ceilings[-1]:6.0f}/s  "
                  f"baseline {naives[-1]:6.0f}/s", flush=True)
        latencies.sort()
        tracked = await plugin.store.all_subscriptions()
        return {
            "rate": statistics.median(rates),
            "naive": statistics.median(naives),
            "ceiling": statistics.median(ceilings),
            "first": latencies[0],
            "p50": latencies[len(latencies) // 2],
            "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
            "subscribe_s": subscribe_s,
            "concurrency": concurrency,
            "tracked": sum(int(h.get("delivered") or 0) for h in tracked),
        }


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subscribers", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--profile", metavar="FILE", help="cProfile the bridge phase into FILE")
    args = ap.parse_args()
    n = args.subscribers
    tmp = Path(tempfile.mkdtemp(prefix="bench-websub-"))
    server = EmbeddedRedis(tmp / "redis", port=0, persistent=False).start()
    port = free_tcp_port()
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    proc = ctx.Process(target=receiver_main, args=(port, ready), daemon=True)
    proc.start()
    try:
        if not ready.wait(20):
            raise SystemExit("receiver did not start")
        rx = f"http://127.0.0.1:{port}"
        print(f"machine: {platform.machine()} {os.cpu_count()} CPUs, Python {platform.python_version()}, "
              f"{platform.system()} {platform.release()}, event loop: {LOOP}")
        print(f"subscribers: {n}, rounds: {args.rounds}, body: {len(PAYLOAD)} bytes, receiver: own process; "
              "figures are medians over the rounds")
        prof = None
        if args.profile:
            import cProfile

            prof = cProfile.Profile()
        b = await bridge(server.url, rx, n, args.rounds, tmp / "daemon", prof)
        if prof is not None:
            prof.dump_stats(args.profile)
        conc = int(b["concurrency"])
        naive, ceil = b["naive"], b["ceiling"]
        print(f"subscribe+verify {n} callbacks:       {b['subscribe_s']:.2f} s")
        print(f"bridge (signed, jobs in Redis):        {b['rate']:8.0f} deliveries/s   "
              f"latency first {b['first'] * 1000:.0f} ms, p50 {b['p50'] * 1000:.0f} ms, p99 {b['p99'] * 1000:.0f} ms")
        print(f"deliveries recorded in Redis:          {b['tracked']:8.0f} (warm-up round included)")
        print(f"naive baseline (sequential, new conn): {naive:8.0f} deliveries/s")
        print(f"ceiling (pooled client, {conc} in flight): {ceil:8.0f} deliveries/s")
        print(f"ratio bridge / baseline: {b['rate'] / naive:.2f}x   (goal >= 3x)")
        print(f"ratio bridge / ceiling:  {b['rate'] / ceil * 100:.0f} %   (goal >= 60 %)")
    finally:
        proc.kill()
        proc.join()
        server.stop()


if __name__ == "__main__":
    LOOP = _event_loop()
    asyncio.run(main())
