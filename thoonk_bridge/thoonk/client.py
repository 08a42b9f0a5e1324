"""The two faces: :class:`Thoonk` (sync) and :class:`AsyncThoonk` (asyncio).

Both inherit every operation from :class:`ThoonkBase`; they differ only in the executor that runs
operations (scripts.py) and in how events are delivered (events.py).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import redis as _redis
import redis.asyncio as _aredis

from .databases import other_databases_with_feeds
from .embedded import EmbeddedRedis
from .events import EVENT_KINDS, AsyncEvents, Listener
from .exceptions import FeedDoesNotExist, FeedTypeMismatch
from .feed import Feed, FeedBase, check_name, op
from .job import Job
from .keys import CONFFEED, DELFEED, FEED_TYPES, FEEDS, NEWFEED, FeedKeys
from .queue import Queue
from .redis_client import async_client, is_cluster, sync_client
from .scripts import AsyncExecutor, Batch, Cmd, Eval, Op, SyncExecutor, describe
from .shared_events import EventConnection, SharedEvents
from .sorted_feed import SortedFeed
from .text import as_text, as_text_or_none

__all__ = ["ThoonkBase", "Thoonk", "AsyncThoonk", "DEFAULT_STATE_DIR"]

log = logging.getLogger(__name__)

DEFAULT_STATE_DIR = Path("data") / "redis"  # relative to the working directory when Thoonk() is built

FEED_CLASSES: dict[str, type[FeedBase]] = {"feed": Feed, "sorted_feed": SortedFeed, "queue": Queue, "job": Job}

_DELETE = "\x00"  # config value marker: remove the field (see lua/config.lua)


def _encode_bound(name: str, key: str, value: Any) -> str:
    """``max_length`` (an integer) or ``timeout`` (seconds), checked, and stored as given: the text
    of a str as it is, a number as redis-py (so thoonk.py) writes it -- ``"30"`` stays ``"30"``, not
    ``"30.0"``, since a peer reading it with ``int()`` would fail on the latter. max_length must be
    what peers can read with ``int()``: an integral float is written as an int."""
    integral = key == "max_length"
    kind = "an integer" if integral else "a number of seconds"
    wrong = ValueError(f"feed {name!r}: {key} must be {kind} >= 0, not {value!r}")
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise wrong
    try:
        number = float(value)
    except ValueError:
        raise wrong from None
    if not math.isfinite(number) or number < 0:
        raise wrong
    if isinstance(value, str):
        text = value.strip()
        if integral:
            try:
                int(text)
            except ValueError:
                raise wrong from None
        return text
    if integral:
        if not number.is_integer():
            raise wrong
        return str(int(number))
    return repr(value) if isinstance(value, float) else str(value)


def encode_config(name: str, config: Mapping[str, Any] | None, *, allow_delete: bool) -> list[str]:
    """A config mapping -> flat [field, value, ...] of strings, checked (bad input raises here)."""
    if config is None:
        return []
    if not isinstance(config, Mapping):
        raise TypeError(f"feed {name!r}: config must be a mapping, not {type(config).__name__}")
    out: list[str] = []
    for key, value in config.items():
        if not isinstance(key, str) or not key or "\x00" in key:
            raise ValueError(f"feed {name!r}: config keys must be non-empty str without NUL: {key!r}")
        if value is None:
            if not allow_delete:
                continue
            out += (key, _DELETE)
            continue
        if key == "type":
            if value not in FEED_TYPES:
                raise ValueError(f"feed {name!r}: type must be one of {', '.join(FEED_TYPES)}, not {value!r}")
            text = value
        elif key in ("max_length", "timeout"):
            text = _encode_bound(name, key, value)
        elif isinstance(value, bool):
            text = "1" if value else "0"
        elif isinstance(value, str | int | float):
            text = str(value)
        else:
            raise TypeError(
                f"feed {name!r}: config value of {key!r} must be str or a number, not {type(value).__name__}"
            )
        if "\x00" in text:
            raise ValueError(f"feed {name!r}: config value of {key!r} contains NUL")
        out += (key, text)
    return out


def has_hash_tag(name: str) -> bool:
    """True when ``name`` carries a Redis Cluster hash tag, so every key of the feed (``feed.*:NAME``)
    hashes to one slot: a ``{`` followed later by a ``}`` with something in between."""
    start = name.find("{")
    return start >= 0 and name.find("}", start + 1) > start + 1


class ThoonkBase:
    """Feed management and feed handles; every method is an operation run by ``self._run``.

    On a Redis Cluster client (``self.cluster``) the operations that also touch the global ``feeds``
    set do it in separate steps (see docs/thoonk-keys.md, "On Redis Cluster"), and a feed name must
    carry a ``{hash tag}``.
    """

    _run: Callable[[Op[Any]], Any]

    def __init__(self, client: Any, embedded: EmbeddedRedis | None, owns_client: bool) -> None:
        self.redis = client
        self.embedded = embedded
        self._owns_client = owns_client
        self.instance = uuid.uuid4().hex
        self.address = describe(client)
        self.cluster = is_cluster(client)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.address}>"

    @op
    def ping(self) -> Op[bool]:
        return bool((yield Cmd("PING")))

    # --- feed management ----------------------------------------------------------------------

    def _feed_name(self, name: str) -> str:
        """check_name, and on a cluster the hash tag that keeps the feed's keys in one slot."""
        name = check_name(name)
        if self.cluster and not has_hash_tag(name):
            raise ValueError(
                f"feed {name!r}: on Redis Cluster a feed name needs a {{hash tag}} (e.g. {'{' + name + '}'!r}) "
                "so that all its keys share one slot"
            )
        return name

    def _create(self, name: str, config: Mapping[str, Any] | None, wanted: str, mode: str) -> Op[FeedBase]:
        name = self._feed_name(name)
        fields = encode_config(name, config, allow_delete=False)
        given = dict(zip(fields[::2], fields[1::2], strict=True))
        wanted = given.get("type", wanted)
        if "type" not in given:
            fields += ("type", wanted)
        k = FeedKeys(name)
        if self.cluster:
            # Step 1 (feed's slot) and step 2 (`feeds`) in one round trip; announced once both are done.
            (created, actual), _ = yield Batch(
                [Eval("create_keys", (k.config,), (name, mode, *fields)), Cmd("SADD", FEEDS, name)]
            )
            if int(created):
                yield Eval("announce", (k.config,), (f"{name}\x00{self.instance}", NEWFEED, CONFFEED))
        else:
            _, actual = yield Eval("create", (FEEDS, k.config), (name, self.instance, mode, *fields))
        actual = as_text(actual)
        if actual != wanted:
            raise FeedTypeMismatch(name, actual, wanted)
        return FEED_CLASSES[wanted](self, name)

    @op
    def create_feed(self, name: str, config: Mapping[str, Any] | None = None) -> Op[FeedBase]:
        """Create a feed (type from ``config['type']``, default ``feed``); FeedExists if it exists."""
        return (yield from self._create(name, config, "feed", "create"))

    @op
    def set_config(self, name: str, config: Mapping[str, Any]) -> Op[None]:
        """Merge ``config`` into the feed's config (a None value removes a field); announces ``conffeed``.

        FeedDoesNotExist for an unknown feed; FeedTypeMismatch if ``type`` would change.
        """
        name = check_name(name)
        fields = encode_config(name, config, allow_delete=True)
        keys = (FeedKeys(name).config,) if self.cluster else (FEEDS, FeedKeys(name).config)
        yield Eval("config", keys, (name, self.instance, *fields))

    @op
    def get_config(self, name: str) -> Op[dict[str, str]]:
        """The feed's config hash (values as stored, strings), with its ``type``."""
        name = check_name(name)
        exists, raw = yield Batch(
            [Cmd("SISMEMBER", FEEDS, name), Cmd("HGETALL", FeedKeys(name).config)], atomic=not self.cluster
        )
        if not exists:
            raise FeedDoesNotExist(name)
        config = {as_text(k): as_text(v) for k, v in raw.items()}
        config.setdefault("type", "feed")
        return config

    @op
    def feed_type(self, name: str) -> Op[str]:
        name = check_name(name)
        exists, kind = yield Batch(
            [Cmd("SISMEMBER", FEEDS, name), Cmd("HGET", FeedKeys(name).config, "type")], atomic=not self.cluster
        )
        if not exists:
            raise FeedDoesNotExist(name)
        return as_text_or_none(kind) or "feed"

    @op
    def feed_exists(self, name: str) -> Op[bool]:
        name = check_name(name)
        return bool((yield Cmd("SISMEMBER", FEEDS, name)))

    @op
    def get_feed_names(self) -> Op[set[str]]:
        return {as_text(n) for n in (yield Cmd("SMEMBERS", FEEDS))}

    @op
    def delete_feed(self, name: str) -> Op[None]:
        """Delete a feed and all its keys; announces ``delfeed``. FeedDoesNotExist if unknown."""
        name = self._feed_name(name)
        if not self.cluster:
            yield Eval("delete", (FEEDS, *FeedKeys(name).all()), (name, self.instance))
            return
        # The feed's keys (its slot) and its `feeds` entry, in one round trip; either one found it.
        had_keys, listed = yield Batch([Eval("delete_keys", FeedKeys(name).all(), ()), Cmd("SREM", FEEDS, name)])
        if not int(had_keys) and not int(listed):
            raise FeedDoesNotExist(name)
        yield Eval("announce", (FeedKeys(name).config,), (f"{name}\x00{self.instance}", DELFEED))

    # --- handles (create if missing, as in thoonk.py) ------------------------------------------

    @op
    def feed(self, name: str, config: Mapping[str, Any] | None = None) -> Op[Feed]:
        """The plain feed ``name``, created (with ``config``) if missing; FeedTypeMismatch if not a feed."""
        return (yield from self._create(name, config, "feed", "ensure"))  # type: ignore[return-value]

    @op
    def sorted_feed(self, name: str, config: Mapping[str, Any] | None = None) -> Op[SortedFeed]:
        return (yield from self._create(name, config, "sorted_feed", "ensure"))  # type: ignore[return-value]

    list = sorted_feed  # the original README's name

    @op
    def queue(self, name: str, config: Mapping[str, Any] | None = None) -> Op[Queue]:
        return (yield from self._create(name, config, "queue", "ensure"))  # type: ignore[return-value]

    @op
    def job(self, name: str, config: Mapping[str, Any] | None = None) -> Op[Job]:
        return (yield from self._create(name, config, "job", "ensure"))  # type: ignore[return-value]


