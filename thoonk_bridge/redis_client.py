"""One place that turns a Redis URL (the config's ``redis:``) into redis-py clients.

The code lives in the Thoonk core, :mod:`thoonk_bridge.thoonk.redis_client` (the core connects to
Redis and must not import the application); this module re-exports it for the engine, the CLI and
the plugins. Schemes: ``redis://``, ``rediss://``, ``unix://``, ``redis+sentinel://`` and
``redis+cluster://`` (see the core module).
"""

from __future__ import annotations

from thoonk_bridge.thoonk.redis_client import (
    CLUSTER_MIN_CONNECTIONS,
    CLUSTER_SCHEMES,
    SENTINEL_SCHEMES,
    AsyncBlockingSentinelConnectionPool,
    AsyncRedis,
    AsyncRedisCluster,
    BlockingSentinelConnectionPool,
    RedisTarget,
    async_client,
    async_pubsub_client,
    describe,
    is_cluster,
    parse_target,
    redact_url,
    sync_client,
    sync_pubsub,
)

__all__ = [
    "CLUSTER_MIN_CONNECTIONS",
    "CLUSTER_SCHEMES",
    "SENTINEL_SCHEMES",
    "AsyncBlockingSentinelConnectionPool",
    "AsyncRedis",
    "AsyncRedisCluster",
    "BlockingSentinelConnectionPool",
    "RedisTarget",
    "async_client",
    "async_pubsub_client",
    "describe",
    "is_cluster",
    "parse_target",
    "redact_url",
    "sync_client",
    "sync_pubsub",
]
