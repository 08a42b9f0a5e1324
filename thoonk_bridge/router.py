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
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from thoonk_bridge import keys
from thoonk_bridge.backoff import Backoff
from thoonk_bridge.keys import DEAD_LETTER_PREFIX, dead_letter_feed
from thoonk_bridge.payload import Format, PayloadError, content_hash
from thoonk_bridge.payload.render import render_parsed
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
)
from thoonk_bridge.tasks import cancel_and_wait
from thoonk_bridge.thoonk.text import as_text

if TYPE_CHECKING:
    import structlog

    from thoonk_bridge.metrics import BridgeMetrics
    from thoonk_bridge.redis_client import AsyncRedis
    from thoonk_bridge.thoonk import AsyncThoonk
    from thoonk_bridge.trace import RouteRecorder

__all__ = [
    "DEAD_LETTER_PREFIX", "EchoFilter", "Ledger", "RetryPolicy", "RouteRunner", "RouteState", "SinkWorker",
    "dead_letter_feed",
]

LEDGER_BATCH = 256  # events applied between two ledger writes (and most events per Sink.apply_many)
LEDGER_PAGE = 1000  # ledger fields per HSCAN/HSET/HDEL: bounded Redis commands whatever the size
DEAD_LETTER_MAX = 10_000  # records a route's dead-letter feed keeps (the oldest go first)
LEDGER_KEEP_US = 30 * 86_400 * 1_000_000  # see SinkReconcile.end: forgetting what can never matter again
CHECKPOINT_WAIT = 2.0  # seconds a stopping route waits for its source's barrier (else no checkpoint)
RECONCILE_WINDOW = 10_000  # events a reconcile queues for a working sink before waiting for it to drain
_MISSING = object()


# Backoff for retryable failures: ``min(cap, base * 2**attempt)`` with full jitter (base 0.2 s, cap 30 s).
# The name stays: the daemon, the test harness and plugins build their retry policy with it.
RetryPolicy = Backoff


