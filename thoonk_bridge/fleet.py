"""The fleet: every daemon sharing a Redis says who it is and what it runs, and anyone can read it.

- Writer: :class:`Heartbeat` writes this daemon's record to the ``bridge.instances`` hash (field =
  instance id) every ``lease_seconds / 3`` and removes it on a clean stop.
- Reader: :func:`read_fleet` (``thoonk-bridge status``) and :func:`parse_heartbeat` (the console):
  every daemon's record, and who holds each route's lease.
- Identity: :func:`stable_instance_id` (kept in the state directory, so a restarted daemon gets its
  route leases back at once).

A record: ``instance``, ``host``, ``pid``, ``started``, ``heartbeat`` (unix times), ``phase``,
``lease_seconds``, ``owns`` (route -> start of its lease term), ``standby`` (routes waited for) and
``conflicts`` (route -> the daemon running another definition of it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from thoonk_bridge import keys
from thoonk_bridge.lease import token_holder
from thoonk_bridge.tasks import cancel_and_wait
from thoonk_bridge.thoonk.text import as_text

if TYPE_CHECKING:
    import structlog

    from thoonk_bridge.redis_client import AsyncRedis

__all__ = ["Heartbeat", "new_instance_id", "parse_heartbeat", "read_fleet", "stable_instance_id"]


def new_instance_id() -> str:
    return f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"


def stable_instance_id(state_dir: Path) -> str:
    """The id kept in ``state_dir/instance-id`` (made on first use): a restarted daemon keeps it,
    and so gets its route leases back at once instead of waiting for them to expire."""
    path = state_dir / "instance-id"
    try:
        existing = path.read_text().strip()
    except FileNotFoundError:
        existing = ""
    if existing:
        return existing
    state_dir.mkdir(parents=True, exist_ok=True)
    fresh = new_instance_id()
    path.write_text(fresh + "\n")
    return fresh


# --------------------------------------------------------------------------- writer


class Heartbeat:
    """Writes one daemon's record to ``bridge.instances``.

    - ``redis``: the daemon's asyncio client.
    - ``instance``: the daemon's id (the hash field).
    - ``lease_seconds``: called at each beat (a reload may change it): the record carries it, and the
      next beat comes a third of it later.
    - ``state``: called at each beat for what changes: ``phase``, ``owns``, ``standby``, ``conflicts``.
    - ``log``: where a failed beat is reported (the next one tries again).
    - ``started``: unix time the daemon started (default: now).
    """

    def __init__(
        self,
        redis: AsyncRedis,
        instance: str,
        lease_seconds: Callable[[], float],
        state: Callable[[], dict[str, Any]],
        log: structlog.typing.FilteringBoundLogger,
        started: float | None = None,
    ) -> None:
        self.redis = redis
        self.instance = instance
        self.lease_seconds = lease_seconds
        self.state = state
        self.log = log
        self.started = time.time() if started is None else started
        self._task: asyncio.Task[None] | None = None

    def record(self) -> dict[str, Any]:
        return {
            "instance": self.instance,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": self.started,
            "heartbeat": time.time(),
            "lease_seconds": self.lease_seconds(),
            **self.state(),
        }

    async def beat(self) -> None:
        await self.redis.hset(keys.INSTANCES, self.instance, json.dumps(self.record()))

    async def start(self) -> None:
        """Write the record now, then periodically."""
        await self.beat()
        self._task = asyncio.create_task(self._loop(), name="heartbeat")

    async def stop(self) -> None:
        """Stop beating (the record stays until :meth:`forget`)."""
        await cancel_and_wait(self._task)
        self._task = None

    async def forget(self) -> None:
        """Remove the record: this daemon leaves the fleet (errors ignored: it goes stale anyway)."""
        with contextlib.suppress(Exception):
            await self.redis.hdel(keys.INSTANCES, self.instance)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.lease_seconds() / 3)
            try:
                await self.beat()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - next beat
                self.log.warning("heartbeat failed", error=f"{type(exc).__name__}: {exc}")


# --------------------------------------------------------------------------- readers


def parse_heartbeat(raw: Any, now: float) -> dict[str, Any] | None:
    """One ``bridge.instances`` value as its record, with ``heartbeat_age`` and ``stale`` added (None:
    not a record).

    An instance whose heartbeat is older than three lease times is ``stale`` (it died without
    saying goodbye; its leases have expired and been taken over, or will be)."""
    try:
        record = json.loads(as_text(raw))
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    age = now - float(record.get("heartbeat", 0))
    record["heartbeat_age"] = age
    record["stale"] = age > 3 * float(record.get("lease_seconds", 15))
    return record


def read_fleet(redis: Any) -> dict[str, Any]:
    """``{"instances": [...], "leases": {route: holder}}`` from a sync redis-py client."""
    now = time.time()
    instances = [r for raw in redis.hgetall(keys.INSTANCES).values() if (r := parse_heartbeat(raw, now)) is not None]
    instances.sort(key=lambda r: r["instance"])
    leases: dict[str, str] = {}
    for key in redis.scan_iter(match=keys.ROUTE_LEASE_PATTERN, count=500):
        value = redis.get(key)
        route = keys.route_of_lease(key)
        if value is not None and route is not None:
            leases[route] = token_holder(as_text(value))
    return {"instances": instances, "leases": leases}
