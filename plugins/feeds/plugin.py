"""The ``feeds`` plugin: Thoonk feeds as Atom/RSS/JSON Feed documents, outside feeds into Thoonk."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gzip
import re
from collections import OrderedDict
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractResolver
from prometheus_client import CollectorRegistry, Counter, Histogram

from thoonk_bridge import __version__
from thoonk_bridge.backoff import Backoff
from thoonk_bridge.feedparse import in_parser_thread
from thoonk_bridge.metrics import collector
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
from thoonk_bridge.tasks import cancel_all
from thoonk_bridge.thoonk.text import as_text

from .document import FeedDocument, Served
from .render import CONTENT_TYPES, FeedMeta
from .settings import FEED_NAME_PATTERN, FeedSinkOptions, FeedSourceOptions, FeedsSettings
from .sink import FeedSink
from .source import FeedSource

__all__ = ["FEEDS_KIND", "FeedsPlugin", "stored_key"]

STORED_FIELDS = ("etag", "last_modified", "content_type")
_FEED_NAME = re.compile(FEED_NAME_PATTERN)
UNREADABLE_LOG_INTERVAL = 10.0  # seconds between "stored feed document unreadable" log lines
STORE_RETRY = Backoff(base=0.5, cap=5.0, jitter=0)  # storing the documents in Redis for the fleet


def stored_key(name: str, fmt: str) -> str:
    """The Redis hash where the owner of ``feeds:NAME`` keeps one rendered format for the fleet.

    Fields: ``body``, ``gzip`` (the gzipped body), ``etag`` (quoted, of the identity body),
    ``last_modified`` (seconds since the epoch) and ``content_type``. The ``{NAME}`` hash tag keeps
    a feed's documents in one cluster slot.
    """
    return f"bridge.feeds.doc:{{{name}}}:{fmt}"


def _raise_if_cancelling() -> None:
    """redis-py may swallow a cancellation that arrives in mid-command (it then reconnects): the
    render loop being stopped must still see it, or ``FeedDocument.stop`` waits forever."""
    me = asyncio.current_task()
    if me is not None and me.cancelling():
        raise asyncio.CancelledError


def _bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode("utf-8", "surrogateescape")

FEEDS_KIND = EndpointKind(
    name="feeds",
    source_options=FeedSourceOptions,
    sink_options=FeedSinkOptions,
    description="Atom 1.0 / RSS 2.0 / JSON Feed 1.1 documents (sink: NAME; source: an outside feed URL)",
)


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


def _etag_matches(header: str, etag: str) -> bool:
    """Weak comparison of an If-None-Match list against our ETag (either encoding's form)."""
    core = etag.strip('"')
    for candidate in header.split(","):
        candidate = candidate.strip()
        if candidate == "*":
            return True
        candidate = candidate.removeprefix("W/").strip('"').removesuffix("-gzip")
        if candidate == core:
            return True
    return False


def _accepts_gzip(header: str) -> bool:
    gzip_q: float | None = None
    star_q: float | None = None
    for part in header.split(","):
        token, _, params = part.strip().partition(";")
        q = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                q = float(params[2:])
            except ValueError:
                q = 0.0
        token = token.strip().lower()
        if token in ("gzip", "x-gzip"):
            gzip_q = q
        elif token == "*":
            star_q = q
    if gzip_q is not None:
        return gzip_q > 0
    return bool(star_q)


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
        self._open: set[FeedDocument] = set()
        # documents held by another daemon, as last read from Redis (revalidated by ETag on each use)
        self._stored: OrderedDict[tuple[str, str], Served] = OrderedDict()
        self._store_locks: dict[str, asyncio.Lock] = {}
        self._store_retry: dict[str, asyncio.Task[None]] = {}
        self._storing: set[asyncio.Task[bool]] = set()
        self._write_problems: dict[str, str] = {}  # document name -> why its files cannot be written
        self._unreadable_logged_at = float("-inf")
        self._unreadable_count = 0  # requests answered 503 since the last log line

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
        self.context.http.router.add_get(self.settings.path_prefix + "/{file}", self._serve)
        self.context.topics.add_reader(self.settings.path_prefix + "/", self._read_stored_topic,
                                       name_of=self._document_name)

    async def stop(self) -> None:
        for document in list(self._open):
            with contextlib.suppress(Exception):
                await document.flush()
            await document.stop()
        self._open.clear()
        await self._finish_stores()
        await cancel_all(self._store_retry.values())
        self._store_retry.clear()
        self.set_health(Health.STOPPED)

    # ----------------------------------------------------------------- endpoints

    def public_path(self, name: str, fmt: str) -> str:
        return f"{self.settings.path_prefix}/{name}.{fmt}"

    def public_url(self, name: str, fmt: str) -> str:
        return self.context.public_url.rstrip("/") + self.public_path(name, fmt)

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
        return FeedSink(self, document, route)

    def source(self, endpoint: Endpoint[FeedSourceOptions], route: RouteContext) -> Source:
        return FeedSource(self, endpoint.options, route)

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
        await self._finish_stores()
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
            if changed:
                # In the background (the render loop is not held up by Redis): store the new bytes for
                # the other daemons of the fleet. Each store writes the latest rendering, so they
                # may run in any order.
                task = asyncio.create_task(self._store_documents(document, changed, guard),
                                           name=f"feeds-store:{name}")
                self._storing.add(task)
                task.add_done_callback(self._storing.discard)
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

    # ----------------------------------------------------------------- documents stored for the fleet

    async def _store_documents(self, document: FeedDocument, formats: list[str],
                               guard: Callable[[], bool] | None) -> bool:
        """Store the current rendering of ``formats`` in Redis so that every daemon can serve them.

        Only the route's owner writes (``guard``: its lease). What is written is the document's
        latest rendering at the time of writing (under a per-feed lock), so concurrent calls never
        leave an older body behind. When Redis already holds the same bytes (another owner wrote
        them before), this one adopts the stored Last-Modified instead of writing, so that every
        daemon answers with the same validators. Returns False when the write failed (retried in
        the background until it succeeds or the document closes).
        """
        name = document.meta.name
        if guard is not None and not guard():
            self.log.warning("not the owner of the route any more: documents not stored", feed=name)
            return True
        lock = self._store_locks.setdefault(name, asyncio.Lock())
        async with lock:
            try:
                for fmt in formats:
                    served = document.served.get(fmt)
                    if served is None:
                        continue
                    key = stored_key(name, fmt)
                    etag, modified = await self.context.redis.hmget(key, "etag", "last_modified")
                    if etag is not None and as_text(etag) == served.etag and modified is not None:
                        if document.served.get(fmt) is served:
                            document.served[fmt] = dataclasses.replace(served, last_modified=float(as_text(modified)))
                        continue
                    if guard is not None and not guard():
                        return True
                    await self.context.redis.hset(key, mapping={
                        "body": served.body,
                        "gzip": served.gzipped,
                        "etag": served.etag,
                        "last_modified": repr(served.last_modified),
                        "content_type": served.content_type,
                    })
            except Exception as exc:  # noqa: BLE001 - Redis away: the owner still serves; retry later
                _raise_if_cancelling()
                self.log.warning("feed documents not stored in redis, retrying", feed=name,
                                 error=f"{type(exc).__name__}: {exc}")
                self._retry_store(document, guard)
                return False
        _raise_if_cancelling()
        return True

    async def _finish_stores(self, timeout: float = 5.0) -> None:
        """Let the stores in flight finish (bounded): a handover leaves the latest bytes in Redis."""
        pending = list(self._storing)
        if not pending:
            return
        _, late = await asyncio.wait(pending, timeout=timeout)
        await cancel_all(late)

    def _retry_store(self, document: FeedDocument, guard: Callable[[], bool] | None) -> None:
        name = document.meta.name
        if name in self._store_retry:
            return

        async def retry() -> None:
            attempt = 0
            try:
                while document in self._open:
                    await STORE_RETRY.sleep(attempt)
                    attempt += 1
                    if guard is not None and not guard():
                        return
                    if await self._store_documents(document, list(document.served), guard):
                        return
            finally:
                self._store_retry.pop(name, None)

        self._store_retry[name] = asyncio.create_task(retry(), name=f"feeds-store:{name}")

    async def _stored_document(self, name: str, fmt: str) -> Served | None:
        """The copy of ``NAME.fmt`` the route's owner stored in Redis (None: none stored)."""
        key = stored_key(name, fmt)
        etag, modified, ctype = await self.context.redis.hmget(key, *STORED_FIELDS)
        if etag is None or modified is None or ctype is None:
            return None
        cached = self._stored.get((name, fmt))
        if cached is not None and cached.etag == as_text(etag):
            if cached.last_modified != float(as_text(modified)):
                cached = dataclasses.replace(cached, last_modified=float(as_text(modified)))
                self._stored[(name, fmt)] = cached
            self._stored.move_to_end((name, fmt))
            return cached
        body, gzipped, etag, modified, ctype = await self.context.redis.hmget(key, "body", "gzip", *STORED_FIELDS)
        if body is None or etag is None or modified is None or ctype is None:
            return None
        served = Served(
            body=_bytes(body),
            gzipped=_bytes(gzipped) if gzipped is not None else gzip.compress(_bytes(body), compresslevel=6, mtime=0),
            etag=as_text(etag),
            last_modified=float(as_text(modified)),
            content_type=as_text(ctype),
        )
        self._stored[(name, fmt)] = served
        while len(self._stored) > 64:
            self._stored.popitem(last=False)
        return served

    def _document_name(self, path: str) -> str | None:
        """NAME of ``<path_prefix>/NAME.FORMAT`` (any daemon's document), None for other paths."""
        name, _, fmt = path[len(self.settings.path_prefix) + 1:].rpartition(".")
        return name if _FEED_NAME.fullmatch(name) and fmt in CONTENT_TYPES else None

    async def _read_stored_topic(self, path: str) -> tuple[bytes, str] | None:
        name = self._document_name(path)
        if name is None:
            return None
        fmt = path.rpartition(".")[2]
        served = await self._stored_document(name, fmt)
        return (served.body, served.content_type) if served is not None else None

    # ----------------------------------------------------------------- HTTP

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        name, _, fmt = request.match_info["file"].rpartition(".")
        # Metrics labels and cache keys come from a fixed set, never from what a client sent.
        label = fmt if fmt in CONTENT_TYPES else "other"
        document = self.documents.get(name)
        served: Served | None = None
        if document is not None and fmt in document.formats:
            served = document.served.get(fmt)  # the owner of the route: its own rendering
        elif fmt in CONTENT_TYPES and _FEED_NAME.match(name):
            try:  # another daemon of the fleet owns the route: the copy it stored in Redis
                served = await self._stored_document(name, fmt)
            except Exception as exc:  # noqa: BLE001 - Redis away
                self.metrics.requests.labels(label, "503").inc()
                # Once per interval, not once per request: anyone can send requests.
                now = asyncio.get_running_loop().time()
                self._unreadable_count += 1
                if now - self._unreadable_logged_at >= UNREADABLE_LOG_INTERVAL:
                    self.log.warning("stored feed document unreadable", feed=name, format=fmt,
                                     error=f"{type(exc).__name__}: {exc}", requests=self._unreadable_count)
                    self._unreadable_logged_at = now
                    self._unreadable_count = 0
                raise web.HTTPServiceUnavailable(text="feed temporarily unavailable\n",
                                                 headers={"Retry-After": "1"}) from None
        if served is None:
            self.metrics.requests.labels(label, "404").inc()
            raise web.HTTPNotFound(text="no such feed\n")
        headers = {
            "Content-Type": served.content_type,
            "Last-Modified": served.last_modified_http,
            "Vary": "Accept-Encoding",
            "Cache-Control": f"public, max-age={self.settings.cache_max_age}",
            "X-Content-Type-Options": "nosniff",
        }
        hub = self.context.topics.hub_for(self.public_path(name, fmt))
        if hub:
            headers["Link"] = f'<{hub}>; rel="hub", <{self.public_url(name, fmt)}>; rel="self"'
        use_gzip = _accepts_gzip(request.headers.get("Accept-Encoding", ""))
        etag = served.etag[:-1] + '-gzip"' if use_gzip else served.etag
        headers["ETag"] = etag
        if self._not_modified(request, served):
            self.metrics.requests.labels(fmt, "304").inc()
            return web.Response(status=304, headers=headers)
        self.metrics.requests.labels(fmt, "200").inc()
        if use_gzip:
            headers["Content-Encoding"] = "gzip"
            return web.Response(body=served.gzipped, headers=headers)
        return web.Response(body=served.body, headers=headers)

    @staticmethod
    def _not_modified(request: web.Request, served: Served) -> bool:
        inm = request.headers.get("If-None-Match")
        if inm is not None:
            return _etag_matches(inm, served.etag)
        ims = request.headers.get("If-Modified-Since")
        if ims:
            try:
                since = parsedate_to_datetime(ims)
            except (TypeError, ValueError, IndexError):
                return False
            if since.tzinfo is None:
                return False
            return int(served.last_modified) <= since.timestamp()
        return False
