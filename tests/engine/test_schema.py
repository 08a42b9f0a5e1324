"""``thoonk-bridge schema``: a JSON Schema of the whole config that editors can trust.

The schema says yes to what ``check`` accepts (config/example.yaml, the YAML examples of docs/*.md,
the test configs) and no to what it refuses (unknown keys, unknown kinds, options of another kind,
wrong types), whichever plugins are installed.
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.support.config_plugins import FULL_CONFIG, PLUGINS
from thoonk_bridge.config import ConfigError, load_config, substitute_env
from thoonk_bridge.config.json_schema import DRAFT, config_schema
from thoonk_bridge.discovery import discover_plugins

REPO = Path(__file__).resolve().parents[2]


@functools.cache
def installed() -> dict[str, Any]:
    """The built-in plugins (and any other installed), loaded once."""
    return discover_plugins()


def validator(plugins: Any = None) -> jsonschema.Draft202012Validator:
    schema = config_schema(installed() if plugins is None else plugins)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def errors(v: jsonschema.Draft202012Validator, text: str) -> list[str]:
    data = yaml.safe_load(textwrap.dedent(text))
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in v.iter_errors(data)]


def check_accepts(tmp_path: Path, text: str, plugins: Any, env: dict[str, str] | None = None) -> None:
    path = tmp_path / "bridge.yaml"
    path.write_text(textwrap.dedent(text))
    load_config(path, env=env or {}, plugins=plugins)


def check_refuses(tmp_path: Path, text: str, plugins: Any) -> None:
    path = tmp_path / "bridge.yaml"
    path.write_text(textwrap.dedent(text))
    with pytest.raises(ConfigError):
        load_config(path, env={}, plugins=plugins)


# --------------------------------------------------------------------------- the command


def test_schema_command_prints_and_writes_the_schema(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "thoonk_bridge.cli", "schema"]
    printed = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=tmp_path)
    schema = json.loads(printed.stdout)
    assert schema["$schema"] == DRAFT == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    assert {"redis", "http", "plugins", "routes", "lease_seconds"} <= set(schema["properties"])
    assert set(schema["properties"]["plugins"]["anyOf"][0]["properties"]) == set(installed())

    out = tmp_path / "thoonk-bridge.schema.json"
    written = subprocess.run([*cmd, "--output", str(out)], capture_output=True, text=True, check=True)
    assert written.stdout == ""
    assert json.loads(out.read_text()) == schema

    failed = subprocess.run([*cmd, "--output", str(tmp_path / "no" / "such.json")], capture_output=True, text=True)
    assert failed.returncode == 1 and failed.stderr.startswith("error: cannot write")


def test_every_key_has_a_description() -> None:
    """Editors show these on hover: the schema carries every model field's description."""
    schema = config_schema(installed())
    missing: list[str] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for key, sub in (node.get("properties") or {}).items():
                if not (isinstance(sub, dict) and sub.get("description")):
                    missing.append(f"{path}.{key}")
            for key, sub in node.items():
                walk(sub, f"{path}.{key}")
        elif isinstance(node, list):
            for i, sub in enumerate(node):
                walk(sub, f"{path}.{i}")

    walk(schema, "")
    assert missing == []


# --------------------------------------------------------------------------- what it accepts


def test_example_yaml_is_valid_as_written_and_substituted() -> None:
    v = validator()
    raw = (REPO / "config" / "example.yaml").read_text()
    assert raw.startswith("# yaml-language-server: $schema=./thoonk-bridge.schema.json\n")
    assert [e.message for e in v.iter_errors(yaml.safe_load(raw))] == []
    substituted = substitute_env(raw, {}, file="example.yaml")
    assert [e.message for e in v.iter_errors(yaml.safe_load(substituted))] == []


def _doc_configs() -> list[tuple[str, str]]:
    """The ```yaml examples of docs/*.md that are configs (mappings of top-level keys)."""
    top = set(config_schema({})["properties"])
    found = []
    for path in sorted((REPO / "docs").glob("*.md")):
        for i, block in enumerate(re.findall(r"```yaml\n(.*?)```", path.read_text(), re.S)):
            data = yaml.safe_load(block)
            if isinstance(data, dict) and set(data) <= top:
                found.append((f"{path.name}#{i}", block))
    return found


@pytest.mark.parametrize(("where", "block"), _doc_configs(), ids=[w for w, _ in _doc_configs()])
def test_yaml_examples_in_the_docs_are_valid(where: str, block: str) -> None:
    assert errors(validator(), block) == []


def test_docs_have_config_examples() -> None:
    assert {w.split("#")[0] for w, _ in _doc_configs()} >= {"websub.md", "xmpp.md", "console.md", "feeds.md"}


GOOD_BUILTIN = """
redis: ${REDIS_URL:-}
http:
plugins:
  feeds:
  websub: {hub: false, publish_hubs: ["https://hub.example/"], outbound: {allow_private: true}}
  xmpp:
    jid: bridge@example.org
    password: "${XMPP_PASSWORD}"
    accounts:
      other: {jid: other@example.org, password: x, tls: starttls}
routes:
  - name: out
    from: thoonk:news
    to:
      - {endpoint: "feeds:news", title: News, formats: [atom, json]}
      - websub:news
      - {endpoint: "xmpp:pubsub.example.org/news", account: other, max_items: 20, access_model: open}
      - {endpoint: "thoonk:copy", max_length: 100}
    mirror: true
    format: atom
    initial: latest:10
  - name: in
    from: {endpoint: "websub:https://partner.example/feed.atom", secret: true, lease_seconds: 86400}
    to: thoonk:partner
  - name: polled
    from: {endpoint: "feeds:https://other.example/feed.xml", interval: 60, identity: link}
    to: "xmpp:pubsub.example.org/other/node"
"""


