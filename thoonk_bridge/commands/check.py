"""``thoonk-bridge check``: the config validated (every problem at once), and with ``--live`` Redis
and each enabled plugin's servers reached."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import click

from thoonk_bridge.commands.common import config_argument, env_file_option, fail, load_or_fail, warn
from thoonk_bridge.redact import redact_text, redact_url


@click.command()
@config_argument
@env_file_option
@click.option("--live", is_flag=True, help="Also connect: Redis and each plugin's servers.")
def check(config: Path, env_file: Path | None, live: bool) -> None:
    """Validate CONFIG: print every problem as FILE:LINE:COL: path: message, or a summary.

    With --live, the summary (and OK) is printed only when Redis and every plugin's servers answer.
    """
    loaded = load_or_fail(config, env_file)
    for warning in loaded.warnings:
        warn(warning)
    if live:
        problems = asyncio.run(_check_live(loaded))
        if problems:
            for problem in problems:
                click.echo(f"live: {redact_text(problem)}", err=True)
            fail(f"{config}: the config is valid, but {len(problems)} live check(s) failed")
    enabled = ", ".join(sorted(loaded.enabled_plugins)) or "none"
    lines = [f"{config}: OK, {len(loaded.routes)} route(s), plugins: {enabled}"]
    lines.append(f"  redis: {loaded.redis or 'embedded (' + str((Path(loaded.state_dir) / 'redis').resolve()) + ')'}")
    lines.append(f"  http: {loaded.http.listen} (public {loaded.http.base_url})")
    for route in loaded.routes:
        extras = [f"mirror={str(route.mirror).lower()}", f"initial={route.initial}"]
        if route.format:
            extras.append(f"format={route.format}")
        sinks = ", ".join(str(s) for s in route.sinks)
        lines.append(f"  {route.name}: {route.source} -> {sinks} ({', '.join(extras)})")
    if live:
        lines.append("live: Redis and every plugin reachable")
    for line in lines:
        click.echo(redact_text(line))


async def _check_live(config: Any) -> list[str]:
    # imported here: every command loads this module, only `check --live` connects anywhere
    from thoonk_bridge.context import build_plugin_context
    from thoonk_bridge.discovery import discover_plugins
    from thoonk_bridge.redis_client import async_client
    from thoonk_bridge.thoonk import AsyncThoonk
    from thoonk_bridge.thoonk.databases import client_database, describe_shared_feeds

    problems: list[str] = []
    client: Any  # one server, Sentinel or Cluster client
    if not config.redis:
        problems_redis = None  # embedded: started by the daemon itself, nothing to reach
    else:
        client = async_client(config.redis)
        try:
            await asyncio.wait_for(client.ping(), 5)
            # Pub/sub is server-wide: same-named feeds in other databases leak events into ours.
            names = {e.address for r in config.routes for e in (r.source, *r.sinks) if e.kind == "thoonk"}
            shared = await AsyncThoonk(redis=client).databases_sharing(*names)
            if shared:
                click.echo(f"live: warning: {describe_shared_feeds(client_database(client), shared)}", err=True)
        except Exception as exc:  # noqa: BLE001 - reported
            problems.append(f"redis {redact_url(config.redis)}: {type(exc).__name__}: {exc}")
        finally:
            await client.aclose()
        problems_redis = config.redis
    classes = discover_plugins({})  # the config loaded: every plugin it enables could be loaded
    client = async_client(problems_redis or "redis://127.0.0.1:1")  # never used when embedded
    for name in sorted(config.enabled_plugins):
        cls = classes[name]
        settings = config.plugins.get(name) or cls.settings_model()
        context = build_plugin_context(name, thoonk=AsyncThoonk(redis=client), redis=client,
                                       public_url=config.http.base_url, state_dir=Path(config.state_dir))
        try:
            problems += [f"plugin {name}: {p}" for p in await cls(settings, context).check_live()]
        except Exception as exc:  # noqa: BLE001 - reported
            problems.append(f"plugin {name}: {type(exc).__name__}: {exc}")
    await client.aclose()
    return problems
