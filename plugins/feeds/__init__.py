"""The ``feeds`` plugin: Atom 1.0 / RSS 2.0 / JSON Feed 1.1 documents from Thoonk feeds, and
outside feeds polled into Thoonk. See ``docs/feeds.md``."""

from .plugin import FeedsPlugin as plugin

__all__ = ["plugin"]
