"""What the router delivered to each sink of a route, kept in Redis (one hash per route and sink)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from thoonk_bridge import keys
from thoonk_bridge.thoonk.text import as_text

if TYPE_CHECKING:
    from thoonk_bridge.redis_client import AsyncRedis

LEDGER_PAGE = 1000  # ledger fields per HSCAN/HSET/HDEL: bounded Redis commands whatever the size


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