class Ledger:
    """What the router delivered to one sink of one route, kept in Redis.

    Keys (thoonk_bridge.keys): ``bridge.route:{route}:ledger:{sink}`` (hash: id -> ``HASH@US``),
    ``bridge.route:{route}:started`` (hash: sink -> unix time of the first reconcile) and
    ``bridge.route:{route}:checkpoint`` (hash: sink -> versions at the last drained stop). ``HASH`` is the
    content hash of what was delivered, kept only for sinks that cannot report their items themselves
    (``Sink.ids()`` is None); ``US`` is when (unix microseconds, strictly increasing per sink), which
    tells a window source's trimmed items from its retracted ones. About 100 bytes of Redis per item
    with a hash, 35 without (plus the id).
    """

    def __init__(self, redis: AsyncRedis, route: str, sink: str) -> None:
        self.redis = redis
        self.sink = sink
        self.key = keys.route_ledger(route, sink)
        self.started_key = keys.route_started(route)
        self.checkpoint_key = keys.route_checkpoint(route)

    async def entries(self) -> dict[str, str]:
        """Every delivered id with its raw value (``LedgerEntry.parse`` reads one), in bounded HSCAN
        pages (a huge ledger never blocks Redis); parsed only where needed, which is seldom."""
        return {as_text(k): as_text(v) async for k, v in self.redis.hscan_iter(self.key, count=LEDGER_PAGE)}

    async def items(self) -> dict[str, str | None]:
        """Delivered ids with their content hash (None where the ledger keeps none)."""
        return {k: LedgerEntry.parse(v).hash for k, v in (await self.entries()).items()}

    async def record_batch(self, updates: dict[str, str | None], also: Callable[[Any], bool] | None = None) -> None:
        """Record deliveries: id -> ``LedgerEntry.value()``, ``None`` for an id now gone. ``also(pipe)``
        queues more writes on the same round trip (the trace ring) and says whether it did."""
        pipe = self.redis.pipeline(transaction=False)
        more = also(pipe) if also is not None else False
        present: list[tuple[str, str]] = [(k, v) for k, v in updates.items() if v is not None]
        gone = [k for k, v in updates.items() if v is None]
        for i in range(0, len(present), LEDGER_PAGE):
            pipe.hset(self.key, mapping=dict[Any, Any](present[i : i + LEDGER_PAGE]))
        for i in range(0, len(gone), LEDGER_PAGE):
            pipe.hdel(self.key, *gone[i : i + LEDGER_PAGE])
        if present or gone or more:
            await pipe.execute()

    async def save_checkpoint(self, value: str) -> None:
        await self.redis.hset(self.checkpoint_key, self.sink, value)

    async def take_checkpoint(self) -> str | None:
        """The checkpoint of the last clean stop, removed as it is read: it holds for one start only."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.hget(self.checkpoint_key, self.sink)
        pipe.hdel(self.checkpoint_key, self.sink)
        value, _ = await pipe.execute()
        return None if value is None else as_text(value)

    async def started(self) -> bool:
        return bool(await self.redis.hexists(self.started_key, self.sink))

    async def mark_started(self) -> None:
        await self.redis.hsetnx(self.started_key, self.sink, str(time.time()))

    async def forget(self) -> None:
        await self.redis.delete(self.key)
        await self.redis.hdel(self.started_key, self.sink)
        await self.redis.hdel(self.checkpoint_key, self.sink)


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One delivered item: its content hash (when the ledger keeps it) and when, in unix µs."""

    hash: str | None
    at: int

    @classmethod
    def parse(cls, value: str) -> LedgerEntry:
        digest, _, at = value.partition("@")  # a bare hash: written before times were kept
        return cls(digest or None, int(at) if at.isdigit() else 0)

    @staticmethod
    def value(digest: str | None, at: int) -> str:
        return f"{digest or ''}@{at}"


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
        reverse: Ledger | None = None,
        recorder: RouteRecorder | None = None,
    ) -> None:
        self.route = route
        self.recorder = recorder  # the trace ring, console numbers and dead-letter replays (trace.py)
        # The opposite route's ledger for our source (``b -> a`` when we are ``a -> b``), if any.
        self.reverse = reverse
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
        self._room = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._ledger_updates: dict[str, str | None] = {}
        self._reports_ids = False  # the sink's ids() tells what it holds: the ledger keeps no hashes
        self._clock = 0  # the last delivery time recorded (unix µs)

    # -- queue

    def offer(self, event: ItemEvent) -> None:
        if self.recorder is not None:
            self.recorder.offered(self.name, event, self.pending.get(event.id))
        self.pending[event.id] = event
        self.pending.move_to_end(event.id)
        self._idle.clear()
        self._wake.set()
        self.metrics.lag.labels(self.route.name, self.name).set(len(self.pending))

    async def wait_idle(self) -> None:
        await self._idle.wait()

    # -- reconcile

    async def begin_reconcile(self) -> SinkReconcile:
        """Read what the sink holds and what the route delivered; the caller then feeds the snapshot."""
        held = await self.sink.ids()
        self._reports_ids = held is not None
        ledger = await self.ledger.entries()
        if held is None:
            held = {item_id: LedgerEntry.parse(value).hash for item_id, value in ledger.items()}
        reverse = await self.reverse.entries() if self.reverse is not None else {}
        initial_keep = None if await self.ledger.started() else _initial_keep(self.route.initial)
        return SinkReconcile(self, held, ledger, reverse, initial_keep)

    async def wait_room(self) -> None:
        """Back-pressure for a reconcile: wait while this sink has a full window queued and is working
        (a failing sink does not hold the reconcile of the others up: its queue just grows)."""
        while len(self.pending) >= RECONCILE_WINDOW and self.state == "ready" and self._task is not None:
            self._room.clear()
            await self._room.wait()

    def ledger_value(self, event: ItemEvent) -> str | None:
        """What the ledger records for a delivered event (None: the id is gone)."""
        if event.kind is EventKind.RETRACT:
            return None
        digest = None if self._reports_ids else content_hash(event.payload or "")
        # Strictly increasing, so the ledger keeps the order of deliveries made in one instant too.
        self._clock = max(int(time.time() * 1_000_000), self._clock + 1)
        return LedgerEntry.value(digest, self._clock)

    # -- delivery

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"sink:{self.route.name}:{self.name}")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        self._room.set()

    async def _run(self) -> None:
        self.state = "ready"
        failures = 0
        while True:
            try:
                await self._run_batches()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Redis away while recording: the worker lives on
                # Nothing is lost: undelivered events stay pending, unrecorded deliveries stay in
                # _ledger_updates, and both are tried again.
                self.metrics.errors.labels(self.route.name, self.name).inc()
                delay = self.retry.delay(failures)
                failures += 1
                reason = f"{type(exc).__name__}: {exc}"
                self.state = f"retrying: {reason}"
                self._room.set()
                self.log.warning("sink worker failed, will retry", error=reason, retry_in=round(delay, 3))
                await asyncio.sleep(delay)
            else:
                failures = 0

    async def _run_batches(self) -> None:
        while True:
            if not self.pending:
                await self._flush_ledger()  # what a failed flush left behind
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            # A batch of events in one Sink.apply_many, then one ledger write for all of them: a few
            # round trips per batch instead of several per event. A crash in between costs at most a
            # batch re-sent.
            batch = list(itertools.islice(self.pending.values(), LEDGER_BATCH))
            try:
                results = await self._apply_batch(batch)
                for i, event in enumerate(batch):
                    if i < len(results) and results[i] is None:
                        delivered = True
                    else:
                        delivered = await self._deliver(event, results[i] if i < len(results) else None)
                    # A newer event for the same id may have arrived meanwhile: keep it.
                    if delivered and self.pending.get(event.id) is event:
                        del self.pending[event.id]
            finally:
                await self._flush_ledger()
            if len(self.pending) < RECONCILE_WINDOW:
                self._room.set()
            self.metrics.lag.labels(self.route.name, self.name).set(len(self.pending))

    async def _flush_ledger(self) -> None:
        updates, self._ledger_updates = self._ledger_updates, {}
        try:
            if self.recorder is not None:
                await self.ledger.record_batch(updates, also=self.recorder.write)
                await self.recorder.settle()
            elif updates:
                await self.ledger.record_batch(updates)
        except BaseException:
            self._ledger_updates = {**updates, **self._ledger_updates}  # newer entries win; retried
            raise

    async def _apply_batch(self, events: list[ItemEvent]) -> list[BaseException | None]:
        """One ``Sink.apply_many``: a result per event tried (fewer: the rest was not tried)."""
        if self.guard is not None and not self.guard():
            return []  # _deliver waits for the lease, event by event
        for event in events:
            # Remembered before the write: the echo can reach the opposite route before apply returns.
            self.echoes.wrote(self.name, event, self.origin)
        started = time.perf_counter()
        try:
            results = list(await self.sink.apply_many(events))[: len(events)]
        except asyncio.CancelledError:
            for event in events:
                self.echoes.forget(self.name, event)
            raise
        except Exception as exc:  # noqa: BLE001 - a sink bug must not kill the route: retried one by one
            self.log.warning("apply_many failed, applying one by one", error=f"{type(exc).__name__}: {exc}")
            results = []
        each = (time.perf_counter() - started) / max(1, len(results))
        for i, event in enumerate(events):
            if i < len(results) and results[i] is None:
                self._delivered(event, each)
            else:
                self.echoes.forget(self.name, event)
        return results

    def _delivered(self, event: ItemEvent, seconds: float) -> None:
        labels = (self.route.name, self.name)
        self.metrics.apply_seconds.labels(*labels).observe(seconds)
        self.metrics.items_out.labels(*labels).inc()
        self.metrics.last_success.labels(*labels).set(time.time())
        self._ledger_updates[event.id] = self.ledger_value(event)
        if self.recorder is not None:
            self.recorder.delivered(self.name, event)
        if self.state != "ready":
            self.log.info("sink recovered")
        self.state = "ready"

    async def _deliver(self, event: ItemEvent, failure: BaseException | None = None) -> bool:
        """Apply one event, retrying with backoff; ``failure``: how a first attempt already failed."""
        attempt = 0
        labels = (self.route.name, self.name)
        while True:
            if failure is None:
                if self.guard is not None and not self.guard():
                    # Fencing: past our lease we may no longer own the route; the owner loop stops us.
                    self.state = "lease lost: not writing"
                    await asyncio.sleep(0.1)
                    continue
                started = time.perf_counter()
                self.echoes.wrote(self.name, event, self.origin)
                try:
                    await self.sink.apply(event)
                except asyncio.CancelledError:
                    self.echoes.forget(self.name, event)
                    raise
                except Exception as exc:  # noqa: BLE001 - a sink bug must not kill the route
                    self.echoes.forget(self.name, event)
                    failure = exc
                else:
                    self._delivered(event, time.perf_counter() - started)
                    return True
            self.metrics.errors.labels(*labels).inc()
            if isinstance(failure, DeliveryError):
                if not failure.retryable:
                    await self._dead_letter(event, str(failure))
                    return True
                reason = str(failure)
            else:
                reason = f"{type(failure).__name__}: {failure}"
            if self.recorder is not None:
                self.recorder.failed(f"{self.name}: {reason}")
            failure = None
            delay = self.retry.delay(attempt)
            self.state = f"retrying: {reason}"
            self._room.set()  # a reconcile waiting for this sink to drain goes on
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
        if self.recorder is not None:  # with the sink and kind, so that it can be replayed
            await self.recorder.dead_letter(self.name, event, f"{self.name}: {reason}")
        else:
            await self.route.dead_letter(event.id, event.payload, f"{self.name}: {reason}")


