"""The topic registry: documents one plugin serves that another distributes (feeds -> websub).

Plugins never import each other; a plugin serving documents registers them here and a plugin
distributing them (a WebSub hub) listens for their changes. ``PluginContext.topics`` is the one
registry of a daemon.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from thoonk_bridge import keys
from thoonk_bridge.backoff import Backoff

if TYPE_CHECKING:
    from thoonk_bridge.plugin import Endpoint, Settings
    from thoonk_bridge.redis_client import AsyncRedis

__all__ = ["TOPICS_KEY", "Topic", "TopicChange", "TopicListener", "TopicNamer", "TopicReader", "TopicRegistry"]


@dataclass(frozen=True)
class Topic:
    """A document the bridge serves that outsiders may subscribe to (WebSub).

    ``path`` is the URL path on the daemon's HTTP application (``/feeds/news.atom``, under the
    serving plugin's configured prefix); ``render`` returns the current full body; ``name`` is the
    name of the document this is one rendering of (the feeds plugin: NAME of ``feeds:NAME``, for
    every format), which a distributing plugin's endpoints name (``websub:NAME``).
    """

    path: str
    content_type: str
    render: Callable[[], Awaitable[bytes]]
    name: str | None = None


@dataclass(frozen=True)
class TopicChange:
    """What a listener hears when a served document changed.

    ``body``: the new full body, when the serving plugin gave it (a listener then need not ask for a
    render); ``content_type``: its type (the registered topic's).
    """

    path: str
    body: bytes | None = None
    content_type: str | None = None


TopicListener = Callable[[TopicChange], Awaitable[None]]
TopicReader = Callable[[str], Awaitable["tuple[bytes, str] | None"]]
TopicNamer = Callable[[str], "str | None"]

TOPICS_KEY = keys.TOPICS  # Redis set: every path some daemon of the fleet has registered
ANNOUNCE_RETRY = Backoff(base=0.1, cap=2.0, jitter=0)  # recording a path in TOPICS_KEY while Redis is away


class TopicRegistry:
    """Documents served by one plugin that another plugin distributes (feeds -> websub).

    The serving plugin ``register``s each topic (with the ``name`` of its document) and calls
    ``changed(path, body)`` after every update; a distributing plugin ``listen``s for changes (each
    listener gets a :class:`TopicChange` carrying the new body, and must not hold the serving plugin
    up: it hands the work to a task of its own), finds documents by name (``named``, ``name_of``),
    and sets ``hub_url`` and ``hub_topic`` (which
    paths it distributes), so that servers advertise the hub (``Link: <hub>; rel="hub"``) on those
    documents only: ``hub_for(path)``. ``sinks`` holds the sink endpoints of every configured route
    (kept current by the daemon, reloads included), from which a distributing plugin tells which
    documents a route asked it to distribute.

    Several daemons: a topic is registered (held in memory) only on the daemon that renders it
    (the owner of its route). With ``redis`` set, ``register`` also records the path in the Redis
    set ``bridge.topics``, so that every daemon of the fleet can tell it is served (``served``);
    and a serving plugin may add a ``reader`` for a path prefix (``add_reader``) that fetches a
    document this daemon does not hold from where the owner stored it, for ``render``, and tells
    which document such a path belongs to (``name_of``). Paths stay
    in the set after ``unregister`` (the route moves to another daemon; it does not end).
    """

    def __init__(self, redis: AsyncRedis | None = None) -> None:
        self._topics: dict[str, Topic] = {}
        self._listeners: list[TopicListener] = []
        self._readers: list[tuple[str, TopicReader, TopicNamer | None]] = []
        self._announcing: dict[str, asyncio.Task[None]] = {}
        self.redis = redis
        self.hub_url: str | None = None
        self.hub_topic: Callable[[str], bool] = lambda _path: True
        self.sinks: tuple[Endpoint[Settings], ...] = ()

    def hub_for(self, path: str) -> str | None:
        """The hub to advertise on the document at ``path``; None when it is no hub topic."""
        if self.hub_url is None or not self.hub_topic(path):
            return None
        return self.hub_url

    def register(self, topic: Topic) -> None:
        self._topics[topic.path] = topic
        if self.redis is None or topic.path in self._announcing:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (a sync unit test): nothing to tell the fleet
        task = loop.create_task(self._announce(topic.path), name=f"topic-announce:{topic.path}")
        self._announcing[topic.path] = task
        task.add_done_callback(partial(self._announced, topic.path))

    def _announced(self, path: str, _task: asyncio.Task[None]) -> None:
        self._announcing.pop(path, None)

    async def _announce(self, path: str) -> None:
        attempt = 0
        while path in self._topics and self.redis is not None:
            try:
                await self.redis.sadd(TOPICS_KEY, path)
                return
            except Exception:  # noqa: BLE001 - Redis away: retry while the topic is ours
                await ANNOUNCE_RETRY.sleep(attempt)
                attempt += 1

    async def settle(self) -> None:
        """Until every registered path is recorded in Redis (tests, and plugins that must be sure)."""
        tasks = list(self._announcing.values())
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def unregister(self, path: str) -> None:
        self._topics.pop(path, None)

    def get(self, path: str) -> Topic | None:
        return self._topics.get(path)

    def paths(self) -> list[str]:
        return sorted(self._topics)

    async def served(self, path: str) -> bool:
        """True when this daemon or another daemon of the fleet serves ``path``."""
        if path in self._topics:
            return True
        if self.redis is None:
            return False
        return bool(await self.redis.sismember(TOPICS_KEY, path))

    def add_reader(self, prefix: str, reader: TopicReader, *, name_of: TopicNamer | None = None) -> None:
        """``reader(path)`` returns ``(body, content_type)`` of a topic under ``prefix`` held elsewhere;
        ``name_of(path)`` the name of the document such a path belongs to (None: none of ours)."""
        self._readers.append((prefix, reader, name_of))

    def named(self, name: str) -> list[Topic]:
        """The topics registered on this daemon under ``name`` (every format of one document)."""
        return [topic for _, topic in sorted(self._topics.items()) if topic.name == name]

    def name_of(self, path: str) -> str | None:
        """The name of the document at ``path``: the registered topic's, else (a document another
        daemon of the fleet holds) the serving plugin's answer for its prefix; None when unknown."""
        topic = self._topics.get(path)
        if topic is not None:
            return topic.name
        for prefix, _, namer in self._readers:
            if namer is not None and path.startswith(prefix):
                name = namer(path)
                if name is not None:
                    return name
        return None

    async def render(self, path: str) -> tuple[bytes, str] | None:
        """The current body and content type of ``path``: local when held here, else from a reader."""
        topic = self._topics.get(path)
        if topic is not None:
            return await topic.render(), topic.content_type
        for prefix, reader, _ in self._readers:
            if path.startswith(prefix):
                found = await reader(path)
                if found is not None:
                    return found
        return None

    def listen(self, listener: TopicListener) -> None:
        self._listeners.append(listener)

    async def changed(self, path: str, body: bytes | None = None) -> None:
        """Tell the listeners that the document at ``path`` changed; ``body``: its new full body."""
        topic = self._topics.get(path)
        change = TopicChange(path, body, topic.content_type if topic is not None else None)
        for listener in list(self._listeners):
            await listener(change)
