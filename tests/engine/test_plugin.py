"""Plugin discovery through entry points, dependency order, and the documented example plugin."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.bridge_process import cli
from tests.support.plugin_install import install_plugin
from thoonk_bridge.config import endpoint_kinds
from thoonk_bridge.context import build_plugin_context
from thoonk_bridge.discovery import always_enabled_plugins
from thoonk_bridge.plugin import Plugin, PluginLoadError, discover_plugins, start_order
from thoonk_bridge.plugins.thoonk.settings import ThoonkSinkOptions, ThoonkSourceOptions
from thoonk_bridge.testing import running_bridge, wait_until
from thoonk_bridge.topics import TopicRegistry

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "example_plugin"


@pytest.fixture
def example_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    site = tmp_path / "site"
    install_plugin(site, "thoonk_bridge_jsonlog", "jsonlog = thoonk_bridge_jsonlog:JsonLogPlugin",
                   EXAMPLE / "thoonk_bridge_jsonlog")
    monkeypatch.syspath_prepend(str(site))
    yield site
    sys.modules.pop("thoonk_bridge_jsonlog", None)


def test_installed_example_plugin_is_discovered(example_site: Path) -> None:
    found = discover_plugins()
    assert found["jsonlog"].name == "jsonlog"
    assert {"feeds", "websub", "xmpp"} <= set(found)


def test_cli_lists_the_installed_plugin(example_site: Path) -> None:
    result = cli("plugins", env={"PYTHONPATH": f"{example_site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"})
    assert result.returncode == 0, result.stderr
    assert "jsonlog 1.0.0: route events appended to JSON-lines files (example plugin)" in result.stdout
    assert "jsonlog: sink - a JSON-lines file per NAME" in result.stdout


def test_broken_entry_point_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "broken"
    install_plugin(site, "broken_plugin", "broken = no_such_module_anywhere:Plugin")
    monkeypatch.syspath_prepend(str(site))
    with pytest.raises(PluginLoadError, match=r"broken \(no_such_module_anywhere:Plugin\): ModuleNotFoundError"):
        discover_plugins()


def test_entry_point_that_is_not_a_plugin_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "notplugin"
    install_plugin(site, "not_plugin", "notplugin = json:dumps")
    monkeypatch.syspath_prepend(str(site))
    with pytest.raises(PluginLoadError, match="notplugin .*not a thoonk_bridge.plugin.Plugin subclass"):
        discover_plugins()


def test_thoonk_kind_is_an_always_enabled_plugin() -> None:
    thoonk = discover_plugins()["thoonk"]
    assert thoonk.always_enabled and set(always_enabled_plugins()) == {"thoonk"}
    kind = endpoint_kinds({})["thoonk"]  # known with no plugin passed, as the engine's kind was
    assert (kind.source_options, kind.sink_options) == (ThoonkSourceOptions, ThoonkSinkOptions)
    assert endpoint_kinds(discover_plugins())["thoonk"] is kind  # installed: not offered twice


def test_build_plugin_context_defaults_and_given_parts(tmp_path: Path) -> None:
    stand_in: Any = object()  # nothing connects while building
    context = build_plugin_context("demo", thoonk=stand_in, redis=stand_in, public_url="https://b.example/x/",
                                   state_dir=tmp_path)
    assert context.state_dir == tmp_path / "demo" and not context.state_dir.exists()
    assert context.public_url == "https://b.example/x" and context.instance_id == "local"
    assert context.thoonk is stand_in and context.redis is stand_in
    topics = TopicRegistry()
    other = build_plugin_context("other", thoonk=stand_in, redis=stand_in, public_url="http://h", state_dir=tmp_path,
                                 http=context.http, metrics=context.metrics, topics=topics, instance_id="d1")
    assert (other.http, other.metrics, other.topics, other.instance_id) == (context.http, context.metrics, topics, "d1")
    assert context.topics is not topics  # each default is a new one


def _plugin(name: str, deps: tuple[str, ...] = ()) -> type[Plugin]:
    return type(name, (Plugin,), {"name": name, "depends_on": deps})


def test_start_order_puts_dependencies_first() -> None:
    plugins = {"a": _plugin("a", ("c",)), "b": _plugin("b"), "c": _plugin("c", ("b",)), "d": _plugin("d", ("x",))}
    order = start_order(plugins)
    assert order.index("b") < order.index("c") < order.index("a")
    assert set(order) == {"a", "b", "c", "d"}  # a dependency that is not enabled is ignored


def test_start_order_refuses_a_cycle() -> None:
    with pytest.raises(ValueError, match="plugin dependency cycle: a -> b -> a"):
        start_order({"a": _plugin("a", ("b",)), "b": _plugin("b", ("a",))})


async def test_example_plugin_runs_a_route_and_restores_a_deleted_file(
    example_site: Path, redis_url: str, tmp_path: Path
) -> None:
    plugins = discover_plugins()
    logdir = tmp_path / "logs"
    config = {
        "plugins": {"jsonlog": {"directory": str(logdir)}},
        "routes": [{"name": "audit", "from": "thoonk:news", "to": "jsonlog:news"}],
    }
    log = logdir / "news.jsonl"

    def records() -> list[dict[str, object]]:
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    async with running_bridge(config, redis_url=redis_url, tmp_path=tmp_path, plugins=plugins) as daemon:
        await wait_until(lambda: daemon.routes["audit"].ready)
        feed = await daemon.thoonk.feed("news")
        await feed.publish("first", id="1")
        await wait_until(lambda: records() == [{"kind": "publish", "id": "1", "payload": "first"}])
        await feed.publish("second", id="2")
        await wait_until(lambda: len(records()) == 2)
        await feed.retract("1")
        await wait_until(lambda: len(records()) == 3, message="three events logged")
        assert [(r["kind"], r["id"]) for r in records()] == [("publish", "1"), ("publish", "2"), ("retract", "1")]
    log.unlink()
    async with running_bridge(config, redis_url=redis_url, tmp_path=tmp_path, plugins=plugins):
        # The sink says what it holds (nothing now): the reconcile writes the feed's items again.
        await wait_until(lambda: records() == [{"kind": "publish", "id": "2", "payload": "second"}],
                         message="file rebuilt")


def test_example_plugin_settings_are_validated(example_site: Path, tmp_path: Path) -> None:
    from thoonk_bridge.config import ConfigError, load_config

    path = tmp_path / "c.yaml"
    path.write_text("plugins:\n  jsonlog:\n    directory: 5\n    colour: red\n"
                    "routes:\n  - name: a\n    from: thoonk:x\n    to: jsonlog:bad/name\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, env={}, plugins=discover_plugins())
    text = str(err.value)
    assert f"{path}:4:5: plugins.jsonlog.colour" in text
    assert f"{path}:8:9: routes.0.to" in text
