"""The ``thoonk-bridge`` command. Thin: each subcommand parses arguments and calls the engine.

Exit codes: 0 success, 1 the operation failed (bad config, Redis unreachable, unknown feed),
2 bad arguments (click's usage errors).

Every failure is one ``error: ...`` line on stderr, never a traceback (set ``THOONK_BRIDGE_DEBUG=1``
to get the traceback of an unexpected error). Nothing printed shows a secret: URLs go through
:func:`thoonk_bridge.redact.redact_text` (no password, user info or query values).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from thoonk_bridge import __version__
from thoonk_bridge.commands.check import check as check_command
from thoonk_bridge.commands.common import (
    DEFAULT_CONFIG,
    bridge_redis_url,
    config_argument,
    env_file_option,
    fail,
    load_or_fail,
    redis_failure,
    thoonk_client,
    warn,
    when,
    with_redis,
)
from thoonk_bridge.commands.deadletters import deadletters as deadletters_command
from thoonk_bridge.commands.fleet import fleet as fleet_command
from thoonk_bridge.commands.trace import trace as trace_command
from thoonk_bridge.thoonk.keys import FeedKeys

# Plugin commands (Plugin.cli) import the Redis helpers from here.
__all__ = ["DEFAULT_CONFIG", "BridgeCommands", "bridge_redis_url", "main", "with_redis"]



class BridgeCommands(click.Group):
    """The engine's commands plus each installed plugin's own (``Plugin.cli``), e.g. ``websub``.

    Runs every command so that a failure is one clear line: Redis unreachable or refusing us
    (whichever command, plugins' included), or anything unexpected.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:
            if os.environ.get("THOONK_BRIDGE_DEBUG"):
                raise
            message = redis_failure(exc)
            if message is None:
                message = f"{type(exc).__name__}: {exc} (THOONK_BRIDGE_DEBUG=1 shows the traceback)"
            fail(message)

    def _plugin_commands(self) -> dict[str, click.Command]:
        from thoonk_bridge.discovery import discover_plugins

        # A plugin that cannot be loaded has no commands; `thoonk-bridge plugins` says why.
        plugins = discover_plugins({})
        commands = {}
        for cls in plugins.values():
            command = getattr(cls, "cli", None)
            if isinstance(command, click.Command) and command.name:
                commands[command.name] = command
        return commands

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self._plugin_commands()})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return super().get_command(ctx, cmd_name) or self._plugin_commands().get(cmd_name)


@click.group(cls=BridgeCommands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="thoonk-bridge", message="%(prog)s %(version)s")
def main() -> None:
    """thoonk-bridge: Thoonk feeds on Redis, bridged to XMPP PubSub, WebSub and Atom/RSS."""
    from thoonk_bridge.logs import configure_logging

    # What the commands' libraries and plugins log (check --live...): warnings and worse, redacted
    # like the daemon's log, on stderr so that stdout stays the command's output. `run` sets its own.
    configure_logging("warning", "console", stream=sys.stderr)


# ---------------------------------------------------------------------------- run


@main.command()
@config_argument
@env_file_option
def run(config: Path, env_file: Path | None) -> None:
    """Run the daemon on CONFIG until SIGTERM (SIGHUP reloads CONFIG)."""
    from thoonk_bridge.daemon import serve
    from thoonk_bridge.logs import configure_logging

    loaded = load_or_fail(config, env_file)
    configure_logging(loaded.log_level, loaded.log_format)
    use_event_loop()
    sys.exit(asyncio.run(serve(config, env_file=env_file)))


def use_event_loop() -> str:
    """uvloop when it is installed (``pip install 'thoonk-bridge[fast]'``), unless
    ``THOONK_BRIDGE_EVENT_LOOP=asyncio``; returns the loop's name."""
    if os.environ.get("THOONK_BRIDGE_EVENT_LOOP", "auto") != "asyncio":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
            return "uvloop"
    return "asyncio"


# ---------------------------------------------------------------------------- plugins, version


@main.command()
def plugins() -> None:
    """List installed plugins with their endpoint kinds and versions."""
    from thoonk_bridge.discovery import discover_plugins

    broken: dict[str, str] = {}
    found = discover_plugins(broken)
    for name, why in sorted(broken.items()):
        warn(f"plugin {name!r} is installed but cannot be loaded ({why})")
    click.echo(f"(engine) {__version__}")
    for name, cls in sorted(found.items()):
        click.echo(f"{name} {cls.version}: {cls.description}")
        for kind in cls.endpoint_kinds:
            click.echo(f"    {_kind_line(kind)}")


def _kind_line(kind: Any) -> str:
    roles = "/".join(r for r, ok in (("source", kind.can_source), ("sink", kind.can_sink)) if ok)
    return f"{kind.name}: {roles} - {kind.description}"


