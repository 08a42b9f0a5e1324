"""``thoonk-bridge deadletters``: list, show, replay and discard what a route could not deliver."""

from __future__ import annotations

import json
from typing import Any

import click

from thoonk_bridge.commands.common import fail, thoonk_client, when, with_redis
from thoonk_bridge.deadletters import (
    DeadLetter,
    discard_entries,
    entries,
    matching,
    outcomes,
    request_replay,
    routes_with_dead_letters,
    wait_for_reply,
    withdraw_request,
)
from thoonk_bridge.redact import redact_text


@click.group()
def deadletters() -> None:
    """Items a route could not deliver (bridge.deadletter.{ROUTE}): list, show, replay, discard."""


def chosen_entries(pubsub: Any, route: str, ids: tuple[str, ...], all_: bool) -> list[DeadLetter]:
    if bool(ids) == all_:
        raise click.UsageError("name the entries (entry or item ids) or give --all, not both")
    stored = entries(pubsub, route)
    if not stored:
        fail(f"route {route!r} has no dead letters")
    if all_:
        return stored
    chosen, missing = matching(stored, ids)
    if missing:
        fail(f"route {route!r} has no dead letter {', '.join(repr(m) for m in missing)}")
    return chosen


@deadletters.command("list")
@click.argument("route", required=False)
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@with_redis
def list_(route: str | None, as_json: bool, redis_url: str | None, config_path: Any) -> None:
    """Routes with dead letters and how many; with ROUTE, its entries (oldest first)."""
    with thoonk_client(redis_url, config_path) as pubsub:
        if route is None:
            counts = routes_with_dead_letters(pubsub)
            if as_json:
                click.echo(json.dumps(counts))
            elif not counts:
                click.echo("no dead letters")
            for name, count in counts.items() if not as_json else ():
                click.echo(f"{name}  {count}")
            return
        rows = [e.summary() for e in entries(pubsub, route)]
    for row in rows:
        row["reason"] = redact_text(row["reason"])
        row["sink"] = redact_text(row["sink"]) if row["sink"] else None
    if as_json:
        click.echo(json.dumps(rows))
        return
    if not rows:
        click.echo(f"route {route!r} has no dead letters")
    for row in rows:
        click.echo(f"{row['entry']}  {when(row['at'])}  item={row['item']}  sink={row['sink'] or '-'}  {row['reason']}")


@deadletters.command()
@click.argument("route")
@click.argument("entry_id", metavar="ID")
@with_redis
def show(route: str, entry_id: str, redis_url: str | None, config_path: Any) -> None:
    """One dead letter in full (ID: its entry id, or the item's id), with its payload."""
    with thoonk_client(redis_url, config_path) as pubsub:
        chosen = chosen_entries(pubsub, route, (entry_id,), False)
    for entry in chosen:
        record = entry.summary()
        record.update(reason=redact_text(entry.reason), payload=entry.payload)
        click.echo(json.dumps(record, indent=2, ensure_ascii=False))


@deadletters.command()
@click.argument("route")
@click.argument("ids", nargs=-1, metavar="[ID...]")
@click.option("--all", "all_", is_flag=True, help="Every dead letter of ROUTE.")
@click.option("--wait", default=10.0, show_default=True, help="Seconds to wait for the route's daemon.")
@with_redis
def replay(route: str, ids: tuple[str, ...], all_: bool, wait: float, redis_url: str | None, config_path: Any) -> None:
    """Send dead letters through the route's sinks again (done by the daemon running ROUTE).

    Delivered: the entry goes; refused again: it stays, with the new reason."""
    with thoonk_client(redis_url, config_path) as pubsub:
        chosen = chosen_entries(pubsub, route, ids, all_)
        request = request_replay(pubsub.redis, route, [e.entry_id for e in chosen])
        reply = wait_for_reply(pubsub.redis, route, request, wait)
        if reply is None and withdraw_request(pubsub.redis, route, request):
            fail(f"no daemon running route {route!r} answered within {wait:g} s; nothing was replayed")
        if reply is None:
            reply = wait_for_reply(pubsub.redis, route, request, wait)
        if reply is None:
            fail(f"route {route!r}: the replay was taken but not answered within {wait:g} s")
        outcome = outcomes(pubsub, route, chosen, set(reply["replayed"]), wait)
    click.echo(f"route {route}: {len(reply['replayed'])} replayed by {reply.get('owner', '?')}")
    for entry_id, why in reply["skipped"].items():
        click.echo(f"{entry_id}: not replayed: {redact_text(why)}")
    for entry_id, state in outcome.items():
        click.echo(f"{entry_id}: {redact_text(state)}")
    if reply["skipped"] or any(state != "delivered" for state in outcome.values()):
        raise SystemExit(1)


@deadletters.command()
@click.argument("route")
@click.argument("ids", nargs=-1, metavar="[ID...]")
@click.option("--all", "all_", is_flag=True, help="Every dead letter of ROUTE.")
@with_redis
def discard(route: str, ids: tuple[str, ...], all_: bool, redis_url: str | None, config_path: Any) -> None:
    """Delete dead letters for good."""
    with thoonk_client(redis_url, config_path) as pubsub:
        chosen = chosen_entries(pubsub, route, ids, all_)
        count = discard_entries(pubsub, route, chosen)
    click.echo(f"route {route}: {count} dead letter(s) discarded")
