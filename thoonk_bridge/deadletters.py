"""Dead letters you can act on: list, show, replay and discard (CLI and console).

Items a sink refused for good (or a source, or a format conversion) are stored in the Thoonk feed
``bridge.deadletter.{ROUTE}`` (see :func:`thoonk_bridge.router.store_dead_letter`). The braces are
literal: ``{ROUTE}`` is a Redis Cluster hash tag, so every key of that feed (and the replay requests
below) lands in one slot. Each entry is JSON: ``id`` (the item), ``reason``, ``payload``, ``at`` and,
for entries written since replay exists, ``sink`` (the sink that refused it; absent when the source
or a conversion did) and ``kind`` (publish, edit, retract).

Replay is done by the daemon that runs the route (it owns the sinks and their ledgers), never by the
CLI: the CLI (or the console) pushes a request to ``bridge.deadletter.{ROUTE}:replay`` and bumps
``bridge.deadletter.requests``; every daemon polls that counter (one GET every half second) and the
owner of the route takes the request, offers each entry to its sink again (to every sink for an entry
naming none) and answers in ``bridge.deadletter.{ROUTE}:replay:REQUEST`` (kept 10 minutes). An entry
stays in the feed until its replay is settled: delivered (the entry is removed), or refused again
(the entry is rewritten in place with the new reason and time, under the same entry id). A daemon
that dies mid-replay leaves the entry where it was: nothing is lost, and nothing is doubled.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from thoonk_bridge import keys
from thoonk_bridge.plugin import EventKind, ItemEvent
from thoonk_bridge.router import DEAD_LETTER_MAX, dead_letter_feed, store_dead_letter
from thoonk_bridge.tasks import cancel_and_wait
from thoonk_bridge.thoonk.keys import FeedKeys
from thoonk_bridge.thoonk.text import as_text
from thoonk_bridge.trace import Replay

if TYPE_CHECKING:
    import structlog

    from thoonk_bridge.router import RouteRunner
    from thoonk_bridge.thoonk import AsyncThoonk

__all__ = ["DeadLetter", "ReplayDesk", "replay_request_key", "request_replay"]

REQUESTS_KEY = keys.REPLAY_DOORBELL  # counter: bumped with each replay request (the doorbell)
REPLAY_POLL = 0.5  # seconds between two looks at the doorbell
REPLY_TTL = 600  # seconds a replay answer is kept


replay_request_key = keys.replay_requests  # list: the route's replay requests not yet taken
replay_reply_key = keys.replay_reply  # the answer to one request (expires)


@dataclass(frozen=True)
class DeadLetter:
    """One entry of a dead-letter feed."""

    entry_id: str
    item_id: str
    reason: str
    payload: str | None
    at: float
    sink: str | None
    kind: str | None

    @classmethod
    def parse(cls, entry_id: str, raw: str) -> DeadLetter:
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            return cls(entry_id, entry_id, "unreadable entry", raw, 0.0, None, None)
        sink = data.get("sink")
        reason = str(data.get("reason", ""))
        return cls(entry_id, str(data.get("id", entry_id)), reason,
                   data.get("payload") if isinstance(data.get("payload"), str) else None,
                   float(data.get("at") or 0.0), sink if isinstance(sink, str) else None,
                   data.get("kind") if isinstance(data.get("kind"), str) else None)

    def event(self) -> ItemEvent:
        if self.kind == str(EventKind.RETRACT) or self.payload is None:
            return ItemEvent(EventKind.RETRACT, self.item_id)
        kind = EventKind.EDIT if self.kind == str(EventKind.EDIT) else EventKind.PUBLISH
        return ItemEvent(kind, self.item_id, self.payload)

    def summary(self) -> dict[str, Any]:
        """What list and the console show (no payload)."""
        return {"entry": self.entry_id, "item": self.item_id, "sink": self.sink, "kind": self.kind,
                "at": self.at, "reason": self.reason}


def matching(entries: Iterable[DeadLetter], wanted: Iterable[str]) -> tuple[list[DeadLetter], list[str]]:
    """Entries named by entry id or item id, and the names that matched none."""
    entries = list(entries)
    chosen: dict[str, DeadLetter] = {}
    missing = []
    for name in wanted:
        hits = [e for e in entries if name in (e.entry_id, e.item_id)]
        if not hits:
            missing.append(name)
        for entry in hits:
            chosen[entry.entry_id] = entry
    return list(chosen.values()), missing


# --------------------------------------------------------------------------- reading (sync: CLI, console)


def routes_with_dead_letters(pubsub: Any) -> dict[str, int]:
    """``{route: entry count}`` of every dead-letter feed (sync Thoonk client)."""
    out = {}
    for name in pubsub.get_feed_names():
        route = keys.dead_letter_route(name)
        if route is not None:
            out[route] = int(pubsub.redis.zcard(FeedKeys(name).ids))
    return dict(sorted(out.items()))


def entries(pubsub: Any, route: str) -> list[DeadLetter]:
    """A route's dead letters, oldest first (sync Thoonk client; none when it has no feed)."""
    name = dead_letter_feed(route)
    if not pubsub.feed_exists(name):
        return []
    return [DeadLetter.parse(i, raw) for i, raw in pubsub.feed(name).get_all().items()]


