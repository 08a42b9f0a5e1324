"""The bridge's YAML config: environment substitution, parsing with positions, validation, topology.

``load_config(path)`` reads one YAML file and returns a validated :class:`BridgeConfig`, or raises
:class:`ConfigError` listing *every* problem at once, each as ``FILE:LINE:COL: dotted.path: message``
pointing at the offending YAML node (1-based line and column).

Pipeline:

1. **Environment substitution** on the raw text, before YAML parsing (:func:`substitute_env`):
   ``${VAR}``, ``${VAR:-default}`` (default when unset or empty), ``${VAR-default}`` (default when
   unset), ``${VAR:?message}`` (error when unset or empty), ``${VAR?message}`` (error when unset) and
   ``$$`` for a literal ``$``. Nothing is substituted inside YAML comments. Inside a double-quoted
   scalar the value is escaped (``\\``, ``"``, newlines) and inside a single-quoted one ``'`` is
   doubled, so a value always arrives verbatim. Every missing variable is reported in one error.
   Positions reported later still point into the file as written.
2. **YAML** (safe loader, one document, duplicate keys are errors, ``<<`` merge keys and anchors allowed).
3. **Schemas**, one per component, all pydantic v2 with unknown keys forbidden: the engine's own keys
   (:class:`EngineSettings`, :class:`HttpSettings`), each route (:class:`RouteOptions` plus endpoints),
   each plugin's ``settings_model`` and each endpoint kind's ``source_options`` / ``sink_options``.
4. **Topology**: duplicate route names, unknown endpoint kinds, sinks that cannot be sinks (and
   sources that cannot be sources), plugins that are configured but not installed or used but not
   configured, two sinks writing the same resource, a route writing into its own source, loops of
   three or more routes. (Two routes in opposite directions, ``A -> B`` and ``B -> A``, are allowed:
   the router drops the echo of a route's own writes.)

The document's top-level keys (see ``config/example.yaml``, the documented reference):

- ``redis``: Redis URL (``redis://``, ``rediss://``, ``unix://``, ``redis+sentinel://``,
  ``rediss+sentinel://``, ``redis+cluster://``, ``rediss+cluster://``); left out: an embedded Redis
  under ``state_dir`` is started.
- ``state_dir``: directory for the embedded Redis and plugin state (default ``data``), relative to
  the config file's directory.
- ``http``: :class:`HttpSettings` (``listen``, ``public_url``).
- ``plugins``: ``{plugin name: settings}``, each validated against that plugin's ``settings_model``.
- ``routes``: list of routes, see :class:`RouteSpec`.
- ``drain_seconds``: how long SIGTERM waits for in-flight work (default 10).
- ``log_level``: ``debug | info | warning | error`` (default ``info``).
- ``log_format``: ``auto | json | console`` (default ``auto``: JSON unless stdout is a terminal).
- ``job_maintenance_seconds``: interval of the Thoonk job maintenance loop (default 30).
- ``lease_seconds``: how long a route's lease lives without renewal (default 15).
- ``instance``: this daemon's id among daemons sharing one Redis (default: from ``state_dir``).
"""

from __future__ import annotations

import bisect
import difflib
import ipaddress
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from thoonk_bridge.console.settings import ConsoleSettings
from thoonk_bridge.discovery import discover_plugins
from thoonk_bridge.endpoints import THOONK_KIND
from thoonk_bridge.payload import Format
from thoonk_bridge.plugin import Endpoint, EndpointKind, Plugin, Settings
from thoonk_bridge.redact import redact_text, redact_url, shorten
from thoonk_bridge.redis_client import parse_target

__all__ = [
    "REDIS_SCHEMES",
    "BridgeConfig",
    "ConfigError",
    "ConfigProblem",
    "EndpointError",
    "EngineSettings",
    "HttpSettings",
    "RouteOptions",
    "RouteSpec",
    "endpoint_kinds",
    "load_config",
    "load_env_file",
    "parse_endpoint",
    "substitute_env",
]

Loc = tuple[str | int, ...]

# --------------------------------------------------------------------------- errors


_MAX_MESSAGE = 1000  # characters of one problem's message (values in it: _MAX_VALUE each)
_MAX_PATH = 200
_MAX_VALUE = 120


