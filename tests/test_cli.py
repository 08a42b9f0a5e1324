"""The thoonk-bridge command, run as a real subprocess."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bridge_process import cli

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
        assert f"\n{name} " in result.stdout
