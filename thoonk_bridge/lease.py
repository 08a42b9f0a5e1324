"""Leases in Redis: single-owner work among several daemons sharing one Redis.

A lease is a Redis key holding ``INSTANCE:FENCE`` with an expiry. The holder renews it well before
it expires; when the holder dies, the key expires and another daemon takes it over. Every
acquisition increments a fencing counter, so a holder can tell (and a write can check) whether it is
still the owner of the latest term: a holder whose renewal finds another token has lost the lease
and must stop writing at once.

Keys (named in :mod:`thoonk_bridge.keys`): ``bridge.lease:{NAME}`` (the holder's token),
``bridge.fence:{NAME}`` (the term counter) and ``bridge.lease.spec:{NAME}`` (a fingerprint of what
the holder runs under that name, e.g. a route's definition; same expiry as the lease). A daemon that
wants the lease for another definition sees the difference: two configs giving one route name two
meanings is a conflict, not a standby.

Renewal never waits for the event loop (:class:`LeaseKeeper`): a daemon whose loop is busy for a
while (a big document, a slow callback) keeps its leases, because a thread of its own renews them
over its own Redis connection. The keeper only stops renewing when the loop has not ticked for
``stall_limit`` seconds (a loop that is stuck, not busy): then the leases expire and other daemons
take over, and the stuck daemon's writes are refused by :meth:`Lease.held` when it wakes.

A daemon does not use these directly: :mod:`thoonk_bridge.ownership` holds its routes' leases.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from thoonk_bridge import keys
from thoonk_bridge.thoonk.text import as_text

if TYPE_CHECKING:
    from thoonk_bridge.redis_client import AsyncRedis

__all__ = ["Lease", "LeaseKeeper", "LeaseKeys", "token_holder"]

# KEYS[1] lease, KEYS[2] fence, KEYS[3] spec; ARGV[1] instance, ARGV[2] ttl ms, ARGV[3] fingerprint.
# Free, expired, or already ours from an earlier life of this instance: take it with a new term.
# Returns {1, token} when taken, {0, holder's token, holder's fingerprint or ''} when not.
_ACQUIRE = """
local current = redis.call('GET', KEYS[1])
if current then
  local holder = string.match(current, '^(.*):%d+$')
  if holder ~= ARGV[1] then return {0, current, redis.call('GET', KEYS[3]) or ''} end
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('SET', KEYS[3], ARGV[3], 'PX', ARGV[2])
  return {1, current}
end
local fence = redis.call('INCR', KEYS[2])
local token = ARGV[1] .. ':' .. fence
redis.call('SET', KEYS[1], token, 'PX', ARGV[2])
redis.call('SET', KEYS[3], ARGV[3], 'PX', ARGV[2])
return {1, token}
"""

# KEYS[1] lease, KEYS[2] spec; ARGV[1] token, ARGV[2] ttl ms, ARGV[3] fingerprint.
# Renew only if we still hold this very term.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[2])
  return 1
end
return 0
"""

# KEYS[1] lease, KEYS[2] spec; ARGV[1] token.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1], KEYS[2])
  return 1
