"""The option tables of docs/*.md and the plugin settings of config/example.yaml are the models'.

They are generated (``python -m thoonk_bridge.config.docs --write``) between markers; these tests fail
when a block differs from what the models give, when a field has no description, or when a model
has no table anywhere.
"""

from __future__ import annotations

import functools
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import BaseModel, Field

from thoonk_bridge.config.docs import (
    COMMAND,
    check_files,
    documented_files,
    markdown_table,
    sections,
    update_text,
    yaml_block,
)
from thoonk_bridge.discovery import discover_plugins
from thoonk_bridge.net import OutboundPolicy

REPO = Path(__file__).resolve().parents[2]


@functools.cache
def models() -> dict[str, type[BaseModel]]:
    return sections(discover_plugins())


def _all_models(model: type[BaseModel], seen: set[type[BaseModel]]) -> None:
    if model in seen:
        return
    seen.add(model)
    for info in model.model_fields.values():
        for inner in _models_in(info.annotation):
            _all_models(inner, seen)


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def test_docs_and_example_blocks_match_the_models() -> None:
    stale = check_files(documented_files(REPO), models(), write=False)
    assert stale == [], f"option blocks differ from the models in {[str(p) for p in stale]}: run {COMMAND}"


def test_every_settings_and_options_field_has_a_description() -> None:
    seen: set[type[BaseModel]] = set()
    for model in models().values():
        _all_models(model, seen)
    missing = [
        f"{m.__module__}.{m.__qualname__}.{name}"
        for m in seen
        for name, info in m.model_fields.items()
        if not (info.description or "").strip() and name != "address"
    ]
    assert sorted(missing) == []


def test_every_model_has_a_table() -> None:
    """A new plugin, settings model or endpoint kind gets its table (or its YAML block) somewhere."""
    text = "".join(p.read_text() for p in documented_files(REPO))
    used = set(re.findall(r"<!-- options: ([\w.-]+) -->", text)) | set(re.findall(r"# options: ([\w.-]+)", text))
    has_options = {name for name, model in models().items() if set(model.model_fields) - {"address"}}
    assert has_options - used - {"http"} == set()  # `engine`'s table has http.* as dotted rows


def test_the_command_writes_stale_blocks_and_checks(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text("# x\n\n<!-- options: http.console -->\n| old |\n<!-- /options -->\n")
    cmd = [sys.executable, "-m", "thoonk_bridge.config.docs"]
    check = subprocess.run([*cmd, str(doc)], capture_output=True, text=True)
    assert check.returncode == 1 and f"stale: {doc}" in check.stdout
    subprocess.run([*cmd, "--write", str(doc)], check=True, capture_output=True)
    assert "| `loopback_without_token` | boolean | `false` |" in doc.read_text()
    assert subprocess.run([*cmd, str(doc)], capture_output=True).returncode == 0


# --------------------------------------------------------------------------- rendering


class Inner(BaseModel):
    deep: bool = Field(default=False, description="A nested key.")


class Sample(BaseModel):
    address: str = Field(description="Written in KIND:ADDRESS.")
    size: int = Field(default=3, description="How many | at most.")
    mode: Literal["a", "b"] = Field(default="a", description="Which one.")
    name: str | None = Field(default=None, description="Default <the kind>.")
    where: str = Field(description="Required.")
    inner: Inner = Field(default_factory=Inner, description="Some nesting.")
    hosts: tuple[str, ...] = Field(default=(), description="A list.")


def test_markdown_table_rows() -> None:
    assert markdown_table(Sample, endpoint=True).splitlines() == [
        "| key | type | default | description |",
        "|---|---|---|---|",
        "| `size` | integer | `3` | How many \\| at most. |",
        "| `mode` | a \\| b | `a` | Which one. |",
        "| `name` | string | none | Default &lt;the kind&gt;. |",
        "| `where` | string | required | Required. |",
        "| `inner` | mapping | see below | Some nesting. |",
        "| `inner.deep` | boolean | `false` | A nested key. |",
        "| `hosts` | list of string | `[]` | A list. |",
    ]


def test_yaml_block_is_valid_yaml_with_the_defaults() -> None:
    import yaml

    text = yaml_block(OutboundPolicy, "  ")
    assert text.startswith("  # Allow loopback addresses")
    assert yaml.safe_load(text) == {"allow_loopback": False, "allow_private": False, "allowed_networks": []}
    sample = yaml_block(Sample, "")
    assert "# where: (required)\n" in sample and "# name: (unset)\n" in sample
    assert "# address: (required)\n" in sample
    assert yaml.safe_load(sample) == {"size": 3, "mode": "a", "inner": {"deep": False}, "hosts": []}


def test_update_text_regenerates_blocks_and_refuses_unknown_sections() -> None:
    known = {"sample.sink": Sample}
    md = "a\n<!-- options: sample.sink -->\nold\n<!-- /options -->\nb\n"
    assert update_text(md, known) == "a\n<!-- options: sample.sink -->\n" + markdown_table(
        Sample, endpoint=True
    ) + "<!-- /options -->\nb\n"
    yml = "x:\n  # options: sample.sink (generated)\n  old: 1\n  # /options\ny: 2\n"
    out = update_text(yml, known)
    assert out.startswith("x:\n  # options: sample.sink (generated)\n  # How many")
    assert out.endswith("  # /options\ny: 2\n")
    assert "address" not in out  # an endpoint's address is not an option
    with pytest.raises(ValueError, match="unknown options section 'nope'"):
        update_text("<!-- options: nope -->\n<!-- /options -->", known)


def test_hand_written_tables_state_the_models_defaults() -> None:
    """Tables written by hand with a ``default`` column (docs/security.md) agree with the models."""
    from thoonk_bridge.config.docs import yaml_scalar

    defaults: dict[str, set[str]] = {}
    seen: set[type[BaseModel]] = set()
    for model in models().values():
        _all_models(model, seen)
    for model in seen:
        for name, info in model.model_fields.items():
            if not info.is_required() and info.default_factory is None and info.default is not None:
                defaults.setdefault(name, set()).add(yaml_scalar(info.default).strip('"'))
    checked = 0
    for path in sorted((REPO / "docs").glob("*.md")):
        text = re.sub(r"<!-- options: .*?<!-- /options -->", "", path.read_text(), flags=re.S)
        for table in re.findall(r"^(\|[^\n]*\|\n\|[-|]+\|\n(?:\|[^\n]*\|\n)+)", text, re.M):
            header = [c.strip().lower() for c in table.splitlines()[0].strip("|").split("|")]
            if len(header) < 2 or header[1] != "default":
                continue
            for row in table.splitlines()[2:]:
                cells = [c.strip() for c in row.strip("|").split("|")]
                key = re.fullmatch(r"`([a-z_]+)`", cells[0])
                if key is None or len(defaults.get(key.group(1), ())) != 1:
                    continue  # not a key, or one whose default differs between models
                (expected,) = defaults[key.group(1)]
                stated = cells[1].strip("`").removesuffix(" s")
                assert stated == expected, f"{path.name}: {key.group(1)} defaults to {expected}, not {stated}"
                checked += 1
    assert checked >= 4  # docs/security.md's http table
