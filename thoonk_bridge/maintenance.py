"""The daemon's periodic housekeeping: Thoonk job maintenance and the event loop watch.

- :class:`JobMaintenance`: every ``interval`` seconds, puts back the timed-out and orphaned jobs of
  every Thoonk job feed (a worker that died with a job claimed must not lose it).
- :class:`LoopWatch`: measures how late the event loop runs a timer: the lag gauge (worst lateness
  over the last :data:`LOOP_LAG_WINDOW` seconds), a log line past :data:`LOOP_LAG_WARNING` seconds,
  and a tick for whoever needs proof that the loop is alive (the lease keeper, see ownership.py).

The other periodic work of a daemon lives with what it serves: the heartbeat in fleet.py, lease
renewal in ownership.py, dead-letter replay requests in deadletters.py (``ReplayDesk``).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from thoonk_bridge.tasks import cancel_and_wait

if TYPE_CHECKING:
    import structlog
    from prometheus_client import Gauge

    from thoonk_bridge.thoonk import AsyncThoonk

__all__ = ["LOOP_LAG_WARNING", "LOOP_LAG_WINDOW", "LOOP_TICK", "JobMaintenance", "LoopWatch"]

LOOP_TICK = 0.25  # seconds between the loop watcher's timers
LOOP_LAG_WARNING = 1.0  # a timer this late is logged
LOOP_LAG_WINDOW = 10.0  # the lag gauge shows the worst lateness over this many seconds


class JobMaintenance:
    """Puts back timed-out and orphaned jobs of every Thoonk job feed.

    - ``thoonk``: the daemon's Thoonk client.
    - ``interval``: seconds between two rounds (the config's ``job_maintenance_seconds``).
    - ``log``: where rounds that put jobs back, and failures, are reported.
    """

    def __init__(self, thoonk: AsyncThoonk, interval: float, log: structlog.typing.FilteringBoundLogger) -> None:
        self.thoonk = thoonk
        self.interval = interval
        self.log = log
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="job-maintenance")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def run_once(self) -> int:
        """One round over every job feed; returns how many jobs were put back."""
        total = 0
        for name in await self.thoonk.get_feed_names():
            try:
                config = await self.thoonk.get_config(name)
                if config.get("type") != "job":
                    continue
                job = await self.thoonk.job(name)
                put_back = await job.maintenance()
            except Exception as exc:  # noqa: BLE001 - one bad feed must not stop the others' maintenance
                self.log.warning("job maintenance failed for one feed", feed=name, error=f"{type(exc).__name__}: {exc}")
                continue
            if put_back:
                self.log.info("jobs put back", feed=name, count=put_back)
            total += put_back
        return total

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - retried next tick
                self.log.warning("job maintenance failed", error=f"{type(exc).__name__}: {exc}")


class LoopWatch:
    """Measures the event loop's lateness.

    - ``gauge``: set to the worst lateness over the last :data:`LOOP_LAG_WINDOW` seconds.
    - ``log``: gets ``event loop lagged`` when a timer is more than :data:`LOOP_LAG_WARNING` late.
    - ``on_tick``: called at every tick (from the loop): the loop is alive.
    """

    def __init__(self, gauge: Gauge, log: structlog.typing.FilteringBoundLogger, on_tick: Callable[[], None]) -> None:
        self.gauge = gauge
        self.log = log
        self.on_tick = on_tick
        self._lags: deque[tuple[float, float]] = deque()  # (when, lateness) of the timers
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="loop-watch")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(LOOP_TICK)
            now = loop.time()
            lag = max(0.0, now - before - LOOP_TICK)
            self.on_tick()
            self._lags.append((now, lag))
            while self._lags and self._lags[0][0] < now - LOOP_LAG_WINDOW:
                self._lags.popleft()
            self.gauge.set(max(late for _, late in self._lags))
            if lag > LOOP_LAG_WARNING:
                self.log.warning("event loop lagged", seconds=round(lag, 3))
