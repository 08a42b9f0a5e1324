"""Testing tools for the bridge and its plugins, reusable by third-party plugins.

- :mod:`thoonk_bridge.testing.harness`: :func:`running_bridge` (a whole daemon), :func:`plugin_context`
  (one started plugin on a real context), :func:`route_context`, :func:`wait_until`, ``FAST_RETRY``.
- :mod:`thoonk_bridge.testing.pytest_plugin`: fixtures (``redis_url``, ``thoonk``, ``bridge``,
  ``plugin_harness``); enable it with one line in your ``conftest.py``:
  ``pytest_plugins = ["thoonk_bridge.testing.pytest_plugin"]``.
- :mod:`thoonk_bridge.testing.conformance`: the Sink/Source conformance suite every plugin runs.
"""

from __future__ import annotations

from thoonk_bridge.testing.harness import (
    FAST_RETRY,
    PluginHarness,
    plugin_context,
    route_context,
    running_bridge,
    wait_until,
)

__all__ = ["FAST_RETRY", "PluginHarness", "plugin_context", "route_context", "running_bridge", "wait_until"]
