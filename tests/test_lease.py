"""Leases: one holder at a time, takeover after expiry with a higher fencing term."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from thoonk_bridge.lease import Lease


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