@dataclass(frozen=True)
class ConfigProblem:
    """One problem in a config (or env) file.

    ``line``/``col`` are 1-based; ``line == 0`` means the file as a whole (not found, unreadable).
    ``path`` is the dotted path of the offending node (``routes.0.to.1``), empty when there is none
    (YAML syntax errors, environment substitution).
    """

    file: str
    line: int
    col: int
    path: str
    message: str

    def __post_init__(self) -> None:
        # Every message may echo a value from the file (or the environment): never whole (a 50 MB
        # value), never with a URL's password, user info or query values.
        object.__setattr__(self, "path", shorten(redact_text(self.path), _MAX_PATH))
        object.__setattr__(self, "message", shorten(redact_text(self.message), _MAX_MESSAGE))

    def __str__(self) -> str:
        where = self.file if self.line <= 0 else f"{self.file}:{self.line}:{self.col}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(Exception):
    """A config that cannot be used; ``problems`` lists every problem found, in file order."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)


# --------------------------------------------------------------------------- engine schemas


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

    listen: str = Field(default="127.0.0.1:8080", description="HOST:PORT to bind")
    public_url: str | None = Field(default=None, description="base URL outsiders use; default http://{listen}")
    header_timeout: float = Field(default=10.0, gt=0, le=3600,
                                  description="seconds a new connection has to send its request headers")
    keepalive_timeout: float = Field(default=75.0, gt=0, le=86400,
                                     description="seconds an idle kept-alive connection is kept open")
    max_connections: int = Field(default=512, ge=1, le=1_000_000,
                                 description="open HTTP connections at most (also kept under ulimit -n)")
    request_timeout: float = Field(default=60.0, gt=0, le=86400,
                                   description="seconds from a request's headers to its answer, body included")
    console: ConsoleSettings = Field(default_factory=lambda: ConsoleSettings(), description="the console page")

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

    redis: str | None = Field(default=None, description="Redis URL; left out: embedded Redis under state_dir")
    state_dir: Path = Field(default=Path("data"), description="state directory, relative to the config file")
    http: HttpSettings = Field(default_factory=lambda: HttpSettings())
    drain_seconds: float = Field(default=10.0, ge=0, description="SIGTERM drain time")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"
    job_maintenance_seconds: float = Field(default=30.0, gt=0, description="job maintenance interval")
    lease_seconds: float = Field(default=15.0, gt=0, le=3600, description="route lease time")
    instance: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.:@-]{1,100}$", description="daemon id")

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

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$", description="unique route name")
    mirror: bool = Field(default=False, description="also retract what the sink holds that the route never delivered")
    format: Format | None = Field(default=None, description="payload format for the sinks")
    initial: str = Field(default="all", description="all | none | latest:N")

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

    source: Endpoint
    sinks: list[Endpoint]


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

    plugins: dict[str, Settings] = Field(default_factory=dict)
    routes: list[RouteSpec] = Field(default_factory=list)
    source_file: Path
    warnings: tuple[str, ...] = ()

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


# --------------------------------------------------------------------------- issues (relative)


@dataclass(frozen=True)
class _Issue:
    """A problem relative to some node: ``where`` says what ``loc`` designates.

    - ``value``: the node at ``loc`` (trailing elements absent from the data are schema tags).
    - ``key``: the key node of the last element of ``loc`` (unknown or duplicate key).
    - ``missing``: ``loc[-1]`` is absent; point at the mapping that lacks it.
    """

    loc: Loc
    message: str
    where: Literal["value", "key", "missing"] = "value"


def _model_at(model: type[BaseModel] | None, loc: Loc) -> type[BaseModel] | None:
    """Best effort: the pydantic model validating the mapping at ``loc`` inside ``model``."""
    for part in loc:
        if model is None:
            return None
        if isinstance(part, int):
            continue
        info = model.model_fields.get(str(part))
        if info is None:
            return None
        model = _inner_model(info.annotation)
    return model


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (list, tuple, set, frozenset, typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _inner_model(arg)
            if found is not None:
                return found
    if origin is dict:
        args = typing.get_args(annotation)
        return _inner_model(args[1]) if len(args) == 2 else None
    return None


def _allowed_keys(model: type[BaseModel] | None) -> list[str]:
    if model is None:
        return []
    return [info.alias or name for name, info in model.model_fields.items()]


def _unknown_key_message(key: str, allowed: list[str] | tuple[str, ...]) -> str:
    allowed = list(allowed)
    if not allowed:
        return f"unknown key {_show(key)}: no keys are allowed here"
    close = difflib.get_close_matches(key, allowed, n=2, cutoff=0.6)
    if close:
        return f"unknown key {_show(key)} (did you mean {' or '.join(repr(c) for c in close)}?)"
    return f"unknown key {_show(key)} (allowed: {', '.join(allowed)})"


def _issues_from_validation(
    exc: ValidationError, model: type[BaseModel] | None, extra_allowed: tuple[str, ...] = ()
) -> list[_Issue]:
    issues: list[_Issue] = []
    for err in exc.errors(include_url=False):
        loc: Loc = tuple(err["loc"])
        kind = err["type"]
        if kind == "extra_forbidden" and loc:
            allowed = _allowed_keys(_model_at(model, loc[:-1]))
            if len(loc) == 1:
                allowed = [*allowed, *extra_allowed]
            issues.append(_Issue(loc, _unknown_key_message(str(loc[-1]), allowed), "key"))
        elif kind == "missing" and loc:
            issues.append(_Issue(loc, "required key is missing", "missing"))
        else:
            msg = str(err["msg"])
            for prefix in ("Value error, ", "Assertion failed, "):
                if msg.startswith(prefix):
                    msg = msg[len(prefix) :]
            value = err.get("input")
            if kind in ("string_type", "string_pattern_mismatch") and isinstance(value, bool | int | float):
                msg += " (YAML read this unquoted value as a " + type(value).__name__ + "; quote it)"
            issues.append(_Issue(loc, msg, "value"))
    return issues


# --------------------------------------------------------------------------- endpoints


class EndpointError(ValueError):
    """An endpoint that cannot be used; ``issues`` locate each problem inside the endpoint's value."""

    def __init__(self, issues: list[_Issue]) -> None:
        self.issues = issues
        super().__init__(
            "; ".join((".".join(str(p) for p in i.loc) + ": " if i.loc else "") + i.message for i in issues)
        )


_KIND_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")


def endpoint_kinds(plugins: Mapping[str, type[Plugin]]) -> dict[str, EndpointKind]:
    """Every endpoint kind available: the engine's ``thoonk`` plus each plugin's, by name.

    Raises ValueError when two plugins (or a plugin and the engine) offer the same kind.
    """
    kinds, _owners, problems = _collect_kinds(plugins)
    if problems:
        raise ValueError("; ".join(problems))
    return kinds


def _collect_kinds(
    plugins: Mapping[str, type[Plugin]],
) -> tuple[dict[str, EndpointKind], dict[str, str], list[str]]:
    kinds: dict[str, EndpointKind] = {THOONK_KIND.name: THOONK_KIND}
    owners: dict[str, str] = {}
    problems: list[str] = []
    for plugin_name in sorted(plugins):
        for kind in plugins[plugin_name].endpoint_kinds:
            if kind.name in kinds:
                other = owners.get(kind.name, "the engine")
                problems.append(f"endpoint kind {kind.name!r} is offered by both {other} and plugin {plugin_name!r}")
                continue
            kinds[kind.name] = kind
            owners[kind.name] = plugin_name
    return kinds, owners, problems


