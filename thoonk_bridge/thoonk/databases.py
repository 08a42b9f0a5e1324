"""Same-named feeds in the other logical databases of one Redis server.

Redis pub/sub is server-wide: a ``PUBLISH`` reaches every subscriber of the channel whatever database
either side has selected, and the Thoonk channels (``feed.publish:NAME``, ...) carry no database
number. So a subscriber on db 7 also hears the events of a feed of the same name in db 11. This
module finds such feeds, so that the daemon and ``check --live`` can warn about them and a
:class:`~thoonk_bridge.thoonk.events.AsyncEvents` stream can be told to check each event against its
own database (``confirm=True``).

Only ``INFO keyspace`` (which databases hold keys) and one ``SISMEMBER feeds NAME`` per name and
database are sent, on one pooled connection that is dropped afterwards so that it never goes back to
the pool with another database selected. Redis Cluster has database 0 only: nothing to find.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import redis
import redis.asyncio

from .keys import FEEDS
from .redis_client import is_cluster
from .text import as_text

__all__ = ["client_database", "other_databases_with_feeds", "describe_shared_feeds"]


def client_database(client: Any) -> int:
    """The database number ``client``'s connections select (0 when it cannot tell: Cluster)."""
    pool = getattr(client, "connection_pool", None)
    kwargs = getattr(pool, "connection_kwargs", None) or {}
    try:
        return int(kwargs.get("db") or 0)
    except (TypeError, ValueError):
        return 0


async def other_databases_with_feeds(client: redis.asyncio.Redis, names: Iterable[str]) -> dict[int, list[str]]:
    """``{db: [feed names]}``: the other databases of ``client``'s server whose ``feeds`` set lists one
    of ``names``. Empty on Redis Cluster and when no other database holds keys.

    Raises redis errors (e.g. ``INFO`` refused by an ACL) to the caller, which decides how loud to be.
    """
    wanted = sorted(set(names))
    if not wanted or is_cluster(client):
        return {}
    own = client_database(client)
    keyspace = await client.info("keyspace")
    others = sorted(
        db for db in (_db_number(key) for key in keyspace) if db is not None and db != own
    )
    if not others:
        return {}
    found: dict[int, list[str]] = {}
    pool = client.connection_pool
    connection = await pool.get_connection()
    try:
        for db in others:
            await connection.send_command("SELECT", db)
            await connection.read_response()
            for name in wanted:
                await connection.send_command("SISMEMBER", FEEDS, name)
                if int(await connection.read_response()):
                    found.setdefault(db, []).append(name)
    finally:
        # Never hand a connection back with another database selected: drop it, the pool reconnects.
        await connection.disconnect()
        await pool.release(connection)
    return found


def _db_number(key: object) -> int | None:
    text = as_text(key)
    if text.startswith("db") and text[2:].isdigit():
        return int(text[2:])
    return None


def describe_shared_feeds(own_db: int, found: dict[int, list[str]]) -> str:
    """One line for logs and ``check --live``: which databases hold which of our feed names."""
    where = "; ".join(f"db {db}: {', '.join(names)}" for db, names in sorted(found.items()))
    return (
        f"other databases of this Redis server hold feeds named like ours (this is db {own_db}): {where}. "
        "Redis pub/sub is server-wide and Thoonk channels carry no database number, so their events "
        "reach our subscribers too (see docs/thoonk-keys.md, 'One server, several databases')"
    )
