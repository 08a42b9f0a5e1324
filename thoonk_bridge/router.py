"""Runs routes: reconcile once, then follow events; idempotent by item id.

A route has one source and one or more sinks. The :class:`RouteRunner` reads the source and fans
each event out to one :class:`SinkWorker` per sink. Each worker keeps its own queue of pending
events, coalesced by item id (only the newest event of an id is kept), so one slow or failing sink
never holds back the others and a burst on one id costs one write.

Progress lives in Redis (:class:`Ledger`): for each (route, sink), the content hash of every item
delivered. On start, and whenever a source reports a reconnect (:class:`~thoonk_bridge.plugin.Resync`),
the runner takes a snapshot of the source and each worker diffs it against what its sink holds
(``Sink.ids()``, or the ledger when the sink cannot tell): missing ids are published, changed ones
edited and, when the route mirrors, vanished ones retracted. That is what makes a daemon killed
with SIGKILL deliver, after a restart, what was published meanwhile, and nothing twice.

Echoes: when two routes run in opposite directions (``a -> b`` and ``b -> a``), every write a
route makes is remembered for a while by the :class:`EchoFilter`; the opposite route's source
drops the event its own sink write caused. Sinks that compare content (the thoonk sink does) stop
any echo that gets past, so a pair of opposite routes always converges.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from thoonk_bridge.payload import Format, PayloadError, content_hash, convert, detect_format
from thoonk_bridge.plugin import (
    DeliveryError,
    Endpoint,
    EventKind,
    ItemEvent,
    NoSnapshot,
    Resync,
    RouteContext,
    Sink,
    Source,
    cancel_and_wait,
)

if TYPE_CHECKING:
    import redis.asyncio
    import structlog

    from thoonk_bridge.metrics import BridgeMetrics
    from thoonk_bridge.thoonk import AsyncThoonk

__all__ = ["DEAD_LETTER_PREFIX", "EchoFilter", "Ledger", "RetryPolicy", "RouteRunner", "RouteState", "SinkWorker"]

DEAD_LETTER_PREFIX = "bridge.deadletter."  # + "{ROUTE}": a hash tag, so it works on a cluster
KEY_PREFIX = "bridge.route:"
LEDGER_BATCH = 256  # events applied between two ledger writes


def dead_letter_feed(route: str) -> str:
    """Name of the Thoonk feed holding a route's undeliverable items."""
    return f"{DEAD_LETTER_PREFIX}{{{route}}}"


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff for retryable failures: ``min(cap, base * 2**attempt)`` with full jitter."""

    base: float = 0.2
    cap: float = 30.0

    def delay(self, attempt: int) -> float:
        return random.uniform(0, min(self.cap, self.base * (2 ** min(attempt, 30))))  # noqa: S311 - jitter


class Ledger:
    """What the router delivered to one sink of one route, kept in Redis.

    Keys: ``bridge.route:{route}:ledger:{sink}`` (hash id -> content hash) and
    ``bridge.route:{route}:started`` (hash sink -> unix time of the first reconcile).
    """

    def __init__(self, redis: redis.asyncio.Redis, route: str, sink: str) -> None:
        self.redis = redis
        self.sink = sink
        self.key = f"{KEY_PREFIX}{route}:ledger:{sink}"
        self.started_key = f"{KEY_PREFIX}{route}:started"

    async def items(self) -> dict[str, str | None]:
        raw = await self.redis.hgetall(self.key)
        return {_text(k): _text(v) for k, v in raw.items()}

    async def record_batch(self, updates: dict[str, str | None]) -> None:
        """Record delivered items in one round trip: id -> content hash, ``None`` for an id now gone."""
        pipe = self.redis.pipeline(transaction=False)
        present: dict[Any, Any] = {k: v for k, v in updates.items() if v is not None}
        gone = [k for k, v in updates.items() if v is None]
        if present:
            pipe.hset(self.key, mapping=present)
        if gone:
            pipe.hdel(self.key, *gone)
        await pipe.execute()

    async def record_many(self, items: dict[str, str]) -> None:
        if items:
            await self.redis.hset(self.key, mapping=dict[Any, Any](items))

    async def started(self) -> bool:
        return bool(await self.redis.hexists(self.started_key, self.sink))

    async def mark_started(self) -> None:
        await self.redis.hsetnx(self.started_key, self.sink, str(time.time()))

    async def forget(self) -> None:
        await self.redis.delete(self.key)
        await self.redis.hdel(self.started_key, self.sink)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


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


@dataclass
class RouteState:
    """What ``/readyz`` reports of a route."""

    state: str = "starting"  # starting | reconciling | following | retrying | stopped
    detail: str = ""
    reconciles: int = 0
    sinks: dict[str, str] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return self.state == "following"


class SinkWorker:
    """Applies a route's events to one sink, in its own task, with its own coalesced queue."""

    def __init__(
        self,
        route: RouteContext,
        endpoint: Endpoint,
        sink: Sink,
        ledger: Ledger,
        echoes: EchoFilter,
        metrics: BridgeMetrics,
        retry: RetryPolicy,
        log: structlog.typing.FilteringBoundLogger,
        guard: Callable[[], bool] | None = None,
        origin: str = "",
    ) -> None:
        self.route = route
        self.guard = guard
        self.origin = origin  # the route's source: where what this worker writes comes from
        self.endpoint = endpoint
        self.name = str(endpoint)
        self.sink = sink
        self.ledger = ledger
        self.echoes = echoes
        self.metrics = metrics
        self.retry = retry
        self.log = log.bind(sink=self.name)
        self.pending: OrderedDict[str, ItemEvent] = OrderedDict()
        self.state = "starting"
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._ledger_updates: dict[str, str | None] = {}

    # -- queue

    def offer(self, event: ItemEvent) -> None:
        self.pending[event.id] = event
        self.pending.move_to_end(event.id)
        self._idle.clear()
        self._wake.set()
        self.metrics.lag.labels(self.route.name, self.name).set(len(self.pending))

    async def wait_idle(self) -> None:
        await self._idle.wait()

    # -- reconcile

    async def reconcile(self, snapshot: Sequence[tuple[str, str]]) -> int:
        """Queue what the sink lacks, what differs and (mirror) what it has too much; returns the count."""
        held = await self.sink.ids()
        if held is None:
            held = await self.ledger.items()
        queued = 0
        present = {item_id for item_id, _ in snapshot}
        if not await self.ledger.started():
            snapshot, skipped = _initial_selection(snapshot, self.route.initial)
            # Items left out by `initial` count as delivered, so they are never sent later.
            await self.ledger.record_many({i: content_hash(p) for i, p in skipped if i not in held})
            held = {**held, **{i: content_hash(p) for i, p in skipped}}
        capacity = self.sink.capacity
        if capacity is not None and len(snapshot) > capacity:
            snapshot = snapshot[-capacity:]  # the sink keeps only the newest: send only those
        for item_id, payload in snapshot:
            if item_id not in held:
                self.offer(ItemEvent(EventKind.PUBLISH, item_id, payload))
                queued += 1
            else:
                have = held[item_id]
                if have is not None and have != content_hash(payload):
                    self.offer(ItemEvent(EventKind.EDIT, item_id, payload))
                    queued += 1
        if self.route.mirror:
            for item_id in held:
                if item_id not in present and item_id not in self.pending:
                    self.offer(ItemEvent(EventKind.RETRACT, item_id))
                    queued += 1
        await self.ledger.mark_started()
        if queued:
            self.log.info("reconcile", queued=queued)
        return queued

    # -- delivery

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"sink:{self.route.name}:{self.name}")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _run(self) -> None:
        self.state = "ready"
        while True:
            if not self.pending:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            # A batch of events, then one ledger write for all of them: one Redis round trip per
            # batch instead of one per event. A crash in between costs at most a batch re-sent.
            batch = list(itertools.islice(self.pending.items(), LEDGER_BATCH))
            try:
                for item_id, event in batch:
                    delivered = await self._deliver(event)
                    # A newer event for the same id may have arrived meanwhile: keep it.
                    if delivered and self.pending.get(item_id) is event:
                        del self.pending[item_id]
            finally:
                await self._flush_ledger()
            self.metrics.lag.labels(self.route.name, self.name).set(len(self.pending))

    async def _flush_ledger(self) -> None:
        updates, self._ledger_updates = self._ledger_updates, {}
        if updates:
            await self.ledger.record_batch(updates)

    async def _deliver(self, event: ItemEvent) -> bool:
        attempt = 0
        labels = (self.route.name, self.name)
        while True:
            if self.guard is not None and not self.guard():
                # Fencing: past our lease we may no longer own the route; the owner loop stops us.
                self.state = "lease lost: not writing"
                await asyncio.sleep(0.1)
                continue
            started = time.perf_counter()
            # Remembered before the write: the echo can reach the opposite route before apply returns.
            self.echoes.wrote(self.name, event, self.origin)
            try:
                await self.sink.apply(event)
            except asyncio.CancelledError:
                self.echoes.forget(self.name, event)
                raise
            except DeliveryError as exc:
                self.echoes.forget(self.name, event)
                self.metrics.errors.labels(*labels).inc()
                if not exc.retryable:
                    await self._dead_letter(event, str(exc))
                    return True
                reason = str(exc)
            except Exception as exc:  # noqa: BLE001 - a sink bug must not kill the route
                self.echoes.forget(self.name, event)
                self.metrics.errors.labels(*labels).inc()
                reason = f"{type(exc).__name__}: {exc}"
            else:
                self.metrics.apply_seconds.labels(*labels).observe(time.perf_counter() - started)
                self.metrics.items_out.labels(*labels).inc()
                self.metrics.last_success.labels(*labels).set(time.time())
                self._ledger_updates[event.id] = (
                    None if event.kind is EventKind.RETRACT else content_hash(event.payload or "")
                )
                if self.state != "ready":
                    self.log.info("sink recovered")
                self.state = "ready"
                return True
            delay = self.retry.delay(attempt)
            self.state = f"retrying: {reason}"
            self.log.warning("apply failed, will retry", item=event.id, kind=str(event.kind), error=reason,
                             attempt=attempt + 1, retry_in=round(delay, 3))
            attempt += 1
            try:
                await self.sink.wait_retry(delay)  # returns early when the sink's target is back
            except Exception:  # noqa: BLE001 - a sink bug must not kill the worker
                await asyncio.sleep(delay)
            newer = self.pending.get(event.id)
            if newer is not None and newer is not event:
                return False  # superseded: the loop picks up the newer event instead

    async def _dead_letter(self, event: ItemEvent, reason: str) -> None:
        self.metrics.dead_letters.labels(self.route.name, self.name).inc()
        self.log.error("undeliverable, sent to dead-letter feed", item=event.id, kind=str(event.kind), reason=reason)
        await self.route.dead_letter(event.id, event.payload, f"{self.name}: {reason}")


