"""The JSON Schema (draft 2020-12) of the whole config file, made from the models: ``thoonk-bridge schema``.

Editors validate and complete the YAML with it (VS Code's YAML extension: a first line
``# yaml-language-server: $schema=./thoonk-bridge.schema.json``, see docs/config.md). It describes the
file as written:

- the engine's keys (:class:`EngineSettings`);
- ``plugins.<name>``: each installed plugin's ``settings_model`` (a plugin listed with no settings,
  ``feeds:``, is ``null``);
- ``routes[]``: ``name``, the route options (:class:`RouteOptions`), ``from`` (one source endpoint)
  and ``to`` (one sink endpoint or a list), where an endpoint is either the string ``KIND:ADDRESS``
  (for a kind whose options are all optional) or the mapping ``{endpoint: KIND:ADDRESS, option: ...}``
  with that kind's options for that role.

What the schema cannot say is left to ``thoonk-bridge check``: environment substitution (a
``${VAR}`` written where a number is expected is flagged by the editor), checks made by validators
(``listen``, Redis URLs, CIDR lists, cross-field bounds) and the topology across routes.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from thoonk_bridge.config.endpoints import _collect_kinds
from thoonk_bridge.config.schema import EngineSettings, RouteOptions
from thoonk_bridge.plugin import EndpointKind, Plugin

__all__ = ["DRAFT", "config_schema", "schema_text"]

DRAFT = "https://json-schema.org/draft/2020-12/schema"
_ROLES: tuple[Literal["source", "sink"], ...] = ("source", "sink")


def config_schema(plugins: Mapping[str, type[Plugin[Any]]]) -> dict[str, Any]:
    """The JSON Schema of a config file for these installed plugins (by name)."""
    kinds, _owners, _problems = _collect_kinds(plugins)  # a kind offered twice: the first one, as `check` says
    models: list[type[BaseModel]] = [EngineSettings, RouteOptions]
    models += [plugins[name].settings_model for name in sorted(plugins)]
    for kind in kinds.values():
        models += [m for m in (kind.source_options, kind.sink_options) if m is not None]
    refs, top = models_json_schema([(m, "validation") for m in dict.fromkeys(models)], ref_template="#/$defs/{model}")
    defs: dict[str, Any] = top.get("$defs", {})

    def ref(model: type[BaseModel]) -> dict[str, Any]:
        return dict(refs[(model, "validation")])

    def definition(model: type[BaseModel]) -> dict[str, Any]:
        return dict(defs[ref(model)["$ref"].rsplit("/", 1)[1]])

    engine = definition(EngineSettings)
    properties: dict[str, Any] = dict(engine["properties"])
    # `http:` written with nothing under it is the defaults, as `check` takes it
    http = properties["http"]
    properties["http"] = {"anyOf": [http, {"type": "null"}], "description": http.get("description", "")}
    properties["plugins"] = {
        "description": "Each plugin's own settings, under its name (`thoonk-bridge plugins` lists what is installed).",
        "anyOf": [
            {
                "type": "object",
                "properties": {
                    name: {
                        "anyOf": [ref(plugins[name].settings_model), {"type": "null"}],
                        "description": plugins[name].description or f"The {name} plugin's settings.",
                    }
                    for name in sorted(plugins)
                },
                "additionalProperties": False,
            },
            {"type": "null"},
        ],
    }
    endpoint_defs: dict[str, dict[str, Any]] = {}
    for role in _ROLES:
        forms: list[dict[str, Any]] = []
        for name in sorted(kinds):
            forms += _endpoint_forms(kinds[name], role, defs, refs)
        endpoint_defs[role] = {"description": f"A {role} endpoint: KIND:ADDRESS, or a mapping with 'endpoint'.",
                               "anyOf": forms or [{"not": {}}]}
    defs["SourceEndpoint"], defs["SinkEndpoint"] = endpoint_defs["source"], endpoint_defs["sink"]
    route = definition(RouteOptions)
    route_properties = {
        "name": route["properties"]["name"],
        "from": {"$ref": "#/$defs/SourceEndpoint", "description": "The route's one source endpoint."},
        "to": {
            "description": "One sink endpoint, or a list of them.",
            "anyOf": [
                {"$ref": "#/$defs/SinkEndpoint"},
                {"type": "array", "items": {"$ref": "#/$defs/SinkEndpoint"}, "minItems": 1},
            ],
        },
        **{k: v for k, v in route["properties"].items() if k != "name"},
    }
    defs["Route"] = {
        "type": "object",
        "description": "A route moves item events (publish, edit, retract) from one source to one or more sinks.",
        "properties": route_properties,
        "required": ["name", "from", "to"],
        "additionalProperties": False,
    }
    properties["routes"] = {
        "description": "Routes move item events from one source to one or more sinks.",
        "anyOf": [{"type": "array", "items": {"$ref": "#/$defs/Route"}}, {"type": "null"}],
    }
    schema = {
        "$schema": DRAFT,
        "title": "thoonk-bridge config",
        "description": "The YAML config file of thoonk-bridge (`thoonk-bridge check FILE` checks everything).",
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    # the engine's, the routes' and the options' own definitions were copied in above: keep what is used
    schema["$defs"] = {name: defs[name] for name in sorted(_used_defs(schema, defs))}
    return schema


def schema_text(plugins: Mapping[str, type[Plugin[Any]]]) -> str:
    """:func:`config_schema` as indented JSON, ending with a newline."""
    return json.dumps(config_schema(plugins), indent=2, ensure_ascii=False) + "\n"


def _used_defs(root: Any, defs: Mapping[str, Any]) -> set[str]:
    """Names of the definitions ``root`` refers to, directly or through other definitions."""
    used: set[str] = set()
    todo = [root]
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            target = node.get("$ref")
            if isinstance(target, str) and target.startswith("#/$defs/"):
                name = target.removeprefix("#/$defs/")
                if name not in used:
                    used.add(name)
                    todo.append(defs[name])
            todo.extend(node.values())
        elif isinstance(node, list):
            todo.extend(node)
    return used


def _endpoint_forms(
    kind: EndpointKind[Any, Any],
    role: Literal["source", "sink"],
    defs: dict[str, Any],
    refs: Mapping[tuple[Any, Any], Mapping[str, Any]],
) -> list[dict[str, Any]]:
    """The string form (when no option is required) and the mapping form of one kind in one role."""
    model = kind.source_options if role == "source" else kind.sink_options
    if model is None:
        return []
    name = refs[(model, "validation")]["$ref"].rsplit("/", 1)[1]
    options = copy.deepcopy(defs[name])
    props: dict[str, Any] = options.get("properties", {})
    address = props.pop("address", {})
    pattern = _endpoint_pattern(kind.name, address.get("pattern"))
    what = kind.description or f"{kind.name} endpoint"
    endpoint = {"type": "string", "pattern": pattern, "description": f"{kind.name}:ADDRESS ({what})"}
    if address.get("description"):
        endpoint["description"] += f"; ADDRESS: {address['description']}"
    required = [k for k in options.get("required", []) if k != "address"]
    mapping = {
        "type": "object",
        "title": f"{kind.name} {role} (mapping form)",
        "description": options.get("description", ""),
        "properties": {"endpoint": endpoint, **props},
        "required": ["endpoint", *required],
        "additionalProperties": False,
    }
    forms: list[dict[str, Any]] = []
    if not required:
        forms.append({**endpoint, "title": f"{kind.name} {role}"})
    forms.append(mapping)
    return forms


def _endpoint_pattern(kind: str, address_pattern: str | None) -> str:
    """``^KIND:ADDRESS$`` with the address model's own pattern when it has one (anchors dropped)."""
    if not address_pattern:
        return f"^{kind}:.+$"
    inner = address_pattern.removeprefix("^")
    if inner.endswith("$") and not inner.endswith("\\$"):
        inner = inner[:-1]
    return f"^{kind}:(?:{inner})$"
