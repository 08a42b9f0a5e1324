"""One route: its source read once in reconcile and then followed, fanned out to its sinks' workers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from thoonk_bridge.backoff import Backoff as RetryPolicy
from thoonk_bridge.payload import Format, PayloadError
from thoonk_bridge.payload.render import render_parsed
from thoonk_bridge.plugin import Endpoint, EventKind, ItemEvent, NoSnapshot, Resync, RouteContext, Source
from thoonk_bridge.router.echo import EchoFilter
from thoonk_bridge.router.reconcile import SinkReconcile
from thoonk_bridge.router.worker import SinkWorker
from thoonk_bridge.tasks import cancel_and_wait

if TYPE_CHECKING:
    import structlog

    from thoonk_bridge.metrics import BridgeMetrics

CHECKPOINT_WAIT = 2.0  # seconds a stopping route waits for its source's barrier (else no checkpoint)


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
