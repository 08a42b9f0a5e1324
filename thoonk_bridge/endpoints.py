"""The ``thoonk`` endpoint kind: Thoonk feeds as route sources and sinks (part of the engine)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import Field

from thoonk_bridge.payload import content_hash
from thoonk_bridge.plugin import EndpointKind, EventKind, ItemEvent, Resync, Settings, Sink, Source
from thoonk_bridge.thoonk.feed import PageCursor

if TYPE_CHECKING:
    from thoonk_bridge.thoonk import AsyncThoonk

FEED_NAME_PATTERN = r"^[^\s\x00]{1,200}$"


class ThoonkSourceOptions(Settings):
    """``from: thoonk:FEED``.

    - ``address``: the feed name (created when missing).
    """

    address: str = Field(pattern=FEED_NAME_PATTERN)


class ThoonkSinkOptions(Settings):
    """``to: thoonk:FEED``.

    - ``address``: the feed name (created when missing).
    - ``max_length``: set the feed's ``max_length`` when the bridge creates it.
    """

    address: str = Field(pattern=FEED_NAME_PATTERN)
    max_length: int | None = Field(default=None, ge=1)


THOONK_KIND = EndpointKind(
    name="thoonk",
    source_options=ThoonkSourceOptions,
    sink_options=ThoonkSinkOptions,
    description="Thoonk feeds in the bridge's Redis",
)


_THOONK_TO_ITEM = {"publish": EventKind.PUBLISH, "edit": EventKind.EDIT, "retract": EventKind.RETRACT}


class ThoonkSource(Source):
    """Reads a Thoonk feed: its items as the snapshot, its publish/edit/retract events as the follow.

    The Redis pub/sub subscription is made in ``open()``, before the snapshot, so nothing published
    between the two is missed. A lost Redis connection re-subscribes and raises :class:`Resync`.
    """

    def __init__(self, thoonk: AsyncThoonk, feed: str) -> None:
        self.thoonk = thoonk
        self.feed_name = feed
        self._events: Any = None

    async def open(self) -> None:
        await self.thoonk.feed(self.feed_name)  # create when missing, refuse a queue/job of that name
        # Pub/sub is server-wide: when another database of the server has a feed of this name, its
        # events reach us too, so each batch of events is checked against our database (one HMGET).
        shared = await self.thoonk.databases_sharing(self.feed_name)
        # One pub/sub connection for every route of the daemon (shared), not one per route.
        self._events = self.thoonk.events(self.feed_name, confirm=bool(shared), shared=True)
        await self._events.__aenter__()

    async def snapshot(self) -> list[tuple[str, str]]:
        feed = await self.thoonk.feed(self.feed_name)
        return list((await feed.get_all()).items())

    async def version(self) -> str | None:
        if self.thoonk.cluster:
            return None  # a cluster's bus does not keep PUBLISH order across nodes: no barrier
        return await (await self.thoonk.feed(self.feed_name)).version()  # type: ignore[no-any-return]

    async def barrier(self) -> bool:
        if self._events is None or self.thoonk.cluster:
            return False
        await (await self._events.barrier()).wait()
        return True

    async def snapshot_pages(self) -> AsyncIterator[Sequence[tuple[str, str]]]:
        feed = await self.thoonk.feed(self.feed_name)
        cursor: PageCursor | None = PageCursor()
        while cursor is not None:
            page = await feed.read_page(cursor)
            yield page.items
            cursor = page.next

    async def follow(self) -> AsyncIterator[ItemEvent]:
        if self._events is None:
            await self.open()
        try:
            async for event in self._events:
                kind = _THOONK_TO_ITEM.get(event.kind)
                if kind is None or event.feed != self.feed_name or not event.id:
                    continue
                yield ItemEvent(kind, event.id, None if kind is EventKind.RETRACT else (event.item or ""))
        except ConnectionError as exc:
            await self._reopen()
            raise Resync(f"thoonk:{self.feed_name}: redis connection lost ({exc})") from exc

    async def _reopen(self) -> None:
        await self.close()
        await self.open()

    async def close(self) -> None:
        events, self._events = self._events, None
        if events is not None:
            try:
                await events.__aexit__(None, None, None)
            except Exception:  # noqa: BLE001 - closing a broken subscription must not raise
                pass


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
