"""``thoonk-bridge fleet``: the console's view of the fleet, on the command line."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import click

from thoonk_bridge.commands.common import bridge_redis_url, when, with_redis
from thoonk_bridge.console.web import fleet_state, format_lag
from thoonk_bridge.redis_client import async_client


@click.command()
@click.option("--json", "as_json", is_flag=True, help="The console's JSON document.")
@with_redis
def fleet(as_json: bool, redis_url: str | None, config_path: Any) -> None:
    """The console's view: daemons, routes (owner, state, rate, lag, last error, dead letters)."""
    async def read(url: str) -> dict[str, Any]:
        client = async_client(url)
        try:
            return await fleet_state(client)
        finally:
            await client.aclose()

    with bridge_redis_url(redis_url, config_path) as url:
        state = asyncio.run(read(url))
    if as_json:
        click.echo(json.dumps(state, indent=2))
        return
    for d in state["daemons"]:
        click.echo(f"daemon {d['instance']} {d.get('version') or '?'} {'STALE' if d['stale'] else d['phase']}")
    for r in state["routes"]:
        lag = r.get("lag") or {}
        error = r.get("last_error")
        click.echo(
            f"route {r['name']}  owner={r.get('owner') or '-'}  {r.get('state')}  "
            f"delivered={r.get('delivered')}  {r.get('rate')}/s  lag p50={format_lag(lag.get('p50'))} "
            f"p99={format_lag(lag.get('p99'))}  dead_letters={r.get('dead_letters', 0)}"
            + (f"  last error {when(error['at'])}: {error['reason']}" if error else "")
        )