def _target(url: str | None, host: str | None, port: int | None, state_dir: str | os.PathLike[str] | None
            ) -> tuple[str | None, str | None, int | None, EmbeddedRedis | None]:
    """(url, host, port, embedded server): a URL in ``host`` counts as url; nothing at all = embedded."""
    if url is None and host is not None and "://" in host:
        url, host = host, None
    if url is not None or host is not None or port is not None:
        return url, host, port, None
    directory = Path(state_dir) if state_dir is not None else DEFAULT_STATE_DIR
    embedded = EmbeddedRedis(directory.absolute(), persistent=True)
    embedded.start()
    return embedded.url, None, None, embedded


def _client(sync: bool, url: str | None, host: str | None, port: int | None, db: int,
            password: str | None, extra: dict[str, Any]) -> Any:
    """A client whose pool makes callers wait for a free connection (up to ``max_connections``,
    default 100) instead of failing with "Too many connections" under many threads or tasks.
    A URL may be any of redis_client's (Sentinel and Cluster included)."""
    kwargs: dict[str, Any] = {"socket_connect_timeout": 5.0, "max_connections": 100, "timeout": None}
    if password is not None:
        kwargs["password"] = password
    kwargs.update(extra)
    if url is not None:
        return (sync_client if sync else async_client)(url, **kwargs)
    if sync:
        return _redis.Redis(connection_pool=_redis.BlockingConnectionPool(
            host=host or "localhost", port=port or 6379, db=db, **kwargs))
    return _aredis.Redis(connection_pool=_aredis.BlockingConnectionPool(
        host=host or "localhost", port=port or 6379, db=db, **kwargs))


