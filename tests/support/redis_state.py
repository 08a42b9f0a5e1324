"""Whole-database snapshots, to check that a refused operation changed nothing in Redis."""

from __future__ import annotations

import redis
import redis.cluster

from thoonk_bridge.redis_client import sync_client


def snapshot(url: str) -> dict[bytes, bytes]:
    """Every key with its DUMP, so two snapshots compare equal only when nothing changed
    (on a cluster: the keys of every primary)."""
    client = sync_client(url)
    try:
        if isinstance(client, redis.cluster.RedisCluster):
            keys = client.keys(target_nodes=redis.cluster.RedisCluster.PRIMARIES)
        else:
            keys = client.keys()
        return {k: client.dump(k) for k in sorted(keys)}
    finally:
        client.close()
