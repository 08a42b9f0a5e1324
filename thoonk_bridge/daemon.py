"""The daemon's lifecycle: start in dependency order, SIGTERM drain, SIGHUP reload.

Start: Redis (the embedded server when the config has no ``redis:``) -> plugins ``validate`` and
``setup`` in dependency order -> the HTTP application starts listening -> plugins ``start`` ->
routes start (each reconciles, then follows) -> the job-maintenance loop.

Stop (SIGTERM, SIGINT): ``/readyz`` turns 503, sources stop, sinks get ``drain_seconds`` to finish
what is queued, plugins stop in reverse order, then Redis. Exit code 0.

Reload (SIGHUP): the config is read and validated again. Routes whose spec did not change keep
running untouched (and keep their connections); changed routes are restarted, removed ones drained,
new ones started. A config that is invalid, or that changes what only a restart can change (Redis,
HTTP listen address, plugin settings, the set of plugins), is refused: the old routes keep running
and the reason is logged.

This module is the lifecycle only; the parts it starts and stops, each given what it uses:
route ownership (which routes run here: ownership.py, over lease.py), building a route's runner
from the plugins (route_builder.py), the fleet's heartbeat (fleet.py), housekeeping (job
maintenance and the loop watch: maintenance.py), dead-letter replay requests (deadletters.py) and
the console (console/web.py). Redis key names: keys.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web
from redis.asyncio.cluster import RedisCluster

from thoonk_bridge import keys
from thoonk_bridge.context import build_plugin_context
from thoonk_bridge.discovery import always_enabled_plugins, discover_plugins, start_order
from thoonk_bridge.fleet import Heartbeat, new_instance_id, stable_instance_id
from thoonk_bridge.http import (
    ConnectionGuard,
    HttpLimits,
    LimitedTCPSite,
    LoopErrorLog,
    RefusalLog,
    build_app,
    parse_listen,
)
from thoonk_bridge.lease import Lease
from thoonk_bridge.logs import get_logger
from thoonk_bridge.maintenance import JobMaintenance, LoopWatch
from thoonk_bridge.metrics import BridgeMetrics
from thoonk_bridge.ownership import RouteOwnership, route_fingerprint
from thoonk_bridge.plugin import Health, Plugin
from thoonk_bridge.redact import redact_data, redact_url
from thoonk_bridge.redis_client import AsyncRedis, async_client, sync_client
from thoonk_bridge.route_builder import RECONCILE_CONCURRENCY, RouteBuilder
from thoonk_bridge.router import EchoFilter, RetryPolicy, RouteRunner
from thoonk_bridge.thoonk import AsyncThoonk
from thoonk_bridge.thoonk.embedded import EmbeddedRedis
from thoonk_bridge.topics import TopicRegistry

if TYPE_CHECKING:
    from thoonk_bridge.config import BridgeConfig, RouteSpec

__all__ = ["INSTANCES_KEY", "Daemon", "DaemonError", "new_instance_id", "route_fingerprint", "stable_instance_id"]

INSTANCES_KEY = keys.INSTANCES  # the old name of the fleet's hash (see fleet.py)


class DaemonError(Exception):
    """The daemon cannot start (plugin validation failed, port in use, Redis unreachable)."""


class Daemon:
    """One bridge daemon.

    - ``config``: a validated :class:`~thoonk_bridge.config.BridgeConfig`.
    - ``plugin_classes``: installed plugins by name (default: entry-point discovery).
    - ``retry``: backoff of failing routes and sinks.
    """

    def __init__(
        self,
        config: BridgeConfig,
        plugin_classes: dict[str, type[Plugin]] | None = None,
        *,
        retry: RetryPolicy | None = None,
        instance_id: str | None = None,
    ) -> None:
        self.config = config
        # A broken installed plugin the config does not use is a warning (config.warnings), not a stop.
        self.plugin_classes = plugin_classes if plugin_classes is not None else discover_plugins({})
        self.plugin_classes = {**always_enabled_plugins(), **self.plugin_classes}  # thoonk's, even when given
        self.retry = retry or RetryPolicy()
        self.instance_id = instance_id or config.instance or stable_instance_id(Path(config.state_dir))
        self.log = get_logger(instance=self.instance_id)
        for warning in config.warnings:
            self.log.warning("config warning", warning=warning)
        self.metrics = BridgeMetrics()
        self.topics = TopicRegistry()
        self.topics.sinks = tuple(sink for route in config.routes for sink in route.sinks)  # hub topics
        self.echoes = EchoFilter()
        self.builder: RouteBuilder | None = None  # makes the routes' runners (route_builder.py), made by start
        self.plugins: dict[str, Plugin] = {}
        self.routes: dict[str, RouteRunner] = {}  # the routes this daemon owns and runs now
        # The parts that need Redis (made by start): route leases, the fleet's heartbeat, housekeeping.
        self.ownership: RouteOwnership | None = None
        self.heartbeat: Heartbeat | None = None
        self.started_at = time.time()
        self.job_maintenance: JobMaintenance | None = None
        self.loop_watch: LoopWatch | None = None
        self.replays: Any = None  # deadletters.ReplayDesk: the replay requests of the routes we run
        self.console: Any = None  # console.web.Console: this daemon's report, and the page when enabled
        self.phase = "starting"  # starting | running | draining | stopped
        self.embedded: EmbeddedRedis | None = None
        self.redis: AsyncRedis | None = None
        self.thoonk: AsyncThoonk | None = None
        self.app: web.Application | None = None
        self.http_port: int | None = None
        self._runner: web.AppRunner | None = None
        self._stopped = asyncio.Event()
        self._previous_error_handler: Any = None
        self._refusals = RefusalLog(self.metrics.http_refused, self.log)  # connections closed by the limits

    # ------------------------------------------------------------------ properties

    @property
    def leases(self) -> dict[str, Lease]:
        """Every configured route's lease, held or wanted (see ownership.py)."""
        return self.ownership.leases if self.ownership is not None else {}

    @property
    def conflicts(self) -> dict[str, str]:
        """Route -> the daemon running another definition of it."""
        return self.ownership.conflicts if self.ownership is not None else {}

    @property
    def state_dir(self) -> Path:
        return Path(self.config.state_dir)

    @property
    def redis_url(self) -> str:
        if self.config.redis:
            return self.config.redis
        assert self.embedded is not None
        return self.embedded.url

    @property
    def base_url(self) -> str:
        """Where this daemon's HTTP application listens (the bound port, also when 0 was asked)."""
        host, _ = parse_listen(self.config.http.listen)
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.http_port}"

    @property
    def public_url(self) -> str:
        return self.config.http.base_url.rstrip("/")

    # ------------------------------------------------------------------ start

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self.stop(drain=0)
            raise

    async def _start(self) -> None:
        self.phase = "starting"
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if not self.config.redis:
            self.embedded = EmbeddedRedis(self.state_dir / "redis")
            await asyncio.to_thread(self.embedded.start)
            self.log.info("embedded redis started", url=self.embedded.url)
        # Blocking pool: plugins' workers block in job.get(); past max_connections callers wait
        # for a free connection instead of failing with "Too many connections".
        # (redis_client: one server, Sentinel or Cluster; see thoonk_bridge/redis_client.py)
        self.redis = async_client(self.redis_url, max_connections=200, timeout=30)
        try:
            await self.redis.ping()
        except Exception as exc:
            where = redact_url(self.config.redis) if self.config.redis else "embedded"
            raise DaemonError(f"redis at {where} is unreachable: {exc}") from exc
        self.topics.redis = self.redis  # the fleet learns which paths are served (bridge.topics)
        self._start_watchers()
        self.thoonk = AsyncThoonk(redis=self.redis)
        self.builder = RouteBuilder(self.thoonk, self.redis, self.plugins, self.echoes, self.metrics, self.retry,
                                    RECONCILE_CONCURRENCY)
        self.app = build_app(self.metrics.registry, self.readiness, before_metrics=self._refresh_gauges,
                             request_timeout=self.config.http.request_timeout)

        from thoonk_bridge.console.web import Console, daemon_report

        self.console = Console(
            self.config.http.console, self.redis, self.instance_id, self.log,
            report=lambda: daemon_report(self.instance_id, self.routes, self.plugins),
            configured_routes=lambda: [r.name for r in self.config.routes],
        )
        self.console.mount(self.app)
        await self._setup_plugins()
        http = self.config.http
        limits = HttpLimits(http.header_timeout, http.keepalive_timeout, http.max_connections).fitted()
        if limits.max_connections < http.max_connections:
            self.log.warning("http.max_connections lowered to fit the open-file limit (ulimit -n)",
                             configured=http.max_connections, used=limits.max_connections)
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False,
                                     keepalive_timeout=limits.keepalive_timeout)
        await self._runner.setup()
        host, port = parse_listen(http.listen)
        guard = ConnectionGuard(limits, on_refused=self._refusals, on_count=self.metrics.http_connections.set)
        site = LimitedTCPSite(self._runner, host, port, guard, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            raise DaemonError(f"http.listen {http.listen}: {exc.strerror or exc}") from exc
        self.http_port = site.port
        for plugin in self.plugins.values():
            await plugin.start()
            self.log.info("plugin started", plugin=plugin.name)

        for spec in self.config.routes:
            await self._start_route(spec)
        self.job_maintenance = JobMaintenance(self.thoonk, self.config.job_maintenance_seconds, self.log)
        self.job_maintenance.start()
        self.phase = "running"
        self.heartbeat = Heartbeat(self.redis, self.instance_id, lambda: self.config.lease_seconds,
                                   self._fleet_state, self.log, started=self.started_at)
        await self.heartbeat.start()
        from thoonk_bridge.deadletters import ReplayDesk

        self.replays = ReplayDesk(self.redis, self.thoonk, lambda: self.routes, self.instance_id, self.log)
        self.replays.start()
        self.console.start()
        self.log.info("daemon running", listen=self.config.http.listen, routes=len(self.routes),
                      plugins=sorted(self.plugins))

    async def _setup_plugins(self) -> None:
        assert self.thoonk is not None and self.redis is not None and self.app is not None
        names = self.config.enabled_plugins | {n for n, cls in self.plugin_classes.items() if cls.always_enabled}
        enabled = {name: self.plugin_classes[name] for name in names}
        for name in start_order(enabled):
            cls = enabled[name]
            settings = self.config.plugins.get(name) or cls.settings_model()
            context = build_plugin_context(
                name, thoonk=self.thoonk, redis=self.redis, http=self.app, public_url=self.public_url,
                metrics=self.metrics.registry, state_dir=self.state_dir, topics=self.topics,
                instance_id=self.instance_id,
            )
            plugin = cls(settings, context)
            problems = plugin.validate()
            if problems:
                raise DaemonError(f"plugin {name}: " + "; ".join(problems))
            await plugin.setup()
            self.plugins[name] = plugin
            self.log.info("plugin set up", plugin=name, version=cls.version)

    # ------------------------------------------------------------------ routes

    def build_route(self, spec: RouteSpec, lease: Lease | None = None) -> RouteRunner:
        """The runner of ``spec`` (route_builder.py); ``lease`` guards its writes (None: unguarded)."""
        assert self.builder is not None
        return self.builder.build(spec, self.config.routes, lease)

    async def _start_route(self, spec: RouteSpec) -> None:
        """Want the route: run it now if its lease is free, else stand by (see ownership.py)."""
        assert self.ownership is not None
        await self.ownership.acquire(spec, self.config.lease_seconds)

    async def _stop_route(self, name: str, drain: float) -> None:
        """Stop owning the route: stop it (draining), release its lease so another daemon takes it now."""
        if self.ownership is not None:
            await self.ownership.release(name, drain)

    def _run_route(self, spec: RouteSpec, lease: Lease) -> None:
        """Build and start a route whose lease we hold (called by the ownership)."""
        runner = self.build_route(spec, lease)
        self.routes[spec.name] = runner
        runner.start()
        self.log.info("route started", route=spec.name, source=str(spec.source),
                      sinks=[str(s) for s in spec.sinks], fence=lease.fence)

    async def _halt_route(self, name: str, drain: float) -> None:
        """Stop a running route (called by the ownership: lease lost, or released)."""
        runner = self.routes.pop(name, None)
        if runner is not None:
            await runner.stop(drain)
            self.metrics.forget_route(name, [w.name for w in runner.workers])

    # ------------------------------------------------------------------ fleet

    def _fleet_state(self) -> dict[str, Any]:
        """What the heartbeat says of this daemon besides who it is (fleet.py)."""
        owner = self.ownership
        return {
            "phase": self.phase,
            "owns": owner.owned_since() if owner is not None else {},
            "standby": owner.standby() if owner is not None else [],
            "conflicts": dict(self.conflicts),
        }

    # ------------------------------------------------------------------ readiness, metrics

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        body: dict[str, Any] = {"phase": self.phase, "instance": self.instance_id}
        redis_ok = False
        if self.redis is not None:
            try:
                redis_ok = bool(await asyncio.wait_for(self.redis.ping(), 2))
            except Exception as exc:  # noqa: BLE001 - reported, not raised
                body["redis_error"] = f"{type(exc).__name__}: {exc}"
        body["redis"] = "ok" if redis_ok else "unreachable"
        body["routes"] = {name: runner.state() for name, runner in self.routes.items()}
        body["owned_routes"] = sorted(self.routes)
        body["standby_routes"] = self.ownership.standby() if self.ownership is not None else []
        unowned = await self.ownership.unowned(body) if redis_ok and self.ownership is not None else []
        if unowned:
            body["unowned_routes"] = unowned
        if self.conflicts:
            body["conflicting_routes"] = {name: {"holder": holder} for name, holder in sorted(self.conflicts.items())}
        body["plugins"] = {
            name: {"status": str(p.health().status), "detail": p.health().detail} for name, p in self.plugins.items()
        }
        not_ready = [name for name, runner in self.routes.items() if not runner.ready]
        bad_plugins = [
            name for name, p in self.plugins.items() if p.health().status in (Health.FAILED, Health.STARTING)
        ]
        if not_ready:
            body["not_ready_routes"] = not_ready
        if bad_plugins:
            body["not_ready_plugins"] = bad_plugins
        ready = (self.phase == "running" and redis_ok and not not_ready and not bad_plugins and not unowned
                 and not self.conflicts)
        return ready, redact_data(body)  # outside URLs (feeds, websub topics) lose user info and query

    # ------------------------------------------------------------------ the loop and the lease keeper

    def _start_watchers(self) -> None:
        """Route ownership (its lease keeper thread), the loop watcher and the rate-limited loop error log."""
        assert self.redis is not None
        loop = asyncio.get_running_loop()
        self._previous_error_handler = loop.get_exception_handler()
        loop.set_exception_handler(LoopErrorLog(self.log))
        ttl = self.config.lease_seconds
        url = self.redis_url

        def client() -> Any:
            # Its own small pool and short timeouts: a renewal never waits behind the loop's
            # commands, and a hung Redis cannot hold the thread past the next renewal.
            return sync_client(url, max_connections=2, timeout=ttl / 3, socket_timeout=ttl / 3,
                               socket_connect_timeout=ttl / 3)

        self.ownership = RouteOwnership(self.redis, self.instance_id, self.metrics, self.log,
                                        run=self._run_route, halt=self._halt_route)
        self.ownership.start(client, ttl)
        self.loop_watch = LoopWatch(self.metrics.loop_lag, self.log, on_tick=self.ownership.loop_alive)
        self.loop_watch.start()

    def _refresh_gauges(self) -> None:
        for name, plugin in self.plugins.items():
            self.metrics.plugin_ready.labels(name).set(1 if plugin.health().status is Health.READY else 0)

    # ------------------------------------------------------------------ job maintenance

    async def run_job_maintenance(self) -> int:
        """Put back timed-out and orphaned jobs of every Thoonk job feed now; returns how many."""
        assert self.job_maintenance is not None
        return await self.job_maintenance.run_once()

    # ------------------------------------------------------------------ reload, stop

    async def reload(self, new: BridgeConfig) -> list[str]:
        """Swap to ``new``; returns the names of the routes that were (re)started.

        Raises :class:`DaemonError` (and changes nothing) when ``new`` needs a restart.
        """
        old = self.config
        needs_restart = []
        if new.redis != old.redis:
            needs_restart.append("redis")
        if new.http != old.http:
            needs_restart.append("http")
        if set(new.enabled_plugins) != set(old.enabled_plugins):
            needs_restart.append("the set of plugins")
        for name in sorted(set(new.plugins) | set(old.plugins)):
            if new.plugins.get(name) != old.plugins.get(name):
                needs_restart.append(f"plugins.{name}")
        if needs_restart:
            raise DaemonError("these changes need a restart: " + ", ".join(needs_restart))
        # Build every new route before touching the running ones, so a failure changes nothing.
        old_specs = {r.name: r for r in old.routes}
        new_specs = {r.name: r for r in new.routes}
        changed = [n for n, spec in new_specs.items() if old_specs.get(n) != spec]
        removed = [n for n in old_specs if n not in new_specs or n in changed]
        for name in removed:
            await self._stop_route(name, self.config.drain_seconds)
        self.config = new
        self.topics.sinks = tuple(sink for route in new.routes for sink in route.sinks)
        for name in changed:
            await self._start_route(new_specs[name])
        self.log.info("config reloaded", started=changed, stopped=[n for n in removed if n not in changed],
                      kept=[n for n in new_specs if n not in changed])
        return changed

    async def stop(self, drain: float | None = None) -> None:
        if self.phase == "stopped":
            return
        drain = self.config.drain_seconds if drain is None else drain
        self.phase = "draining"
        self.log.info("draining", drain_seconds=drain)
        await self._stop_periodic()
        await asyncio.gather(*(self._stop_route(n, drain) for n in list(self.leases)), return_exceptions=True)
        await self._leave_fleet()
        for plugin in reversed(list(self.plugins.values())):
            try:
                await plugin.stop()
            except Exception as exc:  # noqa: BLE001 - stop the others anyway
                self.log.error("plugin stop failed", plugin=plugin.name, error=str(exc))
        if self._runner is not None:
            await self._runner.cleanup()
        await self._close_redis()
        self._refusals.flush()
        if self.ownership is not None:  # started: so was the loop error log
            asyncio.get_running_loop().set_exception_handler(self._previous_error_handler)
            self.ownership = None
        self.phase = "stopped"
        self._stopped.set()
        self.log.info("stopped")

    async def _stop_periodic(self) -> None:
        """First step of a stop: the periodic work that is not a route's."""
        for part in (self.job_maintenance, self.heartbeat, self.replays, self.console):
            if part is not None:
                await part.stop()

    async def _leave_fleet(self) -> None:
        """After the routes: stop renewing leases and watching the loop, and take our heartbeat out."""
        if self.ownership is not None:
            await self.ownership.stop()
        if self.loop_watch is not None:
            await self.loop_watch.stop()
        if self.heartbeat is not None:
            await self.heartbeat.forget()

    async def _close_redis(self) -> None:
        if self.redis is not None:
            with contextlib.suppress(Exception):
                if isinstance(self.redis, RedisCluster):
                    await self.redis.aclose()  # closes every node's connections
                else:
                    await self.redis.aclose(close_connection_pool=True)
        if self.embedded is not None:
            await asyncio.to_thread(self.embedded.stop)

    async def wait_stopped(self) -> None:
        await self._stopped.wait()


async def serve(config_path: Path, *, env_file: Path | None = None) -> int:
    """Run the daemon until SIGTERM/SIGINT; SIGHUP reloads ``config_path``. Returns the exit code."""
    from thoonk_bridge.config import ConfigError, load_config

    config = load_config(config_path, env_file=env_file)
    daemon = Daemon(config)
    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()
    reload_lock = asyncio.Lock()

    async def do_reload() -> None:
        async with reload_lock:
            started = time.monotonic()
            try:
                new = load_config(config_path, env_file=env_file, plugins=daemon.plugin_classes)
                await daemon.reload(new)
            except ConfigError as exc:
                daemon.log.error("reload refused: config invalid, keeping the running config",
                                 problems=[str(p) for p in exc.problems])
            except DaemonError as exc:
                daemon.log.error("reload refused, keeping the running config", reason=str(exc))
            else:
                daemon.log.info("reload done", seconds=round(time.monotonic() - started, 3))

    loop.add_signal_handler(signal.SIGTERM, stop_requested.set)
    loop.add_signal_handler(signal.SIGINT, stop_requested.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(do_reload()))
    try:
        await daemon.start()
    except DaemonError as exc:
        daemon.log.error("cannot start", reason=str(exc))
        return 1
    await stop_requested.wait()
    await daemon.stop()
    return 0
