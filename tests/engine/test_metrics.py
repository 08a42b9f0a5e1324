"""The one way to register metrics: the thoonk_bridge_ prefix, and registering again (a reload)."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from plugins.feeds.metrics import FeedsMetrics
from plugins.websub.metrics import Metrics as WebSubMetrics
from plugins.xmpp.metrics import XmppMetrics
from thoonk_bridge.metrics import BridgeMetrics, collector, registered


def test_the_prefix_is_added_once() -> None:
    registry = CollectorRegistry()
    things = collector(registry, Counter, "myplugin_things", "Things done", ["route"])
    things.labels("a").inc()
    assert registry.get_sample_value("thoonk_bridge_myplugin_things_total", {"route": "a"}) == 1
    kept = collector(registry, Gauge, "thoonk_bridge_myplugin_level", "A level")
    kept.set(3)
    assert registry.get_sample_value("thoonk_bridge_myplugin_level") == 3


def test_registering_again_returns_the_collector_with_its_counts() -> None:
    registry = CollectorRegistry()
    first = collector(registry, Counter, "myplugin_things", "Things done", ["route"])
    first.labels("a").inc(2)
    again = collector(registry, Counter, "myplugin_things", "Things done", ["route"])
    assert again is first
    assert collector(registry, Counter, "thoonk_bridge_myplugin_things_total", "Things done", ["route"]) is first
    assert registry.get_sample_value("thoonk_bridge_myplugin_things_total", {"route": "a"}) == 2
    assert registered(registry, "myplugin_things") is first
    assert registered(registry, "thoonk_bridge_myplugin_things_total") is first
    assert registered(registry, "myplugin_other") is None
    assert registered(CollectorRegistry(), "myplugin_things") is None  # per registry


def test_registering_with_other_labels_replaces_the_old_collector() -> None:
    registry = CollectorRegistry()
    old = collector(registry, Counter, "myplugin_things", "Things done", ["route"])
    old.labels("a").inc()
    new = collector(registry, Counter, "myplugin_things", "Things done", ["route", "sink"])
    assert new is not old
    new.labels("a", "s").inc()
    assert registry.get_sample_value("thoonk_bridge_myplugin_things_total", {"route": "a"}) is None
    assert registry.get_sample_value("thoonk_bridge_myplugin_things_total", {"route": "a", "sink": "s"}) == 1
    histogram = collector(registry, Histogram, "myplugin_things", "Now a histogram", buckets=(1.0,))
    assert registered(registry, "myplugin_things") is histogram


def test_a_name_registered_without_the_helper_still_raises() -> None:
    registry = CollectorRegistry()
    Counter("thoonk_bridge_myplugin_things", "Things done", registry=registry)
    with pytest.raises(ValueError, match="Duplicated"):
        collector(registry, Counter, "myplugin_things", "Things done")


def test_engine_and_plugins_register_again_on_the_same_registry() -> None:
    bridge = BridgeMetrics()
    registry = bridge.registry
    for build in (lambda: BridgeMetrics(registry), lambda: FeedsMetrics(registry), lambda: XmppMetrics(registry),
                  lambda: WebSubMetrics(registry)):
        first, second = build(), build()
        assert vars(first).keys() == vars(second).keys()
        assert all(getattr(first, k) is getattr(second, k) for k in vars(first) if k != "registry")
    names = {metric.name for metric in registry.collect()}
    assert names and all(name.startswith("thoonk_bridge_") for name in names)
    assert "thoonk_bridge_websub_deliveries" in names and "thoonk_bridge_feeds_renders" in names
