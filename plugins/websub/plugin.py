"""The ``websub`` plugin: a WebSub hub for the documents the bridge serves, a subscriber for outside
topics, and publish pings to outside hubs. See docs/websub.md.

Parts (each receives what it uses, never the plugin): :class:`HubTopics` (which documents are hub
topics), :class:`Changes` (document changes handed to a task of this plugin), :class:`Hub` (the hub
endpoint, verifications), :class:`Distributor` (content notifications, pings), :class:`Callbacks`
and :class:`WebSubSource` (the subscriber), :class:`WebSubSink`, :class:`Workers` (the tasks).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from aiohttp.abc import AbstractResolver

from thoonk_bridge import __version__
from thoonk_bridge.plugin import (
    Endpoint,
    EndpointKind,
    Health,
    Plugin,
    PluginContext,
    RouteContext,
    Sink,
    Source,
    TopicChange,
)

from .callbacks import Callbacks
from .cli import public_view, websub_cli
from .deliveries import Distributor
from .hub import Hub
from .jobs import QUEUES, JobQueue
from .metrics import Metrics
from .sessions import Sessions
from .settings import WebSubSettings, WebSubSinkOptions, WebSubSourceOptions
from .sink import WebSubSink
from .store import HubStore
from .subscriber import WebSubSource
from .topics import Changes, HubTopics
from .urls import normalize_url
from .workers import Workers


class WebSubPlugin(Plugin[WebSubSettings]):
    name = "websub"
    version = __version__  # the built-in plugins are released with the bridge
    description = "WebSub hub for served documents, subscriber to outside hubs, publish pings"
    settings_model = WebSubSettings
    cli = websub_cli
    endpoint_kinds = (
        EndpointKind(
            name="websub",
            source_options=WebSubSourceOptions,
            sink_options=WebSubSinkOptions,
            description="WebSub: to = hub-advertised topic (documents or /topics/NAME); from = outside topic URL",
            resource=lambda ep: f"websub:{ep.address}",
        ),
    )

    def __init__(self, settings: WebSubSettings, context: PluginContext) -> None:
        super().__init__(settings, context)
        self.log = context.log
        self.store = HubStore(context.redis)
        self.metrics = Metrics(context.metrics)
        self.queues = {name: JobQueue(context.thoonk, name, settings.job_timeout) for name in QUEUES}
        self.sessions = Sessions(user_agent=f"thoonk-bridge-websub/{self.version}")
        self.workers = Workers(context.log)
        self.topics = HubTopics(context.topics, context.redis, self.store, public_url=context.public_url,
                                topics_path=settings.topics_path, hub_url=self.hub_url)
        self.distributor = Distributor(self.store, self.queues, self.sessions, self.metrics, settings,
                                       log=context.log, render=self.topics.render, hub_url=self.hub_url)
        self.hub = Hub(settings, self.store, self.queues, self.sessions, self.metrics, self.workers,
                       redis=context.redis, log=context.log, serves=self.topics.serves,
                       distribute=self.distributor.distribute)
        self.changes = Changes(self._distribute_change, context.log)
        self.sources: dict[str, WebSubSource] = {}  # subscriber routes running here, by client key
        self.callbacks = Callbacks(context.redis, settings, self.metrics, context.log, self.sources)

    @property
    def resolver(self) -> AbstractResolver | None:
        """Tests: a stub resolver (no real lookups), set before ``start()``."""
        return self.sessions.resolver

    @resolver.setter
    def resolver(self, resolver: AbstractResolver | None) -> None:
        self.sessions.resolver = resolver

    # ----------------------------------------------------------------- lifecycle

    def validate(self) -> list[str]:
        problems = []
        if self.settings.hub_path.startswith(self.settings.callback_path + "/"):
            problems.append("hub_path must not lie under callback_path")
        return problems  # a subscriber-only setup (no hub, no publish_hubs) is fine

    @property
    def hub_url(self) -> str | None:
        if self.settings.hub:
            return self.context.public_url + self.settings.hub_path
        return self.settings.publish_hubs[0] if self.settings.publish_hubs else None

    async def setup(self) -> None:
        st = self.settings
        app = self.context.http
        if st.hub:
            app.router.add_post(st.hub_path, self.hub.handle)
            app.router.add_get(st.topics_path + "/{name}", self.topics.serve_raw)
        app.router.add_get(st.callback_path + "/{cbid}", self.callbacks.verify)
        app.router.add_post(st.callback_path + "/{cbid}", self.callbacks.deliver)
        self.context.topics.hub_url = self.hub_url
        self.context.topics.hub_topic = self.topics.hub_topic
        if st.hub or st.publish_hubs:
            self.context.topics.listen(self._on_changed)

    async def start(self) -> None:
        st = self.settings
        self.sessions.open(st)
        for q in self.queues.values():
            await q.open()
        self.workers.start()
        spawn, worker, every = self.workers.spawn, self.workers.worker, self.workers.every
        spawn("changes", self.changes.run, 1)
        spawn("verify", self.hub.run_verifier, 1)
        spawn("fanout", worker(self.queues["websub.fanout"], self.distributor.run_fanout), 1)
        # twice as many delivery jobs in flight as POST slots allow: while one batch waits for its slowest
        # callback, the next batch already fills the free slots (the POSTs share one semaphore)
        self.distributor.slots = asyncio.Semaphore(st.delivery_workers * st.delivery_batch)
        spawn("deliver", worker(self.queues["websub.deliver"], self.distributor.run_delivery), 2 * st.delivery_workers)
        spawn("ping", worker(self.queues["websub.ping"], self.distributor.run_ping), 1)
        spawn("retries", every(st.retry_poll, self._move_retries), 1)
        spawn("sweep", every(st.sweep_interval, self._sweep), 1)
        spawn("maintenance", every(max(0.2, st.job_timeout / 4), self._maintenance), 1)
        self.set_health(Health.READY)

    async def stop(self, drain: float | None = None) -> None:
        """Distribute the changes already notified and let the jobs in flight finish (both bounded:
        ``drain`` seconds, by default ``delivery_timeout`` + 1.5), then release everything."""
        bound = self.settings.delivery_timeout + 1.5 if drain is None else drain
        if bound > 0 and self.changes.busy:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changes.settled(), bound)
        await self.workers.stop(bound)
        await self.sessions.close()
        self.set_health(Health.STOPPED)

    async def kill(self) -> None:
        """Tests: stop at once, as a crashed daemon would (claimed jobs stay claimed)."""
        self.workers.forget_busy()
        await self.stop(0)

    # ----------------------------------------------------------------- loops

    async def _move_retries(self) -> None:
        for queue, item in await self.store.due_retries(time.time()):
            if queue in self.queues:
                await self.queues[queue].put(item)

    async def _sweep(self) -> None:
        removed = await self.store.sweep()
        if removed:
            self.log.info("websub.expired", subscriptions=removed)

    async def _maintenance(self) -> None:
        for q in self.queues.values():
            await q.maintenance()

    # ----------------------------------------------------------------- document changes

    async def _on_changed(self, change: TopicChange) -> None:
        """A served document changed: handed to our task (the serving plugin never waits on Redis)."""
        if self.topics.hub_topic(change.path):  # else a document no route asked to distribute
            self.changes.put(change)

    async def _distribute_change(self, change: TopicChange) -> None:
        if self.settings.hub:
            # the body the serving plugin rendered, when the change brought it (no second render)
            found = (change.body, change.content_type) if change.body is not None and change.content_type else None
            await self.distributor.distribute(self.topics.url(change.path), found)
        if self.settings.publish_hubs:
            await self.distributor.queue_pings(self.context.public_url + change.path)

    # ----------------------------------------------------------------- endpoints

    def sink(self, endpoint: Endpoint[WebSubSinkOptions], route: RouteContext) -> Sink:
        return WebSubSink(endpoint, route, topics=self.topics, store=self.store,
                          distribute=self.distributor.distribute, topics_path=self.settings.topics_path)

    def source(self, endpoint: Endpoint[WebSubSourceOptions], route: RouteContext) -> Source:
        return WebSubSource(endpoint, route, redis=self.context.redis, settings=self.settings,
                            sessions=self.sessions, sources=self.sources, public_url=self.context.public_url)

    async def subscriptions(self, topic: str | None = None) -> list[dict[str, Any]]:
        key = normalize_url(topic) if topic else None
        return [public_view(h) for h in await self.store.all_subscriptions(key)]


__all__ = ["WebSubPlugin", "WebSubSink"]
