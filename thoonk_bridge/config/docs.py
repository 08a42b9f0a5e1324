"""Option tables made from the models, so that docs/*.md and config/example.yaml cannot drift from them.

A document holds marked blocks that this module regenerates:

- Markdown: ``<!-- options: SECTION -->`` ... ``<!-- /options -->``: a table of the section's keys
  (key, type, default, description); nested settings (``outbound``, ``http.console``) get one row per
  key, dotted.
- YAML (config/example.yaml): ``# options: SECTION`` ... ``# /options``, indented like the keys they
  stand for: each key with its default, its description as a comment above it; keys without a default
  are written commented out.

``SECTION`` names a model (:func:`sections`): ``engine``, ``http``, ``http.console``, ``route``,
``PLUGIN.settings`` for each installed plugin and ``KIND.source`` / ``KIND.sink`` for each endpoint
kind (the endpoint's ``address`` is not an option: it is written in ``KIND:ADDRESS``).

``python -m thoonk_bridge.config.docs --write`` rewrites the blocks of docs/*.md and config/example.yaml;
without ``--write`` it lists the stale files and exits 1, as tests/engine/test_docs_options.py fails, when a
block differs from what the models give.
"""

from __future__ import annotations

import argparse
import enum
import json
import re
import sys
import types
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from thoonk_bridge.config.endpoints import _collect_kinds
from thoonk_bridge.config.schema import EngineSettings, HttpSettings, RouteOptions
from thoonk_bridge.console.settings import ConsoleSettings
from thoonk_bridge.plugin import Plugin

__all__ = ["check_files", "markdown_table", "sections", "update_text", "yaml_block", "yaml_scalar"]

REPO = Path(__file__).resolve().parents[2]
COMMAND = "python -m thoonk_bridge.config.docs --write"

_MD_BLOCK = re.compile(r"(<!-- options: ([\w.-]+) -->\n)(.*?)(<!-- /options -->)", re.S)
_YAML_BLOCK = re.compile(r"^([ \t]*)(# options: ([\w.-]+)[^\n]*\n)(.*?)^([ \t]*# /options)$", re.S | re.M)


def sections(plugins: Mapping[str, type[Plugin[Any]]]) -> dict[str, type[BaseModel]]:
    """Every documented model by section name (see the module docstring)."""
    out: dict[str, type[BaseModel]] = {
        "engine": EngineSettings,
        "http": HttpSettings,
        "http.console": ConsoleSettings,
        "route": RouteOptions,
    }
    for name in sorted(plugins):
        out[f"{name}.settings"] = plugins[name].settings_model
    kinds, _owners, _problems = _collect_kinds(plugins)
    for name in sorted(kinds):
        kind = kinds[name]
        if kind.source_options is not None:
            out[f"{name}.source"] = kind.source_options
        if kind.sink_options is not None:
            out[f"{name}.sink"] = kind.sink_options
    return out


# --------------------------------------------------------------------------- fields


def _fields(model: type[BaseModel], endpoint: bool) -> Iterator[tuple[str, FieldInfo]]:
    for name, info in model.model_fields.items():
        if endpoint and name == "address":
            continue  # written in KIND:ADDRESS, never as an option
        yield info.alias or name, info


def _nested(annotation: Any) -> type[BaseModel] | None:
    """The settings model of a field that is one (or one or nothing), else None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return _nested(args[0])
    return None


def _default(info: FieldInfo) -> Any:
    """The field's default value, :data:`PydanticUndefined` when it is required."""
    if info.default_factory is not None:
        return info.default_factory()  # type: ignore[call-arg]
    return info.default


def type_name(annotation: Any) -> str:
    """A reader's name for a field's type: ``number``, ``list of string``, ``atom | json``..."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is type(None):
        return "null"
    if origin is typing.Literal:
        return " | ".join(yaml_scalar(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        parts = [type_name(a) for a in args if a is not type(None)]
        return " | ".join(dict.fromkeys(parts))
    if origin in (tuple, list, set, frozenset):
        return f"list of {type_name(args[0])}" if args else "list"
    if origin is dict:
        inner = _nested(args[1])
        return f"mapping of name to {'mapping' if inner is not None else type_name(args[1])}"
    if isinstance(annotation, type):
        if issubclass(annotation, bool):
            return "boolean"
        if issubclass(annotation, enum.Enum):
            return " | ".join(str(m.value) for m in annotation)
        if issubclass(annotation, int):
            return "integer"
        if issubclass(annotation, float):
            return "number"
        if issubclass(annotation, SecretStr):
            return "secret string"
        if issubclass(annotation, str):
            return "string"
        if issubclass(annotation, Path):
            return "path"
        if issubclass(annotation, BaseModel):
            return "mapping"
    return str(annotation)


def yaml_scalar(value: Any) -> str:
    """``value`` as written in YAML, on one line."""
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, Path | str):
        text = str(value)
        plain = re.fullmatch(r"[A-Za-z0-9_./()+<>@-][A-Za-z0-9_./()+<>@ -]*", text) and text.strip() == text
        special = text.lower() in ("true", "false", "yes", "no", "on", "off", "null", "~") or _is_number(text)
        return text if plain and not special else json.dumps(text)
    if isinstance(value, tuple | list | set | frozenset):
        return "[" + ", ".join(yaml_scalar(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {yaml_scalar(v)}" for k, v in value.items()) + "}"
    return json.dumps(str(value))


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------- markdown


def markdown_table(model: type[BaseModel], *, endpoint: bool = False) -> str:
    """The section's table: key, type, default, description; nested settings one row per key."""
    rows = ["| key | type | default | description |", "|---|---|---|---|"]
    rows += _md_rows(model, "", endpoint)
    return "\n".join(rows) + "\n"


