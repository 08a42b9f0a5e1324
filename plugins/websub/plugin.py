"""The ``websub`` plugin: a WebSub hub for the documents the bridge serves, a subscriber for outside
topics, and publish pings to outside hubs. See docs/websub.md."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.abc import AbstractResolver
from prometheus_client import Counter, Histogram

from thoonk_bridge import __version__
from thoonk_bridge.net import OutboundPolicy, make_session
from thoonk_bridge.plugin import (
    Endpoint,
    EndpointKind,
    EventKind,
    Health,
    ItemEvent,
    Plugin,
    PluginContext,
    RouteContext,
    Sink,
    Source,
    cancel_and_wait,
)

from .cli import websub_cli
from .deliveries import Distributor
from .hub import Hub, served_path
from .jobs import QUEUES, JobQueue
from .settings import WebSubSettings, WebSubSinkOptions, WebSubSourceOptions
from .store import HubStore, P
from .subscriber import Callbacks, WebSubSource
from .urls import BadURL, normalize_url

RAW_TOPICS = P + "rawtopics"
DOCUMENTS_PREFIX = "/feeds/"  # where the feeds plugin serves NAME.atom|.rss|.json


class Metrics:
    def __init__(self, registry: Any) -> None:
        self.requests = Counter("websub_hub_requests", "Hub requests by HTTP status answered", ["result"],
                                registry=registry)
        self.verifications = Counter("websub_verifications", "Verifications of intent by mode and outcome",
                                     ["mode", "result"], registry=registry)
        self.distributions = Counter("websub_distributions", "Topic changes seen by the hub", ["result"],
                                     registry=registry)
        self.deliveries = Counter("websub_deliveries", "Delivery attempts by outcome (ok, failed, gone, deferred)",
                                  ["result"], registry=registry)
        self.retries = Counter("websub_delivery_retries", "Deliveries scheduled for another attempt",
                               registry=registry)
        self.drops = Counter("websub_delivery_drops", "Notifications given up, by reason", ["reason"],
                             registry=registry)
        self.breaker_opened = Counter("websub_breaker_opened", "Times a failing callback host was paused",
                                      registry=registry)
        self.latency = Histogram(
            "websub_delivery_latency_seconds", "From a topic change to its successful delivery",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
            registry=registry)
        self.pings = Counter("websub_publish_pings", "Publish pings sent to outside hubs", ["result"],
                             registry=registry)
        self.refusals = Counter("websub_hub_refusals", "Subscription requests refused with 429, by limit",
                                ["reason"], registry=registry)
        self.received = Counter("websub_subscriber_requests", "Requests at subscriber callbacks by outcome",
                                ["result"], registry=registry)


def _guess_type(payload: str) -> str:
    head = payload.lstrip()[:1]
    if head in ("{", "["):
        return "application/json"
    if head == "<":
        return "application/atom+xml" if "<entry" in payload[:2000] else "application/xml"
    return "text/plain; charset=utf-8"


_FORMAT_TYPES = {"json": "application/json", "atom": "application/atom+xml", "text": "text/plain; charset=utf-8"}


class WebSubSink(Sink):
    """``to: websub:NAME``: see :class:`WebSubSinkOptions` for what it does."""

    def __init__(self, plugin: WebSubPlugin, endpoint: Endpoint[WebSubSinkOptions], route: RouteContext) -> None:
        self.plugin = plugin
        self.options = endpoint.options
        self.route = route
        self.name = self.options.address
        self.path = f"{plugin.settings.topics_path}/{self.name}"

    def _documents(self) -> bool:
        prefix = f"{DOCUMENTS_PREFIX}{self.name}."
        return any(p.startswith(prefix) for p in self.plugin.context.topics.paths())

    def raw(self) -> bool:
        if self.options.mode == "raw":
            return True
        if self.options.mode == "documents":
            return False
        return not self._documents()

    async def open(self) -> None:
        if self.raw():
            await self.plugin.add_raw_topic(self.name)

    async def apply(self, event: ItemEvent) -> None:
        if event.kind is EventKind.RETRACT or not self.raw():
            return  # documents: their own changes drive the hub; a raw topic keeps its last item
        await self.plugin.add_raw_topic(self.name)
        assert event.payload is not None
        ctype = self.options.content_type or _FORMAT_TYPES.get(self.route.format or "") or _guess_type(event.payload)
        await self.plugin.store.set_raw(self.name, event.payload.encode("utf-8"), ctype)
        await self.plugin.distribute(self.plugin.topic_url(self.path))


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
        self.hub = Hub(self)
        self.distributor = Distributor(self)
        self.callbacks = Callbacks(self)
        self.session: aiohttp.ClientSession = None  # type: ignore[assignment]
        self.delivery_session: aiohttp.ClientSession = None  # type: ignore[assignment]
        self._tasks: list[asyncio.Task[None]] = []
        self._busy: set[asyncio.Task[Any]] = set()  # workers in the middle of a job
        self.stopping = asyncio.Event()
        self._raw_local: set[str] = set()
        self.sources: dict[str, WebSubSource] = {}  # subscriber routes running here, by client key
        self.resolver: AbstractResolver | None = None  # tests: a stub resolver (no real lookups)

    # ----------------------------------------------------------------- lifecycle

    def validate(self) -> list[str]:
        problems = []
        if not self.settings.hub and not self.settings.publish_hubs:
            pass  # a subscriber-only setup is fine
        if self.settings.hub_path.startswith(self.settings.callback_path + "/"):
            problems.append("hub_path must not lie under callback_path")
        return problems

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
            app.router.add_get(st.topics_path + "/{name}", self._serve_raw)
        app.router.add_get(st.callback_path + "/{cbid}", self.callbacks.verify)
        app.router.add_post(st.callback_path + "/{cbid}", self.callbacks.deliver)
        self.context.topics.hub_url = self.hub_url
        self.context.topics.hub_topic = self.hub_topic
        if st.hub or st.publish_hubs:
            self.context.topics.listen(self._on_changed)

    async def start(self) -> None:
        st = self.settings
        # verifications, denials and pings: room for every verification in flight besides the pings,
        # so that a verification never waits for a connection (that wait would count in its timeout)
        self.session = self.make_session(st.outbound, st.verify_timeout, limit=max(100, 2 * st.verify_concurrency))
        self.delivery_session = self.make_session(st.outbound, st.delivery_timeout,
                                                  limit=max(100, st.delivery_workers * st.delivery_batch))
        for q in self.queues.values():
            await q.open()
        self.stopping.clear()
        spawn = self._spawn
        spawn("verify", self.hub.run_verifier, 1)
        spawn("fanout", self._worker("websub.fanout", self.distributor.run_fanout), 1)
        # twice as many delivery jobs in flight as POST slots allow: while one batch waits for its slowest
        # callback, the next batch already fills the free slots (the POSTs share one semaphore)
        self.distributor.slots = asyncio.Semaphore(st.delivery_workers * st.delivery_batch)
        spawn("deliver", self._worker("websub.deliver", self.distributor.run_delivery), 2 * st.delivery_workers)
        spawn("ping", self._worker("websub.ping", self.distributor.run_ping), 1)
        spawn("retries", self._every(st.retry_poll, self._move_retries), 1)
        spawn("sweep", self._every(st.sweep_interval, self._sweep), 1)
        spawn("maintenance", self._every(max(0.2, st.job_timeout / 4), self._maintenance), 1)
        self.set_health(Health.READY)

    def make_session(self, policy: OutboundPolicy, timeout: float, limit: int = 100) -> aiohttp.ClientSession:
        return make_session(policy, timeout=timeout, user_agent=f"thoonk-bridge-websub/{self.version}",
                            resolver=self.resolver, limit=limit)

    def _spawn(self, name: str, factory: Callable[[], Awaitable[None]], count: int) -> None:
        for i in range(count):
            self._tasks.append(asyncio.create_task(factory(), name=f"websub-{name}-{i}"))  # type: ignore[arg-type]

    def spawn_job(self, job: Awaitable[None], name: str) -> None:
        """Run one claimed job in its own task (stop() lets it finish, bounded, like a busy worker)."""
        task: asyncio.Task[None] = asyncio.create_task(job, name=name)  # type: ignore[arg-type]
        self._tasks.append(task)
        self._busy.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._busy.discard(t)
            with contextlib.suppress(ValueError):
                self._tasks.remove(t)

        task.add_done_callback(done)

    async def stop(self, drain: float | None = None) -> None:
        """Stop taking jobs; let those in flight finish (bounded), then release everything."""
        self.stopping.set()
        tasks, self._tasks = self._tasks, []
        idle = [t for t in tasks if t not in self._busy]
        for task in idle:  # waiting for a job or sleeping: nothing to finish
            await cancel_and_wait(task)
        busy = [t for t in tasks if t in self._busy and not t.done()]
        if busy:
            bound = self.settings.delivery_timeout + 1.5 if drain is None else drain
            _, pending = await asyncio.wait(busy, timeout=bound) if bound > 0 else ((), busy)
            for task in pending:
                await cancel_and_wait(task)
        self._busy.clear()
        for session in (self.session, self.delivery_session):
            if session is not None:
                await session.close()
        self.session = self.delivery_session = None  # type: ignore[assignment]
        self.set_health(Health.STOPPED)

    async def kill(self) -> None:
        """Tests: stop at once, as a crashed daemon would (claimed jobs stay claimed)."""
        self._busy.clear()
        await self.stop(0)

    # ----------------------------------------------------------------- loops

    def _worker(self, queue: str, handler: Callable[[str], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            q = self.queues[queue]
            while not self.stopping.is_set():
                try:
                    got = await q.get(timeout=0.5)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - Redis trouble: wait and go on
                    self.log.warning("websub.queue_error", queue=queue, error=str(exc))
                    await asyncio.sleep(1)
                    continue
                if got is None:
                    continue
                job_id, item = got
                me = asyncio.current_task()
                assert me is not None
                self._busy.add(me)
                try:
                    await handler(item)
                except (ValueError, KeyError, TypeError) as exc:  # a malformed item: never retried
                    self.log.error("websub.bad_job", queue=queue, error=f"{type(exc).__name__}: {exc}")
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - left claimed: maintenance puts it back
                    self.log.error("websub.job_failed", queue=queue, error=f"{type(exc).__name__}: {exc}")
                    self._busy.discard(me)
                    continue
                try:
                    await q.finish(job_id)
                finally:
                    self._busy.discard(me)

        return run

    def _every(self, interval: float, fn: Callable[[], Awaitable[Any]]) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            while not self.stopping.is_set():
                try:
                    await fn()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - keep looping
                    self.log.warning("websub.loop_error", loop=getattr(fn, "__name__", "?"), error=str(exc))
                try:
                    await asyncio.wait_for(self.stopping.wait(), timeout=interval)
                except TimeoutError:
                    pass

        return run

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

    # ----------------------------------------------------------------- topics

    def topic_url(self, path: str) -> str:
        return normalize_url(self.context.public_url + path)

    async def add_raw_topic(self, name: str) -> None:
        if name not in self._raw_local:
            await self.context.redis.sadd(RAW_TOPICS, name)
            self._raw_local.add(name)

    def _raw_name(self, path: str) -> str | None:
        prefix = self.settings.topics_path + "/"
        if path.startswith(prefix) and "/" not in path[len(prefix):] and path[len(prefix):]:
            return path[len(prefix):]
        return None

    def hub_topic(self, path: str) -> bool:
        """Whether the document at ``path`` is a hub topic: some route asks for it with a
        ``websub:NAME`` sink (not ``mode: raw``). Documents of other routes are served without a hub."""
        if not path.startswith(DOCUMENTS_PREFIX):
            return False
        name, dot, _ = path[len(DOCUMENTS_PREFIX):].rpartition(".")
        if not dot or "/" in name:
            return False
        return any(
            sink.kind == "websub" and sink.address == name and getattr(sink.options, "mode", "auto") != "raw"
            for sink in self.context.topics.sinks
        )

    async def serves(self, topic_key: str) -> bool:
        """Whether some daemon of the fleet serves ``topic_key`` as a hub topic (a document some route
        distributes with a ``websub:`` sink, or a raw topic)."""
        path = served_path(topic_key, self.context.public_url)
        if path is None:
            return False
        if self.hub_topic(path) and await self.context.topics.served(path):
            return True
        name = self._raw_name(path)
        return name is not None and bool(await self.context.redis.sismember(RAW_TOPICS, name))

    async def render_topic(self, topic_key: str) -> tuple[bytes, str] | None:
        """The current body of ``topic_key``: rendered here when this daemon holds the document, else
        the copy its owner stored for the fleet (the same bytes, so a distribution is not repeated)."""
        path = served_path(topic_key, self.context.public_url)
        if path is None:
            return None
        found = await self.context.topics.render(path)
        if found is not None:
            return found
        name = self._raw_name(path)
        if name is None:
            return None
        return await self.store.get_raw(name)

    async def distribute(self, topic_key: str) -> bool:
        return await self.distributor.distribute(topic_key)

    async def _on_changed(self, path: str) -> None:
        if not self.hub_topic(path):
            return  # a document no route asked to distribute
        try:
            url = self.topic_url(path)
            if self.settings.hub:
                await self.distribute(url)
            if self.settings.publish_hubs:
                await self.distributor.queue_pings(self.context.public_url + path)
        except (BadURL, Exception) as exc:  # noqa: BLE001 - never break the serving plugin
            self.log.error("websub.distribution_failed", path=path, error=f"{type(exc).__name__}: {exc}")

    async def _serve_raw(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        found = await self.store.get_raw(name) if await self.context.redis.sismember(RAW_TOPICS, name) else None
        if found is None:
            return web.Response(status=404, text="no such topic\n")
        body, ctype = found
        url = self.context.public_url + self.settings.topics_path + "/" + name
        resp = web.Response(body=body)
        resp.headers["Content-Type"] = ctype
        resp.headers["Link"] = f'<{self.hub_url}>; rel="hub", <{url}>; rel="self"'
        return resp

    # ----------------------------------------------------------------- endpoints

    def sink(self, endpoint: Endpoint[WebSubSinkOptions], route: RouteContext) -> Sink:
        return WebSubSink(self, endpoint, route)

    def source(self, endpoint: Endpoint[WebSubSourceOptions], route: RouteContext) -> Source:
        return WebSubSource(self, endpoint, route)

    async def subscriptions(self, topic: str | None = None) -> list[dict[str, Any]]:
        from .cli import public_view

        key = normalize_url(topic) if topic else None
        return [public_view(h) for h in await self.store.all_subscriptions(key)]


__all__ = ["WebSubPlugin", "WebSubSink"]