def _connect(sync: bool, redis: Any, url: str | None, host: str | None, port: int | None, db: int,
             password: str | None, state_dir: str | os.PathLike[str] | None,
             redis_kwargs: dict[str, Any]) -> tuple[Any, EmbeddedRedis | None, bool]:
    """(client, embedded server or None, whether we own the client) for either face."""
    if redis is not None:
        return redis, None, False
    url, host, port, embedded = _target(url, host, port, state_dir)
    return _client(sync, url, host, port, db, password, redis_kwargs), embedded, True


class Thoonk(ThoonkBase):
    """Sync Thoonk: ``Thoonk(host, port, db)``, ``Thoonk(url="redis://...")``, ``Thoonk(redis=client)``,
    or ``Thoonk()`` for a private redis-server in ``state_dir`` (default ./data/redis), stopped on close().
    """

    def __init__(self, host: str | None = None, port: int | None = None, db: int = 0,
                 password: str | None = None, *, url: str | None = None,
                 state_dir: str | os.PathLike[str] | None = None, redis: _redis.Redis | None = None,
                 listen: bool = False, **redis_kwargs: Any) -> None:
        client, embedded, owns = _connect(True, redis, url, host, port, db, password, state_dir, redis_kwargs)
        super().__init__(client, embedded, owns)
        self._executor = SyncExecutor(client)
        self._run = self._executor.run
        self._listener: Listener | None = None
        if listen:
            self.listen()

    def listen(self, timeout: float = 10.0) -> None:
        """Start the listener thread (register_handler does this on first use)."""
        if self._listener is None:
            self._listener = Listener(self.redis, self.address)
            self._listener.start()
        if not self._listener.ready.wait(timeout):
            raise self._listener.error or TimeoutError(f"listener did not subscribe to {self.address} in {timeout} s")

    def register_handler(self, event: str, handler: Callable[..., Any]) -> None:
        """Call ``handler`` for ``event`` (create, delete, config, publish, edit, retract, position, finish)
        in the listener thread, with thoonk.py's arguments (e.g. publish: feed, item, id)."""
        kind = event.removesuffix("_notice")
        if kind not in EVENT_KINDS:
            raise ValueError(f"unknown event {event!r}; one of {', '.join(EVENT_KINDS)}")
        self.listen()
        assert self._listener is not None
        self._listener.add(kind, handler)

    def remove_handler(self, event: str, handler: Callable[..., Any]) -> None:
        if self._listener is not None:
            self._listener.remove(event.removesuffix("_notice"), handler)

    def close(self) -> None:
        if self._listener is not None:
            self._listener.stop()
            self._listener = None
        if self._owns_client:
            self.redis.close()
            if not self.cluster:  # a cluster client's close() closes every node's pool
                self.redis.connection_pool.disconnect()
        if self.embedded is not None:
            self.embedded.stop()
            self.embedded = None

    def __enter__(self) -> Thoonk:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncThoonk(ThoonkBase):
    """asyncio Thoonk: the same operations as coroutines, and ``events()``.

    Construction needs no running loop (connections open on first use); ``await AsyncThoonk.connect(...)``
    also checks that Redis answers.
    """

    def __init__(self, url: str | None = None, host: str | None = None, port: int | None = None, db: int = 0,
                 password: str | None = None, *, state_dir: str | os.PathLike[str] | None = None,
                 redis: _aredis.Redis | _aredis.RedisCluster | None = None, **redis_kwargs: Any) -> None:
        client, embedded, owns = _connect(False, redis, url, host, port, db, password, state_dir, redis_kwargs)
        super().__init__(client, embedded, owns)
        self._executor = AsyncExecutor(client)
        self._run = self._executor.run
        self._event_connection: EventConnection | None = None

    @classmethod
    async def connect(cls, *args: Any, **kwargs: Any) -> AsyncThoonk:
        """Construct and PING (RedisUnavailable naming the address when it does not answer)."""
        self = cls(*args, **kwargs)
        try:
            await self.ping()
        except BaseException:
            await self.aclose()
            raise
        return self

    def events(self, *feeds: str, lifecycle: bool = False, confirm: bool = False, shared: bool = False
               ) -> AsyncEvents:
        """Events of the named feeds (all feeds when none are named); with ``lifecycle`` also
        create/delete/config. Use as ``async with`` (subscribed on entry) and ``async for``.

        With ``confirm``, item events the database does not agree with are dropped (those of a
        same-named feed in another database of the server, and superseded ones), at one pipelined
        round trip per batch of events that arrived together; see :class:`AsyncEvents`.

        With ``shared``, the stream reads from the one pub/sub connection this client shares among
        all its shared streams (see shared_events.py) instead of a connection of its own."""
        names = tuple(check_name(f) for f in feeds)
        if shared:
            if self._event_connection is None:
                self._event_connection = EventConnection(self.redis, self.address)
            return SharedEvents(self._event_connection, self.address, names, lifecycle, confirm=confirm,
                                client=self.redis)
        return AsyncEvents(self.redis, self.address, names, lifecycle, confirm=confirm)

    async def databases_sharing(self, *names: str) -> dict[int, list[str]]:
        """``{db: [names]}``: other databases of this server whose ``feeds`` list one of ``names``
        (their events reach our subscribers: pub/sub is server-wide). Empty on Cluster; also empty,
        logged, when the server refuses to say (``INFO`` denied by an ACL)."""
        try:
            return await other_databases_with_feeds(self.redis, [check_name(n) for n in names])
        except _redis.ResponseError as e:
            log.warning("cannot look for same-named feeds in other databases of %s: %s", self.address, e)
            return {}

    async def aclose(self) -> None:
        connection, self._event_connection = self._event_connection, None
        if connection is not None:
            await connection.aclose()
        if self._owns_client:
            await self.redis.aclose(close_connection_pool=True)
        if self.embedded is not None:
            embedded, self.embedded = self.embedded, None
            await asyncio.to_thread(embedded.stop)

    async def __aenter__(self) -> AsyncThoonk:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
