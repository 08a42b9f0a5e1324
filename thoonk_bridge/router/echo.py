"""Drops the echo of a route's own writes when two routes run in opposite directions."""

from __future__ import annotations

import time
from collections import OrderedDict

from thoonk_bridge.payload import content_hash
from thoonk_bridge.plugin import EventKind, ItemEvent


class EchoFilter:
    """Writes made by sinks, remembered for ``ttl`` seconds: which endpoint, which event, and the
    source of the route that made the write (its *origin*).

    When a route reads an event from an endpoint that this daemon itself just wrote, exactly, and
    the route would write it back to where the write came from (the origin is one of its sinks),
    that is an echo: the router drops it for that sink only. A chain ``a -> n -> b`` is no echo
    (``b`` is not where the item came from) and is delivered as usual.
    """

    def __init__(self, ttl: float = 120.0, max_entries: int = 100_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._writes: OrderedDict[tuple[str, str, str], tuple[float, str]] = OrderedDict()

    @staticmethod
    def _key(endpoint: str, event: ItemEvent) -> tuple[str, str, str]:
        digest = "-" if event.kind is EventKind.RETRACT else content_hash(event.payload or "")
        return (endpoint, event.id, digest)

    def wrote(self, endpoint: str, event: ItemEvent, origin: str) -> None:
        key = self._key(endpoint, event)
        self._writes[key] = (time.monotonic() + self.ttl, origin)
        self._writes.move_to_end(key)
        while len(self._writes) > self.max_entries:
            self._writes.popitem(last=False)

    def forget(self, endpoint: str, event: ItemEvent) -> None:
        self._writes.pop(self._key(endpoint, event), None)

    def origin(self, endpoint: str, event: ItemEvent) -> str | None:
        """Where the write that ``event`` on ``endpoint`` echoes came from (None: no such write)."""
        entry = self._writes.get(self._key(endpoint, event))
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def consume(self, endpoint: str, event: ItemEvent) -> None:
        """The echo was dropped: one echo per write."""
        self._writes.pop(self._key(endpoint, event), None)
