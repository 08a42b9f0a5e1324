"""A test helper proving that some work ran off the event loop, whatever the machine's speed."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any


class LoopProbe:
    """``async with LoopProbe() as probe: monkeypatch.setattr(mod, "fn", probe.wrap(mod.fn))``.

    The wrapped function, when called, waits until the event loop has run a callback before doing its
    work: off the loop that takes a few milliseconds; on the loop it can never happen, so the wait
    times out (``timeout``) and :attr:`off_loop` is False. No count of ticks, no timing threshold.
    """

    def __init__(self, timeout: float = 10.0) -> None:
        self.timeout = timeout
        self.waits: list[bool] = []
        self._ran = threading.Event()
        self._task: asyncio.Task[None] | None = None

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            self._ran.clear()  # from here on, only a loop that is free can set it
            self.waits.append(self._ran.wait(self.timeout))
            return fn(*args, **kwargs)

        return wrapped

    @property
    def off_loop(self) -> bool:
        """The wrapped function was called, and every time the loop ran meanwhile."""
        return bool(self.waits) and all(self.waits)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(0.005)
            self._ran.set()

    async def __aenter__(self) -> LoopProbe:
        self._task = asyncio.create_task(self._tick())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
