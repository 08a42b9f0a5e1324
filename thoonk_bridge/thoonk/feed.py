"""Plain feeds (items ordered by publish time), and what every feed type shares.

Operations are generators that yield calls (see scripts.py); the ``@op`` decorator hands them to
the owning client's executor, so ``feed.publish(...)`` returns the id on a ``Thoonk`` and a
coroutine to await on an ``AsyncThoonk``. One class serves both faces.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from .keys import FeedKeys
from .scripts import Batch, Cmd, Eval, Op
from .text import as_text, as_text_or_none

if TYPE_CHECKING:
    from .client import ThoonkBase

__all__ = ["Feed", "FeedBase", "Page", "PageCursor", "op"]

T = TypeVar("T")

PUBLISH_CHUNK = 200  # items per EVALSHA in publish_many: big enough to amortise, small enough not to stall Redis
READ_PAGE = 1000  # items per read_page call: a few ms of Redis time, whatever the feed's size


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


def new_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class PageCursor:
    """Where the next page of a feed read starts.

    Plain feeds page by score (``min``, inclusive, then ``offset`` items of that score and after it
    skipped), so an edit during the read (the item moves to the end) never makes a page skip another
    item; sorted feeds and queues page by index (``offset``).
    """

    min: str = "-inf"
    offset: int = 0


@dataclass(frozen=True, slots=True)
class Page:
    """``items``: ``(id, item)`` pairs in feed order; ``next``: the cursor of the next page, None at the end."""

    items: list[tuple[str, str]]
    next: PageCursor | None


class FeedBase:
    """What every feed type has: a name, its keys, reads, and a link to the client that runs it."""

    type: ClassVar[str] = ""

    def __init__(self, thoonk: ThoonkBase, name: str) -> None:
        self.thoonk = thoonk
        self.name = name
        self.keys = FeedKeys(name)
        self._run = thoonk._run  # noqa: SLF001 - a feed handle runs its operations on its client's executor

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
        return as_text_or_none((yield Cmd("HGET", self.keys.items, id)))

    @op
    def get_items(self, ids: Iterable[str]) -> Op[list[str | None]]:
        """The items stored under ``ids`` (None where there is none), in one round trip per page."""
        wanted = [self._check_id(id) for id in ids]
        if not wanted:
            return []
        pages = [wanted[i : i + READ_PAGE] for i in range(0, len(wanted), READ_PAGE)]
        replies = yield Batch([Cmd("HMGET", self.keys.items, *page) for page in pages])
        return [as_text_or_none(item) for reply in replies for item in reply]

    #: How ``feed.ids`` is read: 'zset' (by score) or 'list' (by index).
    _ids_kind: ClassVar[str] = "list"

    @op
    def read_page(self, cursor: PageCursor | None = None, count: int | None = None) -> Op[Page]:
        """One page of at most ``count`` items (default ``READ_PAGE``) from ``cursor`` (None: the start).

        Each page is one short script, so a reader of a huge feed never holds Redis up for others.
        Pages read one after another are not one atomic read: an item published meanwhile shows up
        on a later page, an edited item may show up twice (its newest payload last), a retracted one
        may be missing; a reader that follows the feed's events as well misses nothing.
        """
        return (yield from self._read_page(cursor or PageCursor(), count or READ_PAGE))

    def _read_page(self, cursor: PageCursor, count: int) -> Op[Page]:
        if self._ids_kind == "zset":
            args: tuple[Any, ...] = ("zset", cursor.min, cursor.offset, count)
        else:
            args = ("list", cursor.offset, count)
        flat = yield Eval("read_page", (self.keys.ids, self.keys.items), args)
        items = [(as_text(flat[i]), as_text(flat[i + 2])) for i in range(0, len(flat), 3) if flat[i + 2] is not None]
        rows = len(flat) // 3
        if rows < count:
            return Page(items, None)
        if self._ids_kind != "zset":
            return Page(items, PageCursor(offset=cursor.offset + rows))
        scores = flat[1::3]
        same = 0  # the rows at the end of the page with the last score (sorted: they are together)
        for score in reversed(scores):
            if score != scores[-1]:
                break
            same += 1
        last = as_text(scores[-1])
        # Every row of this page had the cursor's score: skip them too next time.
        offset = cursor.offset + same if same == rows and _same_score(last, cursor.min) else same
        return Page(items, PageCursor(last, offset))

    def _read_all(self) -> Op[dict[str, str]]:
        items: dict[str, str] = {}
        cursor: PageCursor | None = PageCursor()
        while cursor is not None:
            page = yield from self._read_page(cursor, READ_PAGE)
            for id, item in page.items:
                items.pop(id, None)  # an item edited during the read: its newest place and payload
                items[id] = item
            cursor = page.next
        return items

    @op
    def get_config(self) -> Op[dict[str, str]]:
        """This feed's config hash."""
        raw = yield Cmd("HGETALL", self.keys.config)
        return {as_text(k): as_text(v) for k, v in raw.items()}

    def delete_feed(self) -> Any:
        return self.thoonk.delete_feed(self.name)


class Feed(FeedBase):
    """A feed: items ordered by publish time (``feed.ids`` is a sorted set scored in milliseconds).

    Publishing an id that is already there is an edit: the payload is replaced, the item moves to
    the end and a ``feed.edit`` event goes out instead of ``feed.publish``. With ``max_length`` in
    the config, the oldest items beyond it are retracted.
    """

    type = "feed"
    _ids_kind = "zset"

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
        return [as_text(i) for i in (yield Cmd("ZRANGE", self.keys.ids, 0, -1))]

    @op
    def get_all(self) -> Op[dict[str, str]]:
        """All items ``{id: item}``, oldest first, read a page at a time (see :meth:`read_page`)."""
        return (yield from self._read_all())

    @op
    def length(self) -> Op[int]:
        return int((yield Cmd("ZCARD", self.keys.ids)))

    @op
    def version(self) -> Op[str]:
        """A token that changes with every publish, edit and retract: the publish counter (every
        publish and edit adds one, as the contract says) and the size (a retract lowers it), read
        together. Equal tokens read at two moments: the feed did not change in between (short of
        being deleted and rebuilt to the same counts)."""
        publishes, size = yield Batch([Cmd("GET", self.keys.publishes), Cmd("ZCARD", self.keys.ids)], atomic=True)
        return f"{int(publishes or 0)}:{int(size)}"

    def get_channels(self) -> tuple[str, ...]:
        return (f"feed.publish:{self.name}", f"feed.edit:{self.name}", f"feed.retract:{self.name}")


def _same_score(a: str, b: str) -> bool:
    try:
        return float(a) == float(b)
    except ValueError:
        return False
