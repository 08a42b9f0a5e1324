"""Leases in Redis: single-owner work among several daemons sharing one Redis.

A lease is a Redis key holding ``INSTANCE:FENCE`` with an expiry. The holder renews it well before
it expires; when the holder dies, the key expires and another daemon takes it over. Every
acquisition increments a fencing counter, so a holder can tell (and a write can check) whether it is
still the owner of the latest term: a holder whose renewal finds another token has lost the lease
and must stop writing at once.

Keys: ``bridge.lease:{NAME}`` (the holder's token) and ``bridge.fence:{NAME}`` (the term counter).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import redis.asyncio

__all__ = ["Lease", "LeaseKeys"]

# KEYS[1] lease, KEYS[2] fence; ARGV[1] instance, ARGV[2] ttl ms.
# Free, expired, or already ours from an earlier life of this instance: take it with a new term.
_ACQUIRE = """
local current = redis.call('GET', KEYS[1])
if current then
  local holder = string.match(current, '^(.*):%d+$')
  if holder ~= ARGV[1] then return false end
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return current
end
local fence = redis.call('INCR', KEYS[2])
local token = ARGV[1] .. ':' .. fence
redis.call('SET', KEYS[1], token, 'PX', ARGV[2])
return token
"""

# KEYS[1] lease; ARGV[1] token, ARGV[2] ttl ms. Renew only if we still hold this very term.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# KEYS[1] lease; ARGV[1] token.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""


@dataclass(frozen=True)
class LeaseKeys:
    lease: str
    fence: str

    @classmethod
    def named(cls, name: str) -> LeaseKeys:
        # One hash tag per lease: both keys live in one cluster slot.
        return cls(f"bridge.lease:{{{name}}}", f"bridge.fence:{{{name}}}")


class Lease:
    """One named lease held (or wanted) by one daemon instance.

    - ``name``: what is owned (``route:news-in``).
    - ``instance``: this daemon's id; a restarted daemon with the same id gets its lease back at
      once instead of waiting for it to expire.
    - ``ttl``: seconds a lease lives without renewal; renew every ``ttl / 3``.
    """

    def __init__(self, redis: redis.asyncio.Redis, name: str, instance: str, ttl: float) -> None:
        self.redis = redis
        self.name = name
        self.instance = instance
        self.ttl = ttl
        self.keys = LeaseKeys.named(name)
        self.token: str | None = None
        self.since: float | None = None  # unix time this term started
        self._valid_until = 0.0  # monotonic: past this we may no longer be the holder

    @property
    def fence(self) -> int | None:
        return int(self.token.rsplit(":", 1)[1]) if self.token else None

    def held(self) -> bool:
        """True while we hold the lease by our own clock (safe side: a renewal is due long before)."""
        return self.token is not None and time.monotonic() < self._valid_until

    async def acquire(self) -> bool:
        started = time.monotonic()
        token = await self.redis.eval(_ACQUIRE, 2, self.keys.lease, self.keys.fence, self.instance,
                                      int(self.ttl * 1000))
        if not token:
            self._lost()
            return False
        token = token.decode() if isinstance(token, bytes) else str(token)
        if token != self.token:
            self.since = time.time()
        self.token = token
        self._valid_until = started + self.ttl
        return True

    async def renew(self) -> bool:
        if self.token is None:
            return False
        started = time.monotonic()
        ok = await self.redis.eval(_RENEW, 1, self.keys.lease, self.token, int(self.ttl * 1000))
        if not ok:
            self._lost()
            return False
        self._valid_until = started + self.ttl
        return True

    async def release(self) -> None:
        if self.token is not None:
            try:
                await self.redis.eval(_RELEASE, 1, self.keys.lease, self.token)
            finally:
                self._lost()

    async def holder(self) -> str | None:
        """The instance holding the lease now, by Redis (None: free)."""
        token = await self.redis.get(self.keys.lease)
        if token is None:
            return None
        text = token.decode() if isinstance(token, bytes) else str(token)
        return text.rsplit(":", 1)[0]

    def _lost(self) -> None:
        self.token = None
        self.since = None
        self._valid_until = 0.0
