"""One place that turns a Redis URL (the config's ``redis:``) into redis-py clients.

Schemes:

- ``redis://``, ``rediss://``, ``unix://``: one server, through a *blocking* connection pool
  (past ``max_connections`` a caller waits up to ``timeout`` seconds for a free connection instead
  of failing with "Too many connections").
- ``redis+sentinel://[USER:PASSWORD@]HOST:PORT[,HOST:PORT...]/SERVICE[/DB][?OPTIONS]`` (and
  ``rediss+sentinel://``, TLS to the sentinels and the servers): the current master of SERVICE, through
  redis-py's own ``Sentinel(...).master_for(...)`` with a blocking pool. After a failover, connections
  to the old master fail once and the next ones go to the new master (asked from the sentinels).
  ``USER:PASSWORD`` (or ``?password=``/``?username=``) authenticates to the Redis servers;
  ``?sentinel_password=``/``?sentinel_username=`` to the sentinels. Default sentinel port 26379.
- ``redis+cluster://[USER:PASSWORD@]HOST:PORT[,HOST:PORT...][?OPTIONS]`` (and ``rediss+cluster://``):
  redis-py's ``RedisCluster`` seeded with those nodes (db 0 only). redis-py's cluster clients have no
  blocking pool: each node gets up to ``max(max_connections, CLUSTER_MIN_CONNECTIONS)`` connections and
  past that redis-py raises an error instead of waiting. The sync client connects when constructed.

Other query options (``socket_timeout``, ``health_check_interval``, ``client_name``, ...) are redis-py's
own URL options and apply to every scheme.

:func:`parse_target` checks everything a client would only find out when it connects (ports, db
numbers, option names and values), so ``thoonk-bridge check`` refuses what ``run`` could not use.
Messages show a URL through :func:`redact_url` (no password, no secret option), never as written.

Part of the Thoonk core (it imports nothing of the application); ``thoonk_bridge.redis_client``
re-exports it for the application and the plugins.
"""

from __future__ import annotations

import difflib
import inspect
import random
from dataclasses import dataclass, field
from typing import Any, TypeAlias
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.retry
import redis.asyncio.sentinel
import redis.cluster
import redis.sentinel
from redis.backoff import NoBackoff
from redis.connection import Connection, SSLConnection, UnixDomainSocketConnection, parse_url

from .redact import redact_url

__all__ = [
    "CLUSTER_MIN_CONNECTIONS",
    "AsyncRedis",
    "RedisTarget",
    "async_client",
    "async_pubsub_client",
    "describe",
    "is_cluster",
    "parse_target",
    "redact_url",
    "sync_client",
]

SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
CLUSTER_MIN_CONNECTIONS = 1000  # per cluster node (redis-py's asyncio cluster client cannot wait for one)
_SENTINEL_ONLY = ("sentinel_password", "sentinel_username")


class BlockingSentinelConnectionPool(redis.sentinel.SentinelConnectionPool, redis.BlockingConnectionPool):
    """redis-py's Sentinel pool (master discovery, failover) with the blocking pool's waiting."""


class AsyncBlockingSentinelConnectionPool(
    redis.asyncio.sentinel.SentinelConnectionPool, redis.asyncio.BlockingConnectionPool
):
    """The asyncio twin of :class:`BlockingSentinelConnectionPool`."""


# What async_client returns: one server (or Sentinel's master) or a cluster; PluginContext.redis is one.
AsyncRedis: TypeAlias = redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster


