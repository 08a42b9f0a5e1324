"""Prometheus metrics of the engine: per route and sink, and per plugin.

One :class:`BridgeMetrics` per daemon, on its own ``CollectorRegistry`` (so tests and several
daemons in one process do not collide); plugins register their own collectors on the same
registry (``PluginContext.metrics``).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


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
        self.items_in = Counter("thoonk_bridge_route_items_in", "Events read from the source", ["route"], registry=r)
        self.items_out = Counter(
            "thoonk_bridge_route_items_out", "Events applied to a sink", ["route", "sink"], registry=r
        )
        self.errors = Counter(
            "thoonk_bridge_route_errors", "Failed attempts to apply an event", ["route", "sink"], registry=r
        )
        self.dead_letters = Counter(
            "thoonk_bridge_route_dead_letters", "Events stored in the dead-letter feed", ["route", "sink"],
            registry=r,
        )
        self.echoes_dropped = Counter(
            "thoonk_bridge_route_echoes_dropped", "Echoes of the bridge's own writes dropped", ["route"], registry=r
        )
        self.lag = Gauge("thoonk_bridge_route_lag_items", "Events waiting for a sink", ["route", "sink"], registry=r)
        self.last_success = Gauge(
            "thoonk_bridge_route_last_success_timestamp_seconds", "Unix time of the last applied event",
            ["route", "sink"], registry=r,
        )
        self.route_ready = Gauge("thoonk_bridge_route_ready", "1 when reconciled and following", ["route"], registry=r)
        self.route_owned = Gauge(
            "thoonk_bridge_route_owned", "1 when this daemon holds the route's lease and runs it", ["route"],
            registry=r,
        )
        self.plugin_ready = Gauge("thoonk_bridge_plugin_ready", "1 when the plugin is ready", ["plugin"], registry=r)
        self.apply_seconds = Histogram(
            "thoonk_bridge_route_apply_seconds", "Time to apply one event to a sink", ["route", "sink"],
            registry=r, buckets=(0.001, 0.005, 0.02, 0.1, 0.5, 2.0, 10.0),
        )
        self.route_conflicts = Counter(
            "thoonk_bridge_route_conflicts", "Another daemon found running this route name with another definition",
            ["route"], registry=r,
        )
        self.loop_lag = Gauge(
            "thoonk_bridge_event_loop_lag_seconds", "Worst event loop lateness over the last 10 s", registry=r
        )
        self.http_connections = Gauge("thoonk_bridge_http_connections", "Open HTTP connections", registry=r)
        self.http_refused = Counter(
            "thoonk_bridge_http_connections_closed", "HTTP connections closed by the limits", ["reason"], registry=r
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
