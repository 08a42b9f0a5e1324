"""The errors the feeds plugin raises (one place, so that every part imports them from here)."""

from __future__ import annotations


class BadItem(ValueError):
    """A payload the document cannot hold; ``reason`` is a short label for metrics."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class FetchFailed(Exception):
    """One poll failed; ``reason`` is a short label for metrics, ``retry_after`` the server's wish."""

    def __init__(self, message: str, reason: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.retry_after = retry_after


__all__ = ["BadItem", "FetchFailed"]
