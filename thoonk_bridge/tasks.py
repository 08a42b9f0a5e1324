"""Task helpers shared by the engine and the plugins."""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["cancel_and_wait"]


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
