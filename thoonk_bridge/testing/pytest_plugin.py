"""pytest fixtures for testing the bridge and its plugins against a real Redis.

Enable them with one line in your ``conftest.py`` (deliberately not a ``pytest11`` entry point, which
would load them into every pytest run on the machine)::

    pytest_plugins = ["thoonk_bridge.testing.pytest_plugin"]

Fixtures:

- ``redis_server`` (session): a real ``redis-server`` on a free loopback port
  (:class:`~thoonk_bridge.thoonk.embedded.EmbeddedRedis`, killed with the test run). It needs a
  ``redis-server`` binary on PATH, or ``pip install 'thoonk-bridge[embedded]'``.
- ``redis_url``: the URL of that server, emptied (``FLUSHALL``) before each test. A project may
  override it (this repository's ``tests/conftest.py`` points it to a Redis Cluster too).
- ``thoonk``: an :class:`~thoonk_bridge.thoonk.AsyncThoonk` client on ``redis_url``.
- ``bridge``: :func:`~thoonk_bridge.testing.running_bridge` with ``redis_url`` and ``tmp_path``
  filled in: ``async with bridge({"routes": [...]}, plugins={"mine": MyPlugin}) as daemon: ...``.
- ``plugin_harness``: :func:`~thoonk_bridge.testing.plugin_context` with ``redis_url`` and
  ``tmp_path`` filled in: ``async with plugin_harness(MyPlugin, {"option": 1}) as harness: ...``.

The async fixture and tests need pytest-asyncio (in ``asyncio_mode = "auto"``, or mark the tests).
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import redis

from thoonk_bridge.testing.harness import PluginHarness, plugin_context, running_bridge
from thoonk_bridge.thoonk import AsyncThoonk
from thoonk_bridge.thoonk.embedded import EmbeddedRedis

__all__ = ["BridgeFactory", "HarnessFactory", "bridge", "plugin_harness", "redis_server", "redis_url", "thoonk"]

BridgeFactory = Callable[..., AbstractAsyncContextManager[Any]]
HarnessFactory = Callable[..., AbstractAsyncContextManager[PluginHarness]]


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    """A redis-server on a free loopback port, shared by the whole session."""
    server = EmbeddedRedis(port=0, persistent=False).start()
    try:
        yield server
    finally:
        server.stop()


def flush(url: str) -> None:
    """Empty every database of the server at ``url``."""
    client = redis.Redis.from_url(url)
    try:
        client.flushall()
    finally:
        client.close()


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> str:
    """The session server's URL, empty at the start of the test."""
    flush(redis_server.url)
    return redis_server.url


@pytest_asyncio.fixture
async def thoonk(redis_url: str) -> AsyncIterator[AsyncThoonk]:
    """An asyncio Thoonk client on ``redis_url``."""
    client = AsyncThoonk(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def bridge(redis_url: str, tmp_path: Path) -> BridgeFactory:
    """``bridge(config, **options)``: :func:`running_bridge` on ``redis_url`` under ``tmp_path``."""
    return functools.partial(running_bridge, redis_url=redis_url, tmp_path=tmp_path)


@pytest.fixture
def plugin_harness(redis_url: str, tmp_path: Path) -> HarnessFactory:
    """``plugin_harness(PluginClass, settings, **options)``: :func:`plugin_context` on ``redis_url``."""
    return functools.partial(plugin_context, redis_url=redis_url, tmp_path=tmp_path)
