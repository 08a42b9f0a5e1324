"""Sorted feeds: items in an order you set (``feed.ids`` is a list; ids come from ``feed.idincr``)."""

from __future__ import annotations

from .feed import FeedBase, op
from .scripts import Cmd, Eval, Op
from .text import as_text

__all__ = ["SortedFeed"]


class SortedFeed(FeedBase):
    """A manually ordered feed. ``publish``/``append`` add at the end, ``prepend`` at the start.

    Every insert publishes ``feed.publish`` (``id\\x00item``) and ``feed.position`` (``id\\x00POS``,
    POS being ``:end``, ``begin:``, ``:ID`` = before ID, ``ID:`` = after ID); ``edit`` replaces an item
    in place and, as the contract has it, announces it on ``feed.publish``.
    """

    type = "sorted_feed"

    def _insert(self, where: str, rel: str, item: object) -> Op[str]:
        data = self._check_item(item)
        if rel:
            self._check_id(rel, "relative item id")
        k = self.keys
        new = yield Eval(
            "sorted_insert", (k.config, k.ids, k.items, k.publishes, k.idincr), (self.name, where, rel, data)
        )
        return as_text(new)

    @op
    def publish(self, item: str | bytes) -> Op[str]:
        """Add ``item`` at the end; returns its id."""
        return (yield from self._insert("end", "", item))

    append = publish

    @op
    def prepend(self, item: str | bytes) -> Op[str]:
        return (yield from self._insert("begin", "", item))

    @op
    def publish_before(self, before_id: str, item: str | bytes) -> Op[str]:
        return (yield from self._insert("before", self._check_id(before_id, "before_id"), item))

    @op
    def publish_after(self, after_id: str, item: str | bytes) -> Op[str]:
        return (yield from self._insert("after", self._check_id(after_id, "after_id"), item))

    @op
    def edit(self, id: str, item: str | bytes) -> Op[None]:
        """Replace the item ``id`` in place (ItemDoesNotExist if there is none)."""
        id = self._check_id(id)
        data = self._check_item(item)
        k = self.keys
        yield Eval("sorted_edit", (k.config, k.items, k.publishes), (self.name, id, data))

    @op
    def move(self, rel_position: str, id: str) -> Op[None]:
        """Move ``id`` to ``rel_position``: ``:REL`` (before REL), ``REL:`` (after), ``begin:``, ``:end``."""
        yield from self._move(rel_position, id)

    def _move(self, rel_position: str, id: str) -> Op[None]:
        id = self._check_id(id)
        if not isinstance(rel_position, str) or len(rel_position) < 2 or ":" not in (rel_position[0], rel_position[-1]):
            raise ValueError(
                f"feed {self.name!r}: position must be ':ID', 'ID:', 'begin:' or ':end', not {rel_position!r}"
            )
        if rel_position not in ("begin:", ":end"):
            rel = rel_position[1:] if rel_position[0] == ":" else rel_position[:-1]
            self._check_id(rel, "relative item id")
            if rel == id:
                raise ValueError(f"feed {self.name!r}: cannot move item {id!r} relative to itself")
        k = self.keys
        yield Eval("sorted_move", (k.config, k.ids, k.items), (self.name, id, rel_position))

    @op
    def move_before(self, rel_id: str, id: str) -> Op[None]:
        yield from self._move(f":{self._check_id(rel_id, 'rel_id')}", id)

    @op
    def move_after(self, rel_id: str, id: str) -> Op[None]:
        yield from self._move(f"{self._check_id(rel_id, 'rel_id')}:", id)

    @op
    def move_first(self, id: str) -> Op[None]:
        yield from self._move("begin:", id)

    @op
    def move_last(self, id: str) -> Op[None]:
        yield from self._move(":end", id)

    @op
    def retract(self, id: str) -> Op[bool]:
        id = self._check_id(id)
        k = self.keys
        return bool((yield Eval("sorted_retract", (k.config, k.ids, k.items), (self.name, id))))

    @op
    def get_ids(self) -> Op[list[str]]:
        """Item ids in feed order."""
        return [as_text(i) for i in (yield Cmd("LRANGE", self.keys.ids, 0, -1))]

    @op
    def get_all(self) -> Op[dict[str, str]]:
        """All items ``{id: item}`` in feed order, read a page at a time (see :meth:`read_page`)."""
        return (yield from self._read_all())

    get_items = get_all

    @op
    def length(self) -> Op[int]:
        return int((yield Cmd("LLEN", self.keys.ids)))

    def get_channels(self) -> tuple[str, ...]:
        n = self.name
        return (f"feed.publish:{n}", f"feed.retract:{n}", f"feed.position:{n}")
