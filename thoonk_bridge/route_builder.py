"""Building a route's runner from its definition: its source and sinks come from the plugins that
offer their endpoint kinds, each sink gets its ledger (and the opposite route's, for echoes), the
route its dead-letter feed and trace recorder (thoonk_bridge.router runs it)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from thoonk_bridge.logs import get_logger
from thoonk_bridge.ownership import route_fingerprint
from thoonk_bridge.plugin import Endpoint, Plugin, RouteContext, Sink, Source
from thoonk_bridge.router import EchoFilter, Ledger, RetryPolicy, RouteRunner, SinkWorker, store_dead_letter
from thoonk_bridge.trace import RouteRecorder

if TYPE_CHECKING:
    from thoonk_bridge.config import RouteSpec
    from thoonk_bridge.lease import Lease
    from thoonk_bridge.metrics import BridgeMetrics
    from thoonk_bridge.redis_client import AsyncRedis
    from thoonk_bridge.thoonk import AsyncThoonk

__all__ = ["RECONCILE_CONCURRENCY", "NoPluginForKind", "RouteBuilder"]

RECONCILE_CONCURRENCY = 16  # routes reconciling at once; the others wait their turn (see RouteRunner)


class NoPluginForKind(LookupError):
    """No running plugin offers an endpoint's kind."""


class RouteBuilder:
    """Makes :class:`~thoonk_bridge.router.RouteRunner` objects.

    - ``thoonk``, ``redis``: the daemon's clients (dead letters, traces, ledgers).
    - ``plugins``: the running plugins by name, read at each build (the daemon fills it at start).
    - ``echoes``, ``metrics``, ``retry``: shared by every route of the daemon.
    - ``reconcile_concurrency``: how many routes may reconcile at once.
    """

    def __init__(
        self,
        thoonk: AsyncThoonk,
        redis: AsyncRedis,
        plugins: Mapping[str, Plugin[Any]],
        echoes: EchoFilter,
        metrics: BridgeMetrics,
        retry: RetryPolicy,
        reconcile_concurrency: int = RECONCILE_CONCURRENCY,
    ) -> None:
        self.thoonk = thoonk
        self.redis = redis
        self.plugins = plugins
        self.echoes = echoes
        self.metrics = metrics
        self.retry = retry
        self._reconcile_slots = asyncio.Semaphore(reconcile_concurrency)
        self._edges: dict[tuple[str, str], str] = {}  # (source, sink) -> route, see _reverse_ledger
        self._edges_of: Sequence[RouteSpec] | None = None

    def build(self, spec: RouteSpec, routes: Sequence[RouteSpec], lease: Lease | None = None) -> RouteRunner:
        """The runner of ``spec``; ``routes``: every configured route (to find the opposite one);
        ``lease``: the route's lease, whose ``held`` guards every write (None: unguarded)."""
        log = get_logger(route=spec.name)
        guard = lease.held if lease is not None else None
        context = RouteContext(
            name=spec.name,
            mirror=spec.mirror,
            format=str(spec.format) if spec.format else None,
            initial=spec.initial,
            log=log,
            dead_letter=partial(store_dead_letter, self.thoonk, spec.name),
            guard=guard,
        )
        recorder = RouteRecorder(self.thoonk, spec.name, str(spec.source), [str(s) for s in spec.sinks])
        source = self._source(spec.source, context)
        workers = [
            SinkWorker(
                context, endpoint, self._sink(endpoint, context), Ledger(self.redis, spec.name, str(endpoint)),
                self.echoes, self.metrics, self.retry, log, guard=guard,
                origin=str(spec.source), reverse=self._reverse_ledger(spec, endpoint, routes), recorder=recorder,
            )
            for endpoint in spec.sinks
        ]
        return RouteRunner(context, spec.source, source, workers, self.echoes, self.metrics, self.retry, log,
                           reconcile_slots=self._reconcile_slots, fingerprint=route_fingerprint(spec))

    def _owner(self, endpoint: Endpoint[Any], route: RouteContext) -> Plugin[Any]:
        for plugin in self.plugins.values():
            if any(k.name == endpoint.kind for k in plugin.endpoint_kinds):
                return plugin
        raise NoPluginForKind(f"route {route.name}: no plugin offers endpoint kind {endpoint.kind!r}")

    def _source(self, endpoint: Endpoint[Any], route: RouteContext) -> Source:
        return self._owner(endpoint, route).source(endpoint, route)

    def _sink(self, endpoint: Endpoint[Any], route: RouteContext) -> Sink:
        return self._owner(endpoint, route).sink(endpoint, route)

    def _reverse_ledger(self, spec: RouteSpec, sink: Endpoint[Any], routes: Sequence[RouteSpec]) -> Ledger | None:
        """The ledger of the opposite route (from ``sink`` back to ``spec``'s source), if one exists."""
        if self._edges_of is not routes:  # an index per config: a lookup per sink, not a scan
            self._edges = {(str(r.source), str(s)): r.name for r in routes for s in r.sinks}
            self._edges_of = routes
        other = self._edges.get((str(sink), str(spec.source)))
        return Ledger(self.redis, other, str(spec.source)) if other is not None else None