def entries_of_item(pubsub: Any, route: str, item_id: str) -> list[DeadLetter]:
    return [e for e in entries(pubsub, route) if e.item_id == item_id]


def discard_entries(pubsub: Any, route: str, chosen: Iterable[DeadLetter]) -> int:
    feed = pubsub.feed(dead_letter_feed(route))
    return sum(1 for entry in chosen if feed.retract(entry.entry_id))


def request_replay(redis: Any, route: str, entry_ids: list[str] | None) -> str:
    """Ask the route's owner to replay ``entry_ids`` (None: all); returns the request id."""
    request = uuid.uuid4().hex
    redis.rpush(replay_request_key(route), json.dumps({"request": request, "entries": entry_ids}))
    redis.incr(REQUESTS_KEY)
    return request


def withdraw_request(redis: Any, route: str, request: str) -> bool:
    """Take back a request no daemon has picked up; False when one already has."""
    for raw in redis.lrange(replay_request_key(route), 0, -1):
        try:
            if json.loads(as_text(raw)).get("request") == request:
                return bool(redis.lrem(replay_request_key(route), 1, raw))
        except (ValueError, AttributeError):
            continue
    return False


def replay_reply(redis: Any, route: str, request: str) -> dict[str, Any] | None:
    raw = redis.get(replay_reply_key(route, request))
    return json.loads(as_text(raw)) if raw is not None else None


# --------------------------------------------------------------------------- the daemon's side


