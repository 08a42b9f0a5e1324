"""The ``thoonk`` plugin: Thoonk feeds in the bridge's own Redis as route sources and sinks.

Always enabled (``Plugin.always_enabled``): it needs no settings and a route may use ``thoonk:FEED``
without a ``plugins:`` entry.
"""

from .plugin import ThoonkPlugin as plugin

__all__ = ["plugin"]