def _initial_selection(
    snapshot: Sequence[tuple[str, str]], initial: str
) -> tuple[Sequence[tuple[str, str]], Sequence[tuple[str, str]]]:
    """Split a first snapshot into (deliver, mark as seen) per ``initial``."""
    if initial == "none":
        return [], snapshot
    if initial.startswith("latest:"):
        count = int(initial.split(":", 1)[1])
        cut = max(0, len(snapshot) - count)
        return snapshot[cut:], snapshot[:cut]
    return snapshot, []


class RouteRunner:
    """One route: a source task that reconciles and follows, and a :class:`SinkWorker` per sink."""

    def __init__(
        self,
        context: RouteContext,
        source_endpoint: Endpoint,
        source: Source,
        workers: list[SinkWorker],
        echoes: EchoFilter,
        metrics: BridgeMetrics,
        retry: RetryPolicy,
        log: structlog.typing.FilteringBoundLogger,
    ) -> None:
        self.context = context
        self.name = context.name
        self.source_endpoint = source_endpoint
        self.source = source
        self.workers = workers
        self.echoes = echoes
        self.metrics = metrics
        self.retry = retry
        self.log = log
        self.status = RouteState()
        self._format = Format(context.format) if context.format else None
        self._task: asyncio.Task[None] | None = None
        self._live_only = ""  # why the source gave no snapshot last time (logged once per reason)

    def start(self) -> None:
        for worker in self.workers:
            worker.start()
        self._task = asyncio.create_task(self._run(), name=f"route:{self.name}")

    @property
    def ready(self) -> bool:
        return self.status.ready

    def state(self) -> dict[str, Any]:
        return {
            "state": self.status.state,
            "detail": self.status.detail,
            "ready": self.ready,
            "sinks": {w.name: {"state": w.state, "pending": len(w.pending)} for w in self.workers},
        }

    async def _run(self) -> None:
        failures = 0
        opened = False
        while True:
            try:
                if not opened:
                    await self.source.open()
                    for worker in self.workers:
                        await worker.sink.open()
                    opened = True
                self._set("reconciling")
                live_only = ""
                try:
                    snapshot = await self.source.snapshot()
                except NoSnapshot as exc:
                    # Nothing to reconcile against: sinks keep what they hold, live events only.
                    live_only = f"following live events only (no snapshot): {exc}"
                    if live_only != self._live_only:
                        self.log.warning("source has no snapshot, following live events only", reason=str(exc))
                else:
                    converted = await self._convert_snapshot(snapshot)
                    for worker in self.workers:
                        await worker.reconcile(converted)
                    self.status.reconciles += 1
                self._live_only = live_only
                self.metrics.route_ready.labels(self.name).set(1)
                self._set("following", live_only)
                failures = 0
                async for event in self.source.follow():
                    await self._dispatch(event)
                self.log.info("source ended")
                self._set("stopped", "source ended")
                return
            except asyncio.CancelledError:
                raise
            except Resync as exc:
                self.log.info("source reconnected, reconciling again", reason=str(exc))
                continue
            except Exception as exc:  # noqa: BLE001 - keep the route alive, report it, retry
                self.metrics.route_ready.labels(self.name).set(0)
                delay = self.retry.delay(failures)
                failures += 1
                detail = f"{type(exc).__name__}: {exc}"
                self._set("retrying", detail)
                self.log.error("route failed, will retry", error=detail, retry_in=round(delay, 3))
                with contextlib.suppress(Exception):
                    await self.source.close()
                opened = False
                await asyncio.sleep(delay)

    def _set(self, state: str, detail: str = "") -> None:
        self.status.state = state
        self.status.detail = detail

    async def _convert_snapshot(self, snapshot: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
        if self._format is None:
            return list(snapshot)
        out = []
        for item_id, payload in snapshot:
            converted = await self._convert(item_id, payload)
            if converted is not None:
                out.append((item_id, converted))
        return out

    async def _convert(self, item_id: str, payload: str) -> str | None:
        if self._format is None or detect_format(payload) is self._format:
            return payload  # already right: keep it byte for byte (extensions and all)
        try:
            return convert(payload, self._format, item_id=item_id)
        except PayloadError as exc:
            for worker in self.workers:
                self.metrics.dead_letters.labels(self.name, worker.name).inc()
            self.log.error("payload cannot be converted, sent to dead-letter feed", item=item_id, reason=str(exc))
            await self.context.dead_letter(item_id, payload, f"convert to {self._format}: {exc}")
            return None

    async def _dispatch(self, event: ItemEvent) -> None:
        self.metrics.items_in.labels(self.name).inc()
        targets = self.workers
        origin = self.echoes.origin(str(self.source_endpoint), event)
        if origin is not None and any(w.name == origin for w in self.workers):
            # Our own write coming back: do not send it back where it came from.
            self.echoes.consume(str(self.source_endpoint), event)
            self.metrics.echoes_dropped.labels(self.name).inc()
            targets = [w for w in self.workers if w.name != origin]
            if not targets:
                return
        if event.kind is not EventKind.RETRACT and self._format is not None:
            converted = await self._convert(event.id, event.payload or "")
            if converted is None:
                return
            event = ItemEvent(event.kind, event.id, converted)
        for worker in targets:
            worker.offer(event)

    async def stop(self, drain: float = 0.0) -> None:
        """Stop reading; give the sinks up to ``drain`` seconds to finish what is queued; close."""
        await cancel_and_wait(self._task)
        self._task = None
        with contextlib.suppress(Exception):
            await self.source.close()
        if drain > 0:
            try:
                await asyncio.wait_for(asyncio.gather(*(w.wait_idle() for w in self.workers)), drain)
            except TimeoutError:
                left = {w.name: len(w.pending) for w in self.workers if w.pending}
                self.log.warning("drain time over, events left for the next start", pending=left)
        for worker in self.workers:
            await worker.stop()
            with contextlib.suppress(Exception):
                await worker.sink.flush()
            with contextlib.suppress(Exception):
                await worker.sink.close()
        self.metrics.route_ready.labels(self.name).set(0)
        self._set("stopped")


async def store_dead_letter(
    thoonk: AsyncThoonk, route: str, item_id: str, payload: str | None, reason: str
) -> None:
    """Append an undeliverable item to the route's dead-letter feed (JSON with id, reason, payload)."""
    feed = await thoonk.feed(dead_letter_feed(route))
    record = {"id": item_id, "reason": reason, "payload": payload, "at": time.time()}
    await feed.publish(json.dumps(record, ensure_ascii=False))
