"""One sink of a route: its own task and coalesced queue, retries, dead letters and the ledger."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

from thoonk_bridge.backoff import Backoff as RetryPolicy
from thoonk_bridge.payload import content_hash
from thoonk_bridge.plugin import DeliveryError, Endpoint, EventKind, ItemEvent, RouteContext, Sink
from thoonk_bridge.router.echo import EchoFilter
from thoonk_bridge.router.ledger import Ledger, LedgerEntry
from thoonk_bridge.router.reconcile import SinkReconcile, initial_keep
from thoonk_bridge.tasks import cancel_and_wait

if TYPE_CHECKING:
    import structlog

    from thoonk_bridge.metrics import BridgeMetrics
    from thoonk_bridge.trace import RouteRecorder

LEDGER_BATCH = 256  # events applied between two ledger writes (and most events per Sink.apply_many)
RECONCILE_WINDOW = 10_000  # events a reconcile queues for a working sink before waiting for it to drain


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
        self.reports_ids = False  # the sink's ids() tells what it holds: the ledger keeps no hashes
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
        self.reports_ids = held is not None
        ledger = await self.ledger.entries()
        if held is None:
            held = {item_id: LedgerEntry.parse(value).hash for item_id, value in ledger.items()}
        reverse = await self.reverse.entries() if self.reverse is not None else {}
        keep = None if await self.ledger.started() else initial_keep(self.route.initial)
        return SinkReconcile(self, held, ledger, reverse, keep)

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
        digest = None if self.reports_ids else content_hash(event.payload or "")
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
