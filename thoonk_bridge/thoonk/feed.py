"""Plain feeds (items ordered by publish time), and what every feed type shares.

Operations are generators that yield calls (see scripts.py); the ``@op`` decorator hands them to
the owning client's executor, so ``feed.publish(...)`` returns the id on a ``Thoonk`` and a
coroutine to await on an ``AsyncThoonk``. One class serves both faces.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from .keys import FeedKeys
from .scripts import Batch, Cmd, Eval, Op

if TYPE_CHECKING:
    from .client import ThoonkBase

__all__ = ["Feed", "FeedBase", "op"]

T = TypeVar("T")

PUBLISH_CHUNK = 200  # items per EVALSHA in publish_many: big enough to amortise, small enough not to stall Redis


def op(fn: Callable[..., Op[T]]) -> Callable[..., Any]:
    """Run the generator operation ``fn`` with the executor of ``self`` (sync value or awaitable)."""

    @functools.wraps(fn)
    def run(self: Any, *args: Any, **kwargs: Any) -> Any:
        return self._run(fn(self, *args, **kwargs))

    return run


# --- argument checks (raised before anything is sent, so bad input changes nothing) ---------------


def check_name(name: object) -> str:
    if not isinstance(name, str):
        raise TypeError(f"feed name must be a str, not {type(name).__name__}: {name!r}")
    if not name or "\x00" in name:
        raise ValueError(f"feed name must be non-empty and without NUL characters: {name!r}")
    return name


def check_id(feed: str, id: object, what: str = "item id") -> str:
    if not isinstance(id, str):
        raise TypeError(f"feed {feed!r}: {what} must be a str, not {type(id).__name__}: {id!r}")
    if not id or "\x00" in id:
        raise ValueError(f"feed {feed!r}: {what} must be a non-empty str without NUL characters: {id!r}")
    return id


def check_item(feed: str, item: object) -> str | bytes:
    if isinstance(item, str):
        return item
    if isinstance(item, bytes | bytearray | memoryview):
        data = bytes(item)
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"feed {feed!r}: item bytes are not UTF-8: {e}") from None
        return data
    raise TypeError(f"feed {feed!r}: item must be str or bytes, not {type(item).__name__}")


def check_timeout(feed: str, timeout: object) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout < 0:
        raise ValueError(f"feed {feed!r}: timeout must be a number of seconds >= 0 (0 waits forever): {timeout!r}")
    return float(timeout)


def as_str(value: Any) -> Any:
    """Replies may be bytes (our clients) or str (a shared client with decode_responses)."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return value


def new_id() -> str:
    return uuid.uuid4().hex


class FeedBase:
    """What every feed type has: a name, its keys, reads, and a link to the client that runs it."""

    type: ClassVar[str] = ""

    def __init__(self, thoonk: ThoonkBase, name: str) -> None:
        self.thoonk = thoonk
        self.name = name
        self.keys = FeedKeys(name)
        self._run = thoonk._run

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    def _check_id(self, id: object, what: str = "item id") -> str:
        return check_id(self.name, id, what)

    def _check_item(self, item: object) -> str | bytes:
        return check_item(self.name, item)

    @op
    def get_item(self, id: str) -> Op[str | None]:
        """The item stored under ``id``, or None."""
        id = self._check_id(id)
        return as_str((yield Cmd("HGET", self.keys.items, id)))

    @op
    def get_config(self) -> Op[dict[str, str]]:
        """This feed's config hash."""
        raw = yield Cmd("HGETALL", self.keys.config)
        return {as_str(k): as_str(v) for k, v in raw.items()}

    def delete_feed(self) -> Any:
        return self.thoonk.delete_feed(self.name)


class Feed(FeedBase):
    """A feed: items ordered by publish time (``feed.ids`` is a sorted set scored in milliseconds).

    Publishing an id that is already there is an edit: the payload is replaced, the item moves to
    the end and a ``feed.edit`` event goes out instead of ``feed.publish``. With ``max_length`` in
    the config, the oldest items beyond it are retracted.
    """

    type = "feed"

    def _publish_call(self, pairs: list[tuple[str, str | bytes]]) -> Eval:
        args: list[Any] = [self.name]
        for id, item in pairs:
            args += (id, item)
        k = self.keys
        return Eval("feed_publish", (k.config, k.ids, k.items, k.publishes), args, coalesce=True)

    @op
    def publish(self, item: str | bytes, id: str | None = None) -> Op[str]:
        """Publish ``item`` under ``id`` (a new uuid when None); returns the id."""
        data = self._check_item(item)
        id = new_id() if id is None else self._check_id(id)
        yield self._publish_call([(id, data)])
        return id

    @op
    def publish_many(self, entries: Iterable[tuple[str | None, str | bytes]]) -> Op[list[str]]:
        """Publish many ``(id_or_None, item)`` pairs in order, in few round trips; returns the ids.

        Checked as a whole first: one bad entry raises before anything is written.
        """
        pairs: list[tuple[str, str | bytes]] = []
        for entry in entries:
            try:
                id, item = entry
            except (TypeError, ValueError):
                raise TypeError(
                    f"feed {self.name!r}: publish_many wants (id_or_None, item) pairs, got {entry!r}"
                ) from None
            pairs.append((new_id() if id is None else self._check_id(id), self._check_item(item)))
        if not pairs:
            return []
        chunks = [pairs[i : i + PUBLISH_CHUNK] for i in range(0, len(pairs), PUBLISH_CHUNK)]
        if len(chunks) == 1:
            yield self._publish_call(chunks[0])
        else:
            yield Batch([self._publish_call(c) for c in chunks])
        return [id for id, _ in pairs]

    @op
    def retract(self, id: str) -> Op[bool]:
        """Remove an item; True if it was there (a ``feed.retract`` event goes out then)."""
        id = self._check_id(id)
        k = self.keys
        return bool((yield Eval("feed_retract", (k.config, k.ids, k.items), (self.name, id))))

    @op
    def get_ids(self) -> Op[list[str]]:
        """Item ids, oldest first."""
        return [as_str(i) for i in (yield Cmd("ZRANGE", self.keys.ids, 0, -1))]

    @op
    def get_all(self) -> Op[dict[str, str]]:
        """All items ``{id: item}``, oldest first, read atomically."""
        flat = yield Eval("read_all", (self.keys.ids, self.keys.items), ("zset",))
        return {as_str(flat[i]): as_str(flat[i + 1]) for i in range(0, len(flat), 2)}

    @op
    def length(self) -> Op[int]:
        return int((yield Cmd("ZCARD", self.keys.ids)))

    def get_channels(self) -> tuple[str, ...]:
        return (f"feed.publish:{self.name}", f"feed.edit:{self.name}", f"feed.retract:{self.name}")
