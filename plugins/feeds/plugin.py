"""The ``feeds`` plugin: Thoonk feeds as Atom/RSS/JSON Feed documents, outside feeds into Thoonk.

Parts (each receives what it uses, never the plugin): :class:`FeedDocument` (one document set: its
items, files and renders), :class:`FleetStore` (documents kept in Redis for the fleet),
:class:`DocumentServer` (HTTP), :class:`FeedSink` and :class:`FeedSource`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp.abc import AbstractResolver

from thoonk_bridge import __version__
from thoonk_bridge.feedparse import in_parser_thread
from thoonk_bridge.plugin import (
    Endpoint,
    EndpointKind,
    Health,
    Plugin,
    PluginContext,
    RouteContext,
    Sink,
    Source,
    Topic,
)

from .document import FeedDocument
from .metrics import FeedsMetrics
from .paths import DocumentPaths
from .render import CONTENT_TYPES, FeedMeta
from .serve import DocumentServer
from .settings import FeedSinkOptions, FeedSourceOptions, FeedsSettings
from .sink import FeedSink
from .source import FeedSource
from .store import FleetStore, stored_key

__all__ = ["FEEDS_KIND", "FeedsPlugin", "stored_key"]

FEEDS_KIND = EndpointKind(
    name="feeds",
    source_options=FeedSourceOptions,
    sink_options=FeedSinkOptions,
    description="Atom 1.0 / RSS 2.0 / JSON Feed 1.1 documents (sink: NAME; source: an outside feed URL)",
)


class FeedsPlugin(Plugin[FeedsSettings]):
    """Atom/RSS/JSON Feed documents served at ``<path_prefix>/NAME.atom|.rss|.json``; outside feeds polled."""

    name = "feeds"
    version = __version__  # the built-in plugins are released with the bridge
    description = "Atom/RSS/JSON Feed documents from Thoonk feeds, and outside feeds polled into Thoonk"
    settings_model = FeedsSettings
    endpoint_kinds = (FEEDS_KIND,)

    def __init__(self, settings: FeedsSettings, context: PluginContext) -> None:
        super().__init__(settings, context)
        self.documents: dict[str, FeedDocument] = {}
        self.metrics = FeedsMetrics(context.metrics)
        self.log = context.log
        self.resolver: AbstractResolver | None = None  # tests: a stub resolver for sources
        self.paths = DocumentPaths(settings.path_prefix, context.public_url)
        self._open: set[FeedDocument] = set()
        self.fleet = FleetStore(context.redis, context.log, is_open=self._open.__contains__)
        self.server = DocumentServer(self.documents, self.fleet, self.metrics, self.paths,
                                     hub_for=context.topics.hub_for, cache_max_age=settings.cache_max_age,
                                     log=context.log)
        self._write_problems: dict[str, str] = {}  # document name -> why its files cannot be written

    # ----------------------------------------------------------------- lifecycle

    @property
    def output_dir(self) -> Path:
        return Path(self.settings.output_dir) if self.settings.output_dir else Path(self.context.state_dir)

    def validate(self) -> list[str]:
        problems = []
        out = self.settings.output_dir
        if out is not None and Path(out).exists() and not Path(out).is_dir():
            problems.append(f"output_dir {out} exists and is not a directory")
        return problems

    async def setup(self) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.context.http.router.add_get(self.settings.path_prefix + "/{file}", self.server.handle)
        self.context.topics.add_reader(self.settings.path_prefix + "/", self._read_stored_topic,
                                       name_of=self.paths.name_of)

    async def stop(self) -> None:
        for document in list(self._open):
            with contextlib.suppress(Exception):
                await document.flush()
            await document.stop()
        self._open.clear()
        await self.fleet.stop()
        self.set_health(Health.STOPPED)

    # ----------------------------------------------------------------- endpoints

    def public_path(self, name: str, fmt: str) -> str:
        return self.paths.path(name, fmt)

    def public_url(self, name: str, fmt: str) -> str:
        return self.paths.url(name, fmt)

    def sink(self, endpoint: Endpoint[FeedSinkOptions], route: RouteContext) -> Sink:
        options = endpoint.options
        name = options.address
        self_urls = {fmt: self.public_url(name, fmt) for fmt in ("atom", "rss", "json")}
        meta = FeedMeta(
            name=name,
            title=options.title or name,
            subtitle=options.subtitle or f"{options.title or name}, via thoonk-bridge",
            link=options.link or (self.context.public_url.rstrip("/") + "/"),
            author=options.author or "thoonk-bridge",
            author_email=options.author_email,
            language=options.language,
            feed_id=options.id or self_urls["atom"],
            self_urls=self_urls,
            sanitize=options.sanitize_html,
            max_html_depth=options.max_html_depth,
        )
        directory = Path(options.output_dir) if options.output_dir else self.output_dir
        document = FeedDocument(
            meta,
            directory=directory,
            formats=tuple(options.formats),
            max_items=options.max_items,
            max_staleness=options.max_staleness or self.settings.max_staleness,
            quiet=min(self.settings.quiet, options.max_staleness or self.settings.max_staleness),
            max_payload_bytes=options.max_payload_bytes,
            log=route.log.bind(feed=name),
        )
        document.on_render = self._rendered_callback(document, route.guard)
        document.on_write_state = lambda problem: self._write_state(name, problem)
        document.guard = route.guard
        hub_path = self.public_path(name, "atom")  # hub topics are per feed name, whatever the format
        document.hub_provider = lambda: self.context.topics.hub_for(hub_path)
        return FeedSink(document, route, open_document=self.open_document, close_document=self.close_document,
                        bad_items=self.metrics.bad_items)

    def source(self, endpoint: Endpoint[FeedSourceOptions], route: RouteContext) -> Source:
        return FeedSource(endpoint.options, route, settings=self.settings, metrics=self.metrics,
                          resolver=self.resolver)

    # ----------------------------------------------------------------- documents

    async def open_document(self, document: FeedDocument) -> None:
        """Load its state, render it (a file deleted or damaged by hand is rewritten), serve it."""
        name = document.meta.name
        old = self.documents.get(name)
        if old is not None and old is not document:
            await old.stop()
            self._open.discard(old)
        await in_parser_thread(document.load)  # parses every item it holds: not on the loop
        await document.render_now(first=True)
        document.start()
        self.documents[name] = document
        self._open.add(document)
        for fmt in document.formats:
            self.context.topics.register(
                Topic(
                    path=self.public_path(name, fmt),
                    content_type=CONTENT_TYPES[fmt],
                    render=self._topic_body(document, fmt),
                    name=name,
                )
            )
        self.log.info(
            "feed documents ready",
            feed=name,
            items=len(document.items),
            directory=str(document.directory),
            formats=list(document.formats),
        )

    def _write_state(self, name: str, problem: str | None) -> None:
        """A document's files became unwritable (``problem``) or writable again (None): the plugin is
        degraded in ``/readyz`` while any is (the route shows it too, through ``Sink.problem``)."""
        if problem is None:
            self._write_problems.pop(name, None)
        else:
            self._write_problems[name] = problem
        if self._write_problems:
            detail = "; ".join(f"feeds:{n}: {p}" for n, p in sorted(self._write_problems.items()))
            self.set_health(Health.DEGRADED, detail)
        elif self.health().status is Health.DEGRADED:
            self.set_health(Health.READY)

    async def close_document(self, document: FeedDocument) -> None:
        if document.write_error is not None:
            self._write_state(document.meta.name, None)
        await document.stop()
        await self.fleet.finish()
        self._open.discard(document)
        name = document.meta.name
        if self.documents.get(name) is document:
            del self.documents[name]
            for fmt in document.formats:
                self.context.topics.unregister(self.public_path(name, fmt))

    def _topic_body(self, document: FeedDocument, fmt: str) -> Any:
        async def render() -> bytes:
            served = document.served.get(fmt)
            return served.body if served is not None else b""

        return render

    def _rendered_callback(self, document: FeedDocument, guard: Callable[[], bool] | None = None) -> Any:
        async def rendered(timings: dict[str, float], changed: list[str]) -> None:
            name = document.meta.name
            for fmt, seconds in timings.items():
                self.metrics.renders.labels(name, fmt).inc()
                self.metrics.render_seconds.labels(fmt).observe(seconds)
            if changed:  # the new bytes for the other daemons of the fleet (in the background)
                self.fleet.store_soon(document, changed, guard)
            if self.documents.get(name) is not document:
                return
            for fmt in changed:
                served = document.served.get(fmt)
                try:  # with the new body: a distributing plugin does not ask for it again
                    await self.context.topics.changed(self.public_path(name, fmt),
                                                      served.body if served is not None else None)
                except Exception as exc:  # noqa: BLE001 - a listener's failure is not ours
                    self.log.error("topic listener failed", feed=name, format=fmt, error=str(exc))

        return rendered

    async def _read_stored_topic(self, path: str) -> tuple[bytes, str] | None:
        found = self.paths.split(path)
        if found is None:
            return None
        served = await self.fleet.read(*found)
        return (served.body, served.content_type) if served is not None else None