def _describe_kinds(kinds: Mapping[str, EndpointKind], role: str) -> str:
    usable = [n for n, k in sorted(kinds.items()) if (k.can_source if role == "source" else k.can_sink)]
    return ", ".join(usable) if usable else "none"


def parse_endpoint(value: Any, role: Literal["source", "sink"], kinds: Mapping[str, EndpointKind]) -> Endpoint:
    """Parse one endpoint as written in a route (or on the command line).

    ``value`` is ``"KIND:ADDRESS"`` (split at the first ``:``) or a mapping
    ``{"endpoint": "KIND:ADDRESS", option: value, ...}``. The options (plus ``address``, when the
    model declares that field) are validated against the kind's ``source_options`` or
    ``sink_options``. Raises :class:`EndpointError` (a ValueError) naming each problem.
    """
    at: Loc
    options: dict[str, Any]
    if isinstance(value, str):
        text, options, at = value, {}, ()
    elif isinstance(value, Mapping):
        if "endpoint" not in value:
            raise EndpointError([_Issue(("endpoint",), "required key is missing (KIND:ADDRESS)", "missing")])
        text = value["endpoint"]
        if not isinstance(text, str):
            raise EndpointError([_Issue(("endpoint",), "expected KIND:ADDRESS as a string")])
        options = {k: v for k, v in value.items() if k != "endpoint"}
        at = ("endpoint",)
        if "address" in options:
            raise EndpointError([_Issue(("address",), "the address goes in 'endpoint' (KIND:ADDRESS)", "key")])
    else:
        raise EndpointError(
            [_Issue((), f"expected KIND:ADDRESS or a mapping with 'endpoint', got {_type_name(value)}")]
        )

    kind_name, sep, address = text.partition(":")
    if not sep or not _KIND_NAME.match(kind_name):
        raise EndpointError(
            [
                _Issue(
                    at,
                    f"expected KIND:ADDRESS, got {_show(text)} "
                    f"(kinds that can be a {role}: {_describe_kinds(kinds, role)})",
                )
            ]
        )
    kind = kinds.get(kind_name)
    if kind is None:
        raise EndpointError(
            [_Issue(at, f"unknown endpoint kind {_show(kind_name)} (known kinds: {', '.join(sorted(kinds))})")]
        )
    if not address:
        raise EndpointError([_Issue(at, f"{kind_name}: needs an address after the ':'")])
    model = kind.source_options if role == "source" else kind.sink_options
    if model is None:
        other = "sink" if role == "source" else "source"
        raise EndpointError(
            [_Issue(at, f"{kind_name}:{address} cannot be a {role} ({kind_name} endpoints are {other}s only)")]
        )
    data = dict(options)
    if "address" in model.model_fields:
        data["address"] = address
    try:
        opts = model.model_validate(data)
    except ValidationError as exc:
        issues = []
        for issue in _issues_from_validation(exc, model):
            if issue.loc[:1] == ("address",):
                issues.append(_Issue(at, f"invalid address {_show(address)}: {issue.message}"))
            elif not options and issue.where == "missing":
                issues.append(
                    _Issue(
                        issue.loc,
                        f"required option is missing; write the endpoint as a mapping: "
                        f"{{endpoint: {text}, {issue.loc[0]}: ...}}",
                        "missing",
                    )
                )
            else:
                issues.append(issue)
        raise EndpointError(issues) from None
    return Endpoint(kind=kind_name, address=address, options=opts)


def _type_name(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {_show(value)}"


def _show(value: Any) -> str:
    """``repr(value)`` for a message: at most :data:`_MAX_VALUE` characters."""
    return shorten(repr(value), _MAX_VALUE)


# --------------------------------------------------------------------------- env substitution


@dataclass
class _OffsetMap:
    """Maps character offsets in the substituted text back to the original text."""

    out_starts: list[int] = field(default_factory=lambda: [0])
    in_starts: list[int] = field(default_factory=lambda: [0])
    literal: list[bool] = field(default_factory=lambda: [True])

    def add(self, out_start: int, in_start: int, literal: bool) -> None:
        if self.out_starts[-1] == out_start:
            self.in_starts[-1], self.literal[-1] = in_start, literal
        else:
            self.out_starts.append(out_start)
            self.in_starts.append(in_start)
            self.literal.append(literal)

    def to_original(self, offset: int) -> int:
        i = bisect.bisect_right(self.out_starts, offset) - 1
        if self.literal[i]:
            return self.in_starts[i] + offset - self.out_starts[i]
        return self.in_starts[i]


class _Positions:
    """Offsets in the original text -> 1-based (line, col)."""

    def __init__(self, text: str, offsets: _OffsetMap | None = None) -> None:
        self.line_starts = [0] + [m.end() for m in re.finditer("\n", text)]
        self.offsets = offsets

    def of_offset(self, offset: int) -> tuple[int, int]:
        line = bisect.bisect_right(self.line_starts, offset) - 1
        return line + 1, offset - self.line_starts[line] + 1

    def of_mark(self, mark: yaml.Mark) -> tuple[int, int]:
        offset = mark.index if self.offsets is None else self.offsets.to_original(mark.index)
        return self.of_offset(offset)


_SUBST = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])(.*))?", re.S)


def _placeholder(name: str) -> str:
    """What an unset ``${NAME}`` becomes so that the rest of the file is still checked: a plain word,
    valid in any YAML context (plain, quoted, flow), that no schema takes for a real value."""
    return f"unset-{name}"


