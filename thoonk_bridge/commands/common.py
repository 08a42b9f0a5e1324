"""What the commands share: one-line failures, the bridge's Redis, times shown to people.

Plugin commands (``Plugin.cli``) use :func:`with_redis` and :func:`bridge_redis_url` (also importable
from ``thoonk_bridge.cli``) to reach the bridge's Redis the way the engine's commands do.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import click

from thoonk_bridge.redact import redact_text

DEFAULT_CONFIG = "config/example.yaml"
REDIS_IN_USE = "thoonk_bridge.redis_url"  # ctx.meta key: the Redis URL the running command talks to


def fail(message: str) -> NoReturn:
    click.echo(f"error: {redact_text(message)}", err=True)
    sys.exit(1)


def warn(message: str) -> None:
    click.echo(f"warning: {redact_text(message)}", err=True)


def redis_failure(exc: Exception) -> str | None:
    """The one line for a Redis that cannot be reached or refuses us, or None if ``exc`` is not that."""
    import redis.exceptions

    from thoonk_bridge.thoonk.exceptions import RedisUnavailable

    if not isinstance(exc, redis.exceptions.RedisError | redis.exceptions.RedisClusterException | RedisUnavailable):
        return None
    ctx = click.get_current_context(silent=True)
    url = ctx.meta.get(REDIS_IN_USE) if ctx is not None else None
    where = f"redis {url}" if url else "redis"
    if isinstance(exc, redis.exceptions.AuthenticationError | redis.exceptions.AuthorizationError):
        return f"{where}: access refused: {exc}"
    if isinstance(exc, RedisUnavailable):
        return f"{where} is unreachable: {exc.reason}"
    if isinstance(
        exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError | redis.exceptions.RedisClusterException
    ):
        return f"{where} is unreachable: {exc}"
    return f"{where}: {type(exc).__name__}: {exc}"


def print_problems(exc: Any) -> None:
    for problem in exc.problems:
        click.echo(str(problem), err=True)
    click.echo(f"{len(exc.problems)} problem(s) found", err=True)


redis_options = [
    click.option(
        "--redis",
        "redis_url",
        envvar="THOONK_BRIDGE_REDIS",
        help="Redis URL (default: the config's redis, or its embedded server).",
    ),
    click.option(
        "--config",
        "config_path",
        envvar="THOONK_BRIDGE_CONFIG",
        default=DEFAULT_CONFIG,
        show_default=True,
        type=click.Path(dir_okay=False, path_type=Path),
        help="Config whose Redis to use when --redis is not given.",
    ),
]


def with_redis(fn: Any) -> Any:
    for option in reversed(redis_options):
        fn = option(fn)
    return fn


@contextmanager
def bridge_redis_url(redis_url: str | None, config_path: Path) -> Iterator[str]:
    """The URL of the bridge's Redis: ``--redis``, else the config's ``redis:``, else its embedded
    server (started for the duration of the command when the daemon is not running). For plugin
    commands too (``Plugin.cli``)."""
    from thoonk_bridge.thoonk.embedded import EmbeddedRedis, EmbeddedRedisError

    ctx = click.get_current_context(silent=True)
    if redis_url:
        check_redis_url(redis_url)
        if ctx is not None:
            ctx.meta[REDIS_IN_USE] = redact_text(redis_url)
        yield redis_url
        return
    if not config_path.exists():
        fail(f"no --redis given and config {config_path} does not exist")
    from thoonk_bridge.config import ConfigError, load_config

    try:
        loaded = load_config(config_path)
    except ConfigError as exc:
        print_problems(exc)
        sys.exit(1)
    for warning in loaded.warnings:
        warn(warning)
    if loaded.redis:
        if ctx is not None:
            ctx.meta[REDIS_IN_USE] = redact_text(loaded.redis)
        yield loaded.redis
        return
    server = EmbeddedRedis(Path(loaded.state_dir) / "redis")
    if ctx is not None:
        ctx.meta[REDIS_IN_USE] = f"embedded ({server.url})"
    if server._ping():  # noqa: SLF001 - the daemon's embedded server is already up
        yield server.url
        return
    try:
        server.start()
    except EmbeddedRedisError as exc:
        fail(str(exc))
    try:
        yield server.url
    finally:
        server.stop()


def check_redis_url(url: str) -> None:
    """A ``--redis`` URL is checked like the config's ``redis:`` (one line naming what is wrong)."""
    from thoonk_bridge.redis_client import parse_target

    try:
        parse_target(url)
    except ValueError as exc:
        fail(f"--redis: {exc}")


@contextmanager
def thoonk_client(redis_url: str | None, config_path: Path) -> Iterator[Any]:
    """A sync Thoonk client on the bridge's Redis (see :func:`bridge_redis_url`). Redis errors
    become one line in :meth:`thoonk_bridge.cli.BridgeCommands.invoke`."""
    from thoonk_bridge.thoonk import Thoonk

    with bridge_redis_url(redis_url, config_path) as url:
        client = Thoonk(url=url)
        try:
            yield client
        finally:
            client.close()


def when(stamp: float | None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp)) if stamp else "?"


config_argument = click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
env_file_option = click.option(
    "--env-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="KEY=VALUE file read before ${VAR} substitution (the environment wins).",
)


def load_or_fail(config: Path, env_file: Path | None) -> Any:
    """The loaded config (``thoonk_bridge.config.BridgeConfig``), or every problem printed and exit 1."""
    from thoonk_bridge.config import ConfigError, load_config

    try:
        return load_config(config, env_file=env_file)
    except ConfigError as exc:
        print_problems(exc)
        sys.exit(1)
    except OSError as exc:
        fail(f"{config}: {exc.strerror or exc}")
