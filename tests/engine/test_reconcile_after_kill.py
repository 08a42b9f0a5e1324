"""A retract made while the daemon was SIGKILLed reaches the sink after the restart, mirror or not."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.bridge_process import BridgeProcess, wait


@pytest.mark.parametrize("mirror", [False, True])
def test_retract_while_killed_is_applied_after_restart(
    tmp_path: Path, redis_url: str, pubsub: Any, mirror: bool
) -> None:
    route = {"name": "copy", "from": "thoonk:in", "to": "thoonk:out", "mirror": mirror}
    bridge = BridgeProcess(tmp_path, {"redis": redis_url, "routes": [route]}).start()
    bridge.wait_ready()
    feed = pubsub.feed("in")
    for i in range(4):
        feed.publish(f"item {i}", id=str(i))
    wait(lambda: pubsub.feed("out").get_ids() == ["0", "1", "2", "3"], message="copied")
    bridge.kill9()
    feed.retract("1")
    feed.retract("3")
    pubsub.feed("out").publish("written by someone else", id="stray")
    bridge.start()
    try:
        bridge.wait_ready()
        expected = {"0": "item 0", "2": "item 2"}
        if not mirror:
            expected["stray"] = "written by someone else"
        wait(lambda: pubsub.feed("out").get_all() == expected, message=f"out == {expected}")
    finally:
        assert bridge.stop() == 0


def test_retract_while_killed_leaves_the_served_document(tmp_path: Path, redis_url: str, pubsub: Any) -> None:
    route = {"name": "news", "from": "thoonk:in", "to": "feeds:news"}
    bridge = BridgeProcess(tmp_path, {"redis": redis_url, "routes": [route]}).start()
    bridge.wait_ready()
    feed = pubsub.feed("in")
    for i in range(3):
        feed.publish(json.dumps({"title": f"title {i}", "content": f"body {i}"}), id=f"urn:x:{i}")

    def document_ids() -> list[str]:
        status, body = bridge.get("/feeds/news.json")
        return sorted(item["id"] for item in json.loads(body)["items"]) if status == 200 else []

    wait(lambda: document_ids() == ["urn:x:0", "urn:x:1", "urn:x:2"], message="document has three items")
    bridge.kill9()
    feed.retract("urn:x:1")
    bridge.start()
    try:
        bridge.wait_ready()
        wait(lambda: document_ids() == ["urn:x:0", "urn:x:2"], message="retracted item gone from the document")
    finally:
        assert bridge.stop() == 0