@dataclass
class _Substituted:
    text: str
    offsets: _OffsetMap
    problems: list[ConfigProblem]
    unset_at: list[int]  # offsets in the original text of each ${...} that got a placeholder


def _substitute(text: str, env: Mapping[str, str], file: str) -> _Substituted:
    out: list[str] = []
    unset_at: list[int] = []
    out_len = 0
    offsets = _OffsetMap()
    problems: list[ConfigProblem] = []
    positions = _Positions(text)
    quote: str | None = None
    in_comment = False
    last_sig = "\n"  # last non-blank character on this line outside quotes
    i, n = 0, len(text)
    run_start = 0  # start of the current literal run in ``text``

    def flush(upto: int) -> None:
        nonlocal out_len
        out.append(text[run_start:upto])
        out_len += upto - run_start

    def problem(at: int, message: str) -> None:
        line, col = positions.of_offset(at)
        problems.append(ConfigProblem(file, line, col, "", message))

    while i < n:
        c = text[i]
        if c == "\n":
            in_comment = False
            last_sig = "\n"
            i += 1
            continue
        if in_comment:
            i += 1
            continue
        if c == "$" and i + 1 < n and text[i + 1] in "${":
            flush(i)
            if text[i + 1] == "$":
                out.append("$")
                offsets.add(out_len, i, True)
                out_len += 1
                run_start = i + 2
                offsets.add(out_len, run_start, True)
                i += 2
                continue
            end = text.find("}", i + 2)
            newline = text.find("\n", i + 2)
            if end < 0 or (0 <= newline < end):
                problem(i, "unterminated ${: write $$ for a literal $")
                run_start = i
                i += 1
                continue
            inner = text[i + 2 : end]
            m = _SUBST.fullmatch(inner)
            value: str | None = None
            if not m:
                problem(
                    i,
                    f"invalid substitution ${{{inner}}}: expected ${{NAME}}, ${{NAME:-default}} "
                    "or ${NAME:?message} (NAME: letters, digits, _)",
                )
            else:
                name, op, arg = m.group(1), m.group(2), m.group(3) or ""
                current = env.get(name)
                unset = current is None or (current == "" and op is not None and op.startswith(":"))
                if op is None:
                    if current is None:
                        problem(i, f"environment variable {name} is not set")
                        current = _placeholder(name)
                        unset_at.append(i)
                    value = current
                elif op in (":-", "-"):
                    value = arg if unset else current
                else:  # :? or ?
                    if unset:
                        problem(i, f"{name}: {arg}" if arg else f"environment variable {name} is not set")
                        current = _placeholder(name)
                        unset_at.append(i)
                    value = current
            value = value or ""
            if quote == '"':
                value = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
            elif quote == "'":
                value = value.replace("'", "''")
            offsets.add(out_len, i, False)
            out.append(value)
            out_len += len(value)
            run_start = end + 1
            offsets.add(out_len, run_start, True)
            last_sig = "x"
            i = end + 1
            continue
        if quote == '"':
            if c == "\\":
                i += 2
                continue
            if c == '"':
                quote = None
        elif quote == "'":
            if c == "'":
                if text[i + 1 : i + 2] == "'":
                    i += 2
                    continue
                quote = None
        else:
            prev = text[i - 1] if i else "\n"
            if c == "#" and prev in " \t\n":
                in_comment = True
                i += 1
                continue
            if c in "'\"" and last_sig in "\n:-[{,?" and prev in " \t\n[{,":
                quote = c
            if c not in " \t\r":
                last_sig = c
        i += 1
    flush(n)
    return _Substituted("".join(out), offsets, problems, unset_at)


def substitute_env(text: str, env: Mapping[str, str], *, file: str) -> str:
    """Replace ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?message}``,
    ``${VAR?message}`` and ``$$`` in ``text`` (see the module docstring).

    Raises :class:`ConfigError` naming ``file:line:col`` of every unset variable and every
    malformed ``${...}`` at once. Defaults are literal text (no nested ``${...}``, no ``}``).
    """
    result = _substitute(text, env, file)
    if result.problems:
        raise ConfigError(result.problems)
    return result.text


_ENV_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")
_DQ_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$"}


def load_env_file(path: str | Path) -> dict[str, str]:
    """Read a ``.env`` file: ``KEY=VALUE`` lines.

    - blank lines and lines starting with ``#`` are skipped; an ``export`` prefix is allowed;
    - ``VALUE`` unquoted: taken as is, minus a trailing `` # comment``;
    - ``'VALUE'``: literal; ``"VALUE"``: with ``\\n \\t \\r \\" \\\\ \\$`` escapes; a comment may follow
      the closing quote;
    - values are not substituted (``${X}`` stays as written).

    Raises :class:`ConfigError` with ``file:line:col`` of every bad line at once.
    """
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigProblem(file, 0, 0, "", f"cannot read env file: {_os_reason(exc)}")]) from None
    result: dict[str, str] = {}
    problems: list[ConfigProblem] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        col = len(raw) - len(raw.lstrip()) + 1
        m = _ENV_LINE.match(raw)
        if not m:
            problems.append(ConfigProblem(file, lineno, col, "", "expected KEY=VALUE (KEY: letters, digits, _)"))
            continue
        key, value = m.group(1), m.group(2)
        value_col = m.start(2) + 1
        if value[:1] in ("'", '"'):
            q = value[0]
            body, rest, ok = _env_quoted(value, q)
            if not ok:
                problems.append(ConfigProblem(file, lineno, value_col, key, f"unterminated {q}-quoted value"))
                continue
            if rest.strip() and not rest.lstrip().startswith("#"):
                problems.append(ConfigProblem(file, lineno, value_col, key, f"unexpected text after the closing {q}"))
                continue
            value = body
        else:
            value = re.split(r"\s+#", value, maxsplit=1)[0].rstrip()
        result[key] = value
    if problems:
        raise ConfigError(problems)
    return result


