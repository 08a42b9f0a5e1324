"""The one backoff policy of the bridge: exponential, capped, jittered.

Every retry loop (the router's sinks and routes, feed polls and stores, WebSub deliveries, pings
and re-subscriptions, XMPP reconnects, topic announcements) asks a :class:`Backoff` how long to
wait, each with its own base and cap.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

__all__ = ["Backoff"]

MAX_EXPONENT = 64  # 2**64 times any sane base is past any cap; keeps the float finite


@dataclass(frozen=True)
class Backoff:
    """How long to wait before retry number ``attempt`` (0: after the first failure).

    The ceiling is ``min(cap, base * 2**attempt)``; the delay is drawn uniformly from
    ``[max(floor, ceiling * (1 - jitter)), max(floor, ceiling)]``.

    Options:

    - ``base``: the ceiling of attempt 0, seconds (default 0.2, the router's).
    - ``cap``: the longest ceiling, seconds (default 30, the router's).
    - ``jitter``: the random fraction of the ceiling: 1.0 is "full jitter" in ``[0, ceiling]``
      (default), 0.5 "equal jitter" in ``[ceiling/2, ceiling]``, 0 no jitter (exactly the ceiling).
    - ``floor``: the shortest delay whatever the jitter (a poll interval, a minimum reconnect
      delay), seconds (default 0).
    - ``rng``: the source of randomness; pass a seeded ``random.Random`` for repeatable delays
      (tests). Not part of equality.
    """

    base: float = 0.2
    cap: float = 30.0
    jitter: float = 1.0
    floor: float = 0.0
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.base < 0 or self.cap < 0 or self.floor < 0:
            raise ValueError(f"backoff: base, cap and floor must be >= 0: {self!r}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"backoff: jitter must be between 0 and 1: {self.jitter!r}")

    def ceiling(self, attempt: int) -> float:
        """The delay before jitter: ``min(cap, base * 2**attempt)`` (negative attempts count as 0)."""
        return min(self.cap, self.base * 2.0 ** min(max(attempt, 0), MAX_EXPONENT))

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (0: after the first failure)."""
        high = self.ceiling(attempt)
        if self.jitter == 0:
            return max(self.floor, high)
        low = high * (1.0 - self.jitter)
        return self.rng.uniform(max(self.floor, low), max(self.floor, high))

    async def sleep(self, attempt: int) -> float:
        """Wait :meth:`delay` seconds for retry number ``attempt``; returns the delay waited."""
        delay = self.delay(attempt)
        await asyncio.sleep(delay)
        return delay