class ReplayDesk:
    """Takes the replay requests of the routes this daemon runs (see the module doc)."""

    def __init__(self, redis: Any, thoonk: AsyncThoonk, routes: Callable[[], Mapping[str, RouteRunner]],
                 instance: str, log: structlog.typing.FilteringBoundLogger) -> None:
        self.redis = redis
        self.thoonk = thoonk
        self.routes = routes
        self.instance = instance
        self.log = log
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="dead-letter-replays")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _run(self) -> None:
        seen: tuple[Any, frozenset[str]] | None = None
        while True:
            try:
                now = (await self.redis.get(REQUESTS_KEY), frozenset(self.routes()))
                if now != seen:  # a new request, or routes taken over: look at the owned routes' queues
                    seen = now
                    await self.serve_pending()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Redis away: the next round tries again
                seen = None
                self.log.warning("dead-letter replay requests not read", error=f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(REPLAY_POLL)

    async def serve_pending(self) -> None:
        for name, runner in list(self.routes().items()):
            while (raw := await self.redis.lpop(replay_request_key(name))) is not None:
                try:
                    request = json.loads(as_text(raw))
                    request_id = str(request["request"])
                    wanted = request.get("entries")
                except (ValueError, KeyError, TypeError):
                    self.log.warning("malformed dead-letter replay request dropped", route=name)
                    continue
                reply = await self.replay(runner, None if wanted is None else [str(w) for w in wanted])
                reply["owner"] = self.instance
                await self.redis.set(replay_reply_key(name, request_id), json.dumps(reply), ex=REPLY_TTL)

    async def replay(self, runner: RouteRunner, wanted: list[str] | None) -> dict[str, Any]:
        feed = await self.thoonk.feed(dead_letter_feed(runner.name), {"max_length": DEAD_LETTER_MAX})
        stored = [DeadLetter.parse(i, raw) for i, raw in (await feed.get_all()).items()]
        missing: list[str] = []
        if wanted is None:
            chosen = stored
        else:
            chosen, missing = matching(stored, wanted)
        replayed: list[str] = []
        skipped: dict[str, str] = {}
        for entry in chosen:
            why = await self._offer(runner, entry)
            if why is None:
                replayed.append(entry.entry_id)
            else:
                skipped[entry.entry_id] = why
        if replayed:
            self.log.info("dead letters replayed", route=runner.name, count=len(replayed))
        return {"replayed": replayed, "skipped": skipped, "missing": missing}

    async def _offer(self, runner: RouteRunner, entry: DeadLetter) -> str | None:
        """Offer one entry to its sink(s); None when offered, else why not."""
        workers = {w.name: w for w in runner.workers}
        recorder = next((w.recorder for w in runner.workers if w.recorder is not None), None)
        if recorder is None:
            return "the route records nothing (no recorder)"
        if any(r.entry_id == entry.entry_id for r in recorder.replays.values()):
            return "already being replayed"
        event = entry.event()
        if entry.sink is not None:
            if entry.sink not in workers:
                return f"the route has no sink {entry.sink} any more"
            targets = [workers[entry.sink]]
        else:
            targets = list(workers.values())
            if event.kind is not EventKind.RETRACT and runner.context.format:
                from thoonk_bridge.payload import Format, PayloadError, convert, detect_format

                wanted = Format(runner.context.format)
                if detect_format(event.payload or "") is not wanted:
                    try:
                        event = ItemEvent(event.kind, event.id, convert(event.payload or "", wanted, item_id=event.id))
                    except PayloadError as exc:
                        await store_dead_letter(self.thoonk, runner.name, entry.item_id, entry.payload,
                                                f"convert to {wanted}: {exc}", kind=entry.kind, entry_id=entry.entry_id)
                        return f"failed again: convert to {wanted}: {exc}"
        replay = Replay(entry.entry_id, {w.name for w in targets}, shared=entry.sink is None)
        for worker in targets:
            recorder.replays[(worker.name, event.id)] = replay
            recorder.note(worker.name, event.id, "replayed")
            worker.offer(event)
        return None


def wait_for_reply(redis: Any, route: str, request: str, timeout: float) -> dict[str, Any] | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reply = replay_reply(redis, route, request)
        if reply is not None:
            return reply
        time.sleep(0.1)
    return None


def outcomes(pubsub: Any, route: str, chosen: list[DeadLetter], replayed: set[str],
              wait: float) -> dict[str, str]:
    """Wait (up to ``wait`` s) until each replayed entry is settled: gone (delivered) or rewritten
    (refused again); what is neither by then is still being retried by its sink."""
    before = {e.entry_id: e for e in chosen if e.entry_id in replayed}
    deadline = time.monotonic() + wait
    states: dict[str, str] = {}
    while True:
        now = {e.entry_id: e for e in entries(pubsub, route)}
        for entry_id, old in before.items():
            current = now.get(entry_id)
            if current is None:
                states[entry_id] = "delivered"
            elif current.at != old.at:
                states[entry_id] = f"failed again: {current.reason}"
            else:
                states[entry_id] = "pending (its sink is still retrying)"
        if all(not s.startswith("pending") for s in states.values()) or time.monotonic() > deadline:
            return states
        time.sleep(0.1)
