"""The Sink/Source conformance suite: what every plugin's sinks and sources must do, as pytest tests.

A plugin runs it by subclassing, in one of its test modules, :class:`SinkConformance` and/or
:class:`SourceConformance`, and giving the suite a way to reach the sink or source under test
through a fixture (``sink_target`` / ``source_target``)::

    from thoonk_bridge.testing.conformance import SinkConformance, SinkTarget

    class TestJsonLogSink(SinkConformance):
        @pytest.fixture
        async def sink_target(self, plugin_harness):
            async with plugin_harness(JsonLogPlugin) as harness:
                endpoint = Endpoint("jsonlog", "news", JsonLogSinkOptions(address="news"))
                yield SinkTarget(make=lambda: harness.plugin.sink(endpoint, harness.route()),
                                 held=read_back_the_file)

The fixtures of :mod:`thoonk_bridge.testing.pytest_plugin` (``plugin_harness``, ``redis_url``...)
help build it. What a sink or source genuinely cannot do is declared in ``capabilities``
(:class:`SinkCapabilities`, :class:`SourceCapabilities`); the suite then checks the declared
behaviour instead (``ids()`` returning ``None``...), it never skips.

Sink checks: publish, edit, retract, retract of an unknown id (no error, nothing changes),
idempotent re-apply (the same event twice is once), ``apply_many``, ``ids()`` after each (the
``thoonk_bridge.payload.content_hash`` of what it holds), what was applied still there for a new
sink on the same target (a restart), and ``close()`` while applying (neither hangs nor raises).

Source checks: the snapshot, publish/edit/retract seen by ``follow()``, removal of an unknown id
at the origin (nothing happens), the same item put twice (held once), a new source on the same
origin (a restart) whose snapshot shows what happened, and ``close()`` while following.

Payloads: the suite writes :meth:`SinkConformance.payload` (a JSON entry whose title is a unique
marker and whose link ends with the item id; override it when your sink takes another format), and
checks content by looking for that marker in what the target holds.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest

from thoonk_bridge.payload import content_hash
from thoonk_bridge.plugin import DeliveryError, EventKind, ItemEvent, Resync, Sink, Source
from thoonk_bridge.testing.harness import wait_until

__all__ = [
    "LATEST",
    "SinkCapabilities",
    "SinkConformance",
    "SinkTarget",
    "SourceCapabilities",
    "SourceConformance",
    "SourceTarget",
]

LATEST = ""  # the key of ``SinkTarget.held()`` for a target that keeps only the latest payload
TIMEOUT = 15.0  # seconds any awaited effect may take (a safety net, never a measurement)


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


# --------------------------------------------------------------------------- sinks


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
        sink: Sink = await _maybe_await(target.make())
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


# --------------------------------------------------------------------------- sources


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
        source: Source = await _maybe_await(target.make())
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

