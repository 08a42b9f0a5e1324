"""``to: feeds:NAME``: the sink side (Thoonk items into documents)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from thoonk_bridge.feedparse import in_parser_thread
from thoonk_bridge.plugin import DeliveryError, EventKind, ItemEvent, RouteContext, Sink

from .document import FeedDocument
from .errors import BadItem

# Payloads up to this size are parsed on the event loop (well under a millisecond); larger ones, up
# to the document's max_payload_bytes, in a worker thread so the loop never waits on them.
PARSE_ON_LOOP_BYTES = 32 * 1024


class FeedSink(Sink):
    """Applies events to a :class:`FeedDocument`; the document renders them, coalesced.

    ``apply`` is idempotent: a publish or edit with the payload the document already holds changes
    nothing, a retract of an unknown id neither. A payload the documents cannot hold (not valid in
    its format, too large, empty) raises a non-retryable :class:`DeliveryError`: the router puts it
    in the route's dead-letter feed, and the documents stay as they were.

    Receives what it uses: ``open_document``/``close_document`` (the plugin serves the document
    between them) and ``bad_items`` (the counter of refused items, labelled feed and reason).
    """

    def __init__(self, document: FeedDocument, route: RouteContext, *,
                 open_document: Callable[[FeedDocument], Awaitable[None]],
                 close_document: Callable[[FeedDocument], Awaitable[None]], bad_items: Any) -> None:
        self.document = document
        self.open_document = open_document
        self.close_document = close_document
        self.bad_items = bad_items
        # The documents hold the newest max_items: a reconcile sends only those (and the state
        # need not remember every id ever pushed out of the window).
        self.capacity = document.max_items
        self.route = route
        self.log = route.log.bind(feed=document.meta.name)
        self._opened = False

    async def open(self) -> None:
        if self._opened:
            return
        await self.open_document(self.document)
        self._opened = True

    def problem(self) -> str | None:
        return self.document.write_error

    async def ids(self) -> dict[str, str | None]:
        return self.document.ids()

    async def apply(self, event: ItemEvent) -> None:
        if event.kind is EventKind.RETRACT:
            self.document.remove(event.id)
            return
        assert event.payload is not None
        try:
            # The entry comes from the event: parsed once for the route (the router's conversion and
            # every sink share it), or here when nothing parsed it yet.
            entry = None
            if len(event.payload) > PARSE_ON_LOOP_BYTES:
                payload = event.payload
                entry = await in_parser_thread(lambda: self.document.check(event.id, payload, parsed=event.entry))
            self.document.put(event.id, event.payload, entry=entry, parsed=event.entry)
        except BadItem as exc:
            self.bad_items.labels(self.document.meta.name, exc.reason).inc()
            self.log.warning("item refused by feed", item=event.id, reason=exc.reason, error=str(exc))
            raise DeliveryError(str(exc), retryable=False) from None

    async def flush(self) -> None:
        await self.document.flush()

    async def close(self) -> None:
        try:
            await self.document.flush()
        except Exception as exc:  # noqa: BLE001 - close must not raise
            self.log.error("final render failed", error=str(exc))
        await self.close_document(self.document)
