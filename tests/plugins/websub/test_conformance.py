"""The conformance suite over the websub plugin: its sink (a raw topic on the hub, read over HTTP) and
its source (a subscriber to an outside publisher and hub on loopback)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.plugins.websub.outside import Outside, atom
from tests.plugins.websub.support import FAST, Subscriber, wait_for
from thoonk_bridge.plugin import Endpoint, EventKind, ItemEvent, Source
from thoonk_bridge.plugins.websub.plugin import WebSubPlugin
from thoonk_bridge.plugins.websub.settings import WebSubSinkOptions, WebSubSourceOptions
from thoonk_bridge.plugins.websub.subscriber import WebSubSource
from thoonk_bridge.testing import PluginHarness
from thoonk_bridge.testing.conformance import (
    LATEST,
    SinkCapabilities,
    SinkConformance,
    SinkTarget,
    SourceConformance,
    SourceTarget,
)
from thoonk_bridge.testing.pytest_plugin import HarnessFactory


class TestWebSubSink(SinkConformance):
    # A raw topic's body is the latest item's payload: the sink cannot list items (the router keeps
    # its ledger), and a retract leaves the topic as it is.
    capabilities = SinkCapabilities(ids=False, items=False)

    @pytest.fixture
    async def sink_target(self, plugin_harness: HarnessFactory) -> AsyncIterator[SinkTarget]:
        async with plugin_harness(WebSubPlugin, FAST) as harness:
            endpoint = Endpoint("websub", "news", WebSubSinkOptions(address="news", mode="raw"))
            url = f"{harness.base_url}{harness.plugin.settings.topics_path}/news"

            async def held() -> dict[str, str]:
                async with aiohttp.ClientSession() as session, session.get(url) as resp:
                    return {LATEST: await resp.text()} if resp.status == 200 else {}

            yield SinkTarget(make=lambda: harness.plugin.sink(endpoint, harness.route()), held=held)


async def test_the_raw_topic_reaches_its_subscribers(plugin_harness: HarnessFactory) -> None:
    """What the suite cannot see from the topic alone: each publish is distributed to subscribers."""
    async with plugin_harness(WebSubPlugin, FAST) as harness:
        sink = harness.plugin.sink(Endpoint("websub", "news", WebSubSinkOptions(address="news", mode="raw")),
                                   harness.route())
        await sink.open()
        receiver = await Subscriber().start()
        try:
            topic = f"{harness.base_url}{harness.plugin.settings.topics_path}/news"
            form = {"hub.mode": "subscribe", "hub.callback": receiver.url(), "hub.topic": topic}
            hub = harness.base_url + harness.plugin.settings.hub_path
            async with aiohttp.ClientSession() as session, session.post(hub, data=form) as resp:
                assert resp.status == 202, await resp.text()
            await wait_for(lambda: receiver.verifications)
            plugin = harness.plugin
            assert isinstance(plugin, WebSubPlugin)
            await wait_for(lambda: plugin.store.all_subscriptions(None))
            await sink.apply(ItemEvent(EventKind.PUBLISH, "a", '{"title": "pushed"}'))
            await wait_for(lambda: receiver.deliveries)
            assert receiver.deliveries[-1].body == b'{"title": "pushed"}'
        finally:
            await receiver.close()
            await sink.close()


class TestWebSubSource(SourceConformance):
    def item_id(self, name: str) -> str:
        return f"urn:{name}"  # the outside publisher's Atom entry ids

    @pytest.fixture
    async def source_target(self, plugin_harness: HarnessFactory) -> AsyncIterator[SourceTarget]:
        outside = await Outside().start()
        outside.entries = ()
        try:
            async with plugin_harness(WebSubPlugin, FAST) as harness:
                yield self._target(harness, outside)
        finally:
            await outside.server.close()

    @staticmethod
    def _target(harness: PluginHarness, outside: Outside) -> SourceTarget:
        url = outside.url("/topic/header")
        # secret: the loopback hub is plain http, ask for one anyway (deliveries are signed)
        endpoint = Endpoint("websub", url, WebSubSourceOptions(address=url, secret=True))

        async def publish(entries: dict[str, str]) -> None:
            """The publisher's document changes and its hub pushes it to the subscriber."""
            outside.entries = tuple((i.removeprefix("urn:"), t) for i, t in entries.items())
            if outside.subscribe_posts:
                form = outside.subscribe_posts[-1][1]
                assert await outside.deliver(form, atom(entries=outside.entries)) in (200, 202)

        async def put(item_id: str, marker: str) -> None:
            entries = {f"urn:{i}": t for i, t in outside.entries}
            entries[item_id] = marker
            await publish(entries)

        async def remove(item_id: str) -> None:
            await publish({f"urn:{i}": t for i, t in outside.entries if f"urn:{i}" != item_id})

        async def ready(source: Source) -> None:
            assert isinstance(source, WebSubSource)

            async def active() -> bool:
                return (await source.state()).get("state") == "active"

            await wait_for(active)

        # mirror: an entry gone from a pushed document is retracted
        return SourceTarget(make=lambda: harness.plugin.source(endpoint, harness.route(mirror=True)),
                            put=put, remove=remove, ready=ready)
