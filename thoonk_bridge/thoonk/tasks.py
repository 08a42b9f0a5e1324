"""Stopping tasks: the one cancel-and-wait of the Thoonk core, the engine and the plugins.

It lives in the core (the core stops its own pub/sub readers and must not import the application);
:mod:`thoonk_bridge.tasks` re-exports it for the engine and the plugins.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

__all__ = ["cancel_all", "cancel_and_wait"]


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel a task and wait for it to end, swallowing its cancellation (for ``stop``/``close``).

    The cancellation is repeated while the task lives: a library awaiting inside a timeout (redis-py's
    pub/sub does) can swallow one cancellation on Python 3.11, which would leave us waiting forever.
    """
    if task is None:
        return
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=1.0)
    if not task.cancelled():
        task.exception()  # retrieved, so asyncio does not log "exception was never retrieved"


async def cancel_all(tasks: Iterable[asyncio.Task[Any] | None]) -> None:
    """:func:`cancel_and_wait` for several tasks stopped together: all are cancelled at once (not one
    after the other), then waited for; ``None`` entries are skipped. ``tasks`` is read once, at the
    call (a dict view that done callbacks change meanwhile is fine)."""
    started = [task for task in tasks if task is not None]
    pending = {task for task in started if not task.done()}
    while pending:  # repeated, as in cancel_and_wait: one cancellation may be swallowed
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=1.0)
    for task in started:
        if not task.cancelled():
            task.exception()  # retrieved, so asyncio does not log "exception was never retrieved"
