"""Config loading: exact ``FILE:LINE:COL: path: message`` errors, env substitution, topology."""

from __future__ import annotations

import re
import textwrap
import typing
from pathlib import Path
from typing import ClassVar

import pytest
from pydantic import BaseModel

from tests.support.config_plugins import FULL_CONFIG, PLUGINS, ChatSettings, ChatSinkNode, FilesSettings, HookSource
from thoonk_bridge.config import (
    BridgeConfig,
    ConfigError,
    ConfigProblem,
    EndpointError,
    EngineSettings,
    HttpSettings,
    RouteOptions,
    endpoint_kinds,
    load_config,
    load_env_file,
    parse_endpoint,
    substitute_env,
)
from thoonk_bridge.config.docs import yaml_scalar
from thoonk_bridge.payload import Format
from thoonk_bridge.plugin import Endpoint, EndpointKind, NoSettings, Plugin, discover_plugins
from thoonk_bridge.plugins.thoonk.settings import ThoonkSinkOptions, ThoonkSourceOptions

REPO = Path(__file__).resolve().parents[2]

KINDS = endpoint_kinds(PLUGINS)


def write(tmp_path: Path, text: str, name: str = "bridge.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def load(tmp_path: Path, text: str, **kwargs: object) -> BridgeConfig:
    kwargs.setdefault("plugins", PLUGINS)
    kwargs.setdefault("env", {})
    return load_config(write(tmp_path, text), **kwargs)  # type: ignore[arg-type]


def problems(tmp_path: Path, text: str, **kwargs: object) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, **kwargs)
    return [str(p) for p in info.value.problems]


# --------------------------------------------------------------------------- good configs


def test_minimal_config_and_defaults(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
        routes:
          - name: copy
            from: thoonk:a
            to: thoonk:b
        """,
    )
    assert config.redis is None
    assert config.state_dir == tmp_path / "data"
    assert config.source_file == tmp_path / "bridge.yaml"
    assert config.http.listen == "127.0.0.1:8080"
    assert config.http.base_url == "http://127.0.0.1:8080"
    assert (config.drain_seconds, config.log_level, config.log_format) == (10.0, "info", "auto")
    assert config.job_maintenance_seconds == 30.0
    assert config.plugins == {}
    assert config.enabled_plugins == frozenset()
    (route,) = config.routes
    assert route.name == "copy" and route.mirror is False and route.format is None
    assert route.initial == "all" and route.initial_limit is None
    assert route.source == Endpoint("thoonk", "a", ThoonkSourceOptions(address="a"))
    assert route.sinks == [Endpoint("thoonk", "b", ThoonkSinkOptions(address="b"))]
    assert config.route("copy") is route


def test_full_config(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        FULL_CONFIG,
        env={"PW": "s3cret $x"},
    )
    assert config.redis == "redis://127.0.0.1:6379/0"
    assert config.state_dir == Path("/var/lib/bridge")
    assert config.http.host == "::1" and config.http.port == 9000
    assert config.http.base_url == "https://bridge.example.org/prefix"
    assert config.plugins["chat"] == ChatSettings(jid="bridge@example.org", password="s3cret $x")
    assert config.plugins["files"] == FilesSettings()  # used by a route, defaults
    assert config.plugins["hook"] == NoSettings()
    assert config.enabled_plugins == {"chat", "files", "hook"}
    out, inbound = config.routes
    assert out.mirror and out.format is Format.JSON and out.initial_limit == 5
    assert [str(s) for s in out.sinks] == ["files:news", "chat:pubsub.example.org/news", "thoonk:copy"]
    assert out.sinks[1].options == ChatSinkNode(address="pubsub.example.org/news", max_items=50)
    assert out.sinks[2].options == ThoonkSinkOptions(address="copy", max_length=100)
    assert inbound.source == Endpoint(
        "hook", "https://partner.example/feed.atom", HookSource(address="https://partner.example/feed.atom")
    )
    assert inbound.initial_limit == 0
    assert (config.drain_seconds, config.log_level, config.log_format) == (2.5, "debug", "json")


def test_opposite_pair_of_routes_is_allowed(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
        plugins:
          chat: {jid: a@b, password: p}
        routes:
          - {name: out, from: "thoonk:updates", to: "chat:pubsub.example.org/updates"}
          - {name: in, from: "chat:pubsub.example.org/updates", to: "thoonk:updates"}
        """,
    )
    assert [r.name for r in config.routes] == ["out", "in"]


