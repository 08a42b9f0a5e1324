"""Settings of the ``feeds`` plugin and options of its endpoint kind."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from thoonk_bridge.feedparse import MAX_FEED_BYTES, MAX_FEED_ENTRIES, Identity
from thoonk_bridge.net import OutboundPolicy
from thoonk_bridge.payload import MAX_HTML_DEPTH
from thoonk_bridge.plugin import Settings

FEED_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
FormatName = Literal["atom", "rss", "json"]


class FeedsSettings(Settings):
    """``plugins.feeds`` (every key optional).

    - ``output_dir``: where documents are written (default: the plugin's state directory,
      ``<state_dir>/feeds``). A sink's own ``output_dir`` wins.
    - ``path_prefix``: URL path the documents are served under (default ``/feeds``).
    - ``max_staleness``: seconds a document may lag behind its feed during a burst (default 0.25).
    - ``quiet``: render early once no event came for this many seconds (default 0.02).
    - ``cache_max_age``: ``Cache-Control: max-age`` of served documents, seconds (default 0).
    - ``outbound``: the outbound HTTP policy of sources: ``allow_loopback``, ``allow_private``
      (both false by default), ``allowed_networks`` (CIDR list). A source may override each.
    - ``user_agent``: sent by sources (default ``thoonk-bridge (+feeds)``).
    - ``fetch_timeout``: seconds for one fetch, connect to last byte (default 30).
    - ``max_feed_bytes``: largest fetched document after decompression (default 10 MiB).
    - ``max_feed_entries``: entries read from one fetched document, the first (newest) in document
      order; the rest are ignored with a logged note (default 1000).
    - ``max_redirects``: redirect hops a fetch follows (default 5).
    """

    output_dir: Path | None = Field(
        default=None,
        description="Directory the documents (and their NAME.state.json) are written to; default <state_dir>/feeds.",
    )
    path_prefix: str = Field(
        default="/feeds", pattern=r"^/[A-Za-z0-9._/-]*[A-Za-z0-9._-]$",
        description="URL path the documents are served under.",
    )
    max_staleness: float = Field(
        default=0.25, gt=0, le=3600,
        description="Seconds a document may lag behind its feed during a burst of events (renders are coalesced).",
    )
    quiet: float = Field(
        default=0.02, ge=0, le=60,
        description="Render early once no event came for this many seconds.",
    )
    cache_max_age: int = Field(
        default=0, ge=0,
        description="Cache-Control max-age of the served documents, in seconds.",
    )
    outbound: OutboundPolicy = Field(
        default_factory=OutboundPolicy,
        description="Which addresses the sources' fetches may resolve to (checked on every hop); a source may "
        "override each key.",
    )
    user_agent: str = Field(default="thoonk-bridge (+feeds)", description="User-Agent header the sources send.")
    fetch_timeout: float = Field(
        default=30.0, gt=0,
        description="Seconds for one fetch, from connecting to the last byte.",
    )
    max_feed_bytes: int = Field(
        default=MAX_FEED_BYTES, gt=0,
        description="Largest fetched document, in bytes after decompression.",
    )
    max_feed_entries: int = Field(
        default=MAX_FEED_ENTRIES, gt=0,
        description="Entries read from one fetched document: the first (newest) in document order; the rest are "
        "ignored with a logged note.",
    )
    max_redirects: int = Field(default=5, ge=0, le=30, description="Redirect hops a fetch follows.")


class FeedSinkOptions(Settings):
    """``to: feeds:NAME`` (or the mapping form with options).

    - ``address``: the document name: ``[A-Za-z0-9][A-Za-z0-9._-]*``, up to 128 characters; served
      at ``<path_prefix>/NAME.atom``, ``.rss``, ``.json`` and written as ``NAME.atom`` etc.
    - ``formats``: which documents to keep (default ``[atom, rss, json]``).
    - ``title`` (default NAME), ``subtitle`` (RSS description; default "NAME, via thoonk-bridge"),
      ``link`` (the site the feed belongs to; default the public URL), ``author`` (feed author name,
      default "thoonk-bridge"), ``author_email``, ``language`` (e.g. ``en``),
      ``id`` (the Atom feed id; default the Atom document's public URL).
    - ``max_items``: how many of the newest entries the documents hold (default 50).
    - ``output_dir``: overrides the plugin's ``output_dir`` for this document.
    - ``sanitize_html``: clean HTML content and summaries with nh3 (default true); false publishes
      the HTML exactly as the payload has it.
    - ``max_html_depth``: HTML elements nested deeper than this lose their tags (text kept) before
      sanitising, which keeps its time linear in the size of the markup (default 256).
    - ``max_staleness``: overrides the plugin's ``max_staleness`` for this document.
    - ``max_payload_bytes``: larger payloads are refused (dead-lettered), default 1,000,000.
    """

    address: str = Field(
        pattern=FEED_NAME_PATTERN,
        description="The document name (letters, digits, '.', '_', '-'; up to 128 characters), served at "
        "<path_prefix>/NAME.atom, .rss and .json.",
    )
    formats: tuple[FormatName, ...] = Field(
        default=("atom", "rss", "json"),
        description="Which documents to keep: atom, rss and/or json.",
    )
    title: str | None = Field(default=None, description="Feed title; default NAME.")
    subtitle: str | None = Field(
        default=None,
        description="Atom subtitle, RSS description and JSON Feed description; default \"NAME, via thoonk-bridge\".",
    )
    link: str | None = Field(default=None, description="The site the feed belongs to; default the public URL.")
    author: str | None = Field(default=None, description="The feed author's name; default thoonk-bridge.")
    author_email: str | None = Field(default=None, description="The feed author's email address.")
    language: str | None = Field(default=None, description="The feed's language, e.g. en.")
    id: str | None = Field(default=None, description="Atom feed id; default the Atom document's public URL.")
    max_items: int = Field(
        default=50, ge=1, le=100_000,
        description="How many of the newest entries the documents hold.",
    )
    output_dir: Path | None = Field(
        default=None,
        description="Directory for this document's files; default the plugin's output_dir.",
    )
    sanitize_html: bool = Field(
        default=True,
        description="Clean HTML content and summaries with nh3; false publishes the HTML exactly as the payload has "
        "it.",
    )
    max_html_depth: int = Field(
        default=MAX_HTML_DEPTH, ge=1, le=10_000,
        description="HTML nested deeper than this loses its tags (text kept) before sanitising.",
    )
    max_staleness: float | None = Field(
        default=None, gt=0, le=3600,
        description="Seconds this document may lag behind its feed during a burst; default the plugin's "
        "max_staleness.",
    )
    max_payload_bytes: int = Field(default=1_000_000, gt=0, description="Larger payloads are refused (dead-lettered).")

    @field_validator("formats")
    @classmethod
    def _formats(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one format")
        return tuple(dict.fromkeys(value))


class FeedSourceOptions(Settings):
    """``from: feeds:https://...`` (or the mapping form with options).

    - ``address``: the ``http``/``https`` URL of an Atom, RSS or JSON Feed document.
    - ``interval``: seconds between polls (default 300).
    - ``identity``: ``auto`` (guid/atom:id, else link, else content hash; default), ``id``,
      ``link`` or ``hash``: how an entry's item id is chosen.
    - ``payload_format``: ``json`` (default) or ``atom``: the payload each item gets.
    - ``max_backoff``: longest wait after repeated errors or a ``Retry-After``, seconds (default 3600).
    - ``timeout``, ``max_bytes``, ``max_entries``, ``max_redirects``: override the plugin's
      ``fetch_timeout``, ``max_feed_bytes``, ``max_feed_entries``, ``max_redirects``.
    - ``allow_loopback``, ``allow_private``, ``allowed_networks``: override the plugin's
      ``outbound`` policy for this URL.
    """

    address: str = Field(
        pattern=r"^https?://\S+$",
        description="The http(s) URL of an Atom, RSS or JSON Feed document.",
    )
    interval: float = Field(default=300.0, gt=0, description="Seconds between polls.")
    identity: Identity = Field(
        default=Identity.AUTO,
        description="How an entry's item id is chosen: auto (guid or atom:id, else link, else content hash), id, link "
        "or hash.",
    )
    payload_format: Literal["json", "atom"] = Field(
        default="json",
        description="The payload each item gets: json (neutral) or atom.",
    )
    max_backoff: float = Field(
        default=3600.0, gt=0,
        description="Longest wait in seconds after repeated errors or a Retry-After.",
    )
    timeout: float | None = Field(
        default=None, gt=0,
        description="Seconds for one fetch; default the plugin's fetch_timeout.",
    )
    max_bytes: int | None = Field(
        default=None, gt=0,
        description="Largest fetched document in bytes; default the plugin's max_feed_bytes.",
    )
    max_entries: int | None = Field(
        default=None, gt=0,
        description="Entries read from one fetched document; default the plugin's max_feed_entries.",
    )
    max_redirects: int | None = Field(
        default=None, ge=0, le=30,
        description="Redirect hops a fetch follows; default the plugin's max_redirects.",
    )
    allow_loopback: bool | None = Field(
        default=None,
        description="Allow loopback addresses for this URL; default the plugin's outbound.allow_loopback.",
    )
    allow_private: bool | None = Field(
        default=None,
        description="Allow private addresses for this URL; default the plugin's outbound.allow_private.",
    )
    allowed_networks: tuple[str, ...] | None = Field(
        default=None,
        description="CIDR networks allowed for this URL whatever their category; default the plugin's "
        "outbound.allowed_networks.",
    )

    def policy(self, default: OutboundPolicy) -> OutboundPolicy:
        return OutboundPolicy(
            allow_loopback=default.allow_loopback if self.allow_loopback is None else self.allow_loopback,
            allow_private=default.allow_private if self.allow_private is None else self.allow_private,
            allowed_networks=default.allowed_networks if self.allowed_networks is None else self.allowed_networks,
        )
