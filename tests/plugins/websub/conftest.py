"""Fixtures of the websub tests: a started websub plugin on loopback (``node``) and a subscriber's
callback server (``sub``). A module that needs other settings overrides ``node``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.plugins.websub.support import Node, Subscriber, start_node


@pytest.fixture
async def node(redis_url: str) -> AsyncIterator[Node]:
    n = await start_node(redis_url)
    yield n
    await n.stop()


@pytest.fixture
async def sub() -> AsyncIterator[Subscriber]:
    s = await Subscriber().start()
    yield s
    await s.close()
