"""The engine's own settings models: :class:`HttpSettings`, :class:`EngineSettings`, the route's
:class:`RouteOptions`, the validated :class:`RouteSpec` and :class:`BridgeConfig`.

Every field has a ``description``: ``thoonk-bridge schema``, the option tables in docs/ and the
checks of config/example.yaml are made from them.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from thoonk_bridge.config.errors import _show
from thoonk_bridge.console.settings import ConsoleSettings
from thoonk_bridge.payload import Format
from thoonk_bridge.plugin import Endpoint, Settings
from thoonk_bridge.redact import redact_url
from thoonk_bridge.redis_client import parse_target

__all__ = ["REDIS_SCHEMES", "BridgeConfig", "EngineSettings", "HttpSettings", "RouteOptions", "RouteSpec"]

REDIS_SCHEMES = (
    "redis",
    "rediss",
    "unix",
    "redis+sentinel",
    "rediss+sentinel",
    "redis+cluster",
    "rediss+cluster",
)

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*\.?$")


def _split_listen(value: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port); raises ValueError."""
    if value.startswith("["):
        end = value.find("]")
        if end < 0 or value[end + 1 : end + 2] != ":":
            raise ValueError(f"expected [IPV6]:PORT, got {_show(value)}")
        host, port_text = value[1:end], value[end + 2 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{_show(host)} is not an IPv6 address") from None
    else:
        host, sep, port_text = value.rpartition(":")
        if not sep or not host:
            raise ValueError(f"expected HOST:PORT (e.g. 127.0.0.1:8080), got {_show(value)}")
        if ":" in host:
            raise ValueError(f"write an IPv6 address in brackets: [{host}]:{port_text}")
        if not _HOSTNAME.match(host):
            raise ValueError(f"{_show(host)} is not a valid host name or address")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"port must be a number from 0 to 65535, got {_show(port_text)}")
    return host, int(port_text)


class HttpSettings(BaseModel):
    """``http:``, the one HTTP server all plugins share.

    - ``listen``: ``HOST:PORT`` (``[IPV6]:PORT`` for IPv6) to bind (default ``127.0.0.1:8080``).
    - ``public_url``: the ``http(s)://`` base URL outsiders use to reach it (WebSub callbacks,
      feed links); may have a path prefix when behind a reverse proxy; a trailing ``/`` is dropped.
      Default: ``http://{listen}``.
    - ``header_timeout``: seconds a new connection has to send its first request's headers; then it
      is answered 408 and closed (default 10).
    - ``keepalive_timeout``: seconds an idle kept-alive connection waits for its next request
      (default 75).
    - ``max_connections``: open connections at most; more are answered 503 and closed at once. Kept
      below the process's open-file limit (``ulimit -n``), whatever is configured (default 512).
    - ``request_timeout``: seconds from a request's headers to its answer, reading its body included;
      then 408 (default 60).
    - ``console``: the operator's console page (:class:`~thoonk_bridge.console.settings.ConsoleSettings`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    listen: str = Field(
        default="127.0.0.1:8080", description="HOST:PORT to bind the HTTP server to; IPv6 as [::1]:8080."
    )
    public_url: str | None = Field(
        default=None,
        description="The http(s):// base URL outsiders use to reach the server (WebSub callbacks, feed links), "
        "path prefix allowed; default http://{listen}.",
    )
    header_timeout: float = Field(
        default=10.0, gt=0, le=3600,
        description="Seconds a new connection has to send its first request's headers before it gets 408.",
    )
    keepalive_timeout: float = Field(
        default=75.0, gt=0, le=86400, description="Seconds an idle kept-alive connection waits for its next request."
    )
    max_connections: int = Field(
        default=512, ge=1, le=1_000_000,
        description="Open connections at most, more get 503; also kept below the process's open-file limit.",
    )
    request_timeout: float = Field(
        default=60.0, gt=0, le=86400,
        description="Seconds from a request's headers to its answer, its body included, before it gets 408.",
    )
    console: ConsoleSettings = Field(
        default_factory=lambda: ConsoleSettings(),
        description="The operator's console page (docs/console.md); off by default.",
    )

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        _split_listen(value)
        return value

    @field_validator("public_url")
    @classmethod
    def _check_public_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"must be an http:// or https:// URL, got {_show(value)}")
        if not parts.hostname:
            raise ValueError(f"has no host: {_show(value)}")
        if parts.query or parts.fragment:
            raise ValueError(f"must not have a query or fragment: {_show(value)}")
        try:
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError:
            raise ValueError(f"has an invalid port: {_show(value)}") from None
        return value.rstrip("/")

    @property
    def host(self) -> str:
        """The host part of ``listen`` (without IPv6 brackets)."""
        return _split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return _split_listen(self.listen)[1]

    @property
    def base_url(self) -> str:
        """``public_url``, or ``http://{listen}``; never ends with ``/``."""
        return self.public_url if self.public_url is not None else f"http://{self.listen}"