def test_anchors_and_merge_keys(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
        routes:
          - &base {name: a, from: "thoonk:a", to: "thoonk:b", mirror: true}
          - <<: *base
            name: b
            to: thoonk:c
        """,
    )
    assert [(r.name, r.mirror, str(r.sinks[0])) for r in config.routes] == [
        ("a", True, "thoonk:b"),
        ("b", True, "thoonk:c"),
    ]


def test_state_dir_relative_to_config_file(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    path = write(tmp_path, "state_dir: var/state\nroutes: []\n", "etc/bridge.yaml")
    assert load_config(path, env={}, plugins={}).state_dir == tmp_path / "etc" / "var" / "state"


EXAMPLE = REPO / "config" / "example.yaml"


def _field_names(model: type[BaseModel]) -> list[str]:
    names = []
    for name, info in model.model_fields.items():
        names.append(name)
        inner = info.annotation
        for arg in (inner, *typing.get_args(inner)):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                names += _field_names(arg)
    return names


def test_example_yaml_loads() -> None:
    example = EXAMPLE
    installed = discover_plugins()
    config = load_config(example, env={}, plugins=installed)
    assert config.routes and config.redis is None
    assert config.state_dir.resolve() == REPO / "data"  # the README's ./data
    assert {"feeds", "websub"} <= config.enabled_plugins
    with_url = load_config(example, env={"REDIS_URL": "redis://r:6379/1"}, plugins=installed)
    assert with_url.redis == "redis://r:6379/1"


def test_example_yaml_documents_every_engine_key() -> None:
    text = EXAMPLE.read_text()
    keys = [
        *EngineSettings.model_fields,
        *HttpSettings.model_fields,
        *RouteOptions.model_fields,
        "plugins",
        "routes",
        "from",
        "to",
        "endpoint",
        "max_length",
    ]
    for key in keys:
        assert f"{key}:" in text, f"config/example.yaml does not document {key!r}"


def test_example_yaml_documents_every_key_of_the_enabled_plugins() -> None:
    # every key of the enabled plugins' settings too (their blocks are generated from the models:
    # python -m thoonk_bridge.config.docs --write), nested ones included
    installed = discover_plugins()
    config = load_config(EXAMPLE, env={}, plugins=installed)
    text = EXAMPLE.read_text()
    for name in sorted(config.enabled_plugins):
        model = installed[name].settings_model
        for key in _field_names(model):
            assert re.search(rf"^\s*(# )?{key}:", text, re.M), f"config/example.yaml leaves out {name}.{key}"


def test_example_yaml_mentions_only_known_keys() -> None:
    installed = discover_plugins()
    text = EXAMPLE.read_text()
    engine_models: list[type[BaseModel]] = [EngineSettings, RouteOptions]
    # and every key it mentions, written or commented out, is one that some model has
    known = {"plugins", "routes", "from", "to", "endpoint", "options", *installed}  # options: the block markers
    for model in engine_models + [p.settings_model for p in installed.values()]:
        known.update(_field_names(model))
    for kind in endpoint_kinds(installed).values():
        for options in (kind.source_options, kind.sink_options):
            if options is not None:
                known.update(_field_names(options))
    mentioned = re.findall(r"^\s*(?:#\s*)?(?:-\s+)?([a-z_]+):(?:\s|$)", text, re.M)
    assert mentioned and sorted(set(mentioned) - known) == []


def test_example_yaml_defaults_match_the_models() -> None:
    text = EXAMPLE.read_text()
    # the "Default: X" of a hand-written comment is the model's default for the key(s) below it
    fields = {**RouteOptions.model_fields, **HttpSettings.model_fields, **EngineSettings.model_fields}
    lines = text.splitlines()
    checked = 0
    for i, line in enumerate(lines):
        said = re.search(r"#.*\bDefaults?: (.+)$", line)
        if not said:
            continue
        keys = []
        for below in lines[i + 1 :]:
            m = re.match(r"^\s*(?:- )?([a-z_]+):", below)
            if m:
                keys.append(m.group(1))
            elif not below.strip().startswith("#") or keys:
                break
        values = [v.strip() for v in said.group(1).split(",")]
        for key, value in zip(keys, values, strict=False):
            default = fields[key].default if key in fields else None
            if default is None or " " in value:  # "Default: a random id ...": said in words
                continue
            assert value == yaml_scalar(default).strip('"'), f"config/example.yaml says {key} defaults to {value}"
            checked += 1
    assert checked >= 10


# --------------------------------------------------------------------------- error table

BAD = [
    # --- YAML itself
    pytest.param(
        "routes:\n  - name: x\n    from: thoonk:a\n   to: thoonk:b\n",
        [
            "4:4: invalid YAML: expected <block end>, but found '<block mapping start>' "
            "(while parsing a block collection on line 2)"
        ],
        id="yaml-indentation",
    ),
    pytest.param(
        'http: {listen: "127.0.0.1:1"\n',
        ["2:1: invalid YAML: expected ',' or '}', but got '<stream end>' (while parsing a flow mapping on line 1)"],
        id="yaml-unclosed-flow",
    ),
    pytest.param(
        "routes: []\n---\nroutes: []\n",
        ["2:1: invalid YAML: expected a single document in the stream, but found another document"],
        id="yaml-two-documents",
    ),
    pytest.param(
        "http:\n\tlisten: x\n",
        ["2:1: invalid YAML: found character '\\t' that cannot start any token; indent with spaces, not tabs"],
        id="yaml-tab",
    ),
    pytest.param("? [a]\n: 1\n", ["1:3: mapping keys must be plain scalars"], id="yaml-complex-key"),
    pytest.param(
        "a: &x [*x]\n",
        [
            "1:1: a: unknown key 'a' (allowed: redis, state_dir, http, drain_seconds, "
            "log_level, log_format, job_maintenance_seconds, lease_seconds, instance, plugins, routes)",
            "1:4: a.0: recursive alias: a node cannot contain itself",
        ],
        id="yaml-recursive-alias",
    ),
    pytest.param(
        "log_level: 2020-13-45\n",
        ["1:12: log_level: Input should be 'debug', 'info', 'warning' or 'error'"],
        id="not-a-date",
    ),
    pytest.param(
        "\ufeffroutes: []\r\nlog_level: bad\r\n",
        ["2:12: log_level: Input should be 'debug', 'info', 'warning' or 'error'"],
        id="bom-crlf",
    ),
    pytest.param(
        "log_level: info\nlog_level: debug\n",
        ["2:1: log_level: duplicate key (first at line 1)"],
        id="duplicate-key",
    ),
    pytest.param("", ["1:1: the config is empty: expected a mapping with at least 'routes'"], id="empty"),
    pytest.param(
        "- a\n",
        [
            "1:1: the config must be a mapping of keys (redis, state_dir, http, drain_seconds, log_level, "
            "log_format, job_maintenance_seconds, lease_seconds, instance, plugins, routes), got a list"
        ],
        id="not-a-mapping",
    ),
    # --- engine keys
    pytest.param(
        "redis: http://localhost\n",
        [
            "1:8: redis: unsupported Redis URL 'http://localhost': the scheme must be one of redis://, "
            "rediss://, unix://, redis+sentinel://, rediss+sentinel://, redis+cluster://, rediss+cluster://"
        ],
        id="redis-scheme",
    ),
    pytest.param(
        "redis: unix://\n",
        ["1:8: redis: a unix:// Redis URL needs a socket path (unix:///run/redis.sock) (in unix://)"],
        id="redis-unix",
    ),
    # Redis URLs redis-py only refuses when it connects: refused here, with the URL's secrets masked.
    pytest.param(
        "redis: redis://:hunter2@h:notaport/0\n",
        ["1:8: redis: bad port 'notaport' in 'h:notaport': a number from 1 to 65535 (in redis://***@h:notaport/0)"],
        id="redis-port-not-a-number",
    ),
    pytest.param(
        "redis: redis://h:99999/0\n",
        ["1:8: redis: bad port '99999' in 'h:99999': a number from 1 to 65535 (in redis://h:99999/0)"],
        id="redis-port-out-of-range",
    ),
    pytest.param(
        "redis: redis+sentinel://h:abc/svc?sentinel_password=hunter2\n",
        ["1:8: redis: bad port 'abc' in 'h:abc': a number from 1 to 65535 "
         "(in redis+sentinel://h:abc/svc?sentinel_password=***)"],
        id="redis-sentinel-port",
    ),
    pytest.param(
        "redis: redis+cluster://h:abc\n",
        ["1:8: redis: bad port 'abc' in 'h:abc': a number from 1 to 65535 (in redis+cluster://h:abc)"],
        id="redis-cluster-port",
    ),
    pytest.param(
        "redis: redis://h/0?socket_timeout=abc\n",
        ["1:8: redis: Invalid value for 'socket_timeout' in connection URL. (in redis://h/0?socket_timeout=abc)"],
        id="redis-option-value",
    ),
    pytest.param(
        "redis: redis://h/0?socket_timout=1\n",
        ["1:8: redis: unknown option 'socket_timout' in the query (did you mean 'socket_timeout'?) "
         "(in redis://h/0?socket_timout=***)"],
        id="redis-option-name",
    ),
    pytest.param(
        "redis: rediss://h/0?ssl_cert_reqs=bogus\n",
        ["1:8: redis: the query's options are refused by redis-py: Invalid SSL Certificate Requirements Flag: "
         "bogus (in rediss://h/0?ssl_cert_reqs=bogus)"],
        id="redis-option-refused-by-the-connection",
    ),
    pytest.param(
        "redis: redis://h/zero\n",
        ["1:8: redis: bad db number 'zero' after the host: a number from 0 (redis://host:6379/0) (in redis://h/zero)"],
        id="redis-db",
    ),
    pytest.param(
        "redis: http://user:hunter2@localhost\n",
        [
            "1:8: redis: unsupported Redis URL 'http://***@localhost': the scheme must be one of redis://, "
            "rediss://, unix://, redis+sentinel://, rediss+sentinel://, redis+cluster://, rediss+cluster://"
        ],
        id="redis-scheme-password",
    ),
    pytest.param(
        "redis: 6379\n",
        ["1:8: redis: Input should be a valid string (YAML read this unquoted value as a int; quote it)"],
        id="redis-int",
    ),
    pytest.param(
        "colour: red\n",
        [
            "1:1: colour: unknown key 'colour' (allowed: redis, state_dir, http, "
            "drain_seconds, log_level, log_format, job_maintenance_seconds, "
            "lease_seconds, instance, plugins, routes)"
        ],
        id="unknown-top-key",
    ),
    pytest.param(
        "log_levl: info\n",
        ["1:1: log_levl: unknown key 'log_levl' (did you mean 'log_level'?)"],
        id="unknown-top-key-close",
    ),
    pytest.param(
        "log_level: loud\n", ["1:12: log_level: Input should be 'debug', 'info', 'warning' or 'error'"], id="log-level"
    ),
    pytest.param(
        "log_format: xml\n", ["1:13: log_format: Input should be 'auto', 'json' or 'console'"], id="log-format"
    ),
    pytest.param(
        "drain_seconds: -1\n", ["1:16: drain_seconds: Input should be greater than or equal to 0"], id="drain"
    ),
    pytest.param(
        "job_maintenance_seconds: soon\n",
        ["1:26: job_maintenance_seconds: Input should be a valid number, unable to parse string as a number"],
        id="job-maintenance",
    ),
    pytest.param(
        "http:\n  listen: localhost\n",
        ["2:11: http.listen: expected HOST:PORT (e.g. 127.0.0.1:8080), got 'localhost'"],
        id="listen-no-port",
    ),
    pytest.param(
        "http:\n  listen: 0.0.0.0:99999\n",
        ["2:11: http.listen: port must be a number from 0 to 65535, got '99999'"],
        id="listen-port",
    ),
    pytest.param(
        "http:\n  listen: '::1:80'\n",
        ["2:11: http.listen: write an IPv6 address in brackets: [::1]:80"],
        id="listen-v6",
    ),
    pytest.param(
        "http:\n  listen: '[zz]:80'\n", ["2:11: http.listen: 'zz' is not an IPv6 address"], id="listen-bad-v6"
    ),
    pytest.param(
        "http:\n  public_url: ftp://x\n",
        ["2:15: http.public_url: must be an http:// or https:// URL, got 'ftp://x'"],
        id="public-url",
    ),
    pytest.param(
        "http:\n  public_url: https://x/?a=1\n",
        ["2:15: http.public_url: must not have a query or fragment: 'https://x/?a=***'"],
        id="public-url-query",
    ),
    pytest.param(
        "http:\n  port: 80\n",
        ["2:3: http.port: unknown key 'port' (allowed: listen, public_url, header_timeout, keepalive_timeout, "
         "max_connections, request_timeout, console)"],
        id="http-unknown",
    ),
    pytest.param(
        "http: 8080\n",
        ["1:7: http: Input should be a valid dictionary or instance of HttpSettings"],
        id="http-not-mapping",
    ),
    # --- plugins
    pytest.param(
        "plugins:\n  irc: {}\n",
        ["2:3: plugins.irc: no plugin named 'irc' is installed (installed: chat, files, hook)"],
        id="plugin-not-installed",
    ),
    pytest.param(
        "plugins:\n  chat:\n    jid: a@b\n",
        ["3:5: plugins.chat.password: required key is missing"],
        id="plugin-missing-setting",
    ),
    pytest.param(
        "plugins:\n  chat: {jid: a@b, password: p, pasword: q}\n",
        ["2:33: plugins.chat.pasword: unknown key 'pasword' (did you mean 'password'?)"],
        id="plugin-unknown-setting",
    ),
    pytest.param(
        "plugins:\n  chat:\n    jid: a@b\n    password: p\n    tls: {verify: maybe, ca: x}\n",
        [
            "5:19: plugins.chat.tls.verify: Input should be a valid boolean, unable to interpret input",
            "5:26: plugins.chat.tls.ca: unknown key 'ca' (allowed: verify)",
        ],
        id="plugin-nested",
    ),
    pytest.param(
        "plugins:\n  hook: {x: 1}\n",
        ["2:10: plugins.hook.x: unknown key 'x': no keys are allowed here"],
        id="plugin-no-settings",
    ),
    pytest.param(
        "plugins:\n  chat: {jid: a@b}\nroutes:\n  - {name: x, from: 'chat:a.b/c', to: 'thoonk:b'}\n",
        ["2:9: plugins.chat.password: required key is missing"],
        id="plugin-invalid-and-used",
    ),
    pytest.param(
        "plugins: [chat]\n",
        ["1:10: plugins: expected a mapping of plugin name to settings, got a list"],
        id="plugins-not-mapping",
    ),
    # --- routes: shape and options
    pytest.param(
        "routes: {name: x}\n", ["1:9: routes: expected a list of routes, got a mapping"], id="routes-not-list"
    ),
    pytest.param(
        "routes:\n  - thoonk:a\n",
        ["2:5: routes.0: a route must be a mapping with name, from and to; got str 'thoonk:a'"],
        id="route-not-mapping",
    ),
    pytest.param(
        "routes:\n  - from: thoonk:a\n    to: thoonk:b\n",
        ["2:5: routes.0.name: required key is missing"],
        id="route-no-name",
    ),
    pytest.param(
        "routes:\n  - name: x\n    to: thoonk:b\n",
        ["2:5: routes.0.from: required key is missing (the source endpoint, KIND:ADDRESS)"],
        id="route-no-from",
    ),
    pytest.param(
        "routes:\n  - name: x\n    from: thoonk:a\n",
        ["2:5: routes.0.to: required key is missing (one sink endpoint or a list)"],
        id="route-no-to",
    ),
    pytest.param(
        "routes:\n  - name: x\n    from: thoonk:a\n    to: []\n",
        ["4:9: routes.0.to: a route needs at least one sink"],
        id="route-empty-to",
    ),
    pytest.param(
        "routes:\n  - name: x\n    from: [thoonk:a, thoonk:c]\n    to: thoonk:b\n",
        ["3:11: routes.0.from: a route has exactly one source; use one route per source"],
        id="route-two-sources",
    ),
    pytest.param(
        "routes:\n  - name: bad name\n    from: thoonk:a\n    to: thoonk:b\n",
        [
            "2:11: routes.0.name: invalid route name 'bad name': use 1 to 100 letters, digits, '_', "
            "'.' or '-', starting with a letter or digit"
        ],
        id="route-name",
    ),
    pytest.param(
        "routes:\n  - name: 2024\n    from: thoonk:a\n    to: thoonk:b\n",
        ["2:11: routes.0.name: Input should be a valid string (YAML read this unquoted value as a int; quote it)"],
        id="route-name-int",
    ),
    pytest.param(
        "routes:\n  - {name: x, from: 'thoonk:a', to: 'thoonk:b', initial: 'latest:0'}\n",
        ["2:58: routes.0.initial: expected all, none or latest:N with N >= 1, got 'latest:0'"],
        id="initial-latest-0",
    ),
    pytest.param(
        "routes:\n  - {name: x, from: 'thoonk:a', to: 'thoonk:b', initial: some}\n",
        ["2:58: routes.0.initial: expected all, none or latest:N with N >= 1, got 'some'"],
        id="initial-garbage",
    ),
    pytest.param(
        "routes:\n  - {name: x, from: 'thoonk:a', to: 'thoonk:b', format: xml}\n",
        ["2:57: routes.0.format: Input should be 'atom', 'json' or 'text'"],
        id="format",
    ),
    pytest.param(
        "routes:\n  - {name: x, from: 'thoonk:a', to: 'thoonk:b', mirror: sometimes}\n",
        ["2:57: routes.0.mirror: Input should be a valid boolean, unable to interpret input"],
        id="mirror",
    ),
    pytest.param(
        "routes:\n  - {name: x, form: 'thoonk:a', to: 'thoonk:b'}\n",
        [
            "2:5: routes.0.from: required key is missing (the source endpoint, KIND:ADDRESS)",
            "2:15: routes.0.form: unknown key 'form' (did you mean 'format' or 'from'?)",
        ],
        id="route-typo",
    ),
    # --- endpoints
    pytest.param(
        "routes:\n  - {name: x, from: 'irc:#chan', to: 'thoonk:b'}\n",
        ["2:21: routes.0.from: unknown endpoint kind 'irc' (known kinds: chat, files, hook, thoonk)"],
        id="unknown-kind",
    ),
    pytest.param(
        "routes:\n  - {name: x, from: news, to: 'thoonk:b'}\n",
        ["2:21: routes.0.from: expected KIND:ADDRESS, got 'news' (kinds that can be a source: chat, hook, thoonk)"],
        id="no-kind",
    ),
    pytest.param(
        "routes:\n  - {name: x, from: 'thoonk:', to: 'thoonk:b'}\n",
        ["2:21: routes.0.from: thoonk: needs an address after the ':'"],
        id="no-address",
    ),
    pytest.param(
        "routes:\n  - {name: x, from: 'files:news', to: 'thoonk:b'}\n",
        ["2:21: routes.0.from: files:news cannot be a source (files endpoints are sinks only)"],
        id="cannot-source",
    ),
    pytest.param(
        "routes:\n  - name: x\n    from: thoonk:a\n    to: [thoonk:b, 'hook:https://x/y']\n",
        ["4:20: routes.0.to.1: hook:https://x/y cannot be a sink (hook endpoints are sources only)"],
        id="cannot-sink",
    ),
    pytest.param(
        "routes:\n  - name: x\n    from: thoonk:a\n    to: 'thoonk:b c'\n",
        ["4:9: routes.0.to: invalid address 'b c': String should match pattern '^[^\\s\\x00]{1,200}$'"],
        id="bad-address",
    ),
    pytest.param(
        "plugins: {chat: {jid: a, password: b}}\nroutes:\n  - name: x\n    from: thoonk:a\n"
        "    to:\n      endpoint: chat:Server/node\n",
        ["6:17: routes.0.to.endpoint: invalid address 'Server/node': String should match pattern '^[a-z.]+/[a-z-]+$'"],
        id="bad-address-mapping",
    ),
    pytest.param(
        "routes:\n  - name: x\n    from: thoonk:a\n    to:\n      - endpoint: thoonk:b\n"
        "        max_length: 0\n        maxlen: 3\n",
        [
            "6:21: routes.0.to.0.max_length: Input should be greater than or equal to 1",
            "7:9: routes.0.to.0.maxlen: unknown key 'maxlen' (did you mean 'max_length'?)",
        ],
        id="endpoint-options",
    ),
    pytest.param(
        "routes:\n  - name: x\n    from: thoonk:a\n    to: {max_length: 3}\n",
        ["4:9: routes.0.to.endpoint: required key is missing (KIND:ADDRESS)"],
        id="endpoint-mapping-no-endpoint",
    ),
    pytest.param(
        "routes:\n  - name: x\n    from: thoonk:a\n    to: {endpoint: thoonk:b, address: c}\n",
        ["4:30: routes.0.to.address: the address goes in 'endpoint' (KIND:ADDRESS)"],
        id="endpoint-mapping-address",
    ),
    pytest.param(
        "routes:\n  - name: x\n    from: thoonk:a\n    to: 42\n",
        ["4:9: routes.0.to: expected KIND:ADDRESS or a mapping with 'endpoint', got int 42"],
        id="endpoint-int",
    ),
    # --- topology
    pytest.param(
        "routes:\n  - {name: x, from: 'thoonk:a', to: 'thoonk:b'}\n  - {name: x, from: 'thoonk:c', to: 'thoonk:d'}\n",
        ["3:12: routes.1.name: duplicate route name 'x' (first used on line 2)"],
        id="duplicate-name",
    ),
    pytest.param(
        "routes:\n  - {name: x, from: 'thoonk:a', to: 'thoonk:b'}\n  - {name: y, from: 'thoonk:c', to: 'thoonk:b'}\n",
        [
            "3:37: routes.1.to: thoonk:b is already written by route 'x' (line 2); two sinks writing "
            "the same resource would overwrite each other"
        ],
        id="same-sink-two-routes",
    ),
    pytest.param(
        "routes:\n  - {name: x, from: 'thoonk:a', to: ['files:n', {endpoint: 'files:n', title: T}]}\n",
        [
            "2:49: routes.0.to.1: file:n.atom is already written by this route (line 2); two sinks "
            "writing the same resource would overwrite each other"
        ],
        id="same-sink-one-route",
    ),
    pytest.param(
        "routes:\n  - {name: x, from: 'thoonk:a', to: 'thoonk:a'}\n",
        ["2:37: routes.0.to: route 'x' writes into its own source thoonk:a"],
        id="self-loop",
    ),
    pytest.param(
        "routes:\n  - {name: ab, from: 'thoonk:a', to: 'thoonk:b'}\n"
        "  - {name: bc, from: 'thoonk:b', to: 'thoonk:c'}\n"
        "  - {name: ca, from: 'thoonk:c', to: ['thoonk:log', 'thoonk:a']}\n",
        [
            "4:53: routes.2.to.1: routes 'ab', 'bc', 'ca' form a loop (thoonk:a -> thoonk:b -> "
            "thoonk:c -> thoonk:a) that would ping-pong forever; only a pair of opposite routes "
            "(A -> B and B -> A) is allowed, because the router drops the echo of its own writes"
        ],
        id="three-route-loop",
    ),
    pytest.param(
        "routes:\n  - {name: x, from: 'chat:s.example/n', to: 'thoonk:b'}\n",
        [
            "2:21: routes.0.from: endpoint kind 'chat' needs the chat plugin's settings under "
            "plugins.chat (required: jid, password)"
        ],
        id="plugin-used-not-configured",
    ),
]


@pytest.mark.parametrize(("text", "expected"), BAD)
def test_error_table(tmp_path: Path, text: str, expected: list[str]) -> None:
    path = tmp_path / "bridge.yaml"
    path.write_text(text, newline="")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={}, plugins=PLUGINS)
    assert [str(p) for p in info.value.problems] == [f"{path}:{e}" for e in expected]


# --------------------------------------------------------------------------- many at once


def test_every_problem_reported_at_once(tmp_path: Path) -> None:
    got = problems(
        tmp_path,
        """
        redis: nope://x
        http:
          listen: localhost
        plugins:
          chat: {jid: a@b}
          irc: {}
        routes:
          - name: a
            from: thoonk:a
            to: [thoonk:b, 'files:a']
          - name: a
            from: bogus:x
            to: thoonk:b
            initial: latest:0
        """,
    )
    file = tmp_path / "bridge.yaml"
    assert [g.removeprefix(f"{file}:") for g in got] == [
        "1:8: redis: unsupported Redis URL 'nope://x': the scheme must be one of redis://, rediss://, "
        "unix://, redis+sentinel://, rediss+sentinel://, redis+cluster://, rediss+cluster://",
        "3:11: http.listen: expected HOST:PORT (e.g. 127.0.0.1:8080), got 'localhost'",
        "5:9: plugins.chat.password: required key is missing",
        "6:3: plugins.irc: no plugin named 'irc' is installed (installed: chat, files, hook)",
        "11:11: routes.1.name: duplicate route name 'a' (first used on line 8)",
        "12:11: routes.1.from: unknown endpoint kind 'bogus' (known kinds: chat, files, hook, thoonk)",
        "14:14: routes.1.initial: expected all, none or latest:N with N >= 1, got 'latest:0'",
    ]


def test_config_error_str_is_one_problem_per_line() -> None:
    error = ConfigError(
        [ConfigProblem("a.yaml", 3, 5, "routes.0.to", "bad"), ConfigProblem("a.yaml", 0, 0, "", "gone")]
    )
    assert str(error) == "a.yaml:3:5: routes.0.to: bad\na.yaml: gone"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.yaml", env={}, plugins={})
    assert str(info.value) == f"{tmp_path / 'nope.yaml'}: cannot read config: No such file or directory"


# --------------------------------------------------------------------------- env substitution

ENV = {"HOST": "redis.local", "EMPTY": "", "QUOTE": 'it\'s "x"', "PW": "p@ss"}

SUBST = [
    pytest.param("a: ${HOST}", "a: redis.local", id="plain"),
    pytest.param("a: x${HOST}y${HOST}", "a: xredis.localyredis.local", id="twice"),
    pytest.param("a: $$HOST $${HOST} $", "a: $HOST ${HOST} $", id="dollar-escape"),
    pytest.param("a: ${NOPE:-fallback}", "a: fallback", id="default-unset"),
    pytest.param("a: ${EMPTY:-fallback}", "a: fallback", id="default-empty"),
    pytest.param("a: ${EMPTY-fallback}", "a: ", id="dash-default-keeps-empty"),
    pytest.param("a: ${HOST:-fallback}", "a: redis.local", id="default-set"),
    pytest.param("a: ${NOPE:-}", "a: ", id="empty-default"),
    pytest.param("a: ${HOST:?need HOST}", "a: redis.local", id="required-set"),
    pytest.param("a: ${EMPTY?set it}", "a: ", id="question-allows-empty"),
    pytest.param('a: "${QUOTE}"', 'a: "it\'s \\"x\\""', id="escaped-in-double-quotes"),
    pytest.param("a: '${QUOTE}'", "a: 'it''s \"x\"'", id="escaped-in-single-quotes"),
    pytest.param("a: b # ${NOPE}\n# ${NOPE}", "a: b # ${NOPE}\n# ${NOPE}", id="comments-untouched"),
    pytest.param("a: 'x # ${HOST}'", "a: 'x # redis.local'", id="hash-inside-quotes"),
    pytest.param("url: http://h/#${HOST}", "url: http://h/#redis.local", id="hash-not-comment"),
]


@pytest.mark.parametrize(("text", "expected"), SUBST)
def test_substitute_env(text: str, expected: str) -> None:
    assert substitute_env(text, ENV, file="f.yaml") == expected


SUBST_ERRORS = [
    pytest.param("a: ${NOPE}", ["f.yaml:1:4: environment variable NOPE is not set"], id="unset"),
    pytest.param(
        "a: ${EMPTY:?EMPTY must name the node}", ["f.yaml:1:4: EMPTY: EMPTY must name the node"], id="required-empty"
    ),
    pytest.param("a: ${NOPE:?}", ["f.yaml:1:4: environment variable NOPE is not set"], id="required-no-message"),
    pytest.param(
        "a: ${1X}",
        [
            "f.yaml:1:4: invalid substitution ${1X}: expected ${NAME}, ${NAME:-default} or "
            "${NAME:?message} (NAME: letters, digits, _)"
        ],
        id="bad-name",
    ),
    pytest.param("a: ${HOST\nb: 1", ["f.yaml:1:4: unterminated ${: write $$ for a literal $"], id="unterminated"),
    pytest.param(
        "a: ${A}\nb:\n  c: x ${B:?B is the password} ${HOST} ${C}\n",
        [
            "f.yaml:1:4: environment variable A is not set",
            "f.yaml:3:8: B: B is the password",
            "f.yaml:3:40: environment variable C is not set",
        ],
        id="all-missing-at-once",
    ),
]


@pytest.mark.parametrize(("text", "expected"), SUBST_ERRORS)
def test_substitute_env_errors(text: str, expected: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        substitute_env(text, ENV, file="f.yaml")
    assert [str(p) for p in info.value.problems] == expected


def test_positions_after_substitution_point_into_the_original(tmp_path: Path) -> None:
    got = problems(
        tmp_path,
        """
        plugins:
          chat: {jid: "${LONG_JID_VARIABLE}", password: "${PW}", pasword: x}
        http: {public_url: "${SHORT}", listen: "127.0.0.1:${PORT}"}
        """,
        env={"LONG_JID_VARIABLE": "a@b", "PW": "p", "SHORT": "https://a.example.org/long/path", "PORT": "1x"},
    )
    file = tmp_path / "bridge.yaml"
    assert got == [
        f"{file}:2:58: plugins.chat.pasword: unknown key 'pasword' (did you mean 'password'?)",
        f"{file}:3:40: http.listen: port must be a number from 0 to 65535, got '1x'",
    ]


def test_multiline_value_keeps_later_lines_exact(tmp_path: Path) -> None:
    got = problems(tmp_path, 'a: "${ML}"\nlog_level: loud\n', env={"ML": "one\ntwo"})
    assert (
        got[-1] == f"{tmp_path / 'bridge.yaml'}:2:12: log_level: Input should be 'debug', 'info', 'warning' or 'error'"
    )


def test_env_file(tmp_path: Path) -> None:
    env_file = tmp_path / "bridge.env"
    env_file.write_text(
        textwrap.dedent(
            """\
            # comment
            PLAIN=value  # trailing comment
            export EXPORTED=yes
            SINGLE='lit ${X} \\n # kept'
            DOUBLE="a\\nb \\"q\\" # kept" # comment
            EMPTY=
              SPACED = x y
            """
        )
    )
    assert load_env_file(env_file) == {
        "PLAIN": "value",
        "EXPORTED": "yes",
        "SINGLE": "lit ${X} \\n # kept",
        "DOUBLE": 'a\nb "q" # kept',
        "EMPTY": "",
        "SPACED": "x y",
    }


def test_env_file_errors(tmp_path: Path) -> None:
    env_file = tmp_path / "bad.env"
    env_file.write_text('OK=1\nnot a line\n1BAD=x\nQ=\'open\nD="x" y\n')
    with pytest.raises(ConfigError) as info:
        load_env_file(env_file)
    assert [str(p) for p in info.value.problems] == [
        f"{env_file}:2:1: expected KEY=VALUE (KEY: letters, digits, _)",
        f"{env_file}:3:1: expected KEY=VALUE (KEY: letters, digits, _)",
        f"{env_file}:4:3: Q: unterminated '-quoted value",
        f'{env_file}:5:3: D: unexpected text after the closing "',
    ]
    with pytest.raises(ConfigError) as info:
        load_env_file(tmp_path / "missing.env")
    assert str(info.value) == f"{tmp_path / 'missing.env'}: cannot read env file: No such file or directory"


def test_load_config_with_env_file_process_env_wins(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("REDIS_URL=redis://from-file:6379\nLEVEL=debug\n")
    path = write(tmp_path, "redis: ${REDIS_URL}\nlog_level: ${LEVEL}\nroutes: []\n")
    config = load_config(path, env={"LEVEL": "error"}, env_file=env_file, plugins={})
    assert (config.redis, config.log_level) == ("redis://from-file:6379", "error")


def test_missing_variables_reported_with_a_yaml_error(tmp_path: Path) -> None:
    got = problems(tmp_path, "redis: ${A}\nhttp: {listen: '${B}'\n")  # broken YAML too
    file = tmp_path / "bridge.yaml"
    assert got == [
        f"{file}:1:8: environment variable A is not set",
        f"{file}:2:17: environment variable B is not set",
        f"{file}:3:1: invalid YAML: expected ',' or '}}', but got '<stream end>' "
        "(while parsing a flow mapping on line 2)",
    ]


def test_missing_variables_reported_with_every_other_problem(tmp_path: Path) -> None:
    # An unset variable goes on as a placeholder: every other problem is found too, and what the
    # placeholder itself makes invalid (a listen address, a number, a route name) is not reported.
    got = problems(
        tmp_path,
        """
        redis: ${A}
        http:
          listen: '${B}'
        lease_seconds: 0
        routes:
          - name: ${N}
            from: thoonk:${F:?set F}
            to: [thoonk:x, bad:y]
          - name: r2
            from: thoonk:a
            to: thoonk:b
            mirror: maybe
        drain_seconds: ${D}
        """,
    )
    file = tmp_path / "bridge.yaml"
    assert got == [
        f"{file}:1:8: environment variable A is not set",
        f"{file}:3:12: environment variable B is not set",
        f"{file}:4:16: lease_seconds: Input should be greater than 0",
        f"{file}:6:11: environment variable N is not set",
        f"{file}:7:18: F: set F",
        f"{file}:8:20: routes.0.to.1: unknown endpoint kind 'bad' (known kinds: chat, files, hook, thoonk)",
        f"{file}:12:13: routes.1.mirror: Input should be a valid boolean, unable to interpret input",
        f"{file}:13:16: environment variable D is not set",
    ]


def test_placeholders_do_not_collide_into_false_problems(tmp_path: Path) -> None:
    # Two routes named by the same unset variable are not "duplicates"; an unset key is not "unknown".
    got = problems(
        tmp_path,
        "${KEY}: 1\nroutes: [{name: '${N}', from: 'thoonk:a', to: 'thoonk:${X}'}, "
        "{name: \"${N}\", from: thoonk:c, to: thoonk:d}]\n",
    )
    file = tmp_path / "bridge.yaml"
    assert got == [
        f"{file}:1:1: environment variable KEY is not set",
        f"{file}:2:18: environment variable N is not set",
        f"{file}:2:55: environment variable X is not set",
        f"{file}:2:71: environment variable N is not set",
    ]


def test_huge_values_are_cut_in_messages(tmp_path: Path) -> None:
    huge = "x" * 5_000_000
    got = problems(
        tmp_path,
        f"http:\n  listen: '{huge}'\n{huge[:300]}: 1\nroutes:\n  - name: '{huge}'\n    from: 'thoonk:{huge}'\n"
        f"    to: thoonk:b\n    initial: '{huge}'\n",
    )
    assert len(got) == 5, [g[:200] for g in got]
    for line in got:
        assert len(line) < 1500, line[:200]
        assert "characters left out" in line
    assert "http.listen: expected HOST:PORT" in got[0]
    assert "unknown key" in got[1]
    assert "routes.0.name: invalid route name" in got[2]
    assert "routes.0.from: invalid address" in got[3]
    assert "routes.0.initial: expected all, none or latest:N" in got[4]


def test_secrets_in_values_are_not_echoed(tmp_path: Path) -> None:
    got = problems(
        tmp_path,
        """
        redis: "redis://user:hunter2@h:6379/zero"
        http:
          public_url: "https://user:hunter3@example.org/?token=hunter4"
        routes:
          - name: a
            from: "feed:https://u:hunter5@example.org/x?key=hunter6"
            to: thoonk:b
            initial: "https://u:hunter7@example.org/"
        """,
    )
    assert len(got) == 4, got
    text = "\n".join(got)
    for secret in ("hunter2", "hunter3", "hunter4", "hunter5", "hunter6", "hunter7"):
        assert secret not in text
    assert "redis://***@h:6379/zero" in text
    assert "https://***@example.org/?token=***" in text


# --------------------------------------------------------------------------- parse_endpoint (CLI)


def test_parse_endpoint_forms() -> None:
    assert parse_endpoint("thoonk:news", "source", KINDS) == Endpoint(
        "thoonk", "news", ThoonkSourceOptions(address="news")
    )
    hook = parse_endpoint("hook:https://x.example/y", "source", KINDS)
    assert (hook.kind, hook.address) == ("hook", "https://x.example/y")
    chat = parse_endpoint({"endpoint": "chat:pubsub.example.org/node", "max_items": 3}, "sink", KINDS)
    assert chat.options == ChatSinkNode(address="pubsub.example.org/node", max_items=3)
    with pytest.raises(EndpointError, match="files:x cannot be a source"):
        parse_endpoint("files:x", "source", KINDS)
    with pytest.raises(ValueError, match=r"unknown endpoint kind 'irc' \(known kinds: chat, files, hook"):
        parse_endpoint("irc:x", "sink", KINDS)


def test_endpoint_kinds_conflict() -> None:
    class Clash(Plugin):
        name: ClassVar[str] = "clash"
        endpoint_kinds: ClassVar[tuple[EndpointKind, ...]] = (EndpointKind("thoonk", sink_options=NoSettings),)

    with pytest.raises(ValueError, match="endpoint kind 'thoonk' is offered by both the engine and plugin"):
        endpoint_kinds({"clash": Clash})
