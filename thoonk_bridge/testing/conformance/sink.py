"""The sink half of the conformance suite (see :mod:`thoonk_bridge.testing.conformance`)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import pytest

from thoonk_bridge.payload import content_hash
from thoonk_bridge.plugin import DeliveryError, EventKind, ItemEvent, Sink
from thoonk_bridge.testing.conformance.common import LATEST, TIMEOUT, maybe_await
from thoonk_bridge.testing.harness import wait_until


@dataclass(frozen=True)
class SinkCapabilities:
    """What a sink can do; each ``False`` replaces a check by the check of the declared behaviour.

    - ``ids``: ``ids()`` says what the sink holds. ``False``: it returns ``None`` (a webhook; the
      router then keeps a ledger of what it delivered).
    - ``items``: the target keeps items by id, and a retract removes one. ``False``: it keeps the
      latest payload only (a raw WebSub topic): ``held()`` returns ``{LATEST: text}`` and a retract
      changes nothing.
    - ``durable``: what was applied is still there for a new sink on the same target.
    """

    ids: bool = True
    items: bool = True
    durable: bool = True


@dataclass
class SinkTarget:
    """How the suite reaches the sink under test.

    - ``make()``: a new, unopened sink on the target (sync or async); called again, after the first
      one is closed, for the restart check.
    - ``held()``: what the target holds, read without the sink: ``{id: text}`` where the text
      contains the item's content (its marker), or ``{LATEST: text}`` (see
      :class:`SinkCapabilities`). ``None``: the target cannot be read back; only ``ids()`` is checked.
    """

    make: Callable[[], Sink | Awaitable[Sink]]
    held: Callable[[], Awaitable[Mapping[str, str]]] | None = None


@dataclass
class _Expected:
    """What the target should hold after the events applied so far."""

    items: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (marker, payload)
    latest: str | None = None  # marker of the last publish/edit
    gone: set[str] = field(default_factory=set)  # markers that must no longer show


class SinkConformance:
    """Subclass in a test module and provide the ``sink_target`` fixture (a :class:`SinkTarget`)."""

    pytestmark: ClassVar[list[pytest.MarkDecorator]] = [pytest.mark.asyncio]
    capabilities: ClassVar[SinkCapabilities] = SinkCapabilities()

    @pytest.fixture
    def sink_target(self) -> SinkTarget:
        raise NotImplementedError("a SinkConformance subclass provides the sink_target fixture")

    def payload(self, item_id: str, marker: str) -> str:
        """The payload of item ``item_id`` whose content shows ``marker`` (override for another format)."""
        return json.dumps({"title": marker, "content": f"{marker} content",
                           "link": f"https://conformance.example/items/{item_id}"})

    # -- helpers

    @staticmethod
    def _marker(name: str) -> str:
        return f"conformance-{name}-{uuid.uuid4().hex[:8]}"

    async def _open(self, target: SinkTarget) -> Sink:
        sink: Sink = await maybe_await(target.make())
        await asyncio.wait_for(sink.open(), TIMEOUT)
        return sink

    async def _apply(self, sink: Sink, expected: _Expected, kind: EventKind, item_id: str, name: str = "") -> None:
        if kind is EventKind.RETRACT:
            await asyncio.wait_for(sink.apply(ItemEvent(kind, item_id)), TIMEOUT)
            self._note(expected, ItemEvent(kind, item_id), "")
            return
        marker = self._marker(name or item_id)
        event = ItemEvent(kind, item_id, self.payload(item_id, marker))
        await asyncio.wait_for(sink.apply(event), TIMEOUT)
        self._note(expected, event, marker)

    def _note(self, expected: _Expected, event: ItemEvent, marker: str) -> None:
        old = expected.items.get(event.id)
        if event.kind is EventKind.RETRACT:
            if self.capabilities.items and old is not None:
                del expected.items[event.id]
                expected.gone.add(old[0])
            return
        assert event.payload is not None
        if old is not None and old[0] != marker:
            expected.gone.add(old[0])
        expected.items[event.id] = (marker, event.payload)
        expected.latest = marker

    async def _check(self, target: SinkTarget, sink: Sink, expected: _Expected) -> None:
        """``ids()`` and the target agree with ``expected`` (waiting for asynchronous targets)."""
        await asyncio.wait_for(sink.flush(), TIMEOUT)
        if self.capabilities.ids:
            want = {i: content_hash(p) for i, (_m, p) in expected.items.items()}

            async def ids_match() -> bool:
                ids = await sink.ids()
                assert ids is not None, "ids() returned None: declare SinkCapabilities(ids=False)"
                return set(ids) == set(want) and all(ids[i] in (h, None) for i, h in want.items())

            await wait_until(ids_match, timeout=TIMEOUT, message=f"ids() == {want} (last: {await sink.ids()})")
        else:
            assert await sink.ids() is None, "a sink declared without ids() must return None"
        if target.held is None:
            return
        held_fn = target.held

        async def held_matches() -> bool:
            held = await held_fn()
            if not self.capabilities.items:
                text = held.get(LATEST, "")
                return expected.latest is None or expected.latest in text
            return set(held) == set(expected.items) and all(
                m in held[i] and not any(g in held[i] for g in expected.gone)
                for i, (m, _p) in expected.items.items()
            )

        try:
            await wait_until(held_matches, timeout=TIMEOUT, message="the target holds what was applied")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; expected {expected}, target holds {dict(await held_fn())}") from None

    # -- the checks

    async def test_publish(self, sink_target: SinkTarget) -> None:
        sink, expected = await self._open(sink_target), _Expected()
        try:
            await self._check(sink_target, sink, expected)  # a new target holds nothing
            await self._apply(sink, expected, EventKind.PUBLISH, "a")
            await self._check(sink_target, sink, expected)
            await self._apply(sink, expected, EventKind.PUBLISH, "b")
            await self._check(sink_target, sink, expected)
        finally:
            await sink.close()

    async def test_edit(self, sink_target: SinkTarget) -> None:
        sink, expected = await self._open(sink_target), _Expected()
        try:
            await self._apply(sink, expected, EventKind.PUBLISH, "a")
            await self._check(sink_target, sink, expected)
            await self._apply(sink, expected, EventKind.EDIT, "a", "a-edited")
            await self._check(sink_target, sink, expected)
            # an edit of an id the sink never had is an upsert (events are coalesced by id)
            await self._apply(sink, expected, EventKind.EDIT, "c")
            await self._check(sink_target, sink, expected)
        finally:
            await sink.close()

    async def test_retract(self, sink_target: SinkTarget) -> None:
        sink, expected = await self._open(sink_target), _Expected()
        try:
            await self._apply(sink, expected, EventKind.PUBLISH, "a")
            await self._apply(sink, expected, EventKind.PUBLISH, "b")
            await self._check(sink_target, sink, expected)
            await self._apply(sink, expected, EventKind.RETRACT, "a")
            await self._check(sink_target, sink, expected)
        finally:
            await sink.close()

    async def test_retract_of_an_unknown_id_changes_nothing(self, sink_target: SinkTarget) -> None:
        sink, expected = await self._open(sink_target), _Expected()
        try:
            await self._apply(sink, expected, EventKind.RETRACT, "never-held")  # on an empty target
            await self._check(sink_target, sink, expected)
            await self._apply(sink, expected, EventKind.PUBLISH, "a")
            await self._apply(sink, expected, EventKind.RETRACT, "never-held")
            await self._check(sink_target, sink, expected)
        finally:
            await sink.close()

    async def test_the_same_event_twice_is_once(self, sink_target: SinkTarget) -> None:
        sink, expected = await self._open(sink_target), _Expected()
        try:
            for kind, item_id in ((EventKind.PUBLISH, "a"), (EventKind.PUBLISH, "b"), (EventKind.EDIT, "a"),
                                  (EventKind.RETRACT, "b")):
                marker = self._marker(item_id)
                event = ItemEvent(kind, item_id, None if kind is EventKind.RETRACT else self.payload(item_id, marker))
                await asyncio.wait_for(sink.apply(event), TIMEOUT)
                self._note(expected, event, marker)
                await self._check(sink_target, sink, expected)
                before = await sink.ids()
                await asyncio.wait_for(sink.apply(event), TIMEOUT)  # again: nothing changes
                await self._check(sink_target, sink, expected)
                assert await sink.ids() == before
        finally:
            await sink.close()

    async def test_apply_many(self, sink_target: SinkTarget) -> None:
        sink, expected = await self._open(sink_target), _Expected()
        try:
            await self._apply(sink, expected, EventKind.PUBLISH, "a")
            markers = {i: self._marker(i) for i in ("b", "c")}
            events = [ItemEvent(EventKind.PUBLISH, i, self.payload(i, m)) for i, m in markers.items()]
            events.append(ItemEvent(EventKind.RETRACT, "a"))
            results = await asyncio.wait_for(sink.apply_many(events), TIMEOUT)
            assert all(r is None for r in results), results
            for event in events[len(results):]:  # not attempted: the router sends them again
                await asyncio.wait_for(sink.apply(event), TIMEOUT)
            for event in events:
                self._note(expected, event, markers.get(event.id, ""))
            await self._check(sink_target, sink, expected)
        finally:
            await sink.close()

    async def test_what_was_applied_is_there_after_a_restart(self, sink_target: SinkTarget) -> None:
        sink, expected = await self._open(sink_target), _Expected()
        try:
            await self._apply(sink, expected, EventKind.PUBLISH, "a")
            await self._apply(sink, expected, EventKind.PUBLISH, "b")
            await self._apply(sink, expected, EventKind.EDIT, "b", "b-edited")
            await self._apply(sink, expected, EventKind.PUBLISH, "c")
            await self._apply(sink, expected, EventKind.RETRACT, "c")
            await self._check(sink_target, sink, expected)
        finally:
            await asyncio.wait_for(sink.close(), TIMEOUT)
        again = await self._open(sink_target)
        try:
            if self.capabilities.durable:
                await self._check(sink_target, again, expected)
            # and the new sink goes on from there
            await self._apply(again, expected, EventKind.EDIT, "a", "a-after-restart")
            if self.capabilities.durable:
                await self._check(sink_target, again, expected)
        finally:
            await again.close()

    async def test_close_while_applying(self, sink_target: SinkTarget) -> None:
        sink = await self._open(sink_target)
        applied = 0

        async def work() -> None:
            nonlocal applied
            for n in range(200):
                item_id = f"busy-{n}"
                await sink.apply(ItemEvent(EventKind.PUBLISH, item_id, self.payload(item_id, self._marker(item_id))))
                applied += 1

        task = asyncio.create_task(work())
        try:
            await wait_until(lambda: applied >= 3 or task.done(), timeout=TIMEOUT, message="a few events applied")
            await asyncio.wait_for(sink.close(), TIMEOUT)  # must not raise nor hang
            done, _ = await asyncio.wait({task}, timeout=TIMEOUT)
            if not done:  # an apply may wait on a closed target: the router cancels it, that must work
                task.cancel()
                done, _ = await asyncio.wait({task}, timeout=TIMEOUT)
            assert done, "apply() neither ended nor could be cancelled after close()"
            if not task.cancelled():
                error = task.exception()
                # refusing work after close is fine, as long as it is said the contract's way
                assert error is None or isinstance(error, DeliveryError), repr(error)
        finally:
            if not task.done():
                task.cancel()
