"""The thoonk-bridge command, run as a real subprocess."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.support.bridge_process import cli
from thoonk_bridge import __version__
from thoonk_bridge.thoonk import Thoonk


@pytest.fixture
def env(redis_url: str) -> dict[str, str]:
    return {"THOONK_BRIDGE_REDIS": redis_url}


def test_version() -> None:
    result = cli("version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"thoonk-bridge {__version__}"


def test_publish_retract_and_feeds(env: dict[str, str], redis_url: str) -> None:
    result = cli("publish", "news", '{"title": "Hello", "link": "https://example.org/1"}', "--id", "n1", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "n1"
    generated = cli("publish", "news", "-", env=env, input="plain text from stdin")
    assert generated.returncode == 0
    new_id = generated.stdout.strip()
    with Thoonk(url=redis_url) as pubsub:
        assert pubsub.feed("news").get_item("n1") == '{"title": "Hello", "link": "https://example.org/1"}'
        assert pubsub.feed("news").get_item(new_id) == "plain text from stdin"
        pubsub.queue("jobsq").put("x")
    listing = cli("feeds", "--json", env=env)
    assert listing.returncode == 0
    assert {"name": "news", "type": "feed", "items": 2} in json.loads(listing.stdout)
    assert {"name": "jobsq", "type": "queue", "items": 1} in json.loads(listing.stdout)
    text = cli("feeds", env=env).stdout
    assert "news" in text and "feed" in text
    gone = cli("retract", "news", "n1", env=env)
    assert gone.returncode == 0 and "retracted n1" in gone.stdout
    with Thoonk(url=redis_url) as pubsub:
        assert pubsub.feed("news").get_ids() == [new_id]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["publish", "news", ""], 2, "payload is empty"),
        (["publish", "news", "x", "--id", " "], 2, "id is empty"),
        (["publish", "news"], 2, "Missing argument 'PAYLOAD'"),
        (["retract", "nosuchfeed", "1"], 1, "feed 'nosuchfeed' does not exist"),
        (["retract", "existing", "nosuchid"], 1, "feed 'existing' has no item 'nosuchid'"),
        (["publish", "aqueue", "x"], 1, "aqueue"),
        (["frobnicate"], 2, "No such command"),
    ],
)
def test_bad_arguments_give_clear_errors(
    env: dict[str, str], redis_url: str, args: list[str], code: int, message: str
) -> None:
    with Thoonk(url=redis_url) as pubsub:
        pubsub.feed("existing").publish("x", id="1")
        pubsub.queue("aqueue")
    result = cli(*args, env=env)
    assert result.returncode == code, (result.stdout, result.stderr)
    assert message in result.stderr


def test_unreachable_redis_is_a_clear_error() -> None:
    result = cli("publish", "news", "x", env={"THOONK_BRIDGE_REDIS": "redis://127.0.0.1:1/0"})
    assert result.returncode == 1
    assert "127.0.0.1:1" in result.stderr


def test_check_good_config_summarises_routes(tmp_path: Path) -> None:
    path = tmp_path / "good.yaml"
    path.write_text("routes:\n  - name: copy\n    from: thoonk:in\n    to: [thoonk:out]\n    mirror: true\n")
    result = cli("check", str(path))
    assert result.returncode == 0, result.stderr
    assert "OK, 1 route(s)" in result.stdout
    assert "copy: thoonk:in -> thoonk:out (mirror=true, initial=all)" in result.stdout


def test_check_bad_config_lists_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "routes:\n"
        "  - name: one\n"
        "    from: thoonk:in\n"
        "    to: nowhere:x\n"
        "  - name: one\n"
        "    from: thoonk:a\n"
        "    to: thoonk:b\n"
        "    colour: blue\n"
    )
    result = cli("check", str(path))
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert any(line.startswith(f"{path}:4:9: routes.0.to") and "nowhere" in line for line in lines), lines
    assert any(line.startswith(f"{path}:8:5: routes.1.colour") for line in lines), lines
    assert any(line.startswith(f"{path}:5:") and "duplicate" in line for line in lines), lines


def test_check_missing_file() -> None:
    result = cli("check", "/nonexistent/config.yaml")
    assert result.returncode == 1
    assert "/nonexistent/config.yaml" in result.stderr


def test_check_live_reports_unreachable_redis(tmp_path: Path) -> None:
    path = tmp_path / "live.yaml"
    path.write_text("redis: redis://127.0.0.1:1/0\nroutes:\n  - name: c\n    from: thoonk:in\n    to: thoonk:out\n")
    result = cli("check", str(path), "--live")
    assert result.returncode == 1
    assert "live: redis redis://127.0.0.1:1/0" in result.stderr


def test_plugins_lists_builtin_plugins_and_kinds() -> None:
    result = cli("plugins")
    assert result.returncode == 0, result.stderr
    assert "thoonk: source/sink" in result.stdout
    for name in ("feeds", "websub", "xmpp"):
        # the built-in plugins are released with the bridge: one version for all
        assert f"\n{name} {__version__}: " in result.stdout


def test_version_option() -> None:
    result = cli("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"thoonk-bridge {__version__}"


UNREACHABLE = "redis://:hunter2@127.0.0.1:1/0"


@pytest.mark.parametrize(
    "args",
    [
        ["status"],
        ["status", "--json"],
        ["feeds"],
        ["publish", "news", "x"],
        ["retract", "news", "1"],
        ["websub", "subscriptions"],
    ],
    ids=lambda a: "-".join(a),
)
def test_unreachable_redis_is_one_line_for_every_command(args: list[str]) -> None:
    result = cli(*args, "--redis", UNREACHABLE)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: redis redis://***@127.0.0.1:1/0 is unreachable: "), lines
    assert "hunter2" not in result.stdout + result.stderr


def test_unreachable_redis_of_the_config_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(f"redis: {UNREACHABLE}\nroutes: []\n")
    for args in (["status"], ["feeds"], ["websub", "subscriptions"]):
        result = cli(*args, "--config", str(path))
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1
        assert len(lines) == 1 and lines[0].startswith("error: redis redis://***@127.0.0.1:1/0 is unreachable"), lines
        assert "hunter2" not in result.stderr


def test_redis_url_option_is_checked_before_use() -> None:
    result = cli("feeds", "--redis", "redis://:hunter2@h:notaport/0")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "error: --redis: bad port 'notaport' in 'h:notaport': a number from 1 to 65535 (in redis://***@h:notaport/0)"
    )


def test_check_live_never_says_ok_when_it_fails(tmp_path: Path) -> None:
    path = tmp_path / "live.yaml"
    path.write_text(f"redis: {UNREACHABLE}\nroutes:\n  - name: c\n    from: thoonk:in\n    to: thoonk:out\n")
    result = cli("check", str(path), "--live")
    assert result.returncode == 1
    assert "OK" not in result.stdout + result.stderr
    assert "live: redis redis://***@127.0.0.1:1/0: ConnectionError" in result.stderr
    assert result.stderr.strip().splitlines()[-1] == f"error: {path}: the config is valid, but 1 live check(s) failed"


def test_check_live_says_ok_when_redis_answers(tmp_path: Path, redis_url: str) -> None:
    path = tmp_path / "live.yaml"
    path.write_text(f"redis: {redis_url}\nroutes:\n  - name: c\n    from: thoonk:in\n    to: thoonk:out\n")
    result = cli("check", str(path), "--live")
    assert result.returncode == 0, result.stderr
    assert "OK, 1 route(s)" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "live: Redis and every plugin reachable"


def test_check_reports_an_unset_variable_with_the_other_problems(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("redis: ${NOT_SET_ANYWHERE_X}\nroutes:\n  - name: a\n    from: thoonk:in\n    to: nowhere:x\n")
    result = cli("check", str(path))
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert f"{path}:1:8: environment variable NOT_SET_ANYWHERE_X is not set" in lines, lines
    assert any(line.startswith(f"{path}:5:9: routes.0.to: unknown endpoint kind 'nowhere'") for line in lines), lines
    assert lines[-1] == "2 problem(s) found"


# --------------------------------------------------------------------------- broken plugins


@pytest.fixture
def broken_plugin_env(tmp_path: Path) -> dict[str, str]:
    """A third-party plugin installed (dist-info with an entry point) whose module does not import."""
    from tests.support.plugin_install import install_plugin

    site = tmp_path / "site"
    install_plugin(site, "thoonk_bridge_broken", "broken = thoonk_bridge_broken_missing:Plugin")
    return {"PYTHONPATH": os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)}


BROKEN_WARNING = (
    "warning: plugin 'broken' is installed but cannot be loaded (thoonk_bridge_broken_missing:Plugin: "
    "ModuleNotFoundError: No module named 'thoonk_bridge_broken_missing')"
)


def test_broken_unused_plugin_is_a_warning(
    tmp_path: Path, broken_plugin_env: dict[str, str], redis_url: str
) -> None:
    path = tmp_path / "good.yaml"
    path.write_text(f"redis: {redis_url}\nroutes:\n  - name: copy\n    from: thoonk:in\n    to: thoonk:out\n")
    checked = cli("check", str(path), env=broken_plugin_env)
    assert checked.returncode == 0, checked.stderr
    assert "OK, 1 route(s)" in checked.stdout
    assert checked.stderr.startswith(BROKEN_WARNING), checked.stderr
    listed = cli("feeds", "--config", str(path), env=broken_plugin_env)
    assert listed.returncode == 0, listed.stderr
    assert listed.stderr.startswith(BROKEN_WARNING)
    plugins = cli("plugins", env=broken_plugin_env)
    assert plugins.returncode == 0, plugins.stderr
    assert "\nfeeds " in plugins.stdout and "\nwebsub " in plugins.stdout
    assert plugins.stderr.strip() == BROKEN_WARNING
    # The working plugins' own commands are still there.
    subs = cli("websub", "subscriptions", "--redis", redis_url, env=broken_plugin_env)
    assert subs.returncode == 0, subs.stderr


def test_broken_used_plugin_is_a_config_error_at_its_kind(tmp_path: Path, broken_plugin_env: dict[str, str]) -> None:
    path = tmp_path / "uses.yaml"
    path.write_text("routes:\n  - name: copy\n    from: thoonk:in\n    to: broken:x\n"
                    "plugins:\n  broken: {}\n")
    result = cli("check", str(path), env=broken_plugin_env)
    assert result.returncode == 1
    why = ("plugin 'broken' is installed but cannot be loaded (thoonk_bridge_broken_missing:Plugin: "
           "ModuleNotFoundError: No module named 'thoonk_bridge_broken_missing')")
    assert result.stderr.splitlines() == [
        f"{path}:4:9: routes.0.to: endpoint kind 'broken': {why}",
        f"{path}:6:3: plugins.broken: {why}",
        "2 problem(s) found",
    ]


def test_daemon_runs_beside_a_broken_unused_plugin(
    tmp_path: Path, broken_plugin_env: dict[str, str], redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.support.bridge_process import BridgeProcess

    monkeypatch.setenv("PYTHONPATH", broken_plugin_env["PYTHONPATH"])
    bridge = BridgeProcess(tmp_path, {"redis": redis_url,
                                      "routes": [{"name": "copy", "from": "thoonk:in", "to": "thoonk:out"}]})
    bridge.start()
    try:
        bridge.wait_ready()
        warnings = [e for e in bridge.log_events() if e.get("event") == "config warning"]
        assert warnings and "plugin 'broken' is installed but cannot be loaded" in warnings[0]["warning"]
    finally:
        assert bridge.stop() == 0, bridge.log()


# --------------------------------------------------------------------------- Docker


def test_docker_run_line_works_as_documented(tmp_path: Path) -> None:
    """No container engine here: check what `docker run` would do, step by step, against the files.

    README's line mounts the repository's config/ at /config and names a config there; the image's
    ENV makes that config listen on every interface at the published port; its state goes to the
    image's writable home.
    """
    import re
    import shlex

    repo = Path(__file__).resolve().parents[2]
    dockerfile = (repo / "Dockerfile").read_text()
    readme = (repo / "README.md").read_text()
    documented = re.search(r"`(docker run [^`]+)`", readme)
    assert documented, "README documents a docker run line"
    line = documented.group(1)
    assert line in dockerfile, "the Dockerfile's comment shows the same line"
    args = shlex.split(line.replace('"$PWD/config', f'"{repo}/config'))
    mount = args[args.index("-v") + 1]
    host_dir, container_dir = mount.split(":")
    published = args[args.index("-p") + 1].split(":")[1]
    image_args = args[args.index("thoonk-bridge") + 1:]
    assert image_args[0] == "run"
    config_in_container = Path(image_args[1])
    assert config_in_container.parent == Path(container_dir)
    config_on_host = Path(host_dir) / config_in_container.name
    assert config_on_host.is_file(), f"{config_on_host} does not exist"
    cmd = re.search(r'^CMD \["run", "([^"]+)"\]', dockerfile, re.M)
    assert cmd and cmd.group(1) == str(config_in_container), "the image's default runs the same config"

    env = dict(re.findall(r"^ENV (\w+)=(\S+)$", dockerfile, re.M))
    result = cli("check", str(config_on_host), env={**env, "REDIS_URL": ""})
    assert result.returncode == 0, result.stderr
    listen = re.search(r"^  http: (\S+) ", result.stdout, re.M)
    assert listen, result.stdout
    host, port = listen.group(1).rsplit(":", 1)
    assert host in ("0.0.0.0", "[::]"), f"listens on {host}: unreachable through -p from outside the container"
    assert port == published and f"EXPOSE {port}" in dockerfile
    assert f"http://127.0.0.1:{port}/healthz" in dockerfile  # the HEALTHCHECK asks the same port
    # Outside a container the same config stays on loopback.
    plain = cli("check", str(config_on_host), env={"THOONK_BRIDGE_LISTEN": "", "REDIS_URL": ""})
    assert "  http: 127.0.0.1:8080 " in plain.stdout, plain.stdout

    # state_dir is relative to the config: in the container it must land in the image's writable home.
    from thoonk_bridge.config import load_config

    loaded = load_config(config_on_host, env={**env})
    state_in_container = os.path.normpath(Path(container_dir) / os.path.relpath(loaded.state_dir, host_dir))
    home = re.search(r"useradd .*--home (\S+)", dockerfile)
    assert home and state_in_container == home.group(1), (state_in_container, home)
    assert re.search(r"^USER bridge$", dockerfile, re.M) and f"WORKDIR {home.group(1)}" in dockerfile


def test_the_daemon_runs_on_uvloop_when_installed_unless_told_not_to(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from thoonk_bridge.cli import use_event_loop

    uvloop = pytest.importorskip("uvloop")  # installed by scripts/test (the `fast` extra)
    try:
        monkeypatch.setenv("THOONK_BRIDGE_EVENT_LOOP", "asyncio")
        assert use_event_loop() == "asyncio"
        assert not isinstance(asyncio.get_event_loop_policy(), uvloop.EventLoopPolicy)
        monkeypatch.delenv("THOONK_BRIDGE_EVENT_LOOP")
        assert use_event_loop() == "uvloop"
        assert isinstance(asyncio.get_event_loop_policy(), uvloop.EventLoopPolicy)
    finally:
        asyncio.set_event_loop_policy(None)
