"""``thoonk-bridge trace``: which routes carried an item to which sinks, when, with which outcome."""

from __future__ import annotations

import json
from typing import Any

import click

from thoonk_bridge.commands.common import thoonk_client, when, with_redis
from thoonk_bridge.deadletters import entries_of_item
from thoonk_bridge.redact import redact_text
from thoonk_bridge.trace import TRACE_MAX, read_trace


@click.command()
@click.argument("feed")
@click.argument("item_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@with_redis
def trace(feed: str, item_id: str, as_json: bool, redis_url: str | None, config_path: Any) -> None:
    """Which routes carried item ID of FEED to which sinks, when, with which outcome.

    Read from each route's ring of its newest records (bridge.trace.{ROUTE}); dead letters of
    the item add their reason."""
    with thoonk_client(redis_url, config_path) as pubsub:
        path = read_trace(pubsub.redis, feed, item_id)
        reasons = {}
        for route in {r["route"] for r in path}:
            for entry in entries_of_item(pubsub, route, item_id):
                reasons[(route, entry.sink or "")] = entry.reason
    for record in path:
        if record["outcome"] == "dead-lettered":
            record["reason"] = redact_text(reasons.get((record["route"], record["sink"]), ""))
    if as_json:
        click.echo(json.dumps(path, indent=2))
        return
    if not path:
        click.echo(
            f"no route has a record of item {item_id!r} of {feed!r} (rings keep each route's "
            f"newest {TRACE_MAX} records)"
        )
        return
    for record in path:
        line = f"{when(record['at'])}  {record['route']}  -> {redact_text(record['sink'])}  {record['outcome']}"
        if record.get("reason"):
            line += f": {record['reason']}"
        click.echo(line)
