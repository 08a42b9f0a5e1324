"""Route ownership: which configured routes this daemon runs, decided by one lease per route.

Several daemons may share one Redis and one config: each route runs on exactly one of them, the
holder of the route's lease (:mod:`thoonk_bridge.lease`, keys in :mod:`thoonk_bridge.keys`). The
others stand by and take the route over when its holder is gone. :class:`RouteOwnership` is the
daemon's one handle on that:

- :meth:`~RouteOwnership.acquire`: want a route: run it now if its lease is free, and keep owning it
  (or waiting for it) until released;
- renewal: automatic, from a thread of its own (:class:`~thoonk_bridge.lease.LeaseKeeper`), so a busy
  event loop keeps its routes; a lost lease stops the route at once;
- :meth:`~RouteOwnership.release`: stop owning a route (stop it, draining, and free its lease so
  another daemon takes it now);
- :meth:`~RouteOwnership.owned`: whether this daemon runs a route now; :meth:`~RouteOwnership.standby`,
  :meth:`~RouteOwnership.unowned` and :attr:`~RouteOwnership.conflicts` for the heartbeat and
  ``/readyz``.

Running a route is not ownership's business: it calls the ``run`` and ``halt`` it was given.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from thoonk_bridge import keys
from thoonk_bridge.lease import Lease, LeaseKeeper
from thoonk_bridge.tasks import cancel_and_wait

if TYPE_CHECKING:
    import structlog

    from thoonk_bridge.config import RouteSpec
    from thoonk_bridge.metrics import BridgeMetrics
    from thoonk_bridge.plugin import Endpoint
    from thoonk_bridge.redis_client import AsyncRedis

__all__ = ["RouteOwnership", "route_fingerprint"]


def route_fingerprint(spec: RouteSpec) -> str:
    """A short hash of what a route does (its options, source and sinks with their options).

    Stored with the route's lease: a daemon whose config gives the same route name another
    definition sees that the holder runs something else (a conflict), instead of standing by."""

    def endpoint(e: Endpoint[Any]) -> dict[str, Any]:
        return {"endpoint": str(e), "options": e.options.model_dump(mode="json")}

    doc = {
        "route": spec.model_dump(mode="json", exclude={"source", "sinks"}),
        "source": endpoint(spec.source),
        "sinks": [endpoint(s) for s in spec.sinks],
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]


class RouteOwnership:
    """The leases of every configured route of one daemon, held or wanted.

    - ``redis``: the daemon's asyncio client (acquire, release, who holds a lease).
    - ``instance``: this daemon's id (a restarted daemon with the same id gets its leases back at once).
    - ``metrics``: ``route_owned`` and ``route_conflicts`` are kept here.
    - ``log``: the daemon's logger.
    - ``run(spec, lease)``: build and start the route (its writes are guarded by ``lease.held``).
    - ``halt(name, drain)``: stop the running route, giving its sinks ``drain`` seconds.

    :meth:`start` (before the first :meth:`acquire`) starts the renewing thread; :meth:`stop` (after
    the last :meth:`release`) ends it.
    """

    def __init__(
        self,
        redis: AsyncRedis,
        instance: str,
        metrics: BridgeMetrics,
        log: structlog.typing.FilteringBoundLogger,
        *,
        run: Callable[[RouteSpec, Lease], None],
        halt: Callable[[str, float], Awaitable[None]],
    ) -> None:
        self.redis = redis
        self.instance = instance
        self.metrics = metrics
        self.log = log
        self._run = run
        self._halt = halt
        self.leases: dict[str, Lease] = {}  # route -> its lease, held or wanted
        self.conflicts: dict[str, str] = {}  # route -> the daemon running another definition of it
        self._running: set[str] = set()
        self._owners: dict[str, asyncio.Task[None]] = {}
        self._wakes: dict[str, asyncio.Event] = {}  # route -> wakes its owner task (lease lost)
        self.keeper: LeaseKeeper | None = None

    # ------------------------------------------------------------------ the renewing thread

    def start(self, client_factory: Callable[[], Any], ttl: float) -> None:
        """Start renewing from a thread. ``client_factory`` makes its sync Redis client (own pool,
        short timeouts); ``ttl``: the lease time, which sets how long a stuck loop keeps its leases."""
        loop = asyncio.get_running_loop()

        def lost(lease: Lease) -> None:  # in the keeper thread
            name = keys.route_of_lease(lease.name) or lease.name
            loop.call_soon_threadsafe(lambda: self._wakes[name].set() if name in self._wakes else None)

        def failed(lease: Lease, exc: Exception) -> None:  # in the keeper thread
            self.log.warning("route lease renewal failed", route=keys.route_of_lease(lease.name),
                             error=f"{type(exc).__name__}: {exc}")

        def stalled(quiet: float) -> None:  # in the keeper thread
            self.log.error("event loop stuck: leases are no longer renewed, other daemons will take over",
                           seconds=round(quiet, 1))

        # A busy loop keeps its leases; a loop stuck this long lets them go (see lease.py).
        self.keeper = LeaseKeeper(client_factory, on_lost=lost, on_error=failed, on_stall=stalled,
                                  stall_limit=max(60.0, 4 * ttl))
        self.keeper.start()

    def loop_alive(self) -> None:
        """The event loop ticked (the loop watcher calls this): the keeper may go on renewing."""
        if self.keeper is not None:
            self.keeper.loop_alive()

    async def stop(self) -> None:
        """Stop renewing (leases not released run out by themselves)."""
        if self.keeper is not None:
            await asyncio.to_thread(self.keeper.stop)

    # ------------------------------------------------------------------ the verbs

    async def acquire(self, spec: RouteSpec, ttl: float) -> None:
        """Take the route's lease if it is free (run the route now), then keep owning or waiting.

        ``ttl``: seconds the lease lives without renewal (renewed every ``ttl / 3``)."""
        lease = Lease(self.redis, keys.route_lease(spec.name), self.instance, ttl, fingerprint=route_fingerprint(spec))
        self.leases[spec.name] = lease
        self._wakes[spec.name] = asyncio.Event()
        if self.keeper is not None:
            self.keeper.add(lease)
        try:
            if await lease.acquire():
                self._start(spec, lease)
            else:
                self._check_conflict(spec.name, lease)
        except Exception as exc:  # noqa: BLE001 - the owner loop retries
            self.log.warning("route lease not taken yet", route=spec.name, error=str(exc))
        self._owners[spec.name] = asyncio.create_task(self._own(spec, lease), name=f"lease:{spec.name}")

    async def release(self, name: str, drain: float) -> None:
        """Stop owning the route: stop it (draining), release its lease so another daemon takes it now."""
        await cancel_and_wait(self._owners.pop(name, None))
        await self._stop(name, drain)
        self._wakes.pop(name, None)
        self.conflicts.pop(name, None)
        lease = self.leases.pop(name, None)
        if lease is not None and self.keeper is not None:
            self.keeper.remove(lease)
        if lease is not None:
            with contextlib.suppress(Exception):
                await lease.release()
        with contextlib.suppress(KeyError):
            self.metrics.route_owned.remove(name)

    def owned(self, name: str) -> bool:
        """True while this daemon runs the route (it held the lease when it started it)."""
        return name in self._running

    # ------------------------------------------------------------------ what the fleet sees

    def owned_since(self) -> dict[str, float | None]:
        """Route -> unix time its lease's current term started, for the routes run here."""
        return {name: lease.since for name, lease in self.leases.items() if name in self._running}

    def standby(self) -> list[str]:
        """Configured routes this daemon waits for (another daemon holds them, or nobody yet)."""
        return sorted(name for name in self.leases if name not in self._running)

    async def unowned(self, body: dict[str, Any]) -> list[str]:
        """Standby routes that no daemon of the fleet holds a live lease for (run nowhere).

        A Redis error is reported in ``body["lease_error"]`` and every standby route counts."""
        standby = [lease for name, lease in self.leases.items() if name not in self._running]
        if not standby:
            return []
        try:
            holders = await asyncio.wait_for(asyncio.gather(*(lease.holder() for lease in standby)), 2)
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            body["lease_error"] = f"{type(exc).__name__}: {exc}"
            return sorted(keys.route_of_lease(lease.name) or lease.name for lease in standby)
        return sorted(keys.route_of_lease(lease.name) or lease.name
                      for lease, holder in zip(standby, holders, strict=True) if holder is None)

    # ------------------------------------------------------------------ inside

    def _start(self, spec: RouteSpec, lease: Lease) -> None:
        self._run(spec, lease)
        self._running.add(spec.name)
        self.metrics.route_owned.labels(spec.name).set(1)

    async def _stop(self, name: str, drain: float) -> None:
        self._running.discard(name)
        await self._halt(name, drain)  # also when not running: a route whose start failed half-way
        self.metrics.route_owned.labels(name).set(0)

    async def _own(self, spec: RouteSpec, lease: Lease) -> None:
        """Stop the route when its lease is gone; take the lease over when its holder is gone.

        Renewal is not done here but by the :class:`LeaseKeeper` thread, so a busy loop cannot
        make this daemon lose its leases (lease.py); a lost lease wakes this task at once."""
        interval = lease.ttl / 3
        wake = self._wakes[spec.name]
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), interval)
            wake.clear()
            try:
                if spec.name in self._running:
                    if lease.token is None:
                        self.log.warning("route lease lost to another daemon, stopping the route", route=spec.name)
                        await self._stop(spec.name, 0)
                    elif not lease.held():
                        self.log.warning("route lease expired, stopping the route", route=spec.name)
                        await self._stop(spec.name, 0)
                elif await lease.acquire():
                    self.conflicts.pop(spec.name, None)
                    self.log.info("route lease taken over", route=spec.name, fence=lease.fence)
                    self._start(spec, lease)
                else:
                    self._check_conflict(spec.name, lease)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Redis away: the next round tries again
                self.log.warning("route lease not taken yet", route=spec.name, error=f"{type(exc).__name__}: {exc}")

    def _check_conflict(self, name: str, lease: Lease) -> None:
        """After a refused acquisition: is the holder running another definition of this route?"""
        holder = lease.conflict()
        if holder is None:
            self.conflicts.pop(name, None)
            return
        if self.conflicts.get(name) != holder:
            self.conflicts[name] = holder
            self.metrics.route_conflicts.labels(name).inc()
            self.log.error("route name conflict: another daemon runs a different definition of this route; "
                           "this daemon will not run it (rename one of the routes, or make the configs agree)",
                           route=name, holder=holder, ours=lease.fingerprint,
                           theirs=lease.rival[1] if lease.rival else None)
