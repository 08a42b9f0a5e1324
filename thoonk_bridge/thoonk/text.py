"""Redis replies as text: the one bytes-to-str helper of the Thoonk core and of the application."""

from __future__ import annotations

from typing import Any

__all__ = ["as_text", "as_text_or_none"]


def as_text(value: Any) -> str:
    """A Redis reply (key, field, value, channel) as ``str``.

    ``bytes`` are decoded as UTF-8, an invalid sequence replaced by U+FFFD rather than raising (a
    reply written by another program must not stop a reader); anything else (``str`` from a client
    with ``decode_responses``, numbers) goes through ``str()``.
    """
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", errors="replace")
    return str(value)


def as_text_or_none(value: Any) -> str | None:
    """:func:`as_text`, but a missing reply (``None``: no such field or key) stays ``None``."""
    return None if value is None else as_text(value)
