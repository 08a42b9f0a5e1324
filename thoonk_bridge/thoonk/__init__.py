"""Thoonk core: feeds, sorted feeds, queues and jobs on Redis, wire-compatible with thoonk.py / thoonk.js.

See docs/thoonk-keys.md for the Redis keys and channels.
"""

from .client import AsyncThoonk, Thoonk
from .embedded import EmbeddedRedis, EmbeddedRedisError
from .events import AsyncEvents, Event
from .exceptions import (
    Empty,
    FeedDoesNotExist,
    FeedExists,
    FeedTypeMismatch,
    ItemDoesNotExist,
    JobNotClaimed,
    JobNotStalled,
    RedisUnavailable,
    ThoonkError,
)
from .feed import Feed
from .job import Job
from .queue import HIGH, NORMAL, Queue
from .sorted_feed import SortedFeed

__all__ = [
    "Thoonk", "AsyncThoonk", "Event", "AsyncEvents",
    "Feed", "SortedFeed", "Queue", "Job", "NORMAL", "HIGH",
    "ThoonkError", "Empty", "FeedExists", "FeedDoesNotExist", "FeedTypeMismatch", "ItemDoesNotExist",
    "JobNotClaimed", "JobNotStalled", "RedisUnavailable",
    "EmbeddedRedis", "EmbeddedRedisError",
]
