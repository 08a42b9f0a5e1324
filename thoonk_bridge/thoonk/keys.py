"""Names of the Redis keys and pub/sub channels of the Thoonk contract (see docs/thoonk-keys.md)."""

from __future__ import annotations

from dataclasses import dataclass

FEEDS = "feeds"
NEWFEED = "newfeed"
DELFEED = "delfeed"
CONFFEED = "conffeed"

FEED_TYPES = ("feed", "sorted_feed", "queue", "job")

# Per-feed channels, by event kind (the Event.kind an incoming message becomes).
CHANNEL_PREFIXES = {
    "publish": "feed.publish:",
    "edit": "feed.edit:",
    "retract": "feed.retract:",
    "position": "feed.position:",
    "finish": "job.finish:",
}
LIFECYCLE_CHANNELS = {NEWFEED: "create", DELFEED: "delete", CONFFEED: "config"}


@dataclass(frozen=True, slots=True)
class FeedKeys:
    """Every key one feed owns. A ``{hash tag}`` in the name keeps them in one cluster slot."""

    name: str

    @property
    def config(self) -> str:
        return f"feed.config:{self.name}"

    @property
    def ids(self) -> str:
        return f"feed.ids:{self.name}"

    @property
    def items(self) -> str:
        return f"feed.items:{self.name}"

    @property
    def publishes(self) -> str:
        return f"feed.publishes:{self.name}"

    @property
    def idincr(self) -> str:
        return f"feed.idincr:{self.name}"

    @property
    def published(self) -> str:
        return f"feed.published:{self.name}"

    @property
    def claimed(self) -> str:
        return f"feed.claimed:{self.name}"

    @property
    def stalled(self) -> str:
        return f"feed.stalled:{self.name}"

    @property
    def cancelled(self) -> str:
        return f"feed.cancelled:{self.name}"

    @property
    def finishes(self) -> str:
        return f"feed.finishes:{self.name}"

    def jobfinished(self, id: str) -> str:
        return f"feed.jobfinished:{self.name}\x00{id}"

    def all(self) -> list[str]:
        """Every fixed key (what delete_feed removes). Also the keys older implementations used."""
        n = self.name
        return [
            self.config, self.ids, self.items, self.publishes, self.idincr, self.published,
            self.claimed, self.stalled, self.cancelled, self.finishes,
            f"feed.running:{n}", f"feed.retried:{n}",
        ]
