"""``thoonk-bridge websub subscriptions [TOPIC]``: the hub's subscriptions, never their secrets."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click

from thoonk_bridge.cli import bridge_redis_url, with_redis
from thoonk_bridge.redis_client import sync_client

from .store import SUBS, HubStore, decode_hash, s, sub_key, topic_key
from .urls import normalize_url


def public_view(h: dict[str, str], now: float | None = None) -> dict[str, Any]:
    """What an operator may see of a subscription: no secret, no callback path or query (capability URLs)."""
    now = time.time() if now is None else now
    expires = float(h.get("expires") or 0)
    parts = urlsplit(h.get("callback", ""))
    return {
        "id": h.get("sid", ""),
        "topic": h.get("topic", ""),
        "callback_host": f"{parts.scheme}://{parts.netloc}" if parts.netloc else "",
        "state": "active" if expires > now else "expired",
        "lease_end": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires)) if expires else "",
        "lease_seconds": int(float(h.get("lease") or 0)),
        "signed": bool(h.get("secret")),
        "failures": int(h.get("failures") or 0),
        "total_failures": int(h.get("total_failures") or 0),
        "delivered": int(h.get("delivered") or 0),
        "last_status": h.get("last_status", ""),
    }


def list_subscriptions(redis_url: str, topic: str | None = None) -> list[dict[str, Any]]:
    """Every hub subscription (or those of ``topic``), oldest lease end first, without secrets."""
    client = sync_client(redis_url)
    try:
        key = topic_key(normalize_url(topic)) if topic else SUBS
        out = []
        for sid in (s(x) for x in client.zrange(key, 0, -1)):
            h = decode_hash(client.hgetall(sub_key(sid)))
            if h:
                h["sid"] = sid
                out.append(public_view(h))
        return out
    finally:
        client.close()


@click.group("websub")
def websub_cli() -> None:
    """WebSub hub: what third parties subscribed to."""


@websub_cli.command("subscriptions")
@click.argument("topic", required=False)
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@with_redis
def subscriptions(topic: str | None, as_json: bool, redis_url: str | None, config_path: Path) -> None:
    """List the hub's subscriptions (of TOPIC, a topic URL), without secrets or callback paths."""
    with bridge_redis_url(redis_url, config_path) as url:
        rows = list_subscriptions(url, topic)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no subscriptions" + (f" to {topic}" if topic else ""))
    for row in rows:
        signed = "signed" if row["signed"] else "unsigned"
        last = row["last_status"] or "-"
        click.echo(f"{row['topic']}  {row['callback_host']}  {row['state']} until {row['lease_end']}  {signed}  "
                   f"delivered {row['delivered']}, failures {row['failures']} (last status {last})")


__all__ = ["HubStore", "list_subscriptions", "public_view", "websub_cli"]
