"""Which documents are hub topics, their current bodies, and the changes the hub distributes.

Two kinds of hub topics:

- documents another plugin serves and registers in the topic registry (the feeds plugin's
  ``<path_prefix>/NAME.atom|.rss|.json``, whatever its ``path_prefix``): a hub topic when some
  route asks for it with a ``websub:NAME`` sink (not ``mode: raw``), NAME being the name the
  serving plugin registered the document under;
- raw topics (``{topics_path}/NAME``): the last item a ``websub:NAME`` sink received, kept in Redis.

Changes: the serving plugin tells the registry when a document changed, with its new body. The
listener here only records the change (the latest one per path, so a burst costs one distribution
of the newest body) and wakes :meth:`Changes.run`, a task of this plugin: the serving plugin never
waits on the hub's Redis writes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from thoonk_bridge.plugin import TopicChange, TopicRegistry

from .hub import served_path
from .store import RAW_TOPICS, HubStore
from .urls import normalize_url


class HubTopics:
    """The hub's view of the topics it may distribute (see the module's docstring).

    ``registry``: the daemon's topic registry; ``redis``/``store``: where raw topics live;
    ``public_url``: the base URL of this daemon; ``topics_path``: where raw topics are served;
    ``hub_url``: the hub advertised on raw topics.
    """

    def __init__(self, registry: TopicRegistry, redis: Any, store: HubStore, *, public_url: str,
                 topics_path: str, hub_url: str | None) -> None:
        self.registry = registry
        self.redis = redis
        self.store = store
        self.public_url = public_url
        self.topics_path = topics_path
        self.hub_url = hub_url
        self._raw_local: set[str] = set()

    def url(self, path: str) -> str:
        """The topic URL of ``path`` on this daemon (normalized: a subscription's identity)."""
        return normalize_url(self.public_url + path)

    def has_documents(self, name: str) -> bool:
        """True when a plugin of this daemon serves documents registered under ``name``."""
        return bool(self.registry.named(name))

    def hub_topic(self, path: str) -> bool:
        """Whether the document at ``path`` is a hub topic: some route asks for it with a
        ``websub:NAME`` sink (not ``mode: raw``). Documents of other routes are served without a hub."""
        name = self.registry.name_of(path)
        if not name:
            return False
        return any(
            sink.kind == "websub" and sink.address == name and getattr(sink.options, "mode", "auto") != "raw"
            for sink in self.registry.sinks
        )

    # ----------------------------------------------------------------- raw topics

    async def add_raw(self, name: str) -> None:
        if name not in self._raw_local:
            await self.redis.sadd(RAW_TOPICS, name)
            self._raw_local.add(name)

    def raw_name(self, path: str) -> str | None:
        prefix = self.topics_path + "/"
        if path.startswith(prefix) and "/" not in path[len(prefix):] and path[len(prefix):]:
            return path[len(prefix):]
        return None

    async def serve_raw(self, request: web.Request) -> web.Response:
        """``GET {topics_path}/NAME``: the last item of a raw topic, with the hub's links."""
        name = request.match_info["name"]
        found = await self.store.get_raw(name) if await self.redis.sismember(RAW_TOPICS, name) else None
        if found is None:
            return web.Response(status=404, text="no such topic\n")
        body, ctype = found
        url = self.public_url + self.topics_path + "/" + name
        resp = web.Response(body=body)
        resp.headers["Content-Type"] = ctype
        resp.headers["Link"] = f'<{self.hub_url}>; rel="hub", <{url}>; rel="self"'
        return resp

    # ----------------------------------------------------------------- any topic

    async def serves(self, topic_key: str) -> bool:
        """Whether some daemon of the fleet serves ``topic_key`` as a hub topic (a document some route
        distributes with a ``websub:`` sink, or a raw topic)."""
        path = served_path(topic_key, self.public_url)
        if path is None:
            return False
        if self.hub_topic(path) and await self.registry.served(path):
            return True
        name = self.raw_name(path)
        return name is not None and bool(await self.redis.sismember(RAW_TOPICS, name))

    async def render(self, topic_key: str) -> tuple[bytes, str] | None:
        """The current body of ``topic_key``: this daemon's when it holds the document, else the copy
        its owner stored for the fleet (the same bytes, so a distribution is not repeated)."""
        path = served_path(topic_key, self.public_url)
        if path is None:
            return None
        found = await self.registry.render(path)
        if found is not None:
            return found
        name = self.raw_name(path)
        if name is None:
            return None
        return await self.store.get_raw(name)


class Changes:
    """Document changes waiting for the hub: the newest per path, handled one at a time by ``run``.

    ``handle(change)`` distributes one change; its failures are logged, never raised.
    """

    def __init__(self, handle: Callable[[TopicChange], Awaitable[None]], log: Any) -> None:
        self.handle = handle
        self.log = log
        self._pending: dict[str, TopicChange] = {}
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def busy(self) -> bool:
        """True while a change waits or is being handled."""
        return not self._idle.is_set()

    def put(self, change: TopicChange) -> None:
        """Record ``change`` (replacing an older one of the same path not handled yet); never waits."""
        self._pending.pop(change.path, None)
        self._pending[change.path] = change  # to the end: paths are handled in the order they changed
        self._idle.clear()
        self._wake.set()

    async def run(self) -> None:
        """Handle the changes as they come (a task of the plugin, until cancelled); first those an
        earlier run left (cancelled by a stop while they waited)."""
        while True:
            await self.handle_pending()
            await self._wake.wait()
            self._wake.clear()

    async def handle_pending(self) -> None:
        """Handle every change recorded so far (and those recorded meanwhile)."""
        while self._pending:
            path = next(iter(self._pending))
            change = self._pending.pop(path)
            try:
                await self.handle(change)
            except asyncio.CancelledError:
                self._pending.setdefault(path, change)  # not handled: a later drain still has it
                raise
            except Exception as exc:  # noqa: BLE001 - one change's failure never stops the others
                self.log.error("websub.distribution_failed", path=path, error=f"{type(exc).__name__}: {exc}")
        self._idle.set()

    async def settled(self) -> None:
        """Until every change recorded so far is handled (tests; ``stop`` drains with a bound)."""
        await self._idle.wait()


__all__ = ["Changes", "HubTopics"]
