"""The conformance suite over the thoonk plugin (Thoonk feeds), on a single server and a Cluster."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from thoonk_bridge.plugin import Endpoint
from thoonk_bridge.plugins.thoonk import plugin as ThoonkPlugin
from thoonk_bridge.plugins.thoonk.settings import ThoonkSinkOptions, ThoonkSourceOptions
from thoonk_bridge.testing.conformance import SinkConformance, SinkTarget, SourceConformance, SourceTarget
from thoonk_bridge.testing.pytest_plugin import HarnessFactory
from thoonk_bridge.thoonk import AsyncThoonk

pytestmark = pytest.mark.redis_topologies("single", "cluster")
FEED = "{news}"  # a hash tag: the feed's keys in one slot on a Cluster


class TestThoonkSink(SinkConformance):
    @pytest.fixture
    async def sink_target(self, plugin_harness: HarnessFactory, thoonk: AsyncThoonk) -> AsyncIterator[SinkTarget]:
        async def held() -> dict[str, str]:
            """The feed read by another client."""
            return dict(await (await thoonk.feed(FEED)).get_all())

        async with plugin_harness(ThoonkPlugin) as harness:
            endpoint = Endpoint("thoonk", FEED, ThoonkSinkOptions(address=FEED))
            yield SinkTarget(make=lambda: harness.plugin.sink(endpoint, harness.route()), held=held)


class TestThoonkSource(SourceConformance):
    @pytest.fixture
    async def source_target(self, plugin_harness: HarnessFactory, thoonk: AsyncThoonk
                            ) -> AsyncIterator[SourceTarget]:
        async def put(item_id: str, marker: str) -> None:
            await (await thoonk.feed(FEED)).publish(json.dumps({"title": marker}), id=item_id)

        async def remove(item_id: str) -> None:
            await (await thoonk.feed(FEED)).retract(item_id)

        async with plugin_harness(ThoonkPlugin) as harness:
            endpoint = Endpoint("thoonk", FEED, ThoonkSourceOptions(address=FEED))
            yield SourceTarget(make=lambda: harness.plugin.source(endpoint, harness.route()), put=put, remove=remove)
