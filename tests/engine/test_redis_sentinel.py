"""Redis Sentinel: the daemon reaches Redis through ``redis+sentinel://`` and carries on after a failover.

One primary, one replica (both ``appendonly yes``) and three sentinels on loopback. A daemon runs a
thoonk -> thoonk route while a publisher writes through its own Sentinel-aware client; the primary
is killed with SIGKILL mid-stream. Redis replicates asynchronously, so a write the dead primary
acknowledged may not have reached the replica: an item counts as *acknowledged* when its publish
returned and ``WAIT 1`` confirmed a replica has it. Every acknowledged item must be in both feeds at
the end (the daemon's route reconnects, reconciles and goes on, without a restart).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import redis

from tests.support.redis_topologies import SentinelGroup
from thoonk_bridge.redis_client import async_client, sync_client
from thoonk_bridge.testing import running_bridge, wait_until
from thoonk_bridge.thoonk import AsyncThoonk

BEFORE, AFTER = 150, 150  # acknowledged items to see before the kill, and after the failover


async def test_daemon_carries_on_after_sentinel_failover(
    sentinel_group: SentinelGroup,
    tmp_path: Path,
) -> None:
    url = sentinel_group.url
    config = {"routes": [{"name": "copy", "from": "thoonk:in", "to": "thoonk:out"}]}
    acked: list[str] = []
    failed = 0
    stop = asyncio.Event()
    failed_over = asyncio.Event()
    acked_after: list[str] = []

    # One connection: the WAIT after a publish is about that very publish.
    publisher = AsyncThoonk(redis=async_client(url, max_connections=1, socket_timeout=2))

    async def publish() -> None:
        nonlocal failed
        i = 0
        while not stop.is_set():
            item_id = f"i{i}"
            i += 1
            try:
                feed = await publisher.feed("in")
                await feed.publish(f"item {item_id}", id=item_id)
                replicas = await publisher.redis.execute_command("WAIT", 1, 1000)
            except (ConnectionError, redis.RedisError, OSError):
                failed += 1
                await asyncio.sleep(0.05)
                continue
            if replicas >= 1:
                acked.append(item_id)
                if failed_over.is_set():
                    acked_after.append(item_id)
            await asyncio.sleep(0.002)

    async with running_bridge(config, redis_url=url, tmp_path=tmp_path, plugins={}) as daemon:
        await wait_until(lambda: "copy" in daemon.routes and daemon.routes["copy"].ready, 30, message="route ready")
        task = asyncio.create_task(publish())
        try:
            await wait_until(lambda: len(acked) >= BEFORE, 60, message="items before the kill")
            old_port = sentinel_group.primary.port
            sentinel_group.primary.kill()  # SIGKILL, mid-stream
            await asyncio.to_thread(sentinel_group.wait_failover, old_port, 60)
            failed_over.set()
            # The old primary comes back (its AOF on disk) and the sentinels make it a replica of the
            # new master, so WAIT 1 can confirm writes again.
            await asyncio.to_thread(sentinel_group.primary.start)
            await wait_until(lambda: len(acked_after) >= AFTER, 90, message="items after the failover")
        finally:
            stop.set()
            await task
            await publisher.aclose()

        check = sync_client(url, decode_responses=True)
        try:
            def holds_all() -> bool:
                source = set(check.zrange("feed.ids:in", 0, -1))
                sink = set(check.zrange("feed.ids:out", 0, -1))
                return set(acked) <= source and source <= sink
            await wait_until(lambda: asyncio.to_thread(holds_all), 60, message="every acknowledged item in both feeds")
            source = check.hgetall("feed.items:in")
            sink = check.hgetall("feed.items:out")
        finally:
            check.close()
        route = daemon.routes["copy"]
        print(f"acknowledged {len(acked)} ({len(acked_after)} after the failover), failed publishes {failed}, "
              f"route reconciles {route.status.reconciles}")
        assert route.ready  # the same daemon, never restarted ...
        assert route.status.reconciles >= 2  # ... whose route reconnected and reconciled again
        missing_in = [i for i in acked if i not in source]
        missing_out = [i for i in acked if i not in sink]
        assert missing_in == [] and missing_out == [], (len(acked), failed)
        assert {i: sink[i] for i in source} == source


def test_sentinel_and_cluster_urls_parse() -> None:
    from thoonk_bridge.redis_client import parse_target

    t = parse_target("redis+sentinel://u:p%40ss@h1:26380,[::1]:26381,h3/mymaster/2"
                     "?sentinel_password=sp&socket_timeout=1.5")
    assert (t.kind, t.service, t.hosts) == ("sentinel", "mymaster", (("h1", 26380), ("::1", 26381), ("h3", 26379)))
    assert t.options == {"username": "u", "password": "p@ss", "db": 2, "socket_timeout": 1.5}
    assert t.sentinel_options == {"password": "sp"} and not t.ssl
    assert "p@ss" not in t.describe()
    c = parse_target("rediss+cluster://:secret@n1:7000,n2:7001")
    assert (c.kind, c.hosts, c.ssl) == ("cluster", (("n1", 7000), ("n2", 7001)), True)
    assert c.options == {"password": "secret"}
    assert parse_target("redis://localhost:6379/0").kind == "server"
    for bad in ("redis+sentinel://h1:1", "redis+sentinel://h1:1/a/b/c", "redis+cluster://h:1/3", "redis+cluster://h:x"):
        try:
            parse_target(bad)
        except ValueError:
            continue
        raise AssertionError(f"accepted {bad}")