end
return 0
"""


def token_holder(token: str) -> str:
    """The instance id in a lease token (``INSTANCE:FENCE``)."""
    return token.rsplit(":", 1)[0]


@dataclass(frozen=True)
class LeaseKeys:
    lease: str
    fence: str
    spec: str

    @classmethod
    def named(cls, name: str) -> LeaseKeys:
        # One hash tag per lease: all keys live in one cluster slot.
        return cls(keys.lease(name), keys.fence(name), keys.lease_spec(name))


class Lease:
    """One named lease held (or wanted) by one daemon instance.

    - ``name``: what is owned (``route:news-in``).
    - ``instance``: this daemon's id; a restarted daemon with the same id gets its lease back at
      once instead of waiting for it to expire.
    - ``ttl``: seconds a lease lives without renewal; renew every ``ttl / 3``.
    - ``fingerprint``: what this daemon would run under the name (stored with the lease while
      held); after a refused :meth:`acquire`, :attr:`rival` and :meth:`conflict` tell who holds it
      and whether it runs something else.
    """

    def __init__(self, redis: AsyncRedis, name: str, instance: str, ttl: float,
                 fingerprint: str = "") -> None:
        self.redis = redis
        self.name = name
        self.instance = instance
        self.ttl = ttl
        self.fingerprint = fingerprint
        self.keys = LeaseKeys.named(name)
        self.token: str | None = None
        self.since: float | None = None  # unix time this term started
        self.rival: tuple[str, str] | None = None  # (holder, its fingerprint) seen by the last refusal
        self.renewed_at = 0.0  # monotonic time of the last successful renewal (or acquisition)
        self._valid_until = 0.0  # monotonic: past this we may no longer be the holder

    @property
    def fence(self) -> int | None:
        token = self.token
        return int(token.rsplit(":", 1)[1]) if token else None

    def held(self) -> bool:
        """True while we hold the lease by our own clock (safe side: a renewal is due long before)."""
        return self.token is not None and time.monotonic() < self._valid_until

    def conflict(self) -> str | None:
        """The holder's instance id when it runs this name with another definition (else None).

        A holder that records no fingerprint (an older daemon) is not a conflict."""
        if self.rival is None or not self.fingerprint:
            return None
        holder, theirs = self.rival
        return holder if theirs and theirs != self.fingerprint else None

    async def acquire(self) -> bool:
        started = time.monotonic()
        answer = await self.redis.eval(_ACQUIRE, 3, self.keys.lease, self.keys.fence, self.keys.spec,
                                       self.instance, int(self.ttl * 1000), self.fingerprint)
        return self._acquired(answer, started)

    def _acquired(self, answer: Any, started: float) -> bool:
        if not int(answer[0]):
            self._lost()
            self.rival = (token_holder(as_text(answer[1])), as_text(answer[2]))
            return False
        token = as_text(answer[1])
        if token != self.token:
            self.since = time.time()
        self.token = token
        self.rival = None
        self._renewed(started)
        return True

    async def renew(self) -> bool:
        token = self.token
        if token is None:
            return False
        started = time.monotonic()
        ok = await self.redis.eval(_RENEW, 2, self.keys.lease, self.keys.spec, token, int(self.ttl * 1000),
                                   self.fingerprint)
        return self._renew_answer(ok, token, started)

    def renew_sync(self, client: Any) -> bool:
        """:meth:`renew` over a sync redis-py client (the :class:`LeaseKeeper` thread)."""
        token = self.token
        if token is None:
            return False
        started = time.monotonic()
        ok = client.eval(_RENEW, 2, self.keys.lease, self.keys.spec, token, int(self.ttl * 1000), self.fingerprint)
        return self._renew_answer(ok, token, started)

    def _renew_answer(self, ok: Any, token: str, started: float) -> bool:
        if self.token != token:  # released or re-acquired meanwhile: this answer is about an old term
            return True
        if not ok:
            self._lost()
            return False
        self._renewed(started)
        return True

    def _renewed(self, started: float) -> None:
        # The key expires ttl after Redis ran the script, which is after we sent it: counting from
        # before the call keeps our view of the lease on the safe side.
        self._valid_until = max(self._valid_until, started + self.ttl)
        self.renewed_at = max(self.renewed_at, started)

    async def release(self) -> None:
        token = self.token
        if token is not None:
            try:
                await self.redis.eval(_RELEASE, 2, self.keys.lease, self.keys.spec, token)
            finally:
                self._lost()

    async def holder(self) -> str | None:
        """The instance holding the lease now, by Redis (None: free)."""
        token = await self.redis.get(self.keys.lease)
        if token is None:
            return None
        return token_holder(as_text(token))

    def _lost(self) -> None:
        self.token = None
        self.since = None
        self._valid_until = 0.0


class LeaseKeeper:
    """Renews held leases from a thread of its own, over its own sync Redis client.

    - ``client_factory``: makes the sync client (called in the thread; a client with short socket
      timeouts, so a Redis that hangs cannot hold the thread past a renewal).
    - ``on_lost``: called in the keeper thread when a renewal finds another holder (the daemon
      hands it to its loop with ``call_soon_threadsafe``).
    - ``stall_limit``: seconds without :meth:`loop_alive` after which renewals stop (see the module
      docstring); ``None``: renew regardless.
    - ``on_error``: called with each failed renewal's exception (Redis away); the lease then runs
      out by its own clock unless a later renewal succeeds.
    """

    def __init__(
        self,
        client_factory: Callable[[], Any],
        *,
        on_lost: Callable[[Lease], None],
        stall_limit: float | None = None,
        on_error: Callable[[Lease, Exception], None] | None = None,
        on_stall: Callable[[float], None] | None = None,
    ) -> None:
        self.client_factory = client_factory
        self.on_lost = on_lost
        self.on_error = on_error
        self.on_stall = on_stall
        self.stall_limit = stall_limit
        self._leases: dict[str, Lease] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop_seen = time.monotonic()
        self._client: Any = None
        self._errors: dict[str, float] = {}  # lease name -> when its last failed renewal was reported

    def add(self, lease: Lease) -> None:
        with self._lock:
            self._leases[lease.name] = lease
        self._wake.set()

    def remove(self, lease: Lease) -> None:
        with self._lock:
            if self._leases.get(lease.name) is lease:
                del self._leases[lease.name]

    def loop_alive(self) -> None:
        """The event loop ticked (called from the loop, often)."""
        self._loop_seen = time.monotonic()

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop renewing (blocks up to one Redis call: call it with ``asyncio.to_thread``)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._drop_client()

    def _drop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # noqa: BLE001, S110 - closing a client must not raise
                pass

    def _run(self) -> None:
        stalled = False
        while not self._stop.is_set():
            with self._lock:
                leases = list(self._leases.values())
            now = time.monotonic()
            due = [lease for lease in leases if lease.token is not None and now - lease.renewed_at >= lease.ttl / 3]
            quiet = now - self._loop_seen
            if self.stall_limit is not None and quiet > self.stall_limit:
                if not stalled and self.on_stall is not None:
                    self.on_stall(quiet)
                stalled = True
                due = []  # a stuck loop must not keep its leases for ever
            else:
                stalled = False
            for lease in due:
                if self._stop.is_set():
                    return
                try:
                    if self._client is None:
                        self._client = self.client_factory()
                    if not lease.renew_sync(self._client):
                        self.on_lost(lease)
                except Exception as exc:  # noqa: BLE001 - Redis away: retried at the next tick
                    self._drop_client()  # a fresh client next time (the old one may be wedged)
                    last = self._errors.get(lease.name)
                    if self.on_error is not None and (last is None or now - last >= lease.ttl / 3):
                        self._errors[lease.name] = now  # at most one report per renewal interval
                        self.on_error(lease, exc)
                else:
                    self._errors.pop(lease.name, None)
            tick = min((lease.ttl for lease in leases), default=3.0) / 12
            self._wake.wait(max(0.01, min(tick, 1.0)))
            self._wake.clear()
