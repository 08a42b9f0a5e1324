"""A test harness for the bridge and its plugins, reusable by third-party plugins.

Two levels:

- :func:`running_bridge`: a whole :class:`~thoonk_bridge.daemon.Daemon` from a config mapping (the
  same keys as the YAML file), on a free loopback port, against the Redis you give it. Use it to
  test routes end to end::

      async with running_bridge({"routes": [...]}, redis_url=redis_url, tmp_path=tmp_path,
                                plugins={"myplugin": MyPlugin}) as daemon:
          await wait_until(lambda: daemon.routes["r"].ready)
          ...

- :func:`plugin_context`: a real :class:`~thoonk_bridge.plugin.PluginContext` (Redis, Thoonk client,
  an aiohttp application served on loopback) to drive one plugin's sources and sinks directly.

Both need a real Redis URL; the pytest plugin's ``redis_url`` fixture gives one
(``pytest_plugins = ["thoonk_bridge.testing.pytest_plugin"]`` in your ``conftest.py``).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web
from prometheus_client import CollectorRegistry

from thoonk_bridge.context import build_plugin_context
from thoonk_bridge.http import build_app
from thoonk_bridge.logs import get_logger
from thoonk_bridge.plugin import Plugin, PluginContext, RouteContext, Settings
from thoonk_bridge.redis_client import AsyncRedis, async_client
from thoonk_bridge.router import RetryPolicy, store_dead_letter
from thoonk_bridge.thoonk import AsyncThoonk
from thoonk_bridge.thoonk.embedded import free_tcp_port
from thoonk_bridge.topics import TopicRegistry

__all__ = ["FAST_RETRY", "PluginHarness", "plugin_context", "route_context", "running_bridge", "wait_until"]

FAST_RETRY = RetryPolicy(base=0.02, cap=0.5)


async def wait_until(
    predicate: Callable[[], Any | Awaitable[Any]], timeout: float = 10.0, interval: float = 0.02, message: str = ""
) -> Any:
    """Poll ``predicate`` (sync or async) until it returns something truthy; return that value.

    Raises AssertionError naming ``message`` (or the predicate) after ``timeout`` seconds. This is
    for waiting on asynchronous effects, never for asserting how fast they are.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = predicate()
        if inspect.isawaitable(last):
            last = await last
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {message or getattr(predicate, '__name__', predicate)}"
                                 f" (last value {last!r})")
        await asyncio.sleep(interval)


@asynccontextmanager
async def running_bridge(
    config: Mapping[str, Any],
    *,
    redis_url: str | None,
    tmp_path: Path,
    plugins: dict[str, type[Plugin]] | None = None,
    retry: RetryPolicy = FAST_RETRY,
    drain: float = 2.0,
) -> AsyncIterator[Any]:
    """A started daemon for ``config`` (a mapping of the YAML keys).

    ``redis`` defaults to ``redis_url`` (``None``: the embedded server under ``tmp_path``),
    ``state_dir`` to ``tmp_path``, ``http.listen`` to a free loopback port. The config is written to
    ``tmp_path/bridge.yaml`` and loaded through the real config loader, so it is validated exactly
    like a user's file. ``plugins`` defaults to the installed plugins.
    """
    from thoonk_bridge.config import load_config
    from thoonk_bridge.daemon import Daemon
    from thoonk_bridge.discovery import discover_plugins

    data = dict(config)
    if redis_url is not None:
        data.setdefault("redis", redis_url)
    data.setdefault("state_dir", str(tmp_path / "state"))
    http = dict(data.get("http") or {})
    http.setdefault("listen", f"127.0.0.1:{free_tcp_port()}")
    data["http"] = http
    data.setdefault("drain_seconds", drain)
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "bridge.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    classes = plugins if plugins is not None else discover_plugins()
    loaded = load_config(path, env={}, plugins=classes)
    daemon = Daemon(loaded, classes, retry=retry)
    await daemon.start()
    try:
        yield daemon
    finally:
        await daemon.stop(drain=drain)


@dataclass
class PluginHarness:
    """What :func:`plugin_context` yields: the started plugin and the pieces around it."""

    plugin: Plugin
    context: PluginContext
    thoonk: AsyncThoonk
    redis: AsyncRedis
    base_url: str

    def route(self, name: str = "test-route", **options: Any) -> RouteContext:
        return route_context(self.thoonk, name, **options)


def route_context(
    thoonk: AsyncThoonk, name: str = "test-route", *, mirror: bool = False, format: str | None = None,
    initial: str = "all",
) -> RouteContext:
    """A :class:`RouteContext` whose dead letters go to the real dead-letter feed of ``name``."""

    async def dead_letter(item_id: str, payload: str | None, reason: str) -> None:
        await store_dead_letter(thoonk, name, item_id, payload, reason)

    return RouteContext(name=name, mirror=mirror, format=format, initial=initial,
                        log=get_logger(route=name), dead_letter=dead_letter)


@asynccontextmanager
async def plugin_context(
    plugin_cls: type[Plugin],
    settings: Mapping[str, Any] | Settings | None = None,
    *,
    redis_url: str,
    tmp_path: Path,
    topics: TopicRegistry | None = None,
    public_url: str | None = None,
) -> AsyncIterator[PluginHarness]:
    """Validate, set up and start one plugin on a real context; stop it afterwards.

    The plugin's HTTP routes are served on a free loopback port (``harness.base_url``);
    ``public_url`` defaults to that URL.
    """
    redis = async_client(redis_url)
    thoonk = AsyncThoonk(redis=redis)
    app = build_app(CollectorRegistry(), _always_ready)
    port = free_tcp_port()
    base_url = f"http://127.0.0.1:{port}"
    if settings is None:
        parsed: Settings = plugin_cls.settings_model()
    elif isinstance(settings, Settings):
        parsed = settings
    else:
        parsed = plugin_cls.settings_model.model_validate(dict(settings))
    context = build_plugin_context(
        plugin_cls.name, thoonk=thoonk, redis=redis, http=app, public_url=public_url or base_url,
        state_dir=tmp_path, topics=topics, instance_id="test",
    )
    plugin = plugin_cls(parsed, context)
    problems = plugin.validate()
    if problems:
        raise ValueError(f"plugin {plugin_cls.name} settings: " + "; ".join(problems))
    await plugin.setup()
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        await plugin.start()
        yield PluginHarness(plugin=plugin, context=context, thoonk=thoonk, redis=redis, base_url=base_url)
    finally:
        await plugin.stop()
        await runner.cleanup()
        await redis.aclose()


async def _always_ready() -> tuple[bool, dict[str, Any]]:
    return True, {}