class EngineSettings(BaseModel):
    """The engine's own top-level keys (everything but ``plugins`` and ``routes``).

    - ``redis``: Redis URL (see :data:`REDIS_SCHEMES`); ``None``: start an embedded Redis.
    - ``state_dir``: directory for the embedded Redis and plugin state; relative to the config file.
    - ``http``: :class:`HttpSettings`.
    - ``drain_seconds``: on SIGTERM, how long to let in-flight work finish (>= 0).
    - ``log_level``: ``debug``, ``info``, ``warning`` or ``error``.
    - ``log_format``: ``auto`` (JSON unless stdout is a terminal), ``json`` or ``console``.
    - ``job_maintenance_seconds``: interval of the Thoonk job maintenance loop (> 0).
    - ``lease_seconds``: with several daemons on one Redis, each route runs on one daemon at a time,
      held by a lease of this many seconds; another daemon takes over within that time when the
      holder dies (> 0, default 15).
    - ``instance``: this daemon's id among those sharing the Redis (default: kept in
      ``state_dir/instance-id``, so a restarted daemon gets its routes back at once).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    redis: str | None = Field(
        default=None,
        description="Redis URL (redis://, rediss://, unix://, redis+sentinel://, redis+cluster:// and their "
        "rediss+ forms); left out, an embedded Redis is started under state_dir.",
    )
    state_dir: Path = Field(
        default=Path("data"),
        description="Directory for the embedded Redis and the plugins' state, relative to the config file.",
    )
    http: HttpSettings = Field(
        default_factory=lambda: HttpSettings(), description="The one HTTP server all plugins share."
    )
    drain_seconds: float = Field(
        default=10.0, ge=0, description="On SIGTERM, seconds in-flight work may take to finish before exiting."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Least severe log level written."
    )
    log_format: Literal["auto", "json", "console"] = Field(
        default="auto", description="Log format; auto writes JSON unless stdout is a terminal."
    )
    job_maintenance_seconds: float = Field(
        default=30.0, gt=0, description="Interval of the maintenance loop for the Thoonk job feeds, in seconds."
    )
    lease_seconds: float = Field(
        default=15.0, gt=0, le=3600,
        description="Seconds a route's lease lives without renewal: another daemon takes over a dead "
        "holder's routes within this time.",
    )
    instance: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9_.:@-]{1,100}$",
        description="This daemon's id among those sharing the Redis; default a random id kept in "
        "state_dir/instance-id.",
    )

    @field_validator("redis")
    @classmethod
    def _check_redis(cls, value: str | None) -> str | None:
        if value is None:
            return None
        # The clients' own parser, so that what passes `check` is what `run` can connect with.
        if urlsplit(value).scheme not in REDIS_SCHEMES:
            raise ValueError(
                f"unsupported Redis URL {redact_url(value)!r}: the scheme must be one of "
                + ", ".join(f"{s}://" for s in REDIS_SCHEMES)
            )
        parse_target(value)  # ValueError: says what and shows the URL without its secrets
        return value


class RouteOptions(BaseModel):
    """A route's own keys, besides ``from`` and ``to``.

    - ``name``: unique; letters, digits, ``_ . -``; starts with a letter or digit; at most 100 chars.
    - ``mirror``: on reconcile, also retract from the sinks what they hold that the route never
      delivered (what the route delivered and the source no longer has is retracted regardless).
    - ``format``: payload format written to the sinks (``atom``, ``json``, ``text``); default: each
      sink's own.
    - ``initial``: what a new route delivers first: ``all`` (default), ``none`` or ``latest:N``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$",
        description="Unique route name: 1 to 100 letters, digits, '_', '.' or '-', starting with a letter or digit.",
    )
    mirror: bool = Field(
        default=False,
        description="On reconcile, also retract from the sinks what they hold that this route never delivered.",
    )
    format: Format | None = Field(
        default=None, description="Payload format written to the sinks (atom, json or text); default each sink's own."
    )
    initial: str = Field(
        default="all",
        json_schema_extra={"pattern": r"^(all|none|latest:[0-9]{1,9})$"},  # for editors; the validator decides
        description="What a new route delivers first: all, none or latest:N (N >= 1).",
    )

    @field_validator("name", mode="before")
    @classmethod
    def _explain_name(cls, value: Any) -> Any:
        if isinstance(value, str) and not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$", value):
            raise ValueError(
                f"invalid route name {_show(value)}: use 1 to 100 letters, digits, '_', '.' or '-', "
                "starting with a letter or digit"
            )
        return value

    @field_validator("initial")
    @classmethod
    def _check_initial(cls, value: str) -> str:
        if value in ("all", "none"):
            return value
        m = re.fullmatch(r"latest:(\d{1,9})", value)
        if not m or int(m.group(1)) < 1:
            raise ValueError(f"expected all, none or latest:N with N >= 1, got {_show(value)}")
        return f"latest:{int(m.group(1))}"

    @property
    def initial_limit(self) -> int | None:
        """``None`` for ``all``, ``0`` for ``none``, ``N`` for ``latest:N``."""
        if self.initial == "all":
            return None
        if self.initial == "none":
            return 0
        return int(self.initial.split(":", 1)[1])


