"""The source half of the conformance suite (see :mod:`thoonk_bridge.testing.conformance`)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import ClassVar

import pytest

from thoonk_bridge.plugin import EventKind, ItemEvent, Resync, Source
from thoonk_bridge.testing.conformance.common import TIMEOUT, maybe_await
from thoonk_bridge.testing.harness import wait_until


@dataclass(frozen=True)
class SourceCapabilities:
    """What a source can do.

    - ``retracts``: ``follow()`` yields a retract when an item is removed at the origin (on the
      route the target builds). ``False``: the suite checks that removing changes nothing it sees.
    """

    retracts: bool = True


@dataclass
class SourceTarget:
    """How the suite reaches the source under test and changes its origin.

    - ``make()``: a new, unopened source on the origin (sync or async); called again for the
      restart check.
    - ``put(item_id, marker)``: publish or edit the item at the origin, with content showing ``marker``.
    - ``remove(item_id)``: remove the item at the origin (the id may be unknown there).
    - ``ready(source)``: optional, after ``open()``: wait until the source receives changes (a
      WebSub subscription verified...).
    """

    make: Callable[[], Source | Awaitable[Source]]
    put: Callable[[str, str], Awaitable[None]]
    remove: Callable[[str], Awaitable[None]]
    ready: Callable[[Source], Awaitable[None]] | None = None


class _Follower:
    """Drives a source as the router does: snapshot, follow, snapshot again on :class:`Resync`.

    ``view`` is what the route would know (id -> payload); ``events`` what ``follow()`` yielded.
    """

    def __init__(self, source: Source) -> None:
        self.source = source
        self.view: dict[str, str] = {}
        self.events: list[ItemEvent] = []
        self.resyncs = 0
        self.task: asyncio.Task[None] | None = None

    async def snapshot(self) -> dict[str, str]:
        items: dict[str, str] = {}
        async for page in self.source.snapshot_pages():
            for item_id, payload in page:
                items.pop(item_id, None)  # the last appearance wins
                items[item_id] = payload
        return items

    async def start(self) -> None:
        self.view = await asyncio.wait_for(self.snapshot(), TIMEOUT)
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            try:
                async for event in self.source.follow():
                    self.events.append(event)
                    if event.kind is EventKind.RETRACT:
                        self.view.pop(event.id, None)
                    else:
                        assert event.payload is not None
                        self.view[event.id] = event.payload
                return
            except Resync:
                self.resyncs += 1
                self.view.update(await self.snapshot())

    def check_alive(self) -> None:
        if self.task is not None and self.task.done() and not self.task.cancelled():
            error = self.task.exception()
            raise AssertionError(f"follow() ended early: {error!r}")

    async def event_for(self, item_id: str, marker: str | None) -> ItemEvent:
        """Wait for an event about ``item_id`` (a retract when ``marker`` is None)."""

        def found() -> ItemEvent | None:
            self.check_alive()
            for event in self.events:
                if event.id != item_id:
                    continue
                if marker is None and event.kind is EventKind.RETRACT:
                    return event
                if marker is not None and event.kind is not EventKind.RETRACT and marker in (event.payload or ""):
                    return event
            return None

        result: ItemEvent = await wait_until(found, timeout=TIMEOUT,
                                             message=f"follow() yields {item_id} ({marker or 'retract'})")
        return result

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.wait({self.task}, timeout=TIMEOUT)
        await asyncio.wait_for(self.source.close(), TIMEOUT)


class SourceConformance:
    """Subclass in a test module and provide the ``source_target`` fixture (a :class:`SourceTarget`)."""

    pytestmark: ClassVar[list[pytest.MarkDecorator]] = [pytest.mark.asyncio]
    capabilities: ClassVar[SourceCapabilities] = SourceCapabilities()

    @pytest.fixture
    def source_target(self) -> SourceTarget:
        raise NotImplementedError("a SourceConformance subclass provides the source_target fixture")

    def item_id(self, name: str) -> str:
        """The id of the suite's item ``name`` (override when the origin's ids must look otherwise:
        an Atom entry id is a URI)."""
        return name

    @staticmethod
    def _marker(name: str) -> str:
        return f"conformance-{name}-{uuid.uuid4().hex[:8]}"

    async def _open(self, target: SourceTarget) -> Source:
        source: Source = await maybe_await(target.make())
        await asyncio.wait_for(source.open(), TIMEOUT)
        if target.ready is not None:
            await asyncio.wait_for(target.ready(source), TIMEOUT)
        return source

    async def _following(self, target: SourceTarget) -> _Follower:
        follower = _Follower(await self._open(target))
        await follower.start()
        return follower

    async def test_snapshot(self, source_target: SourceTarget) -> None:
        a, b = self._marker("a"), self._marker("b")
        await source_target.put(self.item_id("a"), a)
        await source_target.put(self.item_id("b"), b)
        follower = _Follower(await self._open(source_target))
        try:
            items = await asyncio.wait_for(follower.snapshot(), TIMEOUT)
            ia, ib = self.item_id("a"), self.item_id("b")
            assert set(items) == {ia, ib}, items
            assert a in items[ia] and b in items[ib], items
        finally:
            await asyncio.wait_for(follower.source.close(), TIMEOUT)

    async def test_follow_publish_edit_retract(self, source_target: SourceTarget) -> None:
        # an item that stays: an origin that becomes empty may be taken for a broken one
        await source_target.put(self.item_id("b"), self._marker("b"))
        follower = await self._following(source_target)
        try:
            first, edited = self._marker("c"), self._marker("c-edited")
            await source_target.put(self.item_id("c"), first)
            assert (await follower.event_for(self.item_id("c"), first)).kind is EventKind.PUBLISH
            await source_target.put(self.item_id("c"), edited)
            assert (await follower.event_for(self.item_id("c"), edited)).kind in (EventKind.EDIT, EventKind.PUBLISH)
            await source_target.remove(self.item_id("c"))
            if self.capabilities.retracts:
                await follower.event_for(self.item_id("c"), None)
                assert self.item_id("c") not in follower.view
            else:  # the next change comes, and nothing retracted "c" before it
                await source_target.put(self.item_id("d"), marker := self._marker("d"))
                await follower.event_for(self.item_id("d"), marker)
                assert not any(e.kind is EventKind.RETRACT for e in follower.events), follower.events
        finally:
            await follower.stop()

    async def test_removing_an_unknown_id_changes_nothing(self, source_target: SourceTarget) -> None:
        follower = await self._following(source_target)
        try:
            await source_target.remove(self.item_id("never-held"))
            marker = self._marker("d")
            await source_target.put(self.item_id("d"), marker)
            await follower.event_for(self.item_id("d"), marker)
            assert all(e.id != self.item_id("never-held") for e in follower.events), follower.events
            assert set(follower.view) == {self.item_id("d")}, follower.view
        finally:
            await follower.stop()

    async def test_the_same_item_twice_is_held_once(self, source_target: SourceTarget) -> None:
        follower = await self._following(source_target)
        try:
            marker = self._marker("e")
            await source_target.put(self.item_id("e"), marker)
            await source_target.put(self.item_id("e"), marker)
            after = self._marker("f")
            await source_target.put(self.item_id("f"), after)
            await follower.event_for(self.item_id("f"), after)
            ie, i_f = self.item_id("e"), self.item_id("f")
            assert set(follower.view) == {ie, i_f} and marker in follower.view[ie], follower.view
            pages = [page async for page in follower.source.snapshot_pages()]
            ids = [item_id for page in pages for item_id, _payload in page]
            assert sorted(ids) == sorted([ie, i_f]), ids
        finally:
            await follower.stop()

    async def test_a_new_source_sees_what_happened(self, source_target: SourceTarget) -> None:
        a, b, a2 = self._marker("a"), self._marker("b"), self._marker("a-edited")
        await source_target.put(self.item_id("a"), a)
        follower = await self._following(source_target)
        try:
            await source_target.put(self.item_id("b"), b)
            await follower.event_for(self.item_id("b"), b)
            await source_target.put(self.item_id("a"), a2)
            await follower.event_for(self.item_id("a"), a2)
            await source_target.put(self.item_id("gone"), gone := self._marker("gone"))
            await follower.event_for(self.item_id("gone"), gone)  # seen (a polling source may miss a blink)
            await source_target.remove(self.item_id("gone"))
            if self.capabilities.retracts:
                await follower.event_for(self.item_id("gone"), None)
        finally:
            await follower.stop()
        again = _Follower(await self._open(source_target))
        try:
            items = await asyncio.wait_for(again.snapshot(), TIMEOUT)
            assert a2 in items.get(self.item_id("a"), "") and b in items.get(self.item_id("b"), ""), items
            assert self.item_id("gone") not in items or not self.capabilities.retracts, items
        finally:
            await asyncio.wait_for(again.source.close(), TIMEOUT)

    async def test_close_while_following(self, source_target: SourceTarget) -> None:
        follower = await self._following(source_target)
        marker = self._marker("h")
        await source_target.put(self.item_id("h"), marker)
        await follower.event_for(self.item_id("h"), marker)  # follow() is running, waiting for the next event
        assert follower.task is not None
        await asyncio.wait_for(follower.source.close(), TIMEOUT)  # must not raise nor hang
        done, _ = await asyncio.wait({follower.task}, timeout=2.0)
        if not done:  # a follow() that waits on: the router cancels it after close, that must work
            follower.task.cancel()
            done, _ = await asyncio.wait({follower.task}, timeout=TIMEOUT)
        assert done, "follow() neither ended nor could be cancelled after close()"
        if not follower.task.cancelled():
            error = follower.task.exception()
            assert error is None, f"follow() raised after close(): {error!r}"
