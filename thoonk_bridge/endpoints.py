"""The ``thoonk`` endpoint kind: Thoonk feeds as route sources and sinks (part of the engine)."""

from __future__ import annotations

from pydantic import Field

from thoonk_bridge.plugin import EndpointKind, Settings

FEED_NAME_PATTERN = r"^[^\s\x00]{1,200}$"


class ThoonkSourceOptions(Settings):
    """``from: thoonk:FEED``.

    - ``address``: the feed name (created when missing).
    """

    address: str = Field(pattern=FEED_NAME_PATTERN)


class ThoonkSinkOptions(Settings):
    """``to: thoonk:FEED``.

    - ``address``: the feed name (created when missing).
    - ``max_length``: set the feed's ``max_length`` when the bridge creates it.
    """

    address: str = Field(pattern=FEED_NAME_PATTERN)
    max_length: int | None = Field(default=None, ge=1)


THOONK_KIND = EndpointKind(
    name="thoonk",
    source_options=ThoonkSourceOptions,
    sink_options=ThoonkSinkOptions,
    description="Thoonk feeds in the bridge's Redis",
)
