"""``to: websub:NAME``: a route's documents (or its items, as a raw topic) distributed by the hub."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from thoonk_bridge.plugin import Endpoint, EventKind, ItemEvent, RouteContext, Sink

from .settings import WebSubSinkOptions
from .store import HubStore
from .topics import HubTopics

_FORMAT_TYPES = {"json": "application/json", "atom": "application/atom+xml", "text": "text/plain; charset=utf-8"}


def _guess_type(payload: str) -> str:
    head = payload.lstrip()[:1]
    if head in ("{", "["):
        return "application/json"
    if head == "<":
        return "application/atom+xml" if "<entry" in payload[:2000] else "application/xml"
    return "text/plain; charset=utf-8"


class WebSubSink(Sink):
    """``to: websub:NAME``: see :class:`WebSubSinkOptions` for what it does.

    Receives what it uses: ``topics`` (documents registered under NAME, raw topics), ``store``
    (where a raw topic's last item is kept), ``distribute(topic_url)`` and ``topics_path``.
    """

    def __init__(self, endpoint: Endpoint[WebSubSinkOptions], route: RouteContext, *, topics: HubTopics,
                 store: HubStore, distribute: Callable[[str], Awaitable[bool]], topics_path: str) -> None:
        self.options = endpoint.options
        self.route = route
        self.topics = topics
        self.store = store
        self.distribute = distribute
        self.name = self.options.address
        self.path = f"{topics_path}/{self.name}"

    def raw(self) -> bool:
        if self.options.mode == "raw":
            return True
        if self.options.mode == "documents":
            return False
        return not self.topics.has_documents(self.name)

    async def open(self) -> None:
        if self.raw():
            await self.topics.add_raw(self.name)

    async def apply(self, event: ItemEvent) -> None:
        if event.kind is EventKind.RETRACT or not self.raw():
            return  # documents: their own changes drive the hub; a raw topic keeps its last item
        await self.topics.add_raw(self.name)
        assert event.payload is not None
        ctype = self.options.content_type or _FORMAT_TYPES.get(self.route.format or "") or _guess_type(event.payload)
        await self.store.set_raw(self.name, event.payload.encode("utf-8"), ctype)
        await self.distribute(self.topics.url(self.path))


__all__ = ["WebSubSink"]
