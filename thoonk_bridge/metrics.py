"""Prometheus metrics of the engine: per route and sink, and per plugin.

One :class:`BridgeMetrics` per daemon, on its own ``CollectorRegistry`` (so tests and several
daemons in one process do not collide); plugins register their own collectors on the same
registry (``PluginContext.metrics``), through :func:`collector`, the one way to register: it
names every metric ``thoonk_bridge_...`` and survives a plugin registering again (a reload).
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

__all__ = ["PREFIX", "BridgeMetrics", "collector", "registered"]

PREFIX = "thoonk_bridge_"  # of every metric the bridge and its plugins export

CollectorT = TypeVar("CollectorT", bound=MetricWrapperBase)

# What ``collector`` registered, per registry: name -> (collector, kind, label names). prometheus_client
# has no public lookup by name; this is ours (a registry that goes away takes its entries with it).
_REGISTERED: weakref.WeakKeyDictionary[
    CollectorRegistry, dict[str, tuple[MetricWrapperBase, type, tuple[str, ...]]]
] = weakref.WeakKeyDictionary()


def _full_name(kind: type, name: str) -> str:
    full = name if name.startswith(PREFIX) else PREFIX + name
    return full.removesuffix("_total") if issubclass(kind, Counter) else full  # as prometheus_client names it


def collector(
    registry: CollectorRegistry,
    kind: type[CollectorT],
    name: str,
    documentation: str,
    labels: Sequence[str] = (),
    **options: Any,
) -> CollectorT:
    """Register the collector ``thoonk_bridge_NAME`` on ``registry`` and return it.

    - ``kind``: ``Counter``, ``Gauge``, ``Histogram``, ``Summary``...
    - ``name``: without the prefix, which is added (a name that already has it is kept as is).
    - ``documentation``, ``labels``, ``options`` (``buckets``...): as for the ``kind``'s constructor.

    Registering the same name on the same registry again (a plugin set up again after a reload)
    returns the collector registered first, with its counts, when its kind and labels are the same;
    otherwise the old one is unregistered and the new one takes its place. A name registered on
    the registry without this function still raises ``ValueError``, as prometheus_client does.
    """
    full = _full_name(kind, name)
    known = _REGISTERED.setdefault(registry, {})
    entry = known.get(full)
    if entry is not None:
        existing, existing_kind, existing_labels = entry
        if existing_kind is kind and existing_labels == tuple(labels):
            return existing  # type: ignore[return-value]  # same kind, checked above
        registry.unregister(existing)
        del known[full]
    created = kind(full, documentation, labels, registry=registry, **options)
    known[full] = (created, kind, tuple(labels))
    return created


def registered(registry: CollectorRegistry, name: str) -> MetricWrapperBase | None:
    """The collector :func:`collector` registered as ``name`` (with or without the prefix) on ``registry``."""
    known = _REGISTERED.get(registry, {})
    full = name if name.startswith(PREFIX) else PREFIX + name
    return known.get(full, known.get(full.removesuffix("_total"), (None,)))[0]


class BridgeMetrics:
    """The engine's collectors.

    - ``items_in{route}``: events read from a route's source.
    - ``items_out{route,sink}``: events applied to a sink.
    - ``errors{route,sink}``: failed attempts to apply (each retry counts).
    - ``dead_letters{route,sink}``: events given up and stored in the dead-letter feed.
    - ``echoes_dropped{route}``: events dropped as the echo of the bridge's own writes.
    - ``lag{route,sink}``: events waiting for a sink.
    - ``last_success{route,sink}``: unix time of the last applied event.
    - ``route_ready{route}``: 1 once reconciled and following.
    - ``route_owned{route}``: 1 while this daemon holds the route's lease (0: another daemon runs it).
    - ``plugin_ready{plugin}``: 1 when the plugin's health is ready.
    - ``apply_seconds{route,sink}``: time to apply one event.
    - ``route_conflicts{route}``: times another daemon was found running this route name with another
      definition (a second config reusing the name; see ``/readyz`` ``conflicting_routes``).
    - ``loop_lag``: the event loop's worst lateness over the last 10 s (a timer's delay past its due
      time); above 1 s the daemon also logs ``event loop lagged``.
    - ``http_connections``: open HTTP connections; ``http_refused{reason}``: connections closed by the
      HTTP limits (``max_connections``, ``header_timeout``).
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.items_in = collector(r, Counter, "route_items_in", "Events read from the source", ["route"])
        self.items_out = collector(r, Counter, "route_items_out", "Events applied to a sink", ["route", "sink"])
        self.errors = collector(r, Counter, "route_errors", "Failed attempts to apply an event", ["route", "sink"])
        self.dead_letters = collector(
            r, Counter, "route_dead_letters", "Events stored in the dead-letter feed", ["route", "sink"]
        )
        self.echoes_dropped = collector(
            r, Counter, "route_echoes_dropped", "Echoes of the bridge's own writes dropped", ["route"]
        )
        self.lag = collector(r, Gauge, "route_lag_items", "Events waiting for a sink", ["route", "sink"])
        self.last_success = collector(
            r, Gauge, "route_last_success_timestamp_seconds", "Unix time of the last applied event", ["route", "sink"]
        )
        self.route_ready = collector(r, Gauge, "route_ready", "1 when reconciled and following", ["route"])
        self.route_owned = collector(
            r, Gauge, "route_owned", "1 when this daemon holds the route's lease and runs it", ["route"]
        )
        self.plugin_ready = collector(r, Gauge, "plugin_ready", "1 when the plugin is ready", ["plugin"])
        self.apply_seconds = collector(
            r, Histogram, "route_apply_seconds", "Time to apply one event to a sink", ["route", "sink"],
            buckets=(0.001, 0.005, 0.02, 0.1, 0.5, 2.0, 10.0),
        )
        self.route_conflicts = collector(
            r, Counter, "route_conflicts", "Another daemon found running this route name with another definition",
            ["route"],
        )
        self.loop_lag = collector(r, Gauge, "event_loop_lag_seconds", "Worst event loop lateness over the last 10 s")
        self.http_connections = collector(r, Gauge, "http_connections", "Open HTTP connections")
        self.http_refused = collector(
            r, Counter, "http_connections_closed", "HTTP connections closed by the limits", ["reason"]
        )

    def forget_route(self, route: str, sinks: list[str]) -> None:
        """Drop a removed route's series (after a reload)."""
        metric: Any
        for metric in (self.items_in, self.echoes_dropped, self.route_ready, self.route_owned):
            try:
                metric.remove(route)
            except KeyError:
                pass
        for sink in sinks:
            for metric in (self.items_out, self.errors, self.dead_letters, self.lag, self.last_success,
                           self.apply_seconds):
                try:
                    metric.remove(route, sink)
                except KeyError:
                    pass
