"""``to: thoonk:FEED``: writes a route's events to a Thoonk feed."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import TYPE_CHECKING

from thoonk_bridge.payload import content_hash
from thoonk_bridge.plugin import EventKind, ItemEvent, Sink
from thoonk_bridge.thoonk.feed import PageCursor

if TYPE_CHECKING:
    from thoonk_bridge.thoonk import AsyncThoonk

__all__ = ["ThoonkSink"]


class ThoonkSink(Sink):
    """Writes to a Thoonk feed. Applying a payload the feed already holds changes nothing,
    which is what stops a pair of opposite routes from echoing each other's writes."""

    def __init__(self, thoonk: AsyncThoonk, feed: str, max_length: int | None = None) -> None:
        self.thoonk = thoonk
        self.feed_name = feed
        self.max_length = max_length

    async def open(self) -> None:
        if self.max_length is not None and not await self.thoonk.feed_exists(self.feed_name):
            await self.thoonk.create_feed(self.feed_name, {"max_length": str(self.max_length)})
        await self.thoonk.feed(self.feed_name)

    async def ids(self) -> dict[str, str | None]:
        feed = await self.thoonk.feed(self.feed_name)
        held: dict[str, str | None] = {}
        cursor: PageCursor | None = PageCursor()
        while cursor is not None:  # a page at a time: only the hashes are kept, never every payload
            page = await feed.read_page(cursor)
            held.update((item_id, content_hash(item)) for item_id, item in page.items)
            cursor = page.next
        return held

    async def apply(self, event: ItemEvent) -> None:
        feed = await self.thoonk.feed(self.feed_name)
        if event.kind is EventKind.RETRACT:
            await feed.retract(event.id)
            return
        assert event.payload is not None
        if await feed.get_item(event.id) == event.payload:
            return
        await feed.publish(event.payload, id=event.id)

    async def version(self) -> str | None:
        if self.thoonk.cluster:
            return None
        return await (await self.thoonk.feed(self.feed_name)).version()  # type: ignore[no-any-return]

    async def apply_many(self, events: Sequence[ItemEvent]) -> list[BaseException | None]:
        """Runs of publishes and edits go out as one ``publish_many`` (what the feed already holds,
        byte for byte, is left alone); retracts one by one, in order."""
        feed = await self.thoonk.feed(self.feed_name)
        results: list[BaseException | None] = []
        i = 0
        while i < len(events):
            if events[i].kind is EventKind.RETRACT:
                try:
                    await feed.retract(events[i].id)
                except Exception as exc:  # noqa: BLE001 - the router retries it
                    return [*results, exc]
                results.append(None)
                i += 1
                continue
            run = list(itertools.takewhile(lambda e: e.kind is not EventKind.RETRACT, events[i:]))
            try:
                have = await feed.get_items([e.id for e in run])
                await feed.publish_many([(e.id, e.payload or "") for e, h in zip(run, have, strict=True)
                                         if h != e.payload])
            except Exception as exc:  # noqa: BLE001 - the router retries the run
                return [*results, exc]
            results += [None] * len(run)
            i += len(run)
        return results
