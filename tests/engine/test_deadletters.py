"""Dead letters you can act on: ``thoonk-bridge deadletters list|show|replay|discard`` as
subprocesses against a real daemon (which does the replays) and a real Redis."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.support.bridge_process import BridgeProcess, cli, wait
from thoonk_bridge.deadletters import replay_request_key
from thoonk_bridge.router import dead_letter_feed
from thoonk_bridge.thoonk import Thoonk

BIG = json.dumps({"title": "Big", "content": "x" * 600, "link": "https://example.org/big"})
SMALL = json.dumps({"title": "Small", "link": "https://example.org/small"})


def config(redis_url: str, tmp_path: Path, limit: int) -> dict[str, Any]:
    return {
        "redis": redis_url,
        "state_dir": str(tmp_path / "state"),
        "plugins": {"feeds": {"quiet": 0.005, "max_staleness": 0.05, "output_dir": str(tmp_path / "docs")}},
        "routes": [{
            "name": "news",
            "from": "thoonk:news",
            "to": [{"endpoint": "feeds:news", "max_payload_bytes": limit}, "thoonk:copy"],
        }],
    }


@pytest.fixture
def env(redis_url: str) -> dict[str, str]:
    return {"THOONK_BRIDGE_REDIS": redis_url}


@pytest.fixture
def bridge(redis_url: str, tmp_path: Path) -> Iterator[BridgeProcess]:
    process = BridgeProcess(tmp_path, config(redis_url, tmp_path, limit=300))
    process.start().wait_ready()
    try:
        yield process
    finally:
        process.stop()


def entries(redis_url: str, route: str = "news") -> dict[str, dict[str, Any]]:
    with Thoonk(url=redis_url) as pubsub:
        if not pubsub.feed_exists(dead_letter_feed(route)):
            return {}
        return {k: json.loads(v) for k, v in pubsub.feed(dead_letter_feed(route)).get_all().items()}


def publish(redis_url: str, item_id: str, payload: str) -> None:
    with Thoonk(url=redis_url) as pubsub:
        pubsub.feed("news").publish(payload, id=item_id)


def atom(bridge: BridgeProcess) -> str:
    return bridge.get("/feeds/news.atom")[1]


def test_list_show_replay_failing_again_then_delivered_after_the_fix(
    bridge: BridgeProcess, redis_url: str, env: dict[str, str], tmp_path: Path
) -> None:
    publish(redis_url, "big", BIG)
    publish(redis_url, "ok", SMALL)
    wait(lambda: entries(redis_url), message="dead letter stored")
    wait(lambda: "Small" in atom(bridge), message="the small item delivered")
    [(entry_id, record)] = entries(redis_url).items()
    assert record["sink"] == "feeds:news" and record["kind"] == "publish" and record["id"] == "big"

    listing = cli("deadletters", "list", env=env)
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.split() == ["news", "1"]
    rows = json.loads(cli("deadletters", "list", "news", "--json", env=env).stdout)
    assert [(r["entry"], r["item"], r["sink"]) for r in rows] == [(entry_id, "big", "feeds:news")]
    assert "payload" not in rows[0]
    for name in (entry_id, "big"):  # the entry's id or the item's
        shown = cli("deadletters", "show", "news", name, env=env)
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["payload"] == BIG

    # Replayed while the sink still refuses it: back with the new reason, the same entry, not doubled.
    again = cli("deadletters", "replay", "news", "big", env=env)
    assert again.returncode == 1, (again.stdout, again.stderr)
    assert f"{entry_id}: failed again: feeds:news:" in again.stdout
    [(same_id, rewritten)] = entries(redis_url).items()
    assert same_id == entry_id and rewritten["at"] > record["at"]

    # The operator raises the limit; SIGHUP restarts the route, whose reconcile sends the sink what it
    # lacks: the item is delivered, and its dead letter goes with it (no stale entry to replay).
    bridge.write_config({**config(redis_url, tmp_path, limit=100_000), "log_format": "json",
                         "http": {"listen": f"127.0.0.1:{bridge.port}"}})
    bridge.signal(signal.SIGHUP)
    wait(lambda: any(e.get("event") == "reload done" for e in bridge.log_events()), message="reloaded")
    bridge.wait_ready()
    wait(lambda: "Big" in atom(bridge), message="the item in the document")
    wait(lambda: entries(redis_url) == {}, message="its dead letter settled")
    with Thoonk(url=redis_url) as pubsub:  # the other sink had it already: once, untouched
        assert pubsub.feed("copy").get_ids().count("big") == 1
    assert cli("deadletters", "list", env=env).stdout.strip() == "news  0"


async def test_replay_delivers_once_the_sink_takes_it(redis_url: str, tmp_path: Path) -> None:
    import asyncio

    from tests.support.memory_plugin import PLUGINS, SINKS, idle
    from thoonk_bridge.plugin import DeliveryError
    from thoonk_bridge.testing import running_bridge, wait_until

    SINKS.clear()
    env = {"THOONK_BRIDGE_REDIS": redis_url}
    config = {"routes": [{"name": "r", "from": "thoonk:in", "to": ["memory:flaky", "memory:fine"]}]}
    async with running_bridge(config, redis_url=redis_url, tmp_path=tmp_path, plugins=PLUGINS) as daemon:
        await idle(daemon)
        SINKS["flaky"].fail = DeliveryError("node refuses it", retryable=False)
        await (await daemon.thoonk.feed("in")).publish("payload", id="x")
        await wait_until(lambda: entries(redis_url, "r"), message="dead letter")
        await wait_until(lambda: "x" in SINKS["fine"].items)
        [entry_id] = entries(redis_url, "r")
        # Refused again (an edit): the one entry of this item and sink is rewritten, not doubled.
        await (await daemon.thoonk.feed("in")).publish("payload, edited", id="x")
        await wait_until(lambda: entries(redis_url, "r").get(entry_id, {}).get("payload") == "payload, edited")
        assert list(entries(redis_url, "r")) == [entry_id]
        SINKS["flaky"].fail = None  # the node takes it now (no restart: no reconcile)
        done = await asyncio.to_thread(cli, "deadletters", "replay", "r", "x", env=env)
        assert done.returncode == 0, (done.stdout, done.stderr)
        assert f"route r: 1 replayed by {daemon.instance_id}" in done.stdout
        assert f"{entry_id}: delivered" in done.stdout
        assert entries(redis_url, "r") == {}
        assert [e.payload for e in SINKS["flaky"].applied] == ["payload, edited"]  # once, the newest
        assert [e.payload for e in SINKS["fine"].applied] == ["payload", "payload, edited"]  # not sent again
    SINKS.clear()


def test_discard_by_item_or_all(bridge: BridgeProcess, redis_url: str, env: dict[str, str]) -> None:
    for item_id in ("a", "b", "c"):
        publish(redis_url, item_id, BIG.replace("Big", item_id))
    wait(lambda: len(entries(redis_url)) == 3, message="three dead letters")
    one = cli("deadletters", "discard", "news", "a", env=env)
    assert one.returncode == 0, one.stderr
    assert "1 dead letter(s) discarded" in one.stdout
    assert sorted(r["id"] for r in entries(redis_url).values()) == ["b", "c"]
    rest = cli("deadletters", "discard", "news", "--all", env=env)
    assert "2 dead letter(s) discarded" in rest.stdout
    assert entries(redis_url) == {}
    empty = cli("deadletters", "discard", "news", "--all", env=env)
    assert empty.returncode == 1 and "route 'news' has no dead letters" in empty.stderr


def test_bad_names_are_clear_errors_and_change_nothing(
    bridge: BridgeProcess, redis_url: str, env: dict[str, str]
) -> None:
    publish(redis_url, "big", BIG)
    wait(lambda: entries(redis_url), message="dead letter stored")
    before = entries(redis_url)
    for args, code, message in [
        (["show", "news", "nope"], 1, "route 'news' has no dead letter 'nope'"),
        (["replay", "news", "big", "nope"], 1, "route 'news' has no dead letter 'nope'"),
        (["discard", "news", "nope"], 1, "route 'news' has no dead letter 'nope'"),
        (["replay", "news"], 2, "give --all"),
        (["discard", "news", "big", "--all"], 2, "not both"),
        (["show", "other", "x"], 1, "route 'other' has no dead letters"),
    ]:
        result = cli("deadletters", *args, env=env)
        assert result.returncode == code, (args, result.stdout, result.stderr)
        assert message in result.stderr, (args, result.stderr)
    assert entries(redis_url) == before


def test_replay_without_a_running_daemon_is_withdrawn(redis_url: str, env: dict[str, str], tmp_path: Path) -> None:
    process = BridgeProcess(tmp_path, config(redis_url, tmp_path, limit=300))
    process.start().wait_ready()
    publish(redis_url, "big", BIG)
    wait(lambda: entries(redis_url), message="dead letter stored")
    process.stop()
    before = entries(redis_url)
    result = cli("deadletters", "replay", "news", "--all", "--wait", "1", env=env)
    assert result.returncode == 1
    assert "no daemon running route 'news' answered within 1 s; nothing was replayed" in result.stderr
    raw = redis.Redis.from_url(redis_url)
    assert raw.llen(replay_request_key("news")) == 0  # no stale request for the next daemon
    raw.close()
    assert entries(redis_url) == before
