"""The hand-off of document changes to the hub's own task (websub.topics.Changes), without Redis."""

from __future__ import annotations

import asyncio

import structlog

from thoonk_bridge.plugin import TopicChange
from thoonk_bridge.plugins.websub.topics import Changes


async def test_a_burst_keeps_the_newest_body_per_document_in_the_order_they_changed() -> None:
    handled: list[TopicChange] = []

    async def handle(change: TopicChange) -> None:
        handled.append(change)

    changes = Changes(handle, structlog.get_logger())
    changes.put(TopicChange("/a", b"a1", "t"))
    changes.put(TopicChange("/b", b"b1", "t"))
    changes.put(TopicChange("/a", b"a2", "t"))
    assert changes.busy
    task = asyncio.create_task(changes.run())
    try:
        await asyncio.wait_for(changes.settled(), 5)
    finally:
        task.cancel()
    assert [(c.path, c.body) for c in handled] == [("/b", b"b1"), ("/a", b"a2")]
    assert not changes.busy


async def test_a_failing_change_is_logged_and_the_others_go_on() -> None:
    handled: list[str] = []

    async def handle(change: TopicChange) -> None:
        if change.path == "/bad":
            raise ConnectionError("redis away")
        handled.append(change.path)

    changes = Changes(handle, structlog.get_logger())
    with structlog.testing.capture_logs() as logs:
        changes.put(TopicChange("/bad", b"x"))
        changes.put(TopicChange("/good", b"y"))
        await asyncio.wait_for(changes.handle_pending(), 5)
    assert handled == ["/good"]
    assert [line["path"] for line in logs if line["event"] == "websub.distribution_failed"] == ["/bad"]


async def test_a_change_cut_short_by_a_stop_is_handled_by_the_next_run() -> None:
    handled: list[bytes | None] = []
    hold = asyncio.Event()

    async def handle(change: TopicChange) -> None:
        await hold.wait()
        handled.append(change.body)

    changes = Changes(handle, structlog.get_logger())
    changes.put(TopicChange("/a", b"a1"))
    first = asyncio.create_task(changes.run())
    await asyncio.sleep(0.01)  # being handled
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)
    assert handled == [] and changes.busy
    hold.set()
    second = asyncio.create_task(changes.run())  # the plugin started again
    try:
        await asyncio.wait_for(changes.settled(), 5)
    finally:
        second.cancel()
    assert handled == [b"a1"]
