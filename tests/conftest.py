"""Shared fixtures: a real redis-server on a free loopback port for the whole session.

Each test that asks for ``redis_url`` gets an empty database (FLUSHALL before the test).
Tests needing a server of their own (restarts, kills) build an ``EmbeddedRedis`` themselves.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import redis

from thoonk_bridge.thoonk import AsyncThoonk, Thoonk
from thoonk_bridge.thoonk.embedded import EmbeddedRedis


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(port=0, persistent=False).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> str:
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture
def raw_redis(redis_url: str) -> Iterator[redis.Redis]:
    """Plain redis-py (decoded strings) for reading the contract's keys directly."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def pubsub(redis_url: str) -> Iterator[Thoonk]:
    """A sync Thoonk client on the flushed test database."""
    client = Thoonk(url=redis_url)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
async def apubsub(redis_url: str) -> AsyncIterator[AsyncThoonk]:
    """An asyncio Thoonk client on the flushed test database."""
    client = AsyncThoonk(redis_url)
    try:
        yield client
    finally:
        await client.aclose()
