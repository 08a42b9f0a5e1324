"""Limits on what outsiders can make the hub do: concurrency per callback host, request rates per
client address / callback host / callback, and the address a request counts against.

Everything here is bounded by construction: a host's slot entry exists only while someone uses it,
and the rate-limit tables are Redis hashes per time window with a cap on their number of fields
(expired with the window).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from thoonk_bridge.keys import websub_rate


@dataclass
class _Host:
    active: int = 0  # slots taken
    waiters: deque[asyncio.Future[None]] = field(default_factory=deque)


class HostSlots:
    """At most ``limit`` slots taken at once per host. A host's entry lives only while a slot is
    taken or awaited, so the table is bounded by what is in flight (an outsider naming a million
    hosts leaves nothing behind)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._hosts: dict[str, _Host] = {}

    def __len__(self) -> int:
        return len(self._hosts)

    def busy(self, host: str) -> bool:
        """True when ``host`` has no free slot."""
        entry = self._hosts.get(host)
        return entry is not None and entry.active >= self.limit

    def try_take(self, host: str) -> bool:
        """Take a slot of ``host`` if one is free (never waits); ``release`` it afterwards."""
        entry = self._hosts.get(host)
        if entry is None:
            entry = self._hosts[host] = _Host()
        if entry.active >= self.limit:
            return False
        entry.active += 1
        return True

    def release(self, host: str) -> None:
        entry = self._hosts[host]
        while entry.waiters:
            waiter = entry.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes to the next in line
                return
        entry.active -= 1
        if entry.active <= 0:
            del self._hosts[host]

    @asynccontextmanager
    async def hold(self, host: str) -> AsyncIterator[None]:
        """A slot of ``host`` for the duration of the block (waits in line for one)."""
        if not self.try_take(host):
            entry = self._hosts[host]
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            entry.waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self.release(host)  # handed the slot just as we were cancelled: pass it on
                else:
                    with contextlib.suppress(ValueError):
                        entry.waiters.remove(waiter)
                raise
        try:
            yield
        finally:
            self.release(host)


# One hash per (kind, window); every rate-limit key shares the {rl} hash tag (one Redis Cluster
# slot, so one script can check them all).
_RATE = """
-- KEYS: window hashes in the order they are checked; ARGV: ttl, max fields, then (field, limit) per key.
-- Returns 0 (allowed), i (KEYS[i] over its limit) or -i (KEYS[i] is full: too many distinct senders).
-- A request refused by one table is not counted in the tables after it, so that a client over its
-- own limit cannot use up the budget of a callback host it names.
local ttl, cap = tonumber(ARGV[1]), tonumber(ARGV[2])
for i, key in ipairs(KEYS) do
    local field, limit = ARGV[1 + 2 * i], tonumber(ARGV[2 + 2 * i])
    if redis.call('HEXISTS', key, field) == 0 and redis.call('HLEN', key) >= cap then
        return -i
    end
    local n = redis.call('HINCRBY', key, field, 1)
    if redis.call('TTL', key) < 0 then
        redis.call('EXPIRE', key, ttl)
    end
    if n > limit then
        return i
    end
end
return 0
"""

RATE_KINDS = ("client", "host", "callback")


@dataclass(frozen=True)
class RateVerdict:
    allowed: bool
    kind: str = ""  # which limit refused: client | host | callback
    full: bool = False  # the table of that kind is full (many distinct senders in this window)


class RateLimiter:
    """Fixed-window counters in Redis, shared by the daemons of a fleet."""

    def __init__(self, redis: Any) -> None:
        self.redis = redis
        self._script = redis.register_script(_RATE)

    async def check(self, window: float, max_keys: int, limits: list[tuple[str, str, int]]) -> RateVerdict:
        """``limits``: (kind, key, limit) in the order they apply. Counts the request and says
        whether it may go on."""
        slot = int(time.time() // window)
        keys = [websub_rate(kind, slot) for kind, _, _ in limits]
        args: list[Any] = [max(1, int(window) + 1), max_keys]
        for _, key, limit in limits:
            args += (hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:24], limit)
        verdict = int(await self._script(keys=keys, args=args))
        if verdict == 0:
            return RateVerdict(True)
        return RateVerdict(False, limits[abs(verdict) - 1][0], verdict < 0)


def client_address(remote: str | None, forwarded_for: str | None, trusted: tuple[Any, ...]) -> str:
    """The address a hub request counts against: the peer, or, when the peer is a trusted proxy,
    the last ``X-Forwarded-For`` entry that is not one. IPv6 clients count per /64 (one host
    usually holds a whole /64)."""
    address = _ip(remote)
    if address is not None and forwarded_for and any(address in net for net in trusted):
        for part in reversed(forwarded_for.split(",")[-20:]):
            hop = _ip(part.strip())
            if hop is None:
                break
            address = hop
            if not any(hop in net for net in trusted):
                break
    if address is None:
        return remote or "-"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def _ip(text: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not text:
        return None
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None


__all__ = ["HostSlots", "RateLimiter", "RateVerdict", "client_address"]