class AsyncRedisCluster(redis.asyncio.cluster.RedisCluster):
    """redis-py's asyncio cluster client, closable like a ``Redis`` (``aclose(close_connection_pool=...)``)
    so code written for one server (the daemon, plugins) closes it the same way."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose()


@dataclass(frozen=True)
class RedisTarget:
    """A parsed Redis URL: ``kind`` is ``server``, ``sentinel`` or ``cluster``."""

    kind: str
    url: str
    hosts: tuple[tuple[str, int], ...] = ()
    service: str = ""
    ssl: bool = False
    options: dict[str, Any] = field(default_factory=dict)  # redis-py connection kwargs
    sentinel_options: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """For messages: the URL without its password or secret options (:func:`redact_url`)."""
        return redact_url(self.url)


def _port(text: str, default: int, part: str) -> int:
    if not text:
        return default
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"bad port {text!r} in {part!r}: a number from 1 to 65535")
    return int(text)


def _hosts(netloc: str, default_port: int, url: str) -> tuple[tuple[str, int], ...]:
    out = []
    for part in netloc.split(","):
        part = part.strip()
        if not part:
            continue
        if part.startswith("["):  # [v6]:port
            host, _, rest = part[1:].partition("]")
            port = rest.removeprefix(":")
        else:
            host, _, port = part.partition(":")
        if not host:
            raise ValueError(f"no host in {part!r}")
        out.append((unquote(host), _port(port, default_port, part)))
    if not out:
        raise ValueError("no host: expected HOST[:PORT][,HOST[:PORT]...]")
    return tuple(out)


def _init_params(cls: type) -> set[str]:
    """Keyword arguments ``cls(...)`` accepts, following ``**kwargs`` up the class hierarchy."""
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters.values()
        names.update(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    names.discard("self")
    return names


# What a URL's query may set: the connection's own arguments plus the pool's.
_POOL_OPTIONS = {"max_connections", "timeout"}
_OPTIONS = {
    "tcp": _init_params(Connection) | _POOL_OPTIONS,
    "ssl": _init_params(SSLConnection) | _POOL_OPTIONS,
    "unix": _init_params(UnixDomainSocketConnection) | _POOL_OPTIONS,
}


_CONNECTION_CLASSES: dict[str, type[Connection | UnixDomainSocketConnection]] = {
    "tcp": Connection, "ssl": SSLConnection, "unix": UnixDomainSocketConnection,
}


def _check_options(options: dict[str, Any], transport: str) -> None:
    known = _OPTIONS[transport]
    for name in options:
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"unknown option {name!r} in the query{hint}")
    # The connection object the clients will build, built now (it does not connect): what it
    # refuses (ssl_cert_reqs=bogus, protocol=7...) is refused by `check` rather than by `run`.
    kwargs = {k: v for k, v in options.items() if k not in _POOL_OPTIONS}
    if transport != "unix":
        kwargs.setdefault("host", "localhost")
    try:
        _CONNECTION_CLASSES[transport](**kwargs)
    except Exception as exc:  # noqa: BLE001 - redis-py raises RedisError, ValueError, TypeError...
        raise ValueError(f"the query's options are refused by redis-py: {exc}") from None


def parse_target(url: str) -> RedisTarget:
    """Parse ``url`` (see the module doc); ValueError says what is wrong, showing the URL without
    its secrets."""
    try:
        return _parse_target(url)
    except ValueError as exc:
        raise ValueError(f"{exc} (in {redact_url(url)})") from None


def _parse_target(url: str) -> RedisTarget:
    parts = urlsplit(url)
    scheme = parts.scheme
    if scheme in ("redis", "rediss", "unix"):
        _check_server_url(url)
        return RedisTarget("server", url)
    if scheme not in SENTINEL_SCHEMES + CLUSTER_SCHEMES:
        raise ValueError(f"unsupported Redis URL scheme {scheme!r}")
    userinfo, at, hostlist = parts.netloc.rpartition("@")
    if not at:
        userinfo = ""
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    sentinel_options: dict[str, Any] = {}
    for key in _SENTINEL_ONLY:
        if key in query:
            sentinel_options[key.removeprefix("sentinel_")] = query.pop(key)
    # redis-py's own parsing of user:password and the query options, on a stand-in URL.
    stand_in = f"redis://{userinfo + '@' if userinfo else ''}localhost/?{urlencode(query)}"
    options = {k: v for k, v in parse_url(stand_in).items() if k not in ("host", "port", "connection_class")}
    ssl = scheme.startswith("rediss")
    _check_options(options, "ssl" if ssl else "tcp")
    if scheme in CLUSTER_SCHEMES:
        if parts.path.strip("/"):
            raise ValueError("a cluster URL takes no path (a cluster has only db 0)")
        if options.get("db"):
            raise ValueError("a cluster has only db 0")
        options.pop("db", None)
        return RedisTarget("cluster", url, _hosts(hostlist, 6379, url), ssl=ssl, options=options)
    path = [unquote(p) for p in parts.path.split("/") if p]
    if not path or len(path) > 2:
        raise ValueError("a sentinel URL needs /SERVICE_NAME[/DB] after the hosts")
    if len(path) == 2:
        if not path[1].isdigit():
            raise ValueError(f"bad db number {path[1]!r}: a number from 0")
        options.setdefault("db", int(path[1]))
    return RedisTarget("sentinel", url, _hosts(hostlist, 26379, url), service=path[0], ssl=ssl,
                       options=options, sentinel_options=sentinel_options)


def _check_server_url(url: str) -> None:
    """What redis-py's ``from_url`` would only find out when connecting, found now."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        if not parts.path:
            raise ValueError("a unix:// Redis URL needs a socket path (unix:///run/redis.sock)")
    else:
        host_port = parts.netloc.rpartition("@")[2]
        if not parts.hostname and "@" not in parts.netloc:  # redis://:password@/0 is localhost
            raise ValueError("the Redis URL has no host")
        if host_port.startswith("["):
            port_text = host_port.partition("]")[2].removeprefix(":")
        else:
            port_text = host_port.partition(":")[2]
        _port(port_text, 6379, host_port)
        db = unquote(parts.path).strip("/")
        if db and not db.isdigit():
            raise ValueError(f"bad db number {db!r} after the host: a number from 0 (redis://host:6379/0)")
    options = parse_url(url)  # redis-py's own parsing: option values (socket_timeout=abc...)
    transport = "unix" if parts.scheme == "unix" else "ssl" if parts.scheme == "rediss" else "tcp"
    _check_options({k: v for k, v in options.items() if k != "connection_class"}, transport)


