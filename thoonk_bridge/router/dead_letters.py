"""Storing what a route cannot deliver in its dead-letter feed (the operator side: thoonk_bridge.deadletters)."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from thoonk_bridge.keys import dead_letter_feed

if TYPE_CHECKING:
    from thoonk_bridge.thoonk import AsyncThoonk

DEAD_LETTER_MAX = 10_000  # records a route's dead-letter feed keeps (the oldest go first)


async def store_dead_letter(
    thoonk: AsyncThoonk, route: str, item_id: str, payload: str | None, reason: str, *,
    sink: str | None = None, kind: str | None = None, entry_id: str | None = None,
) -> None:
    """Append an undeliverable item to the route's dead-letter feed (JSON with id, reason, payload,
    and when known the refusing ``sink`` and the event ``kind``: what a replay needs). ``entry_id``:
    rewrite that entry instead of adding one (a replay refused again; see deadletters.py).

    The feed keeps the newest ``DEAD_LETTER_MAX`` records (its ``max_length``, set when it is created)."""
    feed = await thoonk.feed(dead_letter_feed(route), {"max_length": DEAD_LETTER_MAX})
    record: dict[str, Any] = {"id": item_id, "reason": reason, "payload": payload, "at": time.time()}
    if sink is not None:
        record["sink"] = sink
    if kind is not None:
        record["kind"] = kind
    await feed.publish(json.dumps(record, ensure_ascii=False), id=entry_id)
