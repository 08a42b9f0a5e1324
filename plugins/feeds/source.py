"""``from: feeds:URL``: the source side (an outside Atom/RSS/JSON Feed document polled into Thoonk)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC
from email.utils import parsedate_to_datetime

import aiohttp
from aiohttp.abc import AbstractResolver

from thoonk_bridge.backoff import Backoff
from thoonk_bridge.feedparse import FeedParseError, parse_feed_async
from thoonk_bridge.net import (
    AddressRefused,
    FetchError,
    ResponseTooLarge,
    TooManyRedirects,
    fetch_limited,
    make_session,
)
from thoonk_bridge.plugin import EventKind, ItemEvent, RouteContext, Source

from .errors import FetchFailed
from .metrics import FeedsMetrics
from .settings import FeedSourceOptions, FeedsSettings


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP date); None when absent/bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


class FeedSource(Source):
    """Polls one URL. ``snapshot()`` fetches it (no conditional headers) and returns its items;
    ``follow()`` polls every ``interval`` with ``If-None-Match``/``If-Modified-Since`` and yields
    publish (new id), edit (same id, other payload) and, when the route mirrors, retract.

    Errors (network, refused address, HTTP status, broken document, too large) are counted,
    logged and retried with exponential backoff and jitter, never past ``max_backoff``;
    ``Retry-After`` on 429/503 is honoured (within ``max_backoff``). The items last seen stay as
    they are meanwhile: a broken fetch never retracts anything.

    Receives what it uses: the plugin's ``settings`` (defaults of the options), ``metrics`` and
    ``resolver`` (tests: a stub resolver, no real lookups).
    """

    absence = "unknown"  # a document shows its latest entries: one gone from it was not retracted

    def __init__(self, options: FeedSourceOptions, route: RouteContext, *, settings: FeedsSettings,
                 metrics: FeedsMetrics, resolver: AbstractResolver | None = None) -> None:
        self.metrics = metrics
        self.user_agent = settings.user_agent
        self.resolver = resolver
        self.options = options
        self.route = route
        self.url = options.address
        self.policy = options.policy(settings.outbound)
        self.timeout = options.timeout or settings.fetch_timeout
        self.max_bytes = options.max_bytes or settings.max_feed_bytes
        self.max_entries = options.max_entries or settings.max_feed_entries
        self.max_redirects = settings.max_redirects if options.max_redirects is None else options.max_redirects
        self.log = route.log.bind(url=self.url)
        self.items: dict[str, str] | None = None  # id -> payload, oldest first
        self.etag: str | None = None
        self.last_modified: str | None = None
        self.failures = 0
        self.retry_after: float | None = None
        self.polls = 0
        self.sleep: Callable[[float], Awaitable[None]] = asyncio.sleep  # tests replace it
        self.random = random.Random()  # noqa: S311 - jitter of poll delays, not a secret
        self._session: aiohttp.ClientSession | None = None
        self._closed = asyncio.Event()

    # ----------------------------------------------------------------- lifecycle

    async def open(self) -> None:
        if self._session is None or self._session.closed:
            self._session = make_session(
                self.policy,
                user_agent=self.user_agent,
                timeout=self.timeout,
                resolver=self.resolver,
            )
        self._closed.clear()

    async def close(self) -> None:
        self._closed.set()
        session, self._session = self._session, None
        if session is not None:
            try:
                await session.close()
            except Exception:  # noqa: BLE001, S110 - close must not raise
                pass

    # ----------------------------------------------------------------- polling

    def next_delay(self) -> float:
        """Seconds until the next poll: the interval, or a jittered exponential backoff after
        errors, or what ``Retry-After`` asked for; never more than ``max_backoff``."""
        interval = self.options.interval
        cap = self.options.max_backoff
        if self.failures == 0:
            delay = interval
        else:  # equal jitter, never shorter than the interval
            delay = Backoff(base=interval, cap=cap, jitter=0.5, floor=interval, rng=self.random).delay(self.failures)
        if self.retry_after is not None:
            delay = max(delay, self.retry_after)
        return min(delay, max(cap, interval))

    async def fetch(self, conditional: bool) -> dict[str, str] | None:
        """One poll: the items, or None when the server says 304. Raises :class:`FetchFailed`."""
        if self._session is None:
            await self.open()
        assert self._session is not None
        headers = {
            "Accept": "application/atom+xml, application/rss+xml, application/feed+json, "
            "application/xml;q=0.9, text/xml;q=0.9, application/json;q=0.8, */*;q=0.1",
            "Accept-Encoding": "gzip, deflate",
        }
        if conditional and self.etag:
            headers["If-None-Match"] = self.etag
        if conditional and self.last_modified:
            headers["If-Modified-Since"] = self.last_modified
        self.polls += 1
        started = time.perf_counter()
        try:
            result = await fetch_limited(
                self._session,
                "GET",
                self.url,
                max_bytes=self.max_bytes,
                max_redirects=self.max_redirects,
                headers=headers,
            )
        except AddressRefused as exc:
            raise FetchFailed(str(exc), "refused") from None
        except TooManyRedirects as exc:
            raise FetchFailed(str(exc), "redirects") from None
        except ResponseTooLarge as exc:
            raise FetchFailed(str(exc), "too_large") from None
        except TimeoutError:
            raise FetchFailed(f"{self.url}: no answer within {self.timeout} s", "timeout") from None
        except (aiohttp.ClientError, FetchError, OSError) as exc:
            raise FetchFailed(f"{self.url}: {type(exc).__name__}: {exc}", "network") from None
        finally:
            self.metrics.fetch_seconds.labels(self.route.name).observe(time.perf_counter() - started)
        if result.status == 304:
            return None
        if result.status in (429, 503):
            raise FetchFailed(
                f"{self.url}: HTTP {result.status}",
                f"http_{result.status}",
                parse_retry_after(result.headers.get("Retry-After")),
            )
        if result.status != 200:
            raise FetchFailed(
                f"{self.url}: HTTP {result.status}",
                f"http_{result.status // 100}xx",
                parse_retry_after(result.headers.get("Retry-After")),
            )
        try:
            # Seconds of pure-Python work for a big document: on the parser threads, never the loop.
            parsed = await parse_feed_async(
                result.body,
                result.headers.get("Content-Type"),
                identity=self.options.identity,
                fmt=self.options.payload_format,
                max_bytes=self.max_bytes,
                base_url=str(result.url),
                max_entries=self.max_entries,
            )
        except FeedParseError as exc:
            raise FetchFailed(f"{self.url}: {exc}", "bad_document") from None
        if parsed.ignored_entries:
            self.log.warning("document has more entries than max_entries, the rest ignored",
                             kept=self.max_entries, ignored=parsed.ignored_entries)
        for problem in parsed.problems:
            self.metrics.bad_entries.labels(self.route.name).inc()
            self.log.warning("entry skipped", problem=problem)
        self.etag = result.headers.get("ETag")
        self.last_modified = result.headers.get("Last-Modified")
        return dict(parsed.items)

    async def poll(self, conditional: bool = True) -> dict[str, str] | None:
        """``fetch`` with the bookkeeping: counts, logs and backoff state."""
        try:
            items = await self.fetch(conditional)
        except FetchFailed as exc:
            self.failures += 1
            self.retry_after = exc.retry_after
            self.metrics.fetches.labels(self.route.name, exc.reason).inc()
            self.log.warning(
                "feed fetch failed",
                reason=exc.reason,
                error=str(exc),
                failures=self.failures,
                retry_after=exc.retry_after,
            )
            raise
        if self.failures:
            self.log.info("feed fetch recovered", after_failures=self.failures)
        self.failures = 0
        self.retry_after = None
        self.metrics.fetches.labels(self.route.name, "not_modified" if items is None else "ok").inc()
        return items

    async def snapshot(self) -> list[tuple[str, str]]:
        try:
            items = await self.poll(conditional=False)
        except FetchFailed:
            if self.items is None:
                raise
            return list(self.items.items())  # keep what we had: never retract on a failed fetch
        assert items is not None
        self.items = items
        return list(items.items())

    def diff(self, new: dict[str, str]) -> list[ItemEvent]:
        old = self.items or {}
        events: list[ItemEvent] = []
        for item_id, payload in new.items():
            if item_id not in old:
                events.append(ItemEvent(EventKind.PUBLISH, item_id, payload))
            elif old[item_id] != payload:
                events.append(ItemEvent(EventKind.EDIT, item_id, payload))
        if self.route.mirror:
            events.extend(ItemEvent(EventKind.RETRACT, item_id) for item_id in old if item_id not in new)
        return events

    async def follow(self) -> AsyncIterator[ItemEvent]:
        while not self._closed.is_set():
            await self.sleep(self.next_delay())
            if self._closed.is_set():
                return
            try:
                items = await self.poll(conditional=self.items is not None)
            except FetchFailed:
                continue
            if items is None:
                continue
            events = self.diff(items)
            self.items = items if self.route.mirror else {**(self.items or {}), **items}
            for event in events:
                yield event


__all__ = ["FeedSource", "FetchFailed", "parse_retry_after"]  # FetchFailed: from .errors
