"""Where the documents are served: ``<path_prefix>/NAME.FORMAT`` under the daemon's public URL."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .render import CONTENT_TYPES
from .settings import FEED_NAME_PATTERN

FEED_NAME = re.compile(FEED_NAME_PATTERN)


@dataclass(frozen=True)
class DocumentPaths:
    """``prefix``: the plugin's ``path_prefix``; ``public_url``: the daemon's base URL."""

    prefix: str
    public_url: str

    def path(self, name: str, fmt: str) -> str:
        return f"{self.prefix}/{name}.{fmt}"

    def url(self, name: str, fmt: str) -> str:
        return self.public_url.rstrip("/") + self.path(name, fmt)

    def split(self, path: str) -> tuple[str, str] | None:
        """(NAME, FORMAT) of a document path under the prefix (any daemon's), None for other paths."""
        if not path.startswith(self.prefix + "/"):
            return None
        name, _, fmt = path[len(self.prefix) + 1:].rpartition(".")
        return (name, fmt) if FEED_NAME.fullmatch(name) and fmt in CONTENT_TYPES else None

    def name_of(self, path: str) -> str | None:
        """NAME of a document path (what the topic registry asks on behalf of a distributing plugin)."""
        found = self.split(path)
        return found[0] if found is not None else None


__all__ = ["FEED_NAME", "DocumentPaths"]
