"""The conformance suite over docs/example_plugin (the jsonlog sink), as a third-party plugin runs it."""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from thoonk_bridge.plugin import Endpoint
from thoonk_bridge.testing.conformance import SinkConformance, SinkTarget
from thoonk_bridge.testing.pytest_plugin import HarnessFactory

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "example_plugin"


@pytest.fixture
def jsonlog(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The example plugin's module, imported from docs/example_plugin (as if pip-installed)."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    yield importlib.import_module("thoonk_bridge_jsonlog")
    sys.modules.pop("thoonk_bridge_jsonlog", None)


class TestJsonLogSink(SinkConformance):
    @pytest.fixture
    async def sink_target(self, plugin_harness: HarnessFactory, jsonlog: Any, tmp_path: Path
                          ) -> AsyncIterator[SinkTarget]:
        directory = tmp_path / "logs"
        async with plugin_harness(jsonlog.JsonLogPlugin, {"directory": str(directory)}) as harness:
            endpoint = Endpoint("jsonlog", "news", jsonlog.JsonLogSinkOptions(address="news"))

            async def held() -> dict[str, str]:
                """The file replayed: what a reader of the log holds."""
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
