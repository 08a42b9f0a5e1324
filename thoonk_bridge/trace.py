"""The path of one item: a bounded per-route ring of recent outcomes, and ``thoonk-bridge trace``.

Each route's :class:`RouteRecorder` (one per running route, shared by its sink workers) notes, per
sink, what became of each event: ``delivered``, ``retracted`` (a retract applied), ``coalesced`` (a
newer event of the same id replaced it before it was applied), ``dead-lettered`` and ``replayed``
(offered again from the dead-letter feed). The notes wait in memory and go to Redis with the sink
worker's ledger write, in the same pipeline, once per batch: the router's per-event cost is a tuple
appended to a list.

Keys (the braces are literal: a Redis Cluster hash tag, so a route's keys share a slot):

- ``bridge.trace.{ROUTE}``: a list of the newest ``TRACE_MAX`` records of the route, oldest first,
  each ``UNIXTIME<TAB>OUTCOME<TAB>SINK<TAB>ITEM_ID`` (about 80 bytes);
- ``bridge.trace.{ROUTE}:route``: hash ``source``/``sinks`` (what the route reads and writes), so
  ``trace FEED ID`` finds the routes that read ``FEED``.

The recorder also keeps the numbers the console shows (deliveries per second over the last minute,
lag from the router receiving an event to its sink applying it) and follows dead-letter replays
(see :mod:`thoonk_bridge.deadletters`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from thoonk_bridge import keys
from thoonk_bridge.keys import TRACE_PREFIX
from thoonk_bridge.plugin import EventKind, ItemEvent
from thoonk_bridge.thoonk.text import as_text

if TYPE_CHECKING:
    from thoonk_bridge.thoonk import AsyncThoonk

__all__ = ["TRACE_MAX", "TRACE_PREFIX", "Replay", "RouteRecorder", "TraceRecord", "read_trace", "trace_key"]

TRACE_MAX = 10_000  # records a route's ring keeps (about 80 bytes each: under 1 MB per route)
RATE_WINDOW = 60  # seconds of per-second delivery counts kept (the console's rate and sparkline)
LAG_SAMPLES = 2048  # newest lag samples kept for p50/p99


trace_key = keys.trace_ring  # the route's ring (list)
route_key = keys.trace_route  # what the route reads and writes (hash)


@dataclass
class Replay:
    """A dead-letter entry offered again: resolved once every sink it went to has applied it or given
    it up. ``shared``: the entry names no sink (the source or a conversion refused it)."""

    entry_id: str
    remaining: set[str]
    shared: bool


@dataclass(frozen=True, slots=True)
class TraceRecord:
    at: float
    outcome: str
    sink: str
    item_id: str

    def line(self) -> str:
        return f"{self.at:.3f}\t{self.outcome}\t{self.sink}\t{self.item_id}"

    @classmethod
    def parse(cls, line: str) -> TraceRecord | None:
        parts = line.split("\t", 3)
        if len(parts) != 4:
            return None
        try:
            return cls(float(parts[0]), parts[1], parts[2], parts[3])
        except ValueError:
            return None


@dataclass
class RouteRecorder:
    """What a route's sink workers report, batched for Redis; see the module doc."""

    thoonk: AsyncThoonk
    route: str
    source: str
    sinks: list[str]
    _notes: deque[tuple[float, str, str, str]] = field(default_factory=lambda: deque(maxlen=TRACE_MAX))
    _described: bool = False
    _since: dict[tuple[str, str], float] = field(default_factory=dict)
    _lags: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=LAG_SAMPLES))
    _rate: dict[int, int] = field(default_factory=dict)
    delivered_total: int = 0
    last_error: tuple[float, str] | None = None
    replays: dict[tuple[str, str], Replay] = field(default_factory=dict)
    # (sink, item id) -> its dead-letter entry: a later delivery of the id to that sink (an edit, a
    # reconcile after a restart) settles the entry, a later refusal rewrites it instead of adding one.
    dead_entries: dict[tuple[str, str], str] = field(default_factory=dict)
    _loaded: bool = False  # dead_entries read from the feed (at the first batch written)
    _loading: bool = False
    _early: list[tuple[str, str]] = field(default_factory=list)  # delivered before that
    _settled: list[str] = field(default_factory=list)

    # -- called by SinkWorker (the hot path: no Redis, no encoding)

    def offered(self, sink: str, event: ItemEvent, replaced: ItemEvent | None) -> None:
        now = time.time()
        if replaced is not None:
            self._notes.append((now, "coalesced", sink, replaced.id))
        else:
            self._since.setdefault((sink, event.id), time.monotonic())

    def delivered(self, sink: str, event: ItemEvent) -> None:
        now = time.time()
        outcome = "retracted" if event.kind is EventKind.RETRACT else "delivered"
        self._notes.append((now, outcome, sink, event.id))
        self.delivered_total += 1
        second = int(now)
        self._rate[second] = self._rate.get(second, 0) + 1
        if len(self._rate) > RATE_WINDOW + 2:
            for old in [s for s in self._rate if s < second - RATE_WINDOW]:
                del self._rate[old]
        since = self._since.pop((sink, event.id), None)
        if since is not None:
            self._lags.append((now, time.monotonic() - since))
        if self.replays:
            self._resolve(sink, event.id)
        if not self._loaded:
            if len(self._early) < TRACE_MAX:
                self._early.append((sink, event.id))  # at most a batch per sink: read at its flush
        elif self.dead_entries:
            entry_id = self.dead_entries.pop((sink, event.id), None)
            if entry_id is not None:
                self._settled.append(entry_id)

    def note(self, sink: str, item_id: str, outcome: str) -> None:
        self._notes.append((time.time(), outcome, sink, item_id))

    def failed(self, reason: str) -> None:
        self.last_error = (time.time(), reason)

    async def dead_letter(self, sink: str, event: ItemEvent, reason: str) -> None:
        """Store ``event`` in the route's dead-letter feed; a replayed entry that fails again is
        rewritten in place (same entry id, the new reason), so it is neither lost nor doubled."""
        from thoonk_bridge.router import store_dead_letter

        if not self._loaded and not self._loading:
            with contextlib.suppress(Exception):  # then it is read at the next batch
                await self.load_dead_entries()  # an entry of this item and sink is rewritten, not doubled
        self._since.pop((sink, event.id), None)
        self.note(sink, event.id, "dead-lettered")
        self.failed(reason)
        replay = self.replays.pop((sink, event.id), None) if self.replays else None
        entry_id = replay.entry_id if replay is not None and not replay.shared else None
        entry_id = entry_id or self.dead_entries.get((sink, event.id)) or uuid.uuid4().hex
        await store_dead_letter(self.thoonk, self.route, event.id, event.payload, reason,
                                sink=sink, kind=str(event.kind), entry_id=entry_id)
        self.dead_entries[(sink, event.id)] = entry_id
        if replay is not None and replay.shared:
            self._finish(replay, sink)

    def _resolve(self, sink: str, item_id: str) -> None:
        replay = self.replays.pop((sink, item_id), None)
        if replay is not None:
            self._finish(replay, sink)

    def _finish(self, replay: Replay, sink: str) -> None:
        replay.remaining.discard(sink)
        if not replay.remaining:
            self._settled.append(replay.entry_id)

    # -- batched writes (SinkWorker's ledger flush)

    def write(self, pipe: Any) -> bool:
        """Queue the buffered records on ``pipe``; False when there was nothing to write."""
        if not self._notes and self._described:
            return False
        if not self._described:
            pipe.hset(route_key(self.route), mapping={"source": self.source, "sinks": json.dumps(self.sinks)})
            self._described = True
        if self._notes:
            lines = [f"{at:.3f}\t{outcome}\t{sink}\t{item_id}" for at, outcome, sink, item_id in self._notes]
            self._notes.clear()
            key = trace_key(self.route)
            pipe.rpush(key, *lines)
            pipe.ltrim(key, -TRACE_MAX, -1)
        return True

    async def load_dead_entries(self) -> None:
        """Read which (sink, item) pairs have a dead letter (once, at the first batch written), and
        settle those delivered meanwhile (a reconcile after a restart sends a sink what it lacks)."""
        from thoonk_bridge.deadletters import DeadLetter
        from thoonk_bridge.router import DEAD_LETTER_MAX, dead_letter_feed

        self._loading = True
        try:
            if await self.thoonk.feed_exists(dead_letter_feed(self.route)):
                feed = await self.thoonk.feed(dead_letter_feed(self.route), {"max_length": DEAD_LETTER_MAX})
                for entry_id, raw in (await feed.get_all()).items():
                    entry = DeadLetter.parse(entry_id, raw)
                    if entry.sink is not None:
                        self.dead_entries.setdefault((entry.sink, entry.item_id), entry_id)
        finally:
            self._loading = False
        early, self._early = self._early, []
        self._loaded = True
        for pair in early:
            entry_id = self.dead_entries.pop(pair, None)
            if entry_id is not None:
                self._settled.append(entry_id)

    async def settle(self) -> None:
        """Remove the dead-letter entries settled by a delivery (a replay, or the item delivered later).
        Redis failing here costs nothing but time: what is not done is tried at the next batch."""
        from thoonk_bridge.router import DEAD_LETTER_MAX, dead_letter_feed

        try:
            if not self._loaded and not self._loading:
                await self.load_dead_entries()
            while self._settled:
                feed = await self.thoonk.feed(dead_letter_feed(self.route), {"max_length": DEAD_LETTER_MAX})
                await feed.retract(self._settled[0])
                self._settled.pop(0)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001, S110 - the worker must go on; the ledger write reports Redis trouble
            pass

    # -- the console's numbers

    def rates(self, now: float | None = None) -> list[int]:
        """Deliveries in each of the last ``RATE_WINDOW`` whole seconds, oldest first."""
        second = int(now if now is not None else time.time())
        return [self._rate.get(s, 0) for s in range(second - RATE_WINDOW, second)]

    def lag_quantiles(self, now: float | None = None) -> dict[str, float] | None:
        cutoff = (now if now is not None else time.time()) - RATE_WINDOW
        lags = sorted(lag for at, lag in self._lags if at >= cutoff)
        if not lags:
            return None
        return {"p50": lags[len(lags) // 2], "p99": lags[min(len(lags) - 1, int(len(lags) * 0.99))]}


# --------------------------------------------------------------------------- reading (CLI, console)


def traced_routes(redis: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(route, {"source": ..., "sinks": [...]})`` of every route with a ring (sync client)."""
    for key in redis.scan_iter(match=keys.TRACE_ROUTES_PATTERN, count=500):
        name = keys.route_of_trace(as_text(key)) or ""
        raw = {as_text(k): as_text(v) for k, v in redis.hgetall(key).items()}
        try:
            sinks = json.loads(raw.get("sinks", "[]"))
        except ValueError:
            sinks = []
        yield name, {"source": raw.get("source", ""), "sinks": sinks}


def _feed_matches(source: str, feed: str) -> bool:
    """``feed`` names the endpoint (``thoonk:news``) or its address (``news``)."""
    return source == feed or source.partition(":")[2] == feed


def read_trace(redis: Any, feed: str, item_id: str) -> list[dict[str, Any]]:
    """Every recorded outcome of ``item_id`` read from ``feed``, oldest first (sync client)."""
    found: list[dict[str, Any]] = []
    for route, info in sorted(traced_routes(redis)):
        if not _feed_matches(info["source"], feed):
            continue
        for raw in redis.lrange(trace_key(route), 0, -1):
            record = TraceRecord.parse(as_text(raw))
            if record is not None and record.item_id == item_id:
                found.append({"route": route, "sink": record.sink, "outcome": record.outcome, "at": record.at})
    found.sort(key=lambda r: r["at"])
    return found
