"""Shared fixtures: those of the pytest plugin third-party plugins use (thoonk_bridge.testing.pytest_plugin:
a real redis-server on a free loopback port for the whole session, ``redis_url``, ``thoonk``, ``bridge``,
``plugin_harness``), and this repository's extras.

Each test that asks for ``redis_url`` gets an empty database (FLUSHALL before the test).
Tests needing a server of their own (restarts, kills) build an ``EmbeddedRedis`` themselves.

A module marked ``pytestmark = pytest.mark.redis_topologies("single", "cluster")`` runs each of its
tests that uses ``redis_url`` (or ``pubsub``, ``apubsub``, ``raw_redis``) once per deployment: on the
single server, and on a three-master Redis Cluster started once per session (redis_topologies.py),
where ``redis_url`` is a ``redis+cluster://`` URL and every node is flushed before the test.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import redis
from hypothesis import settings

from thoonk_bridge.redis_client import sync_client
from thoonk_bridge.thoonk import AsyncThoonk, Thoonk
from thoonk_bridge.thoonk.embedded import EmbeddedRedis

# Fixtures of the servers the tests run against, shared with every test module one way: as plugins.
pytest_plugins = [
    "thoonk_bridge.testing.pytest_plugin",
    "tests.support.redis_topologies",
    "tests.support.prosody_server",
    "tests.support.ejabberd_server",
]


# The property tests draw the same examples on every run (a seed per test), so a run's outcome never
# depends on luck: a flaky test blocks every landing. THOONK_BRIDGE_FUZZ=random explores new examples.
settings.register_profile("repeatable", derandomize=True, database=None)
settings.register_profile("random", database=None)
settings.load_profile("random" if os.environ.get("THOONK_BRIDGE_FUZZ") == "random" else "repeatable")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "redis_topologies(*names): run the module's Redis tests on these deployments (single, cluster)"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker("redis_topologies")
    if marker is not None and "redis_url" in metafunc.fixturenames:
        metafunc.parametrize("redis_topology", marker.args, indirect=True)


@pytest.fixture
def redis_topology(request: pytest.FixtureRequest) -> str:
    """``single`` (default) or ``cluster``: where ``redis_url`` points."""
    return getattr(request, "param", "single")


@pytest.fixture
def redis_url(request: pytest.FixtureRequest, redis_topology: str) -> str:
    """The plugin's ``redis_url`` (its session server, flushed), or the session's Redis Cluster."""
    if redis_topology == "cluster":
        cluster = request.getfixturevalue("redis_cluster")
        cluster.flush()
        return cluster.url
    redis_server: EmbeddedRedis = request.getfixturevalue("redis_server")
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture
def raw_redis(redis_url: str) -> Iterator[redis.Redis | redis.RedisCluster]:
    """Plain redis-py (decoded strings) for reading the contract's keys directly."""
    client = sync_client(redis_url, decode_responses=True)
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
def apubsub(thoonk: AsyncThoonk) -> AsyncThoonk:
    """An asyncio Thoonk client on the flushed test database: the pytest plugin's ``thoonk``."""
    return thoonk