def _env_quoted(value: str, quote: str) -> tuple[str, str, bool]:
    out: list[str] = []
    i = 1
    while i < len(value):
        c = value[i]
        if quote == '"' and c == "\\" and i + 1 < len(value):
            nxt = value[i + 1]
            out.append(_DQ_ESCAPES.get(nxt, "\\" + nxt))
            i += 2
            continue
        if c == quote:
            return "".join(out), value[i + 1 :], True
        out.append(c)
        i += 1
    return "", "", False


def _os_reason(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 (byte {exc.start})"
    return str(exc)


# --------------------------------------------------------------------------- YAML with positions


_MERGE_TAG = "tag:yaml.org,2002:merge"
_MAX_NODES = 200_000


class _Doc:
    """The YAML document as plain Python data plus the start mark of every node, by path."""

    def __init__(self, file: str, positions: _Positions, unset_at: list[int] | None = None) -> None:
        self.file = file
        self.positions = positions
        self.unset_at = sorted(unset_at or ())
        self.placeholder_nodes: set[tuple[int, int]] = set()  # (line, col) of scalars holding one
        self.values: dict[Loc, tuple[int, int]] = {}
        self.keys: dict[Loc, tuple[int, int]] = {}
        self.raw: dict[Loc, yaml.ScalarNode] = {}
        self.problems: list[ConfigProblem] = []
        self._constructor = yaml.SafeLoader("")
        self._count = 0
        self._stack: set[int] = set()

    # -- building

    def build(self, node: yaml.Node, path: Loc) -> Any:
        self._count += 1
        if self._count > _MAX_NODES:
            raise _TooBig(node)
        self.values[path] = self.positions.of_mark(node.start_mark)
        if isinstance(node, yaml.ScalarNode):
            self.raw[path] = node
            self._note_placeholder(node)
            try:
                return self._constructor.construct_object(node, deep=True)
            except (yaml.YAMLError, ValueError, TypeError):
                return str(node.value)  # looked like a timestamp but is not one: keep the text
        if id(node) in self._stack:
            self.problem_at_node(node, path, "recursive alias: a node cannot contain itself")
            return None
        self._stack.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return [self.build(child, (*path, i)) for i, child in enumerate(node.value)]
            assert isinstance(node, yaml.MappingNode)
            return self._build_mapping(node, path)
        finally:
            self._stack.discard(id(node))

    def _build_mapping(self, node: yaml.MappingNode, path: Loc) -> dict[str, Any]:
        seen: dict[str, yaml.Node] = {}
        skip: set[int] = set()
        for key_node, _value in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self.problem_at_node(key_node, path, "mapping keys must be plain scalars")
                skip.add(id(key_node))
                continue
            key = str(key_node.value)
            if key in seen:
                first = self.positions.of_mark(seen[key].start_mark)
                line, col = self.positions.of_mark(key_node.start_mark)
                self.problems.append(
                    ConfigProblem(
                        self.file,
                        line,
                        col,
                        _dotted((*path, key)),
                        f"duplicate key (first at line {first[0]})",
                    )
                )
                skip.add(id(key_node))
                continue
            seen[key] = key_node
        try:
            self._constructor.flatten_mapping(node)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or node.start_mark
            line, col = self.positions.of_mark(mark)
            self.problems.append(ConfigProblem(self.file, line, col, _dotted(path), str(exc.problem)))
            node.value = [(k, v) for k, v in node.value if k.tag != _MERGE_TAG]
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if id(key_node) in skip or not isinstance(key_node, yaml.ScalarNode):
                continue
            key = str(key_node.value)
            child = (*path, key)
            self.keys[child] = self.positions.of_mark(key_node.start_mark)
            self._note_placeholder(key_node)
            result[key] = self.build(value_node, child)
        return result

    def _note_placeholder(self, node: yaml.Node) -> None:
        if not self.unset_at:
            return
        to_original = self.positions.offsets.to_original if self.positions.offsets else (lambda o: o)
        start, end = to_original(node.start_mark.index), to_original(node.end_mark.index)
        first = bisect.bisect_left(self.unset_at, start)
        if first < len(self.unset_at) and (self.unset_at[first] < end or self.unset_at[first] == start):
            self.placeholder_nodes.add(self.positions.of_mark(node.start_mark))

    # -- reporting

    def problem_at_node(self, node: yaml.Node, path: Loc, message: str) -> None:
        line, col = self.positions.of_mark(node.start_mark)
        self.problems.append(ConfigProblem(self.file, line, col, _dotted(path), message))

    def add(self, prefix: Loc, issue: _Issue) -> None:
        """Record ``issue`` (relative to the node at ``prefix``) at the best YAML node."""
        loc = (*prefix, *issue.loc)
        if issue.where == "key" and loc in self.keys:
            line, col = self.keys[loc]
            self.problems.append(ConfigProblem(self.file, line, col, _dotted(loc), issue.message))
            return
        matched: Loc = ()
        for i in range(len(loc)):
            if loc[: i + 1] in self.values:
                matched = loc[: i + 1]
            else:
                break
        path = matched
        if issue.where == "missing" and len(loc) > len(matched):
            path = loc[: len(matched) + 1]
        line, col = self.values.get(matched, (1, 1))
        self.problems.append(ConfigProblem(self.file, line, col, _dotted(path), issue.message))

    def add_all(self, prefix: Loc, issues: list[_Issue]) -> None:
        for issue in issues:
            self.add(prefix, issue)

    def at(self, path: Loc, message: str) -> None:
        self.add((), _Issue(path, message))

    def line_of(self, path: Loc) -> int:
        return self.values.get(path, (0, 0))[0]


class _TooBig(Exception):
    def __init__(self, node: yaml.Node) -> None:
        self.node = node


def _dotted(path: Loc) -> str:
    return ".".join(str(p) for p in path)


def _compose(text: str) -> yaml.Node | None:
    """The YAML node tree, by libyaml when PyYAML has it (a 1,000-route file: 10x faster); a file it
    refuses is parsed again by the pure-Python loader, whose messages the errors are written from."""
    fast = getattr(yaml, "CSafeLoader", None)
    if fast is not None:
        try:
            node: yaml.Node | None = yaml.compose(text, Loader=fast)
            return node
        except (yaml.YAMLError, RecursionError):
            pass
    return yaml.compose(text, Loader=yaml.SafeLoader)


def _parse_yaml(
    text: str, file: str, positions: _Positions, unset_at: list[int] | None = None
) -> tuple[Any, _Doc]:
    doc = _Doc(file, positions, unset_at)
    try:
        node = _compose(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = str(exc.problem or exc.context)
        context = str(exc.context) if exc.context and exc.problem else ""
        if context and problem.startswith("but "):  # "expected a single document..., but found another"
            problem, context = f"{context}, {problem}", ""
        message = f"invalid YAML: {problem}"
        if context and exc.context_mark is not None:
            cline, _ccol = positions.of_mark(exc.context_mark)
            message += f" ({context} on line {cline})"
        if "'\\t'" in problem:
            message += "; indent with spaces, not tabs"
        line, col = positions.of_mark(mark) if mark is not None else (1, 1)
        raise ConfigError([ConfigProblem(file, line, col, "", message)]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigProblem(file, 1, 1, "", f"invalid YAML: {exc}")]) from None
    except RecursionError:
        raise ConfigError([ConfigProblem(file, 1, 1, "", "invalid YAML: nested too deeply")]) from None
    if node is None:
        return None, doc
    try:
        data = doc.build(node, ())
    except _TooBig as exc:
        line, col = positions.of_mark(exc.node.start_mark)
        raise ConfigError(
            [ConfigProblem(file, line, col, "", f"the document expands to more than {_MAX_NODES} nodes")]
        ) from None
    except RecursionError:
        raise ConfigError([ConfigProblem(file, 1, 1, "", "invalid YAML: nested too deeply")]) from None
    return data, doc


# --------------------------------------------------------------------------- loading


def load_config(
    path: str | Path,
    *,
    env: Mapping[str, str] | None = None,
    env_file: str | Path | None = None,
    plugins: Mapping[str, type[Plugin]] | None = None,
) -> BridgeConfig:
    """Read, substitute, parse and validate the config at ``path``.

    - ``env``: the variables for substitution (default ``os.environ``).
    - ``env_file``: a ``.env`` file (:func:`load_env_file`) whose variables fill in those missing
      from ``env`` (the process environment wins, as with docker compose).
    - ``plugins``: the installed plugins by name (default: :func:`discover_plugins`; an installed
      plugin that cannot be loaded is then a problem where the config uses it, a warning in
      ``BridgeConfig.warnings`` where it does not).

    Raises :class:`ConfigError` with every problem found.
    """
    file = str(path)
    variables: dict[str, str] = {}
    if env_file is not None:
        variables.update(load_env_file(env_file))
    variables.update(os.environ if env is None else env)
    broken: dict[str, str] = {}
    if plugins is None:
        plugins = discover_plugins(broken)
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigProblem(file, 0, 0, "", f"cannot read config: {_os_reason(exc)}")]) from None

    # An unset variable does not hide the rest: it is reported with every other problem, and the
    # problems its placeholder causes (the value it was meant to fill is "invalid") are left out.
    substituted = _substitute(text, variables, file)
    positions = _Positions(text, substituted.offsets)
    try:
        data, doc = _parse_yaml(substituted.text, file, positions, substituted.unset_at)
    except ConfigError as exc:
        raise ConfigError(_sorted([*substituted.problems, *exc.problems])) from None
    source_file = Path(path).absolute()
    config = _validate(data, doc, plugins, source_file, broken)
    found = [p for p in doc.problems if (p.line, p.col) not in doc.placeholder_nodes]
    if found or config is None or substituted.problems:
        raise ConfigError(_dedupe(_sorted([*substituted.problems, *found])))
    return config


