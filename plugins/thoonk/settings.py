"""Options of the ``thoonk`` endpoint kind (the plugin itself takes no settings)."""

from __future__ import annotations

from pydantic import Field

from thoonk_bridge.plugin import Settings

FEED_NAME_PATTERN = r"^[^\s\x00]{1,200}$"


class ThoonkSourceOptions(Settings):
    """``from: thoonk:FEED``.

    - ``address``: the feed name (created when missing).
    """

    address: str = Field(pattern=FEED_NAME_PATTERN, description="The feed name (created when missing).")


class ThoonkSinkOptions(Settings):
    """``to: thoonk:FEED``.

    - ``address``: the feed name (created when missing).
    - ``max_length``: set the feed's ``max_length`` when the bridge creates it.
    """

    address: str = Field(pattern=FEED_NAME_PATTERN, description="The feed name (created when missing).")
    max_length: int | None = Field(
        default=None, ge=1, description="The feed's max_length, set when the bridge creates the feed."
    )
