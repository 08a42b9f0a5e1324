"""Reconcile of one sink: the source's snapshot, page by page, against what the sink holds."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

from thoonk_bridge.payload import content_hash
from thoonk_bridge.plugin import EventKind, ItemEvent
from thoonk_bridge.router.ledger import LEDGER_PAGE, LedgerEntry

if TYPE_CHECKING:
    from thoonk_bridge.router.worker import SinkWorker

LEDGER_KEEP_US = 30 * 86_400 * 1_000_000  # see SinkReconcile.end: forgetting what can never matter again
_MISSING = object()


def initial_keep(initial: str) -> int | None:
    """How many of the newest items a new route delivers first (None: all)."""
    if initial == "none":
        return 0
    if initial.startswith("latest:"):
        return int(initial.split(":", 1)[1])
    return None


class SinkReconcile:
    """One reconcile of one sink, fed the source's snapshot a page at a time.

    Queues what the sink lacks and what differs as the pages come, so the snapshot is never held
    whole; then, at the end, the retracts:

    - every item the route delivered (its ledger) that the source no longer has, as far as the
      source's ``absence`` says an id missing from its snapshot was retracted;
    - with ``mirror``, also what the sink holds that the route never delivered.

    Opposite routes (``a -> b`` and ``b -> a``) make one collection of two endpoints: an item either
    route delivered that one side no longer has was retracted there, so it is retracted from the other
    side instead of being sent back.
    """

    def __init__(
        self,
        worker: SinkWorker,
        held: dict[str, str | None],
        ledger: dict[str, str],
        reverse: dict[str, str],
        initial_keep: int | None,
    ) -> None:
        self.worker = worker
        self.held = held
        self.ledger = ledger
        self.reverse = reverse
        self.paired = worker.reverse is not None
        # New route with `initial: latest:N|none`, or a sink keeping only its newest: only the newest
        # of the snapshot are sent, so they wait in a bounded tail until the snapshot ends.
        self.initial_keep = initial_keep
        self.tail_size = initial_keep if initial_keep is not None else worker.sink.capacity
        self.tail: deque[tuple[str, str]] = deque()
        self.skipped: dict[str, str | None] = {}
        self.queued = 0

    async def page(self, items: Sequence[tuple[str, str]]) -> None:
        for item in items:
            if self.tail_size is None:
                self._compare(*item)
                continue
            self.tail.append(item)
            if len(self.tail) > self.tail_size:
                old_id, old_payload = self.tail.popleft()
                if self.initial_keep is not None and old_id not in self.held:
                    # Left out by `initial`: counts as delivered, so it is never sent later.
                    self.skipped[old_id] = self.worker.ledger_value(ItemEvent(EventKind.PUBLISH, old_id, old_payload))
        if len(self.skipped) >= LEDGER_PAGE:
            await self._flush_skipped()
        await self.worker.wait_room()

    def _delivered_and_gone(self, seen: set[str], cut: int, gone: dict[str, str | None]) -> list[str]:
        """What the route (or the opposite one) delivered after ``cut`` and the source no longer has:
        the ids to retract from the sink; those the sink lost too are put in ``gone`` (forgotten)."""
        retract: list[str] = []
        for delivered in (self.ledger, self.reverse):
            for item_id, value in delivered.items():
                if item_id in seen or LedgerEntry.parse(value).at <= cut:
                    continue
                if item_id in self.held:
                    retract.append(item_id)
                elif item_id in self.ledger:
                    gone[item_id] = None  # the sink lost it too: nothing to retract, forget it
        return retract

    def _forget_stale(self, seen: set[str], cut: int | None, gone: dict[str, str | None]) -> None:
        """The ledger stays bounded: an id neither source nor sink has any more is forgotten (a sink
        that reports what it holds); for a sink that cannot tell, and a source whose absences say
        nothing (an outside document), an id no longer in the source delivered over LEDGER_KEEP_US ago."""
        old = int(time.time() * 1_000_000) - LEDGER_KEEP_US
        for item_id, value in self.ledger.items():
            if item_id in seen or item_id in gone:
                continue
            if self.worker.reports_ids and item_id not in self.held:
                gone[item_id] = None
            elif cut is None and LedgerEntry.parse(value).at < old:
                gone[item_id] = None

    async def end(self, seen: set[str], absence: str) -> int:
        """The snapshot is complete (``seen``: every id in it): queue the rest and the retracts."""
        await self._flush_skipped()
        tail = list(self.tail)
        capacity = self.worker.sink.capacity
        if capacity is not None and len(tail) > capacity:
            tail = tail[-capacity:]
        for item_id, payload in tail:
            self._compare(item_id, payload)
        worker = self.worker
        retract: list[str] = []
        if worker.route.mirror:
            retract += [i for i in self.held if i not in seen]
        cut = self._retracted_after(seen, absence)
        gone: dict[str, str | None] = {}
        if cut is not None:
            retract += self._delivered_and_gone(seen, cut, gone)
        self._forget_stale(seen, cut, gone)
        for item_id in dict.fromkeys(retract):
            if item_id not in worker.pending:
                worker.offer(ItemEvent(EventKind.RETRACT, item_id))
                self.queued += 1
        if gone:
            await worker.ledger.record_batch(gone)
        await worker.ledger.mark_started()
        if self.queued:
            worker.log.info("reconcile", queued=self.queued)
        return self.queued

    def _compare(self, item_id: str, payload: str) -> None:
        have = self.held.get(item_id, _MISSING)
        if have is _MISSING:
            if self.paired and (item_id in self.ledger or item_id in self.reverse):
                return  # retracted on the sink's side: the opposite route retracts it from our source
            self.worker.offer(ItemEvent(EventKind.PUBLISH, item_id, payload))
            self.queued += 1
        elif have is not None and have != content_hash(payload):
            self.worker.offer(ItemEvent(EventKind.EDIT, item_id, payload))
            self.queued += 1

    def _retracted_after(self, seen: set[str], absence: str) -> int | None:
        """Delivered items missing from the snapshot count as retracted when delivered after this
        time (unix µs; -1: all of them); None: absence says nothing."""
        if absence == "retracted" or (absence == "window" and not seen):
            return -1  # (a window never trims itself empty: an empty one was retracted or purged)
        if absence != "window":
            return None
        # A window drops its oldest: an item delivered after the oldest one still there was retracted.
        times = [LedgerEntry.parse(v).at for d in (self.ledger, self.reverse) for i, v in d.items() if i in seen]
        return min(times) if times else None

    async def _flush_skipped(self) -> None:
        skipped, self.skipped = self.skipped, {}
        if skipped:
            await self.worker.ledger.record_batch(skipped)
