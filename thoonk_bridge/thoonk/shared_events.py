"""Many event streams over one Redis pub/sub connection.

``AsyncThoonk.events(..., shared=True)`` gives a :class:`SharedEvents`: the same stream as
:class:`~thoonk_bridge.thoonk.events.AsyncEvents` (subscribed on entry, ``confirm``, iteration), but
all the shared streams of one client use one connection, kept by its :class:`EventConnection`. A
daemon with 1,000 routes then holds one pub/sub connection, not 1,000.

Each stream's channels are subscribed when it starts (it returns once Redis confirmed them, or at
once when another stream already holds them) and unsubscribed when the last stream using them
closes. A lost connection ends every stream that was using it with ``RedisUnavailable`` (as a
dedicated one would); the next stream started opens a new connection.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from typing import Any

import redis
import redis.asyncio

from .events import AsyncEvents, _dedicated_client
from .exceptions import RedisUnavailable
from .tasks import cancel_and_wait
from .text import as_text

__all__ = ["EventConnection", "SharedEvents"]

log = logging.getLogger(__name__)

CONFIRM_TIMEOUT = 10.0  # seconds Redis has to confirm a subscription


class EventConnection:
    """One pub/sub connection and the streams reading from it."""

    def __init__(self, client: redis.asyncio.Redis, address: str) -> None:
        self._client = client
        self._address = address
        self._own: redis.asyncio.Redis | None = None
        self._pubsub: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._streams: dict[str, set[SharedEvents]] = {}  # "c:CHANNEL" / "p:PATTERN" -> streams
        self._confirming: dict[str, list[asyncio.Future[None]]] = {}
        self._pings: dict[str, SharedEvents] = {}  # PING token -> the stream that sent it
        self._lock = asyncio.Lock()

    @property
    def subscriptions(self) -> int:
        return len(self._streams)

    async def attach(self, stream: SharedEvents, channels: list[str], patterns: list[str]) -> None:
        """Subscribe ``stream`` to these channels and patterns; returns once Redis confirmed them."""
        keys = [f"c:{c}" for c in channels] + [f"p:{p}" for p in patterns]
        stream.subscribed_keys = keys
        waits: list[asyncio.Future[None]] = []
        async with self._lock:
            try:
                if self._pubsub is None:
                    self._own = await _dedicated_client(self._client)
                    self._pubsub = (self._own or self._client).pubsub()
                new = [k for k in keys if k not in self._streams]
                for key in keys:
                    self._streams.setdefault(key, set()).add(stream)
                for key in new:
                    future = asyncio.get_running_loop().create_future()
                    self._confirming.setdefault(key, []).append(future)
                    waits.append(future)
                if new_channels := [k[2:] for k in new if k[0] == "c"]:
                    await self._pubsub.subscribe(*new_channels)
                if new_patterns := [k[2:] for k in new if k[0] == "p"]:
                    await self._pubsub.psubscribe(*new_patterns)
                if self._reader is None and waits:
                    self._reader = asyncio.create_task(self._read(), name="thoonk-shared-events")
            except (redis.ConnectionError, redis.TimeoutError, OSError) as e:
                await self._fail(e)
                raise RedisUnavailable(self._address, e) from e
        if waits:
            try:
                await asyncio.wait_for(asyncio.gather(*waits), CONFIRM_TIMEOUT)
            except TimeoutError:
                await self._fail(TimeoutError(f"no subscription confirmation within {CONFIRM_TIMEOUT:g} s"))
                raise RedisUnavailable(self._address, "no subscription confirmation") from None

    async def detach(self, stream: SharedEvents) -> None:
        """Forget ``stream``; channels nobody reads any more are unsubscribed."""
        unused: list[str] = []
        for key in stream.subscribed_keys:
            streams = self._streams.get(key)
            if streams is None or stream not in streams:
                continue
            streams.discard(stream)
            if not streams:
                del self._streams[key]
                unused.append(key)
        if unused and self._pubsub is not None:
            try:
                if channels := [k[2:] for k in unused if k[0] == "c"]:
                    await self._pubsub.unsubscribe(*channels)
                if patterns := [k[2:] for k in unused if k[0] == "p"]:
                    await self._pubsub.punsubscribe(*patterns)
            except (redis.ConnectionError, redis.TimeoutError, OSError) as e:
                await self._fail(e)

    async def ping(self, stream: SharedEvents, token: str) -> None:
        """PING down the connection; the PONG goes to ``stream``, in line with its events."""
        if self._pubsub is None:
            raise RedisUnavailable(self._address, "event connection closed")
        self._pings[token] = stream
        try:
            await self._pubsub.ping(token)
        except (redis.ConnectionError, redis.TimeoutError, OSError) as e:
            await self._fail(e)
            raise RedisUnavailable(self._address, e) from e

    async def _read(self) -> None:
        pubsub = self._pubsub
        while True:
            try:
                message = await pubsub.get_message(timeout=None)
            except asyncio.CancelledError:
                raise
            except (redis.ConnectionError, redis.TimeoutError, OSError) as e:
                self._reader = None
                await self._fail(e)
                return
            if message is None:
                continue
            kind = message.get("type")
            if kind == "message":
                key = f"c:{as_text(message['channel'])}"
            elif kind == "pmessage":
                key = f"p:{as_text(message['pattern'])}"
            elif kind == "pong":
                stream = self._pings.pop(as_text(message.get("data") or ""), None)
                if stream is not None:
                    stream.deliver(message)
                continue
            else:
                if kind in ("subscribe", "psubscribe"):
                    prefix = "c:" if kind == "subscribe" else "p:"
                    for future in self._confirming.pop(prefix + as_text(message["channel"]), []):
                        if not future.done():
                            future.set_result(None)
                continue
            for stream in self._streams.get(key, ()):
                stream.deliver(message)

    async def _fail(self, error: BaseException) -> None:
        """The connection is gone: every stream on it ends; the next attach opens a new one."""
        streams = {s for ss in self._streams.values() for s in ss}
        self._streams.clear()
        self._pings.clear()
        for futures in self._confirming.values():
            for future in futures:
                if not future.done():
                    future.set_exception(RedisUnavailable(self._address, error))
                    future.exception()  # retrieved: no "never retrieved" warning when nobody waits
        self._confirming.clear()
        for stream in streams:
            stream.connection_lost(error)
        pubsub, self._pubsub = self._pubsub, None
        own, self._own = self._own, None
        reader, self._reader = self._reader, None
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()
        if own is not None:
            with contextlib.suppress(Exception):
                await own.aclose(close_connection_pool=True)

    async def aclose(self) -> None:
        reader, self._reader = self._reader, None
        await cancel_and_wait(reader)
        await self._fail(ConnectionError("closed"))


class SharedEvents(AsyncEvents):
    """An :class:`AsyncEvents` reading from a shared :class:`EventConnection`."""

    def __init__(self, connection: EventConnection, address: str, feeds: tuple[str, ...], lifecycle: bool,
                 confirm: bool = False, client: redis.asyncio.Redis | None = None) -> None:
        super().__init__(client, address, feeds, lifecycle, confirm=confirm)  # type: ignore[arg-type]
        self._connection = connection
        self._messages: collections.deque[dict[str, Any]] = collections.deque()
        self._arrived = asyncio.Event()
        self._error: BaseException | None = None
        self.subscribed_keys: list[str] = []  # what this stream is subscribed to on the connection

    async def _subscribe(self, channels: list[str], patterns: list[str]) -> None:
        try:
            await self._connection.attach(self, channels, patterns)
        except RedisUnavailable:
            self._closed = True
            raise

    async def _ping(self, token: str) -> None:
        await self._connection.ping(self, token)

    def deliver(self, message: dict[str, Any]) -> None:
        self._messages.append(message)
        self._arrived.set()

    def connection_lost(self, error: BaseException) -> None:
        self._error = error
        self._arrived.set()

    async def _next_message(self, timeout: float | None) -> dict[str, Any] | None:
        while not self._messages:
            if self._error is not None:
                raise self._lost(self._error)
            if self._closed or timeout == 0:
                return None
            self._arrived.clear()
            if timeout is None:
                await self._arrived.wait()
            else:
                try:
                    await asyncio.wait_for(self._arrived.wait(), timeout)
                except TimeoutError:
                    return None
        return self._messages.popleft()

    async def aclose(self) -> None:
        self._closed = True
        self._arrived.set()
        if self._started and self._error is None:
            await self._connection.detach(self)
