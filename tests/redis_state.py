"""Whole-database snapshots, to check that a refused operation changed nothing in Redis."""

from __future__ import annotations

import redis


def snapshot(url: str) -> dict[bytes, bytes]:
    """Every key with its DUMP, so two snapshots compare equal only when nothing changed."""
    client = redis.Redis.from_url(url)
    try:
        return {k: client.dump(k) for k in sorted(client.keys())}
    finally:
        client.close()
