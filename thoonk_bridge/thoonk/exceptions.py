"""Exceptions of the Thoonk core. Each names the feed (and item or job) it is about."""

from __future__ import annotations

import queue as _queue

__all__ = [
    "ThoonkError",
    "FeedExists",
    "FeedDoesNotExist",
    "FeedTypeMismatch",
    "ItemDoesNotExist",
    "JobNotClaimed",
    "JobNotStalled",
    "Empty",
    "RedisUnavailable",
]


class ThoonkError(Exception):
    """Base of every Thoonk core error."""


class FeedExists(ThoonkError):
    """create_feed() on a name that is already a feed."""

    def __init__(self, feed: str) -> None:
        self.feed = feed
        super().__init__(f"feed {feed!r} already exists")


class FeedDoesNotExist(ThoonkError, KeyError):
    """An operation on a feed that is not in the ``feeds`` set."""

    def __init__(self, feed: str) -> None:
        self.feed = feed
        super().__init__(f"feed {feed!r} does not exist")

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class FeedTypeMismatch(ThoonkError, TypeError):
    """The feed exists but has another type than the operation needs (e.g. queue() on a plain feed)."""

    def __init__(self, feed: str, actual: str, wanted: str) -> None:
        self.feed = feed
        self.actual = actual
        self.wanted = wanted
        super().__init__(f"feed {feed!r} is of type {actual!r}, not {wanted!r}")


class ItemDoesNotExist(ThoonkError, KeyError):
    """A sorted-feed operation named an item id that the feed does not hold."""

    def __init__(self, feed: str, id: str) -> None:
        self.feed = feed
        self.id = id
        super().__init__(f"feed {feed!r} has no item {id!r}")

    def __str__(self) -> str:
        return str(self.args[0])


class JobNotClaimed(ThoonkError):
    """finish/cancel/stall of a job that is not claimed (unknown, queued, stalled or done)."""

    def __init__(self, feed: str, id: str) -> None:
        self.feed = feed
        self.id = id
        super().__init__(f"job {id!r} of feed {feed!r} is not claimed")


class JobNotStalled(ThoonkError):
    """retry() of a job that is not stalled."""

    def __init__(self, feed: str, id: str) -> None:
        self.feed = feed
        self.id = id
        super().__init__(f"job {id!r} of feed {feed!r} is not stalled")


class Empty(ThoonkError, _queue.Empty):
    """queue.get / job.get / job.get_result timed out with nothing to return."""

    def __init__(self, feed: str | None = None, what: str = "item") -> None:
        self.feed = feed
        super().__init__(f"no {what} in feed {feed!r} before the timeout" if feed else "empty")


class RedisUnavailable(ThoonkError, ConnectionError):
    """Redis could not be reached, or the connection was lost (events: resubscribe and reconcile)."""

    def __init__(self, address: str, reason: object) -> None:
        self.address = address
        self.reason = reason
        super().__init__(f"Redis at {address} is unavailable: {reason}")


SCRIPT_ERRORS: dict[str, type[ThoonkError]] = {
    cls.__name__: cls
    for cls in (FeedExists, FeedDoesNotExist, FeedTypeMismatch, ItemDoesNotExist, JobNotClaimed, JobNotStalled)
}