def _initial_keep(initial: str) -> int | None:
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
            for delivered in (self.ledger, self.reverse):
                for item_id, value in delivered.items():
                    if item_id in seen or LedgerEntry.parse(value).at <= cut:
                        continue
                    if item_id in self.held:
                        retract.append(item_id)
                    elif item_id in self.ledger:
                        gone[item_id] = None  # the sink lost it too: nothing to retract, forget it
        # The ledger stays bounded: an id neither source nor sink has any more is forgotten (a sink
        # that reports what it holds); for a sink that cannot tell, and a source whose absences say
        # nothing (an outside document), an id no longer in the source delivered over LEDGER_KEEP_US ago.
        old = int(time.time() * 1_000_000) - LEDGER_KEEP_US
        for item_id, value in self.ledger.items():
            if item_id in seen or item_id in gone:
                continue
            if worker._reports_ids and item_id not in self.held:
                gone[item_id] = None
            elif cut is None and LedgerEntry.parse(value).at < old:
                gone[item_id] = None
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
        reconcile_slots: asyncio.Semaphore | None = None,
        fingerprint: str = "",
    ) -> None:
        self.context = context
        self.name = context.name
        # Shared by the daemon's routes: how many reconcile at once (a thousand routes starting
        # together would otherwise open as many Redis connections and fight for the CPU).
        self.reconcile_slots = reconcile_slots
        self.fingerprint = fingerprint  # what the route does: a checkpoint holds for the same route only
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
        sinks: dict[str, dict[str, Any]] = {}
        degraded: list[str] = []
        for w in self.workers:
            sinks[w.name] = {"state": w.state, "pending": len(w.pending)}
            problem = w.sink.problem()
            if problem is not None and w.state == "ready":  # Sink.problem: working, but not all is well
                sinks[w.name].update(state="degraded", detail=problem)
                degraded.append(f"{w.name}: {problem}")
        state: dict[str, Any] = {
            "state": self.status.state,
            "detail": self.status.detail,
            "ready": self.ready,
            "sinks": sinks,
        }
        if degraded:
            state["degraded"] = "; ".join(degraded)
        return state

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
                    async with self.reconcile_slots or contextlib.nullcontext():
                        await self._reconcile()
                except NoSnapshot as exc:
                    # Nothing to reconcile against: sinks keep what they hold, live events only.
                    live_only = f"following live events only (no snapshot): {exc}"
                    if live_only != self._live_only:
                        self.log.warning("source has no snapshot, following live events only", reason=str(exc))
                else:
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

    async def _reconcile(self) -> None:
        """Stream the source's snapshot, page by page, through every sink's reconcile (but for sinks
        that nothing changed since the checkpoint of a clean stop: see docs/reconcile.md)."""
        workers = await self._workers_to_reconcile()
        if not workers:
            return
        seen: set[str] = set()
        plans: list[SinkReconcile] | None = None
        async for page in self.source.snapshot_pages():
            if plans is None:  # after the first page: a source without a snapshot raised NoSnapshot
                plans = [await worker.begin_reconcile() for worker in workers]
            seen.update(item_id for item_id, _ in page)  # unconvertible ones too: still in the source
            converted = await self._convert_snapshot(page)
            for plan in plans:
                await plan.page(converted)
        if plans is None:
            plans = [await worker.begin_reconcile() for worker in workers]
        for plan in plans:
            await plan.end(seen, self.source.absence)

    async def _workers_to_reconcile(self) -> list[SinkWorker]:
        """The sinks to reconcile: all, but those whose checkpoint (written when the route last
        stopped cleanly, with every event up to a source version applied) still matches the source's
        and the sink's versions now: nothing changed on either side, nothing to compare."""
        checkpoints = [await worker.ledger.take_checkpoint() for worker in self.workers]
        if not any(checkpoints):
            return self.workers
        source = await self.source.version()
        if source is None:
            return self.workers
        todo = []
        for worker, checkpoint in zip(self.workers, checkpoints, strict=True):
            sink = await worker.sink.version() if checkpoint is not None else None
            if sink is not None and checkpoint == f"{self.fingerprint}|{source}|{sink}":
                worker.log.info("reconcile skipped: neither side changed since the last clean stop")
                continue
            todo.append(worker)
        return todo

    async def _checkpoint_source(self) -> str | None:
        """The source's version with every event up to it dispatched to the sinks, or None."""
        if self.status.state != "following" or (self.context.guard is not None and not self.context.guard()):
            return None
        try:
            version = await self.source.version()
            if version is None or not await asyncio.wait_for(self.source.barrier(), CHECKPOINT_WAIT):
                return None
        except Exception:  # noqa: BLE001 - no checkpoint: the next start reconciles, that is all
            return None
        return version

    def _set(self, state: str, detail: str = "") -> None:
        self.status.state = state
        self.status.detail = detail

    async def _convert_snapshot(self, snapshot: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
        if self._format is None:
            return list(snapshot)
        out = []
        for item_id, payload in snapshot:
            converted = await self._convert(ItemEvent(EventKind.PUBLISH, item_id, payload))
            if converted is not None:
                out.append((item_id, converted.payload or ""))
        return out

    async def _convert(self, event: ItemEvent) -> ItemEvent | None:
        """The event with its payload in the route's format, or None (dead-lettered). The payload is
        parsed once: the converted event carries what its own payload parses as (render_parsed), so
        the sinks do not parse it again."""
        if self._format is None or event.payload_format() is self._format:
            return event  # already right: keep it byte for byte (extensions and all)
        try:
            payload, parsed = render_parsed(event.entry(), self._format, item_id=event.id)
        except PayloadError as exc:
            for worker in self.workers:
                self.metrics.dead_letters.labels(self.name, worker.name).inc()
            self.log.error("payload cannot be converted, sent to dead-letter feed", item=event.id, reason=str(exc))
            await self.context.dead_letter(event.id, event.payload, f"convert to {self._format}: {exc}")
            return None
        return ItemEvent(event.kind, event.id, payload).with_parsed(parsed)

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
            converted = await self._convert(event)
            if converted is None:
                return
            event = converted
        for worker in targets:
            worker.offer(event)

    async def stop(self, drain: float = 0.0) -> None:
        """Stop reading; give the sinks up to ``drain`` seconds to finish what is queued; close.

        A route that drains completely leaves a checkpoint per sink (the source's and the sink's
        versions), so that its next start can skip a reconcile where nothing changed."""
        source_version = await self._checkpoint_source() if drain > 0 else None
        await cancel_and_wait(self._task)
        self._task = None
        with contextlib.suppress(Exception):
            await self.source.close()
        drained = drain > 0
        if drain > 0:
            try:
                await asyncio.wait_for(asyncio.gather(*(w.wait_idle() for w in self.workers)), drain)
            except TimeoutError:
                drained = False
                left = {w.name: len(w.pending) for w in self.workers if w.pending}
                self.log.warning("drain time over, events left for the next start", pending=left)
        for worker in self.workers:
            await worker.stop()
            with contextlib.suppress(Exception):
                await worker.sink.flush()
            if source_version is not None and drained and not worker.pending:
                with contextlib.suppress(Exception):
                    sink_version = await worker.sink.version()
                    if sink_version is not None:
                        await worker.ledger.save_checkpoint(f"{self.fingerprint}|{source_version}|{sink_version}")
            with contextlib.suppress(Exception):
                await worker.sink.close()
        self.metrics.route_ready.labels(self.name).set(0)
        self._set("stopped")


async def store_dead_letter(
    thoonk: AsyncThoonk, route: str, item_id: str, payload: str | None, reason: str, *,
    sink: str | None = None, kind: str | None = None, entry_id: str | None = None,
) -> None:
    """Append an undeliverable item to the route's dead-letter feed (JSON with id, reason, payload,
    and when known the refusing ``sink`` and the event ``kind``: what a replay needs). ``entry_id``:
    rewrite that entry instead of adding one (a replay refused again; see deadletters.py).

    The feed keeps the newest ``DEAD_LETTER_MAX`` records (its ``max_length``, set when it is created)."""
    feed = await thoonk.feed(dead_letter_feed(route), {"max_length": DEAD_LETTER_MAX})
    record: dict[str, Any] = {"id": item_id, "reason": reason, "payload": payload, "at": time.time()}
    if sink is not None:
        record["sink"] = sink
    if kind is not None:
        record["kind"] = kind
    await feed.publish(json.dumps(record, ensure_ascii=False), id=entry_id)