def _sentinel_kwargs(target: RedisTarget, extra: dict[str, Any]) -> dict[str, Any]:
    kwargs = {k: v for k, v in {**target.options, **extra}.items() if k.startswith("socket_")}
    kwargs.update(target.sentinel_options)
    if target.ssl:
        kwargs["ssl"] = True
    return kwargs


def _cluster_kwargs(target: RedisTarget, extra: dict[str, Any], max_connections: int) -> dict[str, Any]:
    kwargs = {**target.options, **extra}
    kwargs["max_connections"] = max(max_connections, CLUSTER_MIN_CONNECTIONS)
    if target.ssl:
        kwargs["ssl"] = True
    return kwargs


def async_client(url: str, *, max_connections: int = 100, timeout: float | None = None,
                 **kwargs: Any) -> AsyncRedis:
    """An asyncio client for ``url``. ``max_connections``/``timeout``: the blocking pool's size and
    wait (None: wait as long as it takes); other keyword arguments go to redis-py's connections."""
    target = parse_target(url)
    if target.kind == "server":
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=timeout, **kwargs)
        return redis.asyncio.Redis(connection_pool=pool)
    if target.kind == "sentinel":
        sentinel = redis.asyncio.sentinel.Sentinel(list(target.hosts),
                                                   sentinel_kwargs=_sentinel_kwargs(target, kwargs))
        options = {**target.options, **kwargs, "max_connections": max_connections, "timeout": timeout}
        if target.ssl:
            options["ssl"] = True
        client: AsyncRedis = sentinel.master_for(
            target.service, connection_pool_class=AsyncBlockingSentinelConnectionPool, **options)
        return client
    nodes = [redis.asyncio.cluster.ClusterNode(h, p) for h, p in target.hosts]
    return AsyncRedisCluster(startup_nodes=nodes, **_cluster_kwargs(target, kwargs, max_connections))