class RouteSpec(RouteOptions):
    """One validated route: :class:`RouteOptions` plus its endpoints.

    - ``source``: the ``from`` endpoint (one).
    - ``sinks``: the ``to`` endpoints (one or more; YAML accepts one endpoint or a list).

    An endpoint is written ``KIND:ADDRESS`` or ``{endpoint: KIND:ADDRESS, option: value, ...}``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    source: Endpoint[Any] = Field(description="The route's one source endpoint (`from`).")
    sinks: list[Endpoint[Any]] = Field(description="The route's sink endpoints (`to`), in the order written.")


class BridgeConfig(EngineSettings):
    """A validated config file.

    - :class:`EngineSettings` fields (``redis``, ``state_dir`` made absolute, ``http``...).
    - ``plugins``: settings of every *enabled* plugin, by name: those under ``plugins:`` and those
      whose endpoint kinds a route uses (with the settings model's defaults when not configured).
    - ``routes``: the :class:`RouteSpec` s, in file order.
    - ``source_file``: the config file (absolute).
    - ``warnings``: what does not stop this config but an operator should hear of (an installed
      plugin that cannot be loaded and that the config does not use); the commands print them and
      the daemon logs them.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    plugins: dict[str, Settings] = Field(
        default_factory=dict, description="Each enabled plugin's settings, under its name."
    )
    routes: list[RouteSpec] = Field(
        default_factory=list, description="Routes move item events from one source to one or more sinks."
    )
    source_file: Path = Field(description="The config file, absolute.")
    warnings: tuple[str, ...] = Field(default=(), description="What does not stop this config but should be heard.")

    @property
    def enabled_plugins(self) -> frozenset[str]:
        """Names of the plugins the daemon must run."""
        return frozenset(self.plugins)

    def route(self, name: str) -> RouteSpec:
        for route in self.routes:
            if route.name == name:
                return route
        raise KeyError(name)


_TOP_KEYS = (*EngineSettings.model_fields, "plugins", "routes")
_ROUTE_KEYS = ("name", "from", "to", *[k for k in RouteOptions.model_fields if k != "name"])
