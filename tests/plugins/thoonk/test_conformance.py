"""The conformance suite over the ``thoonk`` endpoint kind (Thoonk feeds), on a single server and a Cluster."""

from __future__ import annotations

import json

import pytest

from thoonk_bridge.testing.conformance import SinkConformance, SinkTarget, SourceConformance, SourceTarget
from thoonk_bridge.thoonk import AsyncThoonk

try:  # the thoonk endpoint kind as a plugin like the others (plugins/thoonk)
    from thoonk_bridge.plugins.thoonk.sink import ThoonkSink  # type: ignore[import-not-found,unused-ignore]
    from thoonk_bridge.plugins.thoonk.source import ThoonkSource  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # before it moved out of the engine
    from thoonk_bridge.endpoints import ThoonkSink, ThoonkSource  # type: ignore[assignment,no-redef,unused-ignore]

pytestmark = pytest.mark.redis_topologies("single", "cluster")
FEED = "{news}"  # a hash tag: the feed's keys in one slot on a Cluster


class TestThoonkSink(SinkConformance):
    @pytest.fixture
    def sink_target(self, thoonk: AsyncThoonk) -> SinkTarget:
        async def held() -> dict[str, str]:
            return dict(await (await thoonk.feed(FEED)).get_all())

        return SinkTarget(make=lambda: ThoonkSink(thoonk, FEED), held=held)


class TestThoonkSource(SourceConformance):
    @pytest.fixture
    def source_target(self, thoonk: AsyncThoonk) -> SourceTarget:
        async def put(item_id: str, marker: str) -> None:
            await (await thoonk.feed(FEED)).publish(json.dumps({"title": marker}), id=item_id)

        async def remove(item_id: str) -> None:
            await (await thoonk.feed(FEED)).retract(item_id)

        return SourceTarget(make=lambda: ThoonkSource(thoonk, FEED), put=put, remove=remove)
