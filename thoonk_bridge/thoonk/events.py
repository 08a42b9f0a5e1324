"""Live events: Redis pub/sub messages of the Thoonk channels, as :class:`Event` values.

``AsyncThoonk.events(...)`` gives an :class:`AsyncEvents` (async context manager and async
iterator); ``Thoonk.register_handler(...)`` runs a :class:`Listener` thread calling handlers with
the thoonk.py signatures. Both parse messages with :func:`parse`.

Redis pub/sub drops messages while nobody listens. The subscription is confirmed by Redis when
``start()``/``__aenter__`` returns, so: subscribe, then snapshot (``get_all()``), then iterate, and
nothing falls in between. When the connection drops, iteration raises :class:`RedisUnavailable`
(instead of silently reconnecting and hiding the gap): subscribe again and reconcile.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio

from .exceptions import RedisUnavailable
from .keys import CHANNEL_PREFIXES, LIFECYCLE_CHANNELS
from .redis_client import async_pubsub_client, sync_pubsub
from .text import as_text

__all__ = ["Event", "parse", "subscription", "AsyncEvents", "Listener", "EVENT_KINDS"]

log = logging.getLogger(__name__)

EVENT_KINDS = ("publish", "edit", "retract", "position", "create", "delete", "config", "finish")
_CONFIRMED_KINDS = ("publish", "edit", "retract", "position")


@dataclass(frozen=True, slots=True)
class Event:
    """One Thoonk event.

    kind: publish | edit | retract | position | create | delete | config | finish
    feed: the feed's name
    id: the item / job id (None for create, delete, config)
    item: the payload (publish, edit)
    extra: position (``:end``, ``begin:``, ``:ID``, ``ID:``), finish result, or for
        create/delete/config the instance id of the Thoonk client that made the change
    """

    kind: str
    feed: str
    id: str | None = None
    item: str | None = None
    extra: str | None = None


def parse(channel: Any, data: Any) -> Event | None:
    """A message on a Thoonk channel -> Event (None for channels that are not Thoonk's)."""
    channel, data = as_text(channel), as_text(data)
    kind = LIFECYCLE_CHANNELS.get(channel)
    if kind is not None:
        name, _, instance = data.partition("\x00")
        return Event(kind, name, extra=instance or None)
    for kind, prefix in CHANNEL_PREFIXES.items():
        if channel.startswith(prefix):
            feed = channel[len(prefix):]
            if kind == "retract":
                return Event(kind, feed, data)
            id, sep, rest = data.partition("\x00")
            if kind in ("publish", "edit"):
                return Event(kind, feed, id, rest)
            return Event(kind, feed, id, extra=rest if sep else None)
    return None


def subscription(feeds: tuple[str, ...], lifecycle: bool) -> tuple[list[str], list[str]]:
    """(channels, patterns) to listen to: the named feeds' channels, or every feed's (patterns)."""
    channels: list[str] = []
    patterns: list[str] = []
    if feeds:
        channels += [prefix + name for name in feeds for prefix in CHANNEL_PREFIXES.values()]
    else:
        patterns += [prefix + "*" for prefix in CHANNEL_PREFIXES.values()]
    if lifecycle:
        channels += list(LIFECYCLE_CHANNELS)
    return channels, patterns


async def _dedicated_client(client: redis.asyncio.Redis) -> redis.asyncio.Redis | None:
    """A one-connection client on ``client``'s server (Sentinel: the master now; Cluster: one primary,
    which hears every PUBLISH) but without retries, so a dropped connection shows."""
    try:
        return await async_pubsub_client(client)
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        raise
    except Exception:  # an unusual client: use its own pubsub
        log.debug("no dedicated pub/sub connection for %r", client, exc_info=True)
        return None


CONFIRM_BATCH = 500  # most item events checked against the database in one round trip


class AsyncEvents:
    """``async with pubsub.events("news") as events: ... async for event in events: ...``

    With ``confirm``, every publish/edit/retract/position event is checked against this client's
    database before it is handed out, because pub/sub is server-wide and another database of the
    same server may have a feed of the same name (see databases.py). An event is kept when the
    database agrees with it now: publish/edit when the feed holds that payload under that id,
    retract when it holds no such id, position when it holds the id. An event of our own feed that
    the database no longer agrees with was superseded by a later change whose event follows, so
    dropping it changes nothing in the end; an event of the other database's feed is dropped unless
    it happens to say what ours holds (then it changes nothing either). The events that arrived
    together are checked in one pipelined round trip (``HMGET`` per feed), not one per event.
    """

    def __init__(self, client: redis.asyncio.Redis, address: str, feeds: tuple[str, ...], lifecycle: bool,
                 confirm: bool = False) -> None:
        self._client = client
        self._address = address
        self.feeds = feeds
        self.lifecycle = lifecycle
        self.confirm = confirm
        #: events dropped by ``confirm`` so far
        self.dropped = 0
        self._own: redis.asyncio.Redis | None = None
        self._pubsub: Any = None
        self._buffer: collections.deque[Event] = collections.deque()
        self._started = False
        self._closed = False
        self._marks: dict[str, asyncio.Event] = {}  # barrier() tokens waiting for their PONG

    def _accept(self, message: dict[str, Any]) -> None:
        if message.get("type") == "pong":
            token = as_text(message.get("data") or "")
            if token in self._marks:  # a barrier: in line with the events that arrived before it
                self._buffer.append(Event("mark", "", token))
            return
        if message.get("type") not in ("message", "pmessage"):
            return
        event = parse(message["channel"], message["data"])
        if event is None:
            return
        if self.feeds and event.feed not in self.feeds:
            return
        self._buffer.append(event)

    def _lost(self, error: BaseException) -> RedisUnavailable:
        return RedisUnavailable(self._address, f"event subscription lost ({error}); subscribe again and reconcile")

    async def start(self) -> AsyncEvents:
        """Subscribe, and return once Redis has confirmed every subscription."""
        if self._closed:
            raise RuntimeError("this event stream is closed; ask pubsub.events() for a new one")
        if self._started:
            return self
        channels, patterns = subscription(self.feeds, self.lifecycle)
        await self._subscribe(channels, patterns)
        self._started = True
        return self

    async def _subscribe(self, channels: list[str], patterns: list[str]) -> None:
        """Subscribe on a connection of this stream's own; return once Redis confirmed it all."""
        try:
            self._own = await _dedicated_client(self._client)
            self._pubsub = (self._own or self._client).pubsub()
            if channels:
                await self._pubsub.subscribe(*channels)
            if patterns:
                await self._pubsub.psubscribe(*patterns)
            pending = len(channels) + len(patterns)
            while pending:
                message = await self._pubsub.get_message(timeout=10.0)
                if message is None:
                    raise RedisUnavailable(self._address, "no subscription confirmation within 10 s")
                if message["type"] in ("subscribe", "psubscribe"):
                    pending -= 1
                else:
                    self._accept(message)
        except (redis.ConnectionError, redis.TimeoutError, OSError) as e:
            await self.aclose()
            raise RedisUnavailable(self._address, e) from e

    async def __aenter__(self) -> AsyncEvents:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __aiter__(self) -> AsyncEvents:
        return self

    async def __anext__(self) -> Event:
        if self._closed:
            raise StopAsyncIteration
        await self.start()
        while True:
            while not self._buffer:
                message = await self._next_message(None)
                if message is None:
                    if self._closed:
                        raise StopAsyncIteration
                    continue
                self._accept(message)
                if self.confirm and self._buffer:
                    await self._confirm_buffered()
            event = self._buffer.popleft()
            if event.kind != "mark":
                return event
            # Every event that arrived before the barrier's PONG has been handed out.
            self._marks.pop(event.id or "", asyncio.Event()).set()

    async def barrier(self) -> asyncio.Event:
        """An event set once this stream has handed out every event published before the call.

        A PING goes down the subscription's connection; Redis answers it in line with the messages,
        so when its PONG comes out of the stream, everything published earlier on this server came
        out before it (on one server: a Cluster's bus does not keep that order across nodes)."""
        await self.start()
        token = uuid.uuid4().hex
        self._marks[token] = done = asyncio.Event()
        await self._ping(token)
        return done

    async def _ping(self, token: str) -> None:
        try:
            await self._pubsub.ping(token)
        except (redis.ConnectionError, redis.TimeoutError, OSError) as e:
            raise self._lost(e) from e

    async def _next_message(self, timeout: float | None) -> dict[str, Any] | None:
        """The next pub/sub message (None: none within ``timeout``, 0 = only what has arrived)."""
        try:
            message: dict[str, Any] | None = await self._pubsub.get_message(
                ignore_subscribe_messages=True, timeout=timeout
            )
        except (redis.ConnectionError, redis.TimeoutError, OSError) as e:
            raise self._lost(e) from e
        return message

    async def _confirm_buffered(self) -> None:
        """Take in what else has already arrived (up to CONFIRM_BATCH), then keep only the events
        this database agrees with (see the class docstring)."""
        while len(self._buffer) < CONFIRM_BATCH:
            message = await self._next_message(0)
            if message is None:
                break
            self._accept(message)
        by_feed: dict[str, list[str]] = {}
        for event in self._buffer:
            if event.kind in _CONFIRMED_KINDS and event.id is not None:
                ids = by_feed.setdefault(event.feed, [])
                if event.id not in ids:
                    ids.append(event.id)
        if not by_feed:
            return
        feeds = list(by_feed)
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for feed in feeds:
                    pipe.hmget(f"feed.items:{feed}", by_feed[feed])
                replies = await pipe.execute()
        except (redis.ConnectionError, redis.TimeoutError, OSError) as e:
            raise RedisUnavailable(self._address, e) from e
        held = {
            (feed, id): None if value is None else as_text(value)
            for feed, values in zip(feeds, replies, strict=True)
            for id, value in zip(by_feed[feed], values, strict=True)
        }
        kept: collections.deque[Event] = collections.deque()
        for event in self._buffer:
            if event.kind in _CONFIRMED_KINDS and event.id is not None:
                now = held[(event.feed, event.id)]
                if event.kind == "retract":
                    agrees = now is None
                elif event.kind == "position":
                    agrees = now is not None
                else:
                    agrees = now == event.item
                if not agrees:
                    self.dropped += 1
                    continue
            kept.append(event)
        self._buffer = kept

    async def get(self, timeout: float | None = None) -> Event | None:
        """The next event, or None after ``timeout`` seconds (None: wait as long as it takes)."""
        import asyncio

        try:
            return await asyncio.wait_for(self.__anext__(), timeout)
        except TimeoutError:
            return None

    async def aclose(self) -> None:
        self._closed = True
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            try:
                await pubsub.aclose()
            except Exception:
                log.debug("closing pub/sub", exc_info=True)
        own, self._own = self._own, None
        if own is not None:
            try:
                await own.aclose(close_connection_pool=True)
            except Exception:
                log.debug("closing pub/sub client", exc_info=True)


def _handler_args(event: Event) -> tuple[Any, ...]:
    """thoonk.py's handler signatures."""
    if event.kind in ("create", "delete", "config"):
        return (event.feed,)
    if event.kind in ("publish", "edit"):
        return (event.feed, event.item, event.id)
    if event.kind == "retract":
        return (event.feed, event.id)
    return (event.feed, event.id, event.extra)  # position, finish


class Listener(threading.Thread):
    """The sync face's listener thread: every feed's events, plus create/delete/config.

    Handlers are called in this thread as in thoonk.py: create(feed), delete(feed), config(feed),
    publish(feed, item, id), edit(feed, item, id), retract(feed, id), position(feed, id, position),
    finish(feed, id, result). A handler that raises is logged and the others still run. The
    connection is re-established when it drops (events sent meanwhile are lost, as with any
    Redis pub/sub listener).
    """

    def __init__(self, client: redis.Redis, address: str) -> None:
        super().__init__(name="thoonk-listener", daemon=True)
        self._client = client
        self._address = address
        self._handlers: dict[str, list[Callable[..., Any]]] = {}
        self._lock = threading.Lock()
        self.ready = threading.Event()
        self._stop_event = threading.Event()
        self.error: BaseException | None = None

    def add(self, kind: str, handler: Callable[..., Any]) -> None:
        with self._lock:
            self._handlers.setdefault(kind, []).append(handler)

    def remove(self, kind: str, handler: Callable[..., Any]) -> None:
        with self._lock:
            try:
                self._handlers.get(kind, []).remove(handler)
            except ValueError:
                pass

    def emit(self, event: Event) -> None:
        with self._lock:
            handlers = list(self._handlers.get(event.kind, ()))
        args = _handler_args(event)
        for handler in handlers:
            try:
                handler(*args)
            except Exception:
                log.exception("thoonk %s handler %r failed", event.kind, handler)

    def run(self) -> None:
        channels, patterns = subscription((), lifecycle=True)
        while not self._stop_event.is_set():
            pubsub = None
            try:
                pubsub = sync_pubsub(self._client)
                pubsub.subscribe(*channels)
                pubsub.psubscribe(*patterns)
                pending = len(channels) + len(patterns)
                while pending and not self._stop_event.is_set():
                    message = pubsub.get_message(timeout=0.2)
                    if message is None:
                        continue
                    if message["type"] in ("subscribe", "psubscribe"):
                        pending -= 1
                    else:
                        self._dispatch(message)
                self.ready.set()
                while not self._stop_event.is_set():
                    message = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
                    if message is not None:
                        self._dispatch(message)
            except (redis.ConnectionError, redis.TimeoutError, OSError) as e:
                self.error = RedisUnavailable(self._address, e)
                log.warning("thoonk listener: %s; reconnecting", self.error)
                self._stop_event.wait(0.5)
            finally:
                try:
                    if pubsub is not None:
                        pubsub.close()
                except Exception:  # noqa: BLE001, S110 - closing a connection that already failed
                    pass

    def _dispatch(self, message: dict[str, Any]) -> None:
        if message.get("type") in ("message", "pmessage"):
            event = parse(message["channel"], message["data"])
            if event is not None:
                self.emit(event)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop_event.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout)