def _sorted(problems: list[ConfigProblem]) -> list[ConfigProblem]:
    return sorted(problems, key=lambda p: (p.line, p.col))


def _dedupe(problems: list[ConfigProblem]) -> list[ConfigProblem]:
    out: list[ConfigProblem] = []
    for problem in problems:
        if out and (out[-1].line, out[-1].col, out[-1].path) == (problem.line, problem.col, problem.path):
            if problem.message == out[-1].message:
                continue
            if out[-1].message.startswith("Input should be") and problem.message.startswith("Input should be"):
                merged = out[-1].message + " or" + problem.message[len("Input should") :]
                out[-1] = ConfigProblem(problem.file, problem.line, problem.col, problem.path, merged)
                continue
        out.append(problem)
    return out


def _validate(
    data: Any, doc: _Doc, plugins: Mapping[str, type[Plugin]], source_file: Path, broken: Mapping[str, str]
) -> BridgeConfig | None:
    if data is None:
        doc.problems.append(
            ConfigProblem(doc.file, 1, 1, "", "the config is empty: expected a mapping with at least 'routes'")
        )
        return None
    if not isinstance(data, dict):
        doc.at((), f"the config must be a mapping of keys ({', '.join(_TOP_KEYS)}), got {_type_name(data)}")
        return None

    kinds, owners, kind_problems = _collect_kinds(plugins)
    for message in kind_problems:
        doc.problems.append(ConfigProblem(doc.file, 0, 0, "", message))

    # -- engine keys
    engine_data = {k: v for k, v in data.items() if k not in ("plugins", "routes")}
    if engine_data.get("http", {}) is None:
        engine_data.pop("http")
    engine: EngineSettings | None = None
    try:
        engine = EngineSettings.model_validate(engine_data)
    except ValidationError as exc:
        doc.add_all((), _issues_from_validation(exc, EngineSettings, ("plugins", "routes")))

    # -- plugin settings
    settings: dict[str, Settings] = {}
    plugin_data = data.get("plugins")
    if plugin_data is None:
        plugin_data = {}
    if not isinstance(plugin_data, dict):
        doc.at(("plugins",), f"expected a mapping of plugin name to settings, got {_type_name(plugin_data)}")
        plugin_data = {}
    installed = ", ".join(sorted(plugins)) or "none"
    for name, section in plugin_data.items():
        plugin = plugins.get(name)
        if plugin is None and name in broken:
            doc.add(("plugins",), _Issue((name,), _broken_plugin(name, broken[name]), "key"))
            continue
        if plugin is None:
            message = f"no plugin named {_show(name)} is installed (installed: {installed})"
            doc.add(("plugins",), _Issue((name,), message, "key"))
            continue
        try:
            settings[name] = plugin.settings_model.model_validate({} if section is None else section)
        except ValidationError as exc:
            doc.add_all(("plugins", name), _issues_from_validation(exc, plugin.settings_model))

    # -- routes
    routes_data = data.get("routes")
    if routes_data is None:
        routes_data = []
    if not isinstance(routes_data, list):
        doc.at(("routes",), f"expected a list of routes, got {_type_name(routes_data)}")
        routes_data = []
    routes: list[RouteSpec | None] = [_parse_route(doc, i, r, kinds, broken) for i, r in enumerate(routes_data)]

    # -- plugins used by routes
    unusable: set[str] = set()
    for i, route in enumerate(routes):
        if route is None:
            continue
        for loc, endpoint in _route_endpoints(i, routes_data[i], route):
            owner = owners.get(endpoint.kind)
            if owner is None or owner in settings or owner in unusable or owner in plugin_data:
                continue
            model = plugins[owner].settings_model
            try:
                settings[owner] = model.model_validate({})
            except ValidationError as exc:
                missing = [str(e["loc"][0]) for e in exc.errors() if e["type"] == "missing" and e["loc"]]
                detail = f" (required: {', '.join(missing)})" if missing else ""
                doc.at(
                    loc,
                    f"endpoint kind {endpoint.kind!r} needs the {owner} plugin's settings under "
                    f"plugins.{owner}{detail}",
                )
                unusable.add(owner)  # reported once, at its first use

    _check_topology(doc, routes_data, routes, kinds)

    if doc.problems or engine is None or any(r is None for r in routes):
        return None
    state_dir = engine.state_dir.expanduser()
    if not state_dir.is_absolute():
        state_dir = source_file.parent / state_dir
    values = dict(engine)
    values["state_dir"] = state_dir
    return BridgeConfig(
        **values,
        plugins=settings,
        routes=[r for r in routes if r is not None],
        source_file=source_file,
        warnings=tuple(
            f"{_broken_plugin(name, why)}; the config does not use it, so it is left out"
            for name, why in sorted(broken.items())
        ),
    )


