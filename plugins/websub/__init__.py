"""websub plugin: a WebSub hub, a subscriber for outside topics, and publish pings (docs/websub.md)."""

from .plugin import WebSubPlugin as plugin

__all__ = ["plugin"]
