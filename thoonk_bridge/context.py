"""One way to build a :class:`~thoonk_bridge.plugin.PluginContext`: the daemon, ``check --live`` and
the test harnesses all call :func:`build_plugin_context`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CollectorRegistry

from thoonk_bridge.logs import get_logger
from thoonk_bridge.plugin import PluginContext
from thoonk_bridge.topics import TopicRegistry

if TYPE_CHECKING:
    import structlog

    from thoonk_bridge.redis_client import AsyncRedis
    from thoonk_bridge.thoonk import AsyncThoonk

__all__ = ["build_plugin_context"]


def build_plugin_context(
    name: str,
    *,
    thoonk: AsyncThoonk,
    redis: AsyncRedis,
    public_url: str,
    state_dir: Path,
    http: web.Application | None = None,
    metrics: CollectorRegistry | None = None,
    topics: TopicRegistry | None = None,
    instance_id: str = "local",
    log: structlog.typing.FilteringBoundLogger | None = None,
) -> PluginContext:
    """The context plugin ``name`` runs with.

    - ``thoonk``, ``redis``: the shared clients; the caller made them and closes them (nothing here
      connects anywhere).
    - ``public_url``: the base URL outsiders use (a trailing slash is dropped).
    - ``state_dir``: the bridge's state directory; the plugin gets ``<state_dir>/<name>`` (not created).
    - ``http``: the aiohttp application the plugin adds routes to (default: a new one, not served).
    - ``metrics``: the Prometheus registry (default: a new one).
    - ``topics``: the topic registry shared by the plugins of one daemon (default: a new one).
    - ``instance_id``: the daemon's id among daemons sharing a Redis.
    - ``log``: default a logger bound with ``plugin=<name>``.
    """
    return PluginContext(
        thoonk=thoonk,
        redis=redis,
        http=http if http is not None else web.Application(),
        public_url=public_url.rstrip("/"),
        metrics=metrics if metrics is not None else CollectorRegistry(),
        log=log if log is not None else get_logger(plugin=name),
        state_dir=Path(state_dir) / name,
        topics=topics if topics is not None else TopicRegistry(),
        instance_id=instance_id,
    )
