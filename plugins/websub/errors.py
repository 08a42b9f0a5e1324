"""The errors the websub plugin raises (one place, so that every part imports them from here)."""

from __future__ import annotations


class BadURL(ValueError):
    """A URL the hub or the subscriber cannot use (not absolute http(s), user information, bad port...)."""


class HubError(Exception):
    """A hub request refused: ``status`` (4xx) and ``reason`` are sent back as plain text, with
    ``headers`` (``Retry-After`` on 429)."""

    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers or {}


__all__ = ["BadURL", "HubError"]