def _broken_plugin(name: str, why: str) -> str:
    return f"plugin {name!r} is installed but cannot be loaded ({why})"


def _explain_broken(issues: list[_Issue], broken: Mapping[str, str]) -> list[_Issue]:
    """An unknown endpoint kind may be offered by an installed plugin that cannot be loaded: say so."""
    if not broken:
        return issues
    out = []
    for issue in issues:
        m = re.match(r"unknown endpoint kind '([a-z][a-z0-9_-]*)'", issue.message)
        if m and m.group(1) in broken:
            kind = m.group(1)
            issue = _Issue(issue.loc, f"endpoint kind {kind!r}: {_broken_plugin(kind, broken[kind])}", issue.where)
        elif m:
            others = "; ".join(_broken_plugin(n, w) for n, w in sorted(broken.items()))
            issue = _Issue(issue.loc, f"{issue.message}; it may come from a plugin that cannot be loaded: {others}",
                           issue.where)
        out.append(issue)
    return out


def _parse_route(
    doc: _Doc, index: int, raw: Any, kinds: Mapping[str, EndpointKind], broken: Mapping[str, str]
) -> RouteSpec | None:
    here: Loc = ("routes", index)
    if not isinstance(raw, dict):
        doc.at(here, f"a route must be a mapping with name, from and to; got {_type_name(raw)}")
        return None
    ok = True
    source: Endpoint | None = None
    sinks: list[Endpoint] = []
    if "from" not in raw:
        doc.add(here, _Issue(("from",), "required key is missing (the source endpoint, KIND:ADDRESS)", "missing"))
        ok = False
    elif isinstance(raw["from"], list):
        doc.at((*here, "from"), "a route has exactly one source; use one route per source")
        ok = False
    else:
        try:
            source = parse_endpoint(raw["from"], "source", kinds)
        except EndpointError as exc:
            doc.add_all((*here, "from"), _explain_broken(exc.issues, broken))
            ok = False
    if "to" not in raw:
        doc.add(here, _Issue(("to",), "required key is missing (one sink endpoint or a list)", "missing"))
        ok = False
    else:
        to = raw["to"]
        to_list = to if isinstance(to, list) else [to]
        to_loc: list[Loc] = [(*here, "to", j) for j in range(len(to))] if isinstance(to, list) else [(*here, "to")]
        if not to_list or to is None:
            doc.at((*here, "to"), "a route needs at least one sink")
            ok = False
        for value, loc in zip(to_list, to_loc, strict=True):
            if value is None:
                continue
            try:
                sinks.append(parse_endpoint(value, "sink", kinds))
            except EndpointError as exc:
                doc.add_all(loc, _explain_broken(exc.issues, broken))
                ok = False
    rest = {k: v for k, v in raw.items() if k not in ("from", "to")}
    options: RouteOptions | None = None
    try:
        options = RouteOptions.model_validate(rest)
    except ValidationError as exc:
        doc.add_all(here, _issues_from_validation(exc, RouteOptions, ("from", "to")))
    if not ok or options is None or source is None:
        return None
    return RouteSpec(**dict(options), source=source, sinks=sinks)


