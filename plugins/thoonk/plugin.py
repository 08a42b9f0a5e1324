"""The ``thoonk`` plugin: ``thoonk:FEED`` endpoints over the daemon's shared Thoonk client."""

from __future__ import annotations

import asyncio

from thoonk_bridge import __version__
from thoonk_bridge.plugin import Endpoint, EndpointKind, Health, NoSettings, Plugin, PluginContext, RouteContext
from thoonk_bridge.tasks import cancel_and_wait
from thoonk_bridge.thoonk.databases import client_database, describe_shared_feeds

from .settings import ThoonkSinkOptions, ThoonkSourceOptions
from .sink import ThoonkSink
from .source import ThoonkSource

__all__ = ["THOONK_KIND", "ThoonkPlugin"]

STOP_WAIT = 1.0  # seconds stop() lets a check of the other databases finish
# The check waits for the routes being built to settle: until no new feed name came for CHECK_QUIET
# seconds (at most CHECK_MAX_WAIT), so a start with 1,000 routes makes one check, not one per route.
CHECK_QUIET = 0.25
CHECK_MAX_WAIT = 5.0

THOONK_KIND = EndpointKind(
    name="thoonk",
    source_options=ThoonkSourceOptions,
    sink_options=ThoonkSinkOptions,
    description="Thoonk feeds in the bridge's Redis",
)


class ThoonkPlugin(Plugin[NoSettings]):
    """Thoonk feeds as sources and sinks; no settings, always enabled.

    Pub/sub is server-wide: the feeds its endpoints use are checked against the other databases of
    the Redis server, and a warning names those holding feeds of the same names, whose events our
    subscriptions hear too (docs/thoonk-keys.md). Endpoints made while routes start are checked
    together, once they settle: one check and one warning; each feed name is checked once.
    """

    name = "thoonk"
    version = __version__  # the built-in plugins are released with the bridge
    description = "Thoonk feeds in the bridge's own Redis as route sources and sinks"
    endpoint_kinds = (THOONK_KIND,)
    always_enabled = True

    def __init__(self, settings: NoSettings, context: PluginContext) -> None:
        super().__init__(settings, context)
        self._checked: set[str] = set()  # feed names checked against the server's other databases
        self._unchecked: set[str] = set()
        self._check: asyncio.Task[None] | None = None

    async def stop(self) -> None:
        if self._check is not None:  # a check under way is a Redis round trip: let it say what it found
            await asyncio.wait({self._check}, timeout=STOP_WAIT)
        await cancel_and_wait(self._check)
        self.set_health(Health.STOPPED)

    def source(self, endpoint: Endpoint[ThoonkSourceOptions], route: RouteContext) -> ThoonkSource:
        self._check_shared(endpoint.options.address)
        return ThoonkSource(self.context.thoonk, endpoint.options.address)

    def sink(self, endpoint: Endpoint[ThoonkSinkOptions], route: RouteContext) -> ThoonkSink:
        self._check_shared(endpoint.options.address)
        return ThoonkSink(self.context.thoonk, endpoint.options.address, endpoint.options.max_length)

    def _check_shared(self, feed: str) -> None:
        if feed in self._checked:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # built outside a loop (a sync unit test): nothing to check
        self._unchecked.add(feed)
        if self._check is None or self._check.done():
            self._check = loop.create_task(self._warn_shared(), name="thoonk-shared-feeds")

    async def _warn_shared(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CHECK_MAX_WAIT
        seen = -1
        while len(self._unchecked) != seen and loop.time() < deadline:
            seen = len(self._unchecked)
            await asyncio.sleep(CHECK_QUIET)
        names, self._unchecked = self._unchecked, set()
        self._checked |= names
        try:
            shared = await self.context.thoonk.databases_sharing(*names)
        except Exception as exc:  # noqa: BLE001 - a diagnostic: Redis trouble shows elsewhere
            self.context.log.debug("cannot check other databases for feeds named like ours", error=str(exc))
            return
        if shared:
            self.context.log.warning(
                "feeds named like ours in other databases of this redis server",
                databases={str(db): feeds for db, feeds in sorted(shared.items())},
                detail=describe_shared_feeds(client_database(self.context.redis), shared),
            )