def sync_client(url: str, *, max_connections: int = 100, timeout: float | None = None,
                **kwargs: Any) -> redis.Redis | redis.cluster.RedisCluster:
    """A sync client for ``url`` (thread-safe; blocking pools as in :func:`async_client`)."""
    target = parse_target(url)
    if target.kind == "server":
        pool = redis.BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=timeout,
                                                     **kwargs)
        return redis.Redis(connection_pool=pool)
    if target.kind == "sentinel":
        sentinel = redis.sentinel.Sentinel(list(target.hosts), sentinel_kwargs=_sentinel_kwargs(target, kwargs))
        options = {**target.options, **kwargs, "max_connections": max_connections, "timeout": timeout}
        if target.ssl:
            options["ssl"] = True
        sync: redis.Redis = sentinel.master_for(
            target.service, connection_pool_class=BlockingSentinelConnectionPool, **options)
        return sync
    nodes = [redis.cluster.ClusterNode(h, p) for h, p in target.hosts]
    return redis.cluster.RedisCluster(startup_nodes=nodes, **_cluster_kwargs(target, kwargs, max_connections))


def is_cluster(client: Any) -> bool:
    return isinstance(client, redis.asyncio.cluster.RedisCluster | redis.cluster.RedisCluster)


def describe(client: Any) -> str:
    """host:port, unix:path, sentinel:SERVICE or cluster:host:port,... that a client talks to."""
    if is_cluster(client):
        try:
            nodes = client.get_nodes() or client.nodes_manager.startup_nodes.values()
            return "cluster:" + ",".join(sorted(f"{n.host}:{n.port}" for n in nodes))
        except Exception:  # noqa: BLE001 - only for messages
            return "cluster"
    pool = getattr(client, "connection_pool", None)
    if pool is None:
        return repr(client)
    service = getattr(pool, "service_name", None)
    if service is not None:
        sentinels = getattr(pool.sentinel_manager, "sentinels", [])
        hosts = ",".join(f"{s.connection_pool.connection_kwargs.get('host')}:"
                         f"{s.connection_pool.connection_kwargs.get('port')}" for s in sentinels)
        return f"sentinel:{hosts}/{service}"
    kw = pool.connection_kwargs
    if kw.get("path"):
        return f"unix:{kw['path']}"
    return f"{kw.get('host', 'localhost')}:{kw.get('port', 6379)}"


def _no_retry(kwargs: dict[str, Any]) -> dict[str, Any]:
    kwargs = dict(kwargs)
    kwargs["retry"] = redis.asyncio.retry.Retry(NoBackoff(), 0)
    kwargs["retry_on_error"] = []
    return kwargs


async def async_pubsub_client(client: Any) -> redis.asyncio.Redis:
    """A one-connection client for a pub/sub subscription, on the same server as ``client``,
    without retries (so a dropped connection shows instead of silently losing messages).

    - one server: the same address and options;
    - Sentinel: the service's master as it is now (asked from the sentinels);
    - Cluster: one primary picked at random. Thoonk publishes with plain PUBLISH, which a cluster
      forwards to every node, so any node hears every feed's events.
    """
    if isinstance(client, redis.asyncio.cluster.RedisCluster):
        await client.initialize()
        node = random.choice(client.get_primaries())  # noqa: S311 - spreading, not security
        kwargs = _no_retry(node.connection_kwargs)
        kwargs.pop("max_connections", None)
        return redis.asyncio.Redis(connection_pool=redis.asyncio.ConnectionPool(
            connection_class=node.connection_class, **kwargs))
    pool = client.connection_pool
    kwargs = _no_retry(pool.connection_kwargs)
    if isinstance(pool, redis.asyncio.sentinel.SentinelConnectionPool):
        kwargs.pop("connection_pool", None)
        kwargs.pop("connection_class", None)
        return redis.asyncio.Redis(connection_pool=redis.asyncio.sentinel.SentinelConnectionPool(
            pool.service_name, pool.sentinel_manager, connection_class=pool.connection_class, **kwargs))
    return redis.asyncio.Redis(connection_pool=redis.asyncio.ConnectionPool(
        connection_class=pool.connection_class, **kwargs))


def sync_pubsub(client: Any) -> Any:
    """A ``PubSub`` for the sync listener thread: the client's own, or on a cluster one primary's."""
    if isinstance(client, redis.cluster.RedisCluster):
        node = random.choice(client.get_primaries())  # noqa: S311
        return node.redis_connection.pubsub()
    return client.pubsub()