def _md_rows(model: type[BaseModel], prefix: str, endpoint: bool) -> list[str]:
    rows: list[str] = []
    for key, info in _fields(model, endpoint):
        nested = _nested(info.annotation)
        default = _default(info)
        if default is PydanticUndefined:
            shown = "required"
        elif nested is not None and default is not None:
            shown = "see below"
        elif default is None:
            shown = "none"
        elif isinstance(default, str | Path) and str(default):
            shown = f"`{default}`"
        else:
            shown = f"`{yaml_scalar(default)}`"
        kind = "mapping" if nested is not None else type_name(info.annotation)
        rows.append(f"| `{prefix}{key}` | {_cell(kind)} | {shown} | {_cell(info.description or '')} |")
        if nested is not None:
            rows += _md_rows(nested, f"{prefix}{key}.", False)
    return rows


def _cell(text: str) -> str:
    # `<state_dir>` would be read as an HTML tag
    return text.replace("|", "\\|").replace("\n", " ").replace("<", "&lt;").replace(">", "&gt;")


# --------------------------------------------------------------------------- YAML


def yaml_block(model: type[BaseModel], indent: str, *, endpoint: bool = False) -> str:
    """The section as YAML keys with their defaults, each described by a comment above it."""
    return "".join(f"{indent}{line}\n" if line else "\n" for line in _yaml_lines(model, endpoint))


def _yaml_lines(model: type[BaseModel], endpoint: bool) -> list[str]:
    lines: list[str] = []
    for key, info in _fields(model, endpoint):
        for part in _wrap(info.description or "", 96):
            lines.append(f"# {part}")
        nested = _nested(info.annotation)
        default = _default(info)
        if nested is not None and isinstance(default, BaseModel):
            lines.append(f"{key}:")
            lines += [f"  {line}" for line in _yaml_lines(nested, False)]
        elif default is PydanticUndefined:
            lines.append(f"# {key}: (required)")
        elif default is None:
            lines.append(f"# {key}: (unset)")
        else:
            lines.append(f"{key}: {yaml_scalar(default)}")
    return lines


def _wrap(text: str, width: int) -> list[str]:
    out: list[str] = []
    line = ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            out.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return [*out, line] if line else out


# --------------------------------------------------------------------------- files


def update_text(text: str, models: Mapping[str, type[BaseModel]], file: str = "") -> str:
    """``text`` with every marked block regenerated; ValueError for a block naming no known section."""

    def model_of(name: str) -> type[BaseModel]:
        if name not in models:
            raise ValueError(f"{file}: unknown options section {name!r} (known: {', '.join(models)})")
        return models[name]

    def endpoint(name: str) -> bool:
        return name.endswith((".source", ".sink"))

    def md(m: re.Match[str]) -> str:
        return m.group(1) + markdown_table(model_of(m.group(2)), endpoint=endpoint(m.group(2))) + m.group(4)

    def yml(m: re.Match[str]) -> str:
        body = yaml_block(model_of(m.group(3)), m.group(1), endpoint=endpoint(m.group(3)))
        return m.group(1) + m.group(2) + body + m.group(5)

    return _YAML_BLOCK.sub(yml, _MD_BLOCK.sub(md, text))


def documented_files(root: Path = REPO) -> list[Path]:
    """The files whose marked blocks are generated: docs/*.md and config/example.yaml."""
    return [*sorted((root / "docs").glob("*.md")), root / "config" / "example.yaml"]


def check_files(files: list[Path], models: Mapping[str, type[BaseModel]], *, write: bool) -> list[Path]:
    """The files whose blocks differ from the models (rewritten when ``write``)."""
    stale: list[Path] = []
    for path in files:
        text = path.read_text(encoding="utf-8")
        new = update_text(text, models, str(path))
        if new != text:
            stale.append(path)
            if write:
                path.write_text(new, encoding="utf-8")
    return stale


def main(argv: list[str] | None = None) -> int:
    from thoonk_bridge.discovery import discover_plugins

    parser = argparse.ArgumentParser(prog="python -m thoonk_bridge.config.docs", description=__doc__.split("\n")[0])
    parser.add_argument("--write", action="store_true", help="rewrite the stale blocks (default: only report them)")
    parser.add_argument("files", nargs="*", type=Path, help="default: docs/*.md and config/example.yaml")
    args = parser.parse_args(argv)
    models = sections(discover_plugins())
    stale = check_files(args.files or documented_files(), models, write=args.write)
    for path in stale:
        print(f"{'rewrote' if args.write else 'stale'}: {path}")
    return 1 if stale and not args.write else 0


if __name__ == "__main__":
    sys.exit(main())
