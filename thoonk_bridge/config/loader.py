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

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from thoonk_bridge.config.endpoints import EndpointError, _collect_kinds, parse_endpoint
from thoonk_bridge.config.env import _Positions, _substitute, load_env_file
from thoonk_bridge.config.errors import ConfigError, ConfigProblem, Loc, _os_reason, _show, _type_name
from thoonk_bridge.config.issues import _Issue, _issues_from_validation
from thoonk_bridge.config.schema import _TOP_KEYS, BridgeConfig, EngineSettings, RouteOptions, RouteSpec
from thoonk_bridge.config.topology import _check_topology, _route_endpoints
from thoonk_bridge.config.yaml_positions import _Doc, _parse_yaml
from thoonk_bridge.discovery import discover_plugins
from thoonk_bridge.plugin import Endpoint, EndpointKind, Plugin, Settings

__all__ = ["load_config"]

def load_config(
    path: str | Path,
    *,
    env: Mapping[str, str] | None = None,
    env_file: str | Path | None = None,
    plugins: Mapping[str, type[Plugin[Any]]] | None = None,
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
    data: Any, doc: _Doc, plugins: Mapping[str, type[Plugin[Any]]], source_file: Path, broken: Mapping[str, str]
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
    engine = _validate_engine(data, doc)
    plugin_data, settings = _validate_plugin_settings(data, doc, plugins, broken)
    routes_data = data.get("routes")
    if routes_data is None:
        routes_data = []
    if not isinstance(routes_data, list):
        doc.at(("routes",), f"expected a list of routes, got {_type_name(routes_data)}")
        routes_data = []
    routes: list[RouteSpec | None] = [_parse_route(doc, i, r, kinds, broken) for i, r in enumerate(routes_data)]
    _settle_used_plugins(doc, routes_data, routes, owners, plugins, plugin_data, settings)
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


def _validate_engine(data: dict[str, Any], doc: _Doc) -> EngineSettings | None:
    engine_data = {k: v for k, v in data.items() if k not in ("plugins", "routes")}
    if engine_data.get("http", {}) is None:
        engine_data.pop("http")
    try:
        return EngineSettings.model_validate(engine_data)
    except ValidationError as exc:
        doc.add_all((), _issues_from_validation(exc, EngineSettings, ("plugins", "routes")))
        return None


def _validate_plugin_settings(
    data: dict[str, Any], doc: _Doc, plugins: Mapping[str, type[Plugin[Any]]], broken: Mapping[str, str]
) -> tuple[dict[str, Any], dict[str, Settings]]:
    """The ``plugins:`` section (as written, a mapping) and each named plugin's parsed settings."""
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
    return plugin_data, settings


def _settle_used_plugins(
    doc: _Doc, routes_data: list[Any], routes: list[RouteSpec | None], owners: Mapping[str, str],
    plugins: Mapping[str, type[Plugin[Any]]], plugin_data: dict[str, Any], settings: dict[str, Settings],
) -> None:
    """A plugin a route uses but ``plugins:`` does not name runs on its defaults: added to
    ``settings``, or reported once, at its first use, when it has required settings."""
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
                unusable.add(owner)


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
    doc: _Doc, index: int, raw: Any, kinds: Mapping[str, EndpointKind[Any, Any]], broken: Mapping[str, str]
) -> RouteSpec | None:
    here: Loc = ("routes", index)
    if not isinstance(raw, dict):
        doc.at(here, f"a route must be a mapping with name, from and to; got {_type_name(raw)}")
        return None
    ok = True
    source: Endpoint[Any] | None = None
    sinks: list[Endpoint[Any]] = []
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
