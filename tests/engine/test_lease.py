"""Leases: one holder at a time, takeover after expiry with a higher fencing term."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aioredis
import structlog

from thoonk_bridge.lease import Lease, LeaseKeeper
from thoonk_bridge.testing import running_bridge


async def test_one_holder_at_a_time_and_release(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    a = Lease(client, "route:x", "daemon-a", ttl=5)
    b = Lease(client, "route:x", "daemon-b", ttl=5)
    assert await a.acquire()
    assert a.held() and a.fence == 1
    assert not await b.acquire()
    assert not b.held()
    assert await b.holder() == "daemon-a"
    assert await a.renew()
    await a.release()
    assert not a.held()
    assert await b.acquire()
    assert b.fence == 2  # a new term
    assert not await a.renew()  # a's old term is over
    await client.aclose()


async def test_expired_lease_is_taken_over(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    a = Lease(client, "route:y", "daemon-a", ttl=0.2)
    b = Lease(client, "route:y", "daemon-b", ttl=5)
    assert await a.acquire()
    await asyncio.sleep(0.3)  # a died: no renewal
    assert not a.held()  # by a's own clock it knows it may no longer write
    assert await b.acquire()
    assert not await a.renew()
    assert await b.holder() == "daemon-b"
    await client.aclose()


async def test_same_instance_gets_its_lease_back_after_a_restart(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    first_life = Lease(client, "route:z", "daemon-a", ttl=30)
    assert await first_life.acquire()
    # The process is killed and restarted with the same instance id: no need to wait 30 s.
    second_life = Lease(client, "route:z", "daemon-a", ttl=30)
    assert await second_life.acquire()
    assert second_life.token == first_life.token
    assert not await Lease(client, "route:z", "daemon-b", ttl=30).acquire()
    await client.aclose()


async def test_a_holder_with_another_definition_is_a_conflict(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    a = Lease(client, "route:c", "daemon-a", ttl=5, fingerprint="aaaa")
    same = Lease(client, "route:c", "daemon-b", ttl=5, fingerprint="aaaa")
    other = Lease(client, "route:c", "daemon-c", ttl=5, fingerprint="bbbb")
    assert await a.acquire()
    assert not await same.acquire() and same.conflict() is None  # a standby of the same route
    assert not await other.acquire() and other.conflict() == "daemon-a"
    assert other.rival == ("daemon-a", "aaaa")
    assert await a.renew()
    await a.release()
    assert await client.exists(a.keys.spec) == 0  # released with the lease
    assert await other.acquire() and other.conflict() is None
    await client.aclose()


def sync_client_factory(redis_url: str) -> Any:
    return lambda: redis.Redis.from_url(redis_url, socket_timeout=1)


async def test_keeper_renews_while_the_loop_is_blocked(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    lease = Lease(client, "route:busy", "daemon-a", ttl=0.6, fingerprint="f")
    lost: list[Lease] = []
    keeper = LeaseKeeper(sync_client_factory(redis_url), on_lost=lost.append, stall_limit=30)
    keeper.start()
    try:
        assert await lease.acquire()
        token = lease.token
        keeper.add(lease)
        time.sleep(2.0)  # the event loop is busy for three lease times: nothing here renews
        assert lease.held() and not lost
        assert not await Lease(client, "route:busy", "daemon-b", ttl=5).acquire()
        assert await lease.holder() == "daemon-a" and lease.token == token  # the same term
    finally:
        await asyncio.to_thread(keeper.stop)
        await client.aclose()


async def test_keeper_lets_a_stuck_loops_leases_expire(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    lease = Lease(client, "route:stuck", "daemon-a", ttl=0.6)
    stalls: list[float] = []
    keeper = LeaseKeeper(sync_client_factory(redis_url), on_lost=lambda _: None, stall_limit=0.3,
                         on_stall=stalls.append)
    keeper.start()
    try:
        assert await lease.acquire()
        keeper.add(lease)
        time.sleep(1.5)  # stuck past the stall limit and the lease time
        assert stalls and not lease.held()
        assert await Lease(client, "route:stuck", "daemon-b", ttl=5).acquire()  # taken over
    finally:
        await asyncio.to_thread(keeper.stop)
        await client.aclose()


async def test_a_daemon_whose_loop_is_busy_keeps_its_route(redis_url: str, tmp_path: Path) -> None:
    config = {"lease_seconds": 1, "routes": [{"name": "busy", "from": "thoonk:busy-in", "to": "thoonk:busy-out"}]}
    async with running_bridge(config, redis_url=redis_url, tmp_path=tmp_path) as daemon:
        lease = daemon.leases["busy"]
        token = lease.token
        assert token is not None
        with structlog.testing.capture_logs() as logs:
            time.sleep(3.0)  # e.g. a big document parsed on the loop: three lease times
            await asyncio.sleep(1.0)  # the owner task and the route run again
        assert "busy" in daemon.routes and lease.token == token  # never lost, same term
        assert await lease.holder() == daemon.instance_id
        assert not [line for line in logs if "lease" in line["event"]], logs
        assert any(line["event"] == "event loop lagged" and line["seconds"] > 2 for line in logs)
        lag = daemon.metrics.registry.get_sample_value("thoonk_bridge_event_loop_lag_seconds")
        assert lag is not None and lag > 2
