"""Queues: first in, first out (``feed.ids`` is a list: LPUSH to put, RPOP to take)."""

from __future__ import annotations

import time
from typing import Any

from .exceptions import Empty
from .feed import FeedBase, check_timeout, new_id, op
from .scripts import Cmd, Eval, Op
from .text import as_text

__all__ = ["Queue", "NORMAL", "HIGH"]

NORMAL = 0
HIGH = 1


def check_priority(feed: str, priority: object) -> str:
    if priority in (NORMAL, HIGH):  # also False / True, as thoonk.py took them
        return "1" if priority else "0"
    raise ValueError(f"feed {feed!r}: priority must be NORMAL (0) or HIGH (1), not {priority!r}")


def blocking_take(feed: FeedBase, timeout: float, script: str, keys: tuple[str, ...], what: str) -> Op[Any]:
    """Take the next entry: atomically in the script when one is waiting, else BRPOP then the script.

    Shared by Queue.get and Job.get. Returns the script's reply (never false); raises Empty on timeout.
    """
    reply = yield Eval(script, keys, (feed.name, ""))
    if reply:
        return reply
    deadline = None if timeout == 0 else time.monotonic() + timeout
    while True:
        if deadline is None:
            wait = 0.0
        else:
            wait = round(deadline - time.monotonic(), 3)
            if wait <= 0:
                raise Empty(feed.name, what)
        popped = yield Cmd("BRPOP", feed.keys.ids, wait)
        if popped is None:
            raise Empty(feed.name, what)
        reply = yield Eval(script, keys, (feed.name, as_text(popped[1])))
        if reply:
            return reply


class Queue(FeedBase):
    """A FIFO queue; ``put(item, priority=HIGH)`` jumps the line. ``get`` removes the item."""

    type = "queue"
    NORMAL = NORMAL
    HIGH = HIGH

    @op
    def put(self, item: str | bytes, priority: int = NORMAL) -> Op[str]:
        """Add ``item``; returns its (generated) id."""
        data = self._check_item(item)
        high = check_priority(self.name, priority)
        id = new_id()
        k = self.keys
        yield Eval("queue_put", (k.config, k.ids, k.items, k.publishes), (self.name, high, id, data))
        return id

    publish = put

    @op
    def get(self, timeout: float = 0) -> Op[str]:
        """Take the oldest item (high-priority ones first). ``timeout`` 0 waits forever; raises Empty."""
        wait = check_timeout(self.name, timeout)
        k = self.keys
        reply = yield from blocking_take(self, wait, "queue_get", (k.config, k.ids, k.items), "item")
        return as_text(reply[1])

    @op
    def get_ids(self) -> Op[list[str]]:
        """Waiting ids, next to be taken first."""
        return [as_text(i) for i in reversed((yield Cmd("LRANGE", self.keys.ids, 0, -1)))]

    @op
    def length(self) -> Op[int]:
        return int((yield Cmd("LLEN", self.keys.ids)))
