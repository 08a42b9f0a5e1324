"""Prometheus collectors of the feeds plugin (registered on ``PluginContext.metrics``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from thoonk_bridge.metrics import collector


class FeedsMetrics:
    """Collectors of the plugin (on ``context.metrics``).

    - ``thoonk_bridge_feeds_renders_total{feed,format}``: documents rendered.
    - ``thoonk_bridge_feeds_render_seconds{format}``: time to render one document.
    - ``thoonk_bridge_feeds_bad_items_total{feed,reason}``: items a document refused
      (``invalid``, ``too_large``, ``empty``); they go to the route's dead-letter feed.
    - ``thoonk_bridge_feeds_requests_total{format,status}``: documents served over HTTP; ``format``
      is ``atom``, ``rss``, ``json`` or ``other`` (anything a client asked for that is none of
      them), so that requests for made-up paths never add label values.
    - ``thoonk_bridge_feeds_fetches_total{route,result}``: polls of outside feeds (``ok``,
      ``not_modified``, ``timeout``, ``network``, ``refused``, ``redirects``, ``too_large``,
      ``bad_document``, ``http_429``, ``http_503``, ``http_4xx``, ``http_5xx``...).
    - ``thoonk_bridge_feeds_fetch_seconds{route}``: time of one poll.
    - ``thoonk_bridge_feeds_bad_entries_total{route}``: entries of outside feeds skipped.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.renders = collector(r, Counter, "feeds_renders", "Documents rendered", ["feed", "format"])
        self.render_seconds = collector(
            r,
            Histogram,
            "feeds_render_seconds",
            "Time to render one document",
            ["format"],
            buckets=(0.001, 0.005, 0.02, 0.05, 0.1, 0.25, 1.0, 5.0),
        )
        self.bad_items = collector(
            r, Counter, "feeds_bad_items", "Items refused by a document", ["feed", "reason"]
        )
        self.requests = collector(
            r, Counter, "feeds_requests", "Documents served over HTTP", ["format", "status"]
        )
        self.fetches = collector(
            r, Counter, "feeds_fetches", "Polls of outside feeds", ["route", "result"]
        )
        self.fetch_seconds = collector(
            r,
            Histogram,
            "feeds_fetch_seconds",
            "Time of one poll",
            ["route"],
            buckets=(0.01, 0.05, 0.2, 1.0, 5.0, 30.0),
        )
        self.bad_entries = collector(
            r, Counter, "feeds_bad_entries", "Entries of outside feeds skipped", ["route"]
        )


__all__ = ["FeedsMetrics"]