def _route_endpoints(index: int, raw: dict[str, Any], route: RouteSpec) -> list[tuple[Loc, Endpoint]]:
    """Each endpoint of a parsed route with the path of its YAML node (source first)."""
    here: Loc = ("routes", index)
    out: list[tuple[Loc, Endpoint]] = [((*here, "from"), route.source)]
    if isinstance(raw.get("to"), list):
        out.extend(((*here, "to", j), ep) for j, ep in enumerate(route.sinks))
    else:
        out.extend(((*here, "to"), ep) for ep in route.sinks)
    return out


def _resource(kinds: Mapping[str, EndpointKind], endpoint: Endpoint) -> str:
    kind = kinds.get(endpoint.kind)
    try:
        return str(kind.resource(endpoint)) if kind is not None else str(endpoint)
    except Exception:  # noqa: BLE001 - a plugin's resource() may not handle source endpoints
        return str(endpoint)


def _check_topology(
    doc: _Doc, routes_data: list[Any], routes: list[RouteSpec | None], kinds: Mapping[str, EndpointKind]
) -> None:
    # duplicate names (checked even for routes with other problems)
    first_name: dict[str, int] = {}
    for i, raw in enumerate(routes_data):
        name = raw.get("name") if isinstance(raw, dict) else None
        if not isinstance(name, str):
            continue
        if name in first_name:
            doc.at(
                ("routes", i, "name"),
                f"duplicate route name {name!r} (first used on line {doc.line_of(('routes', first_name[name]))})",
            )
        else:
            first_name[name] = i

    writers: dict[str, tuple[str, int]] = {}  # resource -> (route name, line)
    edges: list[tuple[str, str, int, Loc]] = []  # (from node, to node, route index, sink path)
    for i, route in enumerate(routes):
        if route is None:
            continue
        endpoints = _route_endpoints(i, routes_data[i], route)
        source_key = _resource(kinds, route.source)
        for loc, sink in endpoints[1:]:
            if (sink.kind, sink.address) == (route.source.kind, route.source.address):
                doc.at(loc, f"route {route.name!r} writes into its own source {sink}")
                continue
            res = _resource(kinds, sink)
            if res in writers:
                other, line = writers[res]
                who = "this route" if other == route.name else f"route {other!r}"
                doc.at(
                    loc,
                    f"{res} is already written by {who} (line {line}); two sinks writing the same "
                    "resource would overwrite each other",
                )
                continue
            writers[res] = (route.name, doc.line_of(loc))
            edges.append((source_key, res, i, loc))

    # loops of three or more routes (a pair of opposite routes is fine: the router drops echoes)
    succ: dict[str, set[str]] = {}
    for a, b, _i, _loc in edges:
        succ.setdefault(a, set()).add(b)
    reported: set[frozenset[str]] = set()
    route_names = {i: r.name for i, r in enumerate(routes) if r is not None}
    first_route = {(a, b): i for a, b, i, _loc in reversed(edges)}
    for a, b, _i, loc in reversed(edges):  # report at the route that closes the loop
        cycle = _long_cycle(succ, a, b)
        if cycle is None or frozenset(cycle) in reported:
            continue
        reported.add(frozenset(cycle))
        # list the ring from the route written first
        pairs = list(zip(cycle, [*cycle[1:], cycle[0]], strict=True))
        start = min(range(len(pairs)), key=lambda k: first_route.get(pairs[k], 1 << 30))
        cycle = cycle[start:] + cycle[:start]
        names: list[str] = []
        for x, y in zip(cycle, [*cycle[1:], cycle[0]], strict=True):
            names.extend(route_names[j] for p, q, j, _ in edges if (p, q) == (x, y))
        ring = " -> ".join([*cycle, cycle[0]])
        doc.at(
            loc,
            f"routes {', '.join(repr(n) for n in dict.fromkeys(names))} form a loop ({ring}) that would "
            "ping-pong forever; only a pair of opposite routes (A -> B and B -> A) is allowed, "
            "because the router drops the echo of its own writes",
        )


def _long_cycle(succ: dict[str, set[str]], a: str, b: str) -> list[str] | None:
    """A simple cycle a -> b -> ... -> a of length >= 3 through the edge a -> b, or None."""
    for w in sorted(succ.get(b, ())):
        if w in (a, b):
            continue
        # shortest path w -> a avoiding b
        parents: dict[str, str | None] = {w: None}
        frontier = [w]
        while frontier and a not in parents:
            nxt = []
            for x in frontier:
                for y in sorted(succ.get(x, ())):
                    if y == b or y in parents:
                        continue
                    parents[y] = x
                    nxt.append(y)
            frontier = nxt
        if a in parents:
            path = [a]
            cur: str | None = parents[a]
            while cur is not None:
                path.append(cur)
                cur = parents[cur]
            path.reverse()  # w ... a
            return [a, b, *path[:-1]]
    return None
