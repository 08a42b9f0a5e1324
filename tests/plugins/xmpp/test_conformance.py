"""The conformance suite over the xmpp plugin: its sink and source on nodes of a real Prosody, read and
written by an independent client."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from typing import Any

import pytest
from slixmpp.exceptions import IqError

from tests.support.prosody_server import PUBSUB, Outsider, ProsodyServer, atom
from thoonk_bridge.plugin import Endpoint
from thoonk_bridge.plugins.xmpp import plugin as XmppPlugin
from thoonk_bridge.plugins.xmpp.settings import XmppSinkOptions, XmppSourceOptions
from thoonk_bridge.testing.conformance import SinkConformance, SinkTarget, SourceConformance, SourceTarget
from thoonk_bridge.testing.pytest_plugin import HarnessFactory

pytestmark = pytest.mark.xmpp


@pytest.fixture
async def admin(prosody: ProsodyServer) -> AsyncIterator[Outsider]:
    """The bridge's account from another resource: owner of the nodes, reads and writes them directly."""
    async with Outsider(prosody, "bridge", "admin") as client:
        yield client


def _items(found: list[tuple[str, Any]]) -> dict[str, str]:
    return {item_id: ET.tostring(element, encoding="unicode") if element is not None else ""
            for item_id, element in found}


class TestXmppSink(SinkConformance):
    @pytest.fixture
    async def sink_target(self, plugin_harness: HarnessFactory, prosody: ProsodyServer, admin: Outsider,
                          node_name: str) -> AsyncIterator[SinkTarget]:
        async with plugin_harness(XmppPlugin, prosody.account("bridge")) as harness:
            address = f"{PUBSUB}/{node_name}"
            endpoint = Endpoint("xmpp", address, XmppSinkOptions(address=address, max_items=500))

            async def held() -> dict[str, str]:
                try:
                    return _items(await admin.items(node_name))
                except IqError as exc:
                    if exc.condition == "item-not-found":  # the node is created by the sink's open()
                        return {}
                    raise

            yield SinkTarget(make=lambda: harness.plugin.sink(endpoint, harness.route()), held=held)


class TestXmppSource(SourceConformance):
    @pytest.fixture
    async def source_target(self, plugin_harness: HarnessFactory, prosody: ProsodyServer, admin: Outsider,
                            node_name: str) -> AsyncIterator[SourceTarget]:
        await admin.create(node_name, max_items=50)
        async with plugin_harness(XmppPlugin, prosody.account("bridge")) as harness:
            address = f"{PUBSUB}/{node_name}"
            endpoint = Endpoint("xmpp", address, XmppSourceOptions(address=address))

            async def put(item_id: str, marker: str) -> None:
                await admin.publish(node_name, item_id, atom(item_id, marker))

            async def remove(item_id: str) -> None:
                try:
                    await admin.ps.retract(PUBSUB, node_name, item_id, notify=True)
                except IqError as exc:
                    if exc.condition != "item-not-found":  # an unknown id: nothing to remove
                        raise

            yield SourceTarget(make=lambda: harness.plugin.source(endpoint, harness.route(mirror=True)),
                               put=put, remove=remove)
