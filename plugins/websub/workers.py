"""The plugin's background tasks: job workers, periodic loops, and jobs run in tasks of their own.

``stop(drain)`` stops taking jobs, cancels what is idle (waiting for a job or sleeping), and lets
the tasks in the middle of a job finish for at most ``drain`` seconds before cancelling them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from thoonk_bridge.tasks import cancel_all

from .jobs import JobQueue


class Workers:
    """The tasks of one running plugin (started by ``start()``, ended by ``stop()``)."""

    def __init__(self, log: Any) -> None:
        self.log = log
        self.stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._busy: set[asyncio.Task[Any]] = set()  # workers in the middle of a job

    def start(self) -> None:
        self.stopping.clear()

    def spawn(self, name: str, factory: Callable[[], Awaitable[None]], count: int) -> None:
        """``count`` tasks running ``factory()``, named ``websub-NAME-i``."""
        for i in range(count):
            self._tasks.append(asyncio.create_task(factory(), name=f"websub-{name}-{i}"))  # type: ignore[arg-type]

    def spawn_job(self, job: Awaitable[None], name: str) -> None:
        """Run one claimed job in its own task (stop() lets it finish, bounded, like a busy worker)."""
        task: asyncio.Task[None] = asyncio.create_task(job, name=name)  # type: ignore[arg-type]
        self._tasks.append(task)
        self._busy.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._busy.discard(t)
            with contextlib.suppress(ValueError):
                self._tasks.remove(t)

        task.add_done_callback(done)

    async def stop(self, drain: float) -> None:
        """Stop taking jobs; let those in flight finish (at most ``drain`` seconds), cancel the rest."""
        self.stopping.set()
        tasks, self._tasks = self._tasks, []
        await cancel_all([t for t in tasks if t not in self._busy])  # waiting for a job or sleeping: nothing to finish
        busy = [t for t in tasks if t in self._busy and not t.done()]
        if busy:
            _, pending = await asyncio.wait(busy, timeout=drain) if drain > 0 else ((), busy)
            await cancel_all(pending)
        self._busy.clear()

    def forget_busy(self) -> None:
        """Tests (a crashed daemon): claimed jobs stay claimed, nothing is let finish."""
        self._busy.clear()

    def worker(self, q: JobQueue, handler: Callable[[str], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
        """A loop that claims jobs of ``q`` and runs ``handler(item)`` on each.

        A malformed item (ValueError, KeyError, TypeError) is finished and never retried; another
        failure leaves the job claimed, and job maintenance puts it back after its timeout.
        """
        async def run() -> None:
            while not self.stopping.is_set():
                try:
                    got = await q.get(timeout=0.5)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - Redis trouble: wait and go on
                    self.log.warning("websub.queue_error", queue=q.name, error=str(exc))
                    await asyncio.sleep(1)
                    continue
                if got is None:
                    continue
                job_id, item = got
                me = asyncio.current_task()
                assert me is not None
                self._busy.add(me)
                try:
                    await handler(item)
                except (ValueError, KeyError, TypeError) as exc:  # a malformed item: never retried
                    self.log.error("websub.bad_job", queue=q.name, error=f"{type(exc).__name__}: {exc}")
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - left claimed: maintenance puts it back
                    self.log.error("websub.job_failed", queue=q.name, error=f"{type(exc).__name__}: {exc}")
                    self._busy.discard(me)
                    continue
                try:
                    await q.finish(job_id)
                finally:
                    self._busy.discard(me)

        return run

    def every(self, interval: float, fn: Callable[[], Awaitable[Any]]) -> Callable[[], Awaitable[None]]:
        """A loop that runs ``fn()`` every ``interval`` seconds until stopped (failures logged)."""
        async def run() -> None:
            while not self.stopping.is_set():
                try:
                    await fn()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - keep looping
                    self.log.warning("websub.loop_error", loop=getattr(fn, "__name__", "?"), error=str(exc))
                try:
                    await asyncio.wait_for(self.stopping.wait(), timeout=interval)
                except TimeoutError:
                    pass

        return run


__all__ = ["Workers"]
