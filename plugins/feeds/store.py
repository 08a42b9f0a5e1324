"""The documents of this daemon's routes stored in Redis for the other daemons of the fleet, and
the copies the other daemons stored, read back to serve them here."""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from thoonk_bridge import keys
from thoonk_bridge.backoff import Backoff
from thoonk_bridge.tasks import cancel_all
from thoonk_bridge.thoonk.text import as_text

from .document import FeedDocument, Served

STORED_FIELDS = ("etag", "last_modified", "content_type")
STORE_RETRY = Backoff(base=0.5, cap=5.0, jitter=0)  # storing the documents in Redis for the fleet
MAX_COPIES = 64  # copies of other daemons' documents kept in memory (revalidated by ETag on each use)


def stored_key(name: str, fmt: str) -> str:
    """The Redis hash where the owner of ``feeds:NAME`` keeps one rendered format for the fleet.

    Fields: ``body``, ``gzip`` (the gzipped body), ``etag`` (quoted, of the identity body),
    ``last_modified`` (seconds since the epoch) and ``content_type``. The ``{NAME}`` hash tag keeps
    a feed's documents in one cluster slot.
    """
    return keys.feeds_document(name, fmt)


def _raise_if_cancelling() -> None:
    """redis-py may swallow a cancellation that arrives in mid-command (it then reconnects): the
    render loop being stopped must still see it, or ``FeedDocument.stop`` waits forever."""
    me = asyncio.current_task()
    if me is not None and me.cancelling():
        raise asyncio.CancelledError


def _bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode("utf-8", "surrogateescape")


class FleetStore:
    """Stores (``store_soon``) and reads back (``read``) the documents kept in Redis for the fleet.

    ``redis``: the shared client; ``log``; ``is_open(document)``: whether a document is still open
    here (a failed store is retried in the background while it is).
    """

    def __init__(self, redis: Any, log: Any, is_open: Callable[[FeedDocument], bool]) -> None:
        self.redis = redis
        self.log = log
        self.is_open = is_open
        # documents held by another daemon, as last read from Redis (revalidated by ETag on each use)
        self.copies: OrderedDict[tuple[str, str], Served] = OrderedDict()
        self._locks: dict[str, asyncio.Lock] = {}
        self._retries: dict[str, asyncio.Task[None]] = {}
        self._storing: set[asyncio.Task[bool]] = set()

    def store_soon(self, document: FeedDocument, formats: list[str], guard: Callable[[], bool] | None) -> None:
        """``store`` in the background (the render loop is not held up by Redis). Each store writes the
        latest rendering, so they may run in any order."""
        task = asyncio.create_task(self.store(document, formats, guard), name=f"feeds-store:{document.meta.name}")
        self._storing.add(task)
        task.add_done_callback(self._storing.discard)

    async def stop(self) -> None:
        await self.finish()
        await cancel_all(self._retries.values())
        self._retries.clear()

    async def store(self, document: FeedDocument, formats: list[str], guard: Callable[[], bool] | None) -> bool:
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
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            try:
                for fmt in formats:
                    served = document.served.get(fmt)
                    if served is None:
                        continue
                    key = stored_key(name, fmt)
                    etag, modified = await self.redis.hmget(key, "etag", "last_modified")
                    if etag is not None and as_text(etag) == served.etag and modified is not None:
                        if document.served.get(fmt) is served:
                            document.served[fmt] = dataclasses.replace(served, last_modified=float(as_text(modified)))
                        continue
                    if guard is not None and not guard():
                        return True
                    await self.redis.hset(key, mapping={
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
                self._retry(document, guard)
                return False
        _raise_if_cancelling()
        return True

    async def finish(self, timeout: float = 5.0) -> None:
        """Let the stores in flight finish (bounded): a handover leaves the latest bytes in Redis."""
        pending = list(self._storing)
        if not pending:
            return
        _, late = await asyncio.wait(pending, timeout=timeout)
        await cancel_all(late)

    def _retry(self, document: FeedDocument, guard: Callable[[], bool] | None) -> None:
        name = document.meta.name
        if name in self._retries:
            return

        async def retry() -> None:
            attempt = 0
            try:
                while self.is_open(document):
                    await STORE_RETRY.sleep(attempt)
                    attempt += 1
                    if guard is not None and not guard():
                        return
                    if await self.store(document, list(document.served), guard):
                        return
            finally:
                self._retries.pop(name, None)

        self._retries[name] = asyncio.create_task(retry(), name=f"feeds-store:{name}")

    async def read(self, name: str, fmt: str) -> Served | None:
        """The copy of ``NAME.fmt`` the route's owner stored in Redis (None: none stored)."""
        key = stored_key(name, fmt)
        etag, modified, ctype = await self.redis.hmget(key, *STORED_FIELDS)
        if etag is None or modified is None or ctype is None:
            return None
        cached = self.copies.get((name, fmt))
        if cached is not None and cached.etag == as_text(etag):
            if cached.last_modified != float(as_text(modified)):
                cached = dataclasses.replace(cached, last_modified=float(as_text(modified)))
                self.copies[(name, fmt)] = cached
            self.copies.move_to_end((name, fmt))
            return cached
        body, gzipped, etag, modified, ctype = await self.redis.hmget(key, "body", "gzip", *STORED_FIELDS)
        if body is None or etag is None or modified is None or ctype is None:
            return None
        served = Served(
            body=_bytes(body),
            gzipped=_bytes(gzipped) if gzipped is not None else gzip.compress(_bytes(body), compresslevel=6, mtime=0),
            etag=as_text(etag),
            last_modified=float(as_text(modified)),
            content_type=as_text(ctype),
        )
        self.copies[(name, fmt)] = served
        while len(self.copies) > MAX_COPIES:
            self.copies.popitem(last=False)
        return served


__all__ = ["STORED_FIELDS", "FleetStore", "stored_key"]
