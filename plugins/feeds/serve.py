"""Serving the documents over HTTP: this daemon's own renderings, or the copies the owner of a
route stored for the fleet; conditional requests (ETag, Last-Modified) and gzip."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any

from aiohttp import web

from .document import FeedDocument, Served
from .metrics import FeedsMetrics
from .paths import FEED_NAME, DocumentPaths
from .render import CONTENT_TYPES
from .store import FleetStore

UNREADABLE_LOG_INTERVAL = 10.0  # seconds between "stored feed document unreadable" log lines


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


class DocumentServer:
    """The HTTP handler of the documents.

    ``documents``: the documents open here, by name; ``fleet``: the copies other daemons stored;
    ``metrics``; ``paths``; ``hub_for(path)``: the hub to advertise (None: none); ``cache_max_age``
    (seconds, ``Cache-Control``); ``log``.
    """

    def __init__(self, documents: Mapping[str, FeedDocument], fleet: FleetStore, metrics: FeedsMetrics,
                 paths: DocumentPaths, *, hub_for: Callable[[str], str | None], cache_max_age: int,
                 log: Any) -> None:
        self.documents = documents
        self.fleet = fleet
        self.metrics = metrics
        self.paths = paths
        self.hub_for = hub_for
        self.cache_max_age = cache_max_age
        self.log = log
        self._unreadable_logged_at = float("-inf")
        self._unreadable_count = 0  # requests answered 503 since the last log line

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """``GET|HEAD <path_prefix>/NAME.FORMAT``."""
        name, _, fmt = request.match_info["file"].rpartition(".")
        # Metrics labels and cache keys come from a fixed set, never from what a client sent.
        label = fmt if fmt in CONTENT_TYPES else "other"
        document = self.documents.get(name)
        served: Served | None = None
        if document is not None and fmt in document.formats:
            served = document.served.get(fmt)  # the owner of the route: its own rendering
        elif fmt in CONTENT_TYPES and FEED_NAME.match(name):
            try:  # another daemon of the fleet owns the route: the copy it stored in Redis
                served = await self.fleet.read(name, fmt)
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
            "Cache-Control": f"public, max-age={self.cache_max_age}",
            "X-Content-Type-Options": "nosniff",
        }
        hub = self.hub_for(self.paths.path(name, fmt))
        if hub:
            headers["Link"] = f'<{hub}>; rel="hub", <{self.paths.url(name, fmt)}>; rel="self"'
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


__all__ = ["DocumentServer"]