def test_a_config_using_every_builtin_kind_is_valid(tmp_path: Path) -> None:
    assert errors(validator(), GOOD_BUILTIN) == []
    check_accepts(tmp_path, GOOD_BUILTIN, installed(), {"XMPP_PASSWORD": "pw"})  # and `check` agrees


TEST_PLUGIN_CONFIGS = [
    FULL_CONFIG,
    """
    routes:
      - &base {name: a, from: "thoonk:a", to: "thoonk:b", mirror: true}
      - <<: *base
        name: b
        to: thoonk:c
    """,
    """
    plugins:
      chat: {jid: a@b, password: p, tls: {verify: false}}
      hook:
    routes:
      - {name: out, from: "thoonk:updates", to: "chat:pubsub.example.org/updates"}
      - {name: in, from: "chat:pubsub.example.org/updates", to: "thoonk:updates"}
    """,
]


@pytest.mark.parametrize("text", TEST_PLUGIN_CONFIGS)
def test_configs_of_third_party_plugins_are_valid(tmp_path: Path, text: str) -> None:
    assert errors(validator(PLUGINS), text) == []
    check_accepts(tmp_path, text, PLUGINS, {"PW": "x"})


# --------------------------------------------------------------------------- what it refuses

BAD = [
    ("unknown top-level key", "routs: []"),
    ("unknown engine value", "log_level: loud"),
    ("wrong type", "lease_seconds: soon"),
    ("unknown http key", "http: {listen: '127.0.0.1:1', port: 2}"),
    ("plugin not installed", "plugins: {nope: {}}"),
    ("unknown plugin setting", "plugins: {feeds: {path_prefx: /x}}"),
    ("nested plugin setting", "plugins: {feeds: {outbound: {allow_everything: true}}}"),
    ("required plugin setting", "plugins: {xmpp: {password: x}}"),
    ("route without to", "routes: [{name: a, from: 'thoonk:a'}]"),
    ("route without name", "routes: [{from: 'thoonk:a', to: 'thoonk:b'}]"),
    ("unknown route key", "routes: [{name: a, from: 'thoonk:a', to: 'thoonk:b', mirorr: true}]"),
    ("bad route name", "routes: [{name: '-a', from: 'thoonk:a', to: 'thoonk:b'}]"),
    ("bad initial", "routes: [{name: a, from: 'thoonk:a', to: 'thoonk:b', initial: some}]"),
    ("bad format", "routes: [{name: a, from: 'thoonk:a', to: 'thoonk:b', format: yaml}]"),
    ("two sources", "routes: [{name: a, from: ['thoonk:a', 'thoonk:c'], to: 'thoonk:b'}]"),
    ("no sinks", "routes: [{name: a, from: 'thoonk:a', to: []}]"),
    ("unknown kind", "routes: [{name: a, from: 'nope:a', to: 'thoonk:b'}]"),
    ("no kind", "routes: [{name: a, from: 'thoonk:a', to: 'news'}]"),
    ("no address", "routes: [{name: a, from: 'thoonk:a', to: 'feeds:'}]"),
    ("bad address", "routes: [{name: a, from: 'thoonk:a', to: 'feeds:no/slash'}]"),
    ("option of another kind", "routes: [{name: a, from: 'thoonk:a', to: {endpoint: 'feeds:n', max_length: 3}}]"),
    ("sink option on a source", "routes: [{name: a, from: {endpoint: 'thoonk:a', max_length: 3}, to: 'thoonk:b'}]"),
    ("address as an option", "routes: [{name: a, from: 'thoonk:a', to: {endpoint: 'feeds:n', address: n}}]"),
    ("mapping without endpoint", "routes: [{name: a, from: 'thoonk:a', to: {title: T}}]"),
    ("sink-only kind as source", "routes: [{name: a, from: 'websub:news', to: 'thoonk:b'}]"),
    ("wrong option value", "routes: [{name: a, from: 'thoonk:a', to: {endpoint: 'feeds:n', max_items: 0}}]"),
]


@pytest.mark.parametrize(("what", "text"), BAD, ids=[w for w, _ in BAD])
def test_wrong_configs_are_refused_by_the_schema_and_by_check(tmp_path: Path, what: str, text: str) -> None:
    assert errors(validator(), text), f"the schema accepts a config with {what}"
    check_refuses(tmp_path, text, installed())


def test_a_kind_with_required_options_has_no_string_form(tmp_path: Path) -> None:
    """``check`` asks for the mapping form when a kind needs options; so does the schema."""
    from typing import ClassVar

    from pydantic import BaseModel

    from thoonk_bridge.plugin import EndpointKind, NoSettings, Plugin, Settings

    class Queue(Settings):
        address: str
        size: int

    class QueuePlugin(Plugin):
        name: ClassVar[str] = "queues"
        settings_model: ClassVar[type[BaseModel]] = NoSettings
        endpoint_kinds: ClassVar[tuple[EndpointKind, ...]] = (EndpointKind("queue", sink_options=Queue),)

    plugins = {"queues": QueuePlugin}
    v = validator(plugins)
    as_string = "routes: [{name: a, from: 'thoonk:a', to: 'queue:q'}]"
    as_mapping = "routes: [{name: a, from: 'thoonk:a', to: {endpoint: 'queue:q', size: 3}}]"
    assert errors(v, as_string) and errors(v, as_mapping) == []
    check_refuses(tmp_path, as_string, plugins)
    check_accepts(tmp_path, as_mapping, plugins)
