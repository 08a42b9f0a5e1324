"""The example plugin's tests, as a third-party plugin writes them: the bridge's fixtures (conftest.py,
one line) and its Sink conformance suite (one import, one subclass)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from thoonk_bridge_jsonlog import JsonLogPlugin, JsonLogSinkOptions

from thoonk_bridge.plugin import Endpoint
from thoonk_bridge.testing import wait_until
from thoonk_bridge.testing.conformance import SinkConformance, SinkTarget


class TestJsonLogSink(SinkConformance):
    """Every check of the suite, run on a jsonlog sink writing under ``tmp_path``."""

    @pytest.fixture
    async def sink_target(self, plugin_harness: Any, tmp_path: Path) -> AsyncIterator[SinkTarget]:
        directory = tmp_path / "logs"
        async with plugin_harness(JsonLogPlugin, {"directory": str(directory)}) as harness:
            endpoint = Endpoint("jsonlog", "news", JsonLogSinkOptions(address="news"))

            async def held() -> dict[str, str]:
                """The file replayed by a reader of the log: id -> payload."""
                items: dict[str, str] = {}
                path = directory / "news.jsonl"
                for line in path.read_text().splitlines() if path.exists() else []:
                    record = json.loads(line)
                    if record["kind"] == "retract":
                        items.pop(record["id"], None)
                    else:
                        items[record["id"]] = record["payload"]
                return items

            yield SinkTarget(make=lambda: harness.plugin.sink(endpoint, harness.route()), held=held)


async def test_a_route_writes_the_file(bridge: Any, tmp_path: Path) -> None:
    """A whole daemon: a Thoonk feed routed to the jsonlog sink."""
    log = tmp_path / "logs" / "news.jsonl"
    config = {"plugins": {"jsonlog": {"directory": str(log.parent)}},
              "routes": [{"name": "audit", "from": "thoonk:news", "to": "jsonlog:news"}]}
    async with bridge(config, plugins={"jsonlog": JsonLogPlugin}) as daemon:
        await wait_until(lambda: daemon.routes["audit"].ready)
        feed = await daemon.thoonk.feed("news")
        await feed.publish("hello", id="1")
        await wait_until(lambda: log.exists() and "hello" in log.read_text())
