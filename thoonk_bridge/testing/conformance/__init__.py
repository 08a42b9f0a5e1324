"""The Sink/Source conformance suite: what every plugin's sinks and sources must do, as pytest tests.

A plugin runs it by subclassing, in one of its test modules, :class:`SinkConformance` and/or
:class:`SourceConformance`, and giving the suite a way to reach the sink or source under test
through a fixture (``sink_target`` / ``source_target``)::

    from thoonk_bridge.testing.conformance import SinkConformance, SinkTarget

    class TestJsonLogSink(SinkConformance):
        @pytest.fixture
        async def sink_target(self, plugin_harness):
            async with plugin_harness(JsonLogPlugin) as harness:
                endpoint = Endpoint("jsonlog", "news", JsonLogSinkOptions(address="news"))
                yield SinkTarget(make=lambda: harness.plugin.sink(endpoint, harness.route()),
                                 held=read_back_the_file)

The fixtures of :mod:`thoonk_bridge.testing.pytest_plugin` (``plugin_harness``, ``redis_url``...)
help build it. What a sink or source genuinely cannot do is declared in ``capabilities``
(:class:`SinkCapabilities`, :class:`SourceCapabilities`); the suite then checks the declared
behaviour instead (``ids()`` returning ``None``...), it never skips.

Sink checks: publish, edit, retract, retract of an unknown id (no error, nothing changes),
idempotent re-apply (the same event twice is once), ``apply_many``, ``ids()`` after each (the
``thoonk_bridge.payload.content_hash`` of what it holds), what was applied still there for a new
sink on the same target (a restart), and ``close()`` while applying (neither hangs nor raises).

Source checks: the snapshot, publish/edit/retract seen by ``follow()``, removal of an unknown id
at the origin (nothing happens), the same item put twice (held once), a new source on the same
origin (a restart) whose snapshot shows what happened, and ``close()`` while following.

Payloads: the suite writes :meth:`SinkConformance.payload` (a JSON entry whose title is a unique
marker and whose link ends with the item id; override it when your sink takes another format), and
checks content by looking for that marker in what the target holds.
"""

from __future__ import annotations

from thoonk_bridge.testing.conformance.common import LATEST
from thoonk_bridge.testing.conformance.sink import SinkCapabilities, SinkConformance, SinkTarget
from thoonk_bridge.testing.conformance.source import SourceCapabilities, SourceConformance, SourceTarget

__all__ = [
    "LATEST",
    "SinkCapabilities",
    "SinkConformance",
    "SinkTarget",
    "SourceCapabilities",
    "SourceConformance",
    "SourceTarget",
]
