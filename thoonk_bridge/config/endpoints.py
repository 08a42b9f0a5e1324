"""Endpoints as written in a route: ``KIND:ADDRESS`` or ``{endpoint: KIND:ADDRESS, option: value}``,
parsed against the kinds the engine and the installed plugins offer."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import ValidationError

from thoonk_bridge.config.errors import Loc, _show, _type_name
from thoonk_bridge.config.issues import _Issue, _issues_from_validation
from thoonk_bridge.discovery import always_enabled_plugins
from thoonk_bridge.plugin import Endpoint, EndpointKind, Plugin

__all__ = ["EndpointError", "endpoint_kinds", "parse_endpoint"]

class EndpointError(ValueError):
    """An endpoint that cannot be used; ``issues`` locate each problem inside the endpoint's value."""

    def __init__(self, issues: list[_Issue]) -> None:
        self.issues = issues
        super().__init__(
            "; ".join((".".join(str(p) for p in i.loc) + ": " if i.loc else "") + i.message for i in issues)
        )


_KIND_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")


def endpoint_kinds(plugins: Mapping[str, type[Plugin[Any]]]) -> dict[str, EndpointKind[Any, Any]]:
    """Every endpoint kind available: the always-enabled plugins' (``thoonk``) plus each plugin's, by name.

    Raises ValueError when two plugins (or a plugin and the engine) offer the same kind.
    """
    kinds, _owners, problems = _collect_kinds(plugins)
    if problems:
        raise ValueError("; ".join(problems))
    return kinds


def _collect_kinds(
    plugins: Mapping[str, type[Plugin[Any]]],
) -> tuple[dict[str, EndpointKind[Any, Any]], dict[str, str], list[str]]:
    kinds: dict[str, EndpointKind[Any, Any]] = {}
    always = always_enabled_plugins()  # the bridge's own kinds, whatever plugins the caller passes
    for cls in always.values():
        kinds.update((kind.name, kind) for kind in cls.endpoint_kinds)
    owners: dict[str, str] = {}
    problems: list[str] = []
    for plugin_name in sorted(plugins):
        if plugin_name in always:
            continue  # its kinds are in; like the engine's, they enable no plugins: entry
        for kind in plugins[plugin_name].endpoint_kinds:
            if kind.name in kinds:
                other = owners.get(kind.name, "the engine")
                problems.append(f"endpoint kind {kind.name!r} is offered by both {other} and plugin {plugin_name!r}")
                continue
            kinds[kind.name] = kind
            owners[kind.name] = plugin_name
    return kinds, owners, problems


def _describe_kinds(kinds: Mapping[str, EndpointKind[Any, Any]], role: str) -> str:
    usable = [n for n, k in sorted(kinds.items()) if (k.can_source if role == "source" else k.can_sink)]
    return ", ".join(usable) if usable else "none"


def parse_endpoint(
    value: Any, role: Literal["source", "sink"], kinds: Mapping[str, EndpointKind[Any, Any]]
) -> Endpoint[Any]:
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
