"""``from: thoonk:FEED``: a Thoonk feed's items and live events."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

from thoonk_bridge.plugin import EventKind, ItemEvent, Resync, Source
from thoonk_bridge.thoonk.feed import PageCursor

if TYPE_CHECKING:
    from thoonk_bridge.thoonk import AsyncThoonk

__all__ = ["ThoonkSource"]

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
            except Exception:  # noqa: BLE001, S110 - closing a broken subscription must not raise
                pass