@main.command()
def version() -> None:
    """Print the version."""
    click.echo(f"thoonk-bridge {__version__}")


@main.command()
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="Write it to FILE, not stdout.")
def schema(output: Path | None) -> None:
    """Print the JSON Schema of the config file (engine keys, installed plugins, endpoints) for editors."""
    from thoonk_bridge.config.json_schema import schema_text
    from thoonk_bridge.discovery import discover_plugins

    broken: dict[str, str] = {}
    text = schema_text(discover_plugins(broken))
    for name, why in sorted(broken.items()):
        warn(f"plugin {name!r} is installed but cannot be loaded ({why}); its settings are not in the schema")
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        fail(f"cannot write {output}: {exc.strerror or exc}")


# ---------------------------------------------------------------------------- feeds


@main.command()
@click.argument("feed")
@click.argument("payload")
@click.option("--id", "item_id", help="Item id (default: a new one). An existing id is an edit.")
@with_redis
def publish(feed: str, payload: str, item_id: str | None, redis_url: str | None, config_path: Path) -> None:
    """Publish PAYLOAD (text, JSON or an Atom entry; '-' reads stdin) to FEED; prints the id."""
    if payload == "-":
        payload = sys.stdin.read()
    if not payload.strip():
        raise click.BadParameter("payload is empty", param_hint="PAYLOAD")
    if item_id is not None and not item_id.strip():
        raise click.BadParameter("id is empty", param_hint="--id")
    with thoonk_client(redis_url, config_path) as pubsub:
        try:
            click.echo(pubsub.feed(feed).publish(payload, id=item_id))
        except (ValueError, TypeError) as exc:
            fail(str(exc))
        except Exception as exc:
            if redis_failure(exc) is not None:
                raise  # the one Redis line (BridgeCommands.invoke)
            fail(f"{type(exc).__name__}: {exc}")


@main.command()
@click.argument("feed")
@click.argument("item_id", metavar="ID")
@with_redis
def retract(feed: str, item_id: str, redis_url: str | None, config_path: Path) -> None:
    """Retract item ID from FEED."""
    with thoonk_client(redis_url, config_path) as pubsub:
        if not pubsub.feed_exists(feed):
            fail(f"feed {feed!r} does not exist")
        handle = pubsub.feed(feed)
        if item_id not in handle.get_ids():
            fail(f"feed {feed!r} has no item {item_id!r}")
        handle.retract(item_id)
        click.echo(f"retracted {item_id} from {feed}")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@with_redis
def feeds(as_json: bool, redis_url: str | None, config_path: Path) -> None:
    """List feeds: name, type and size."""
    with thoonk_client(redis_url, config_path) as pubsub:
        rows = []
        for name in sorted(pubsub.get_feed_names()):
            config = pubsub.get_config(name)
            kind = config.get("type", "feed")
            ids = FeedKeys(name).ids  # a list for queues and jobs, a sorted set for feeds
            size = pubsub.redis.llen(ids) if kind != "feed" else pubsub.redis.zcard(ids)
            rows.append({"name": name, "type": kind, "items": int(size)})
    if as_json:
        click.echo(json.dumps(rows))
        return
    if not rows:
        click.echo("no feeds")
    width = max((len(r["name"]) for r in rows), default=4)
    for row in rows:
        click.echo(f"{row['name']:<{width}}  {row['type']:<11}  {row['items']}")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@with_redis
def status(as_json: bool, redis_url: str | None, config_path: Path) -> None:
    """The fleet: every daemon on this Redis, what it owns and since when, read from Redis."""
    from thoonk_bridge.fleet import read_fleet

    with thoonk_client(redis_url, config_path) as pubsub:
        fleet = read_fleet(pubsub.redis)
    if as_json:
        click.echo(json.dumps(fleet, indent=2))
        return
    if not fleet["instances"]:
        click.echo("no daemon has reported to this Redis")
    for inst in fleet["instances"]:
        state = "STALE" if inst["stale"] else inst.get("phase", "?")
        click.echo(f"{inst['instance']}  {state}  host={inst.get('host')} pid={inst.get('pid')} "
                   f"up since {when(inst.get('started'))}, last heartbeat {inst['heartbeat_age']:.1f} s ago")
        for route, since in sorted(inst.get("owns", {}).items()):
            click.echo(f"    owns {route} since {when(since)}")
    for route, holder in sorted(fleet["leases"].items()):
        click.echo(f"route {route}: held by {holder}")


main.add_command(check_command)
main.add_command(deadletters_command)
main.add_command(trace_command)
main.add_command(fleet_command)

if __name__ == "__main__":  # pragma: no cover
    main(prog_name=os.path.basename(sys.argv[0]))
