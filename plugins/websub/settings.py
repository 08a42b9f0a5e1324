"""Settings of the ``websub`` plugin and the options of its endpoints.

Every duration is in seconds (floats allowed, so tests can use short intervals).
"""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import Field, field_validator, model_validator

from thoonk_bridge.feedparse import MAX_FEED_ENTRIES
from thoonk_bridge.net import OutboundPolicy, cidr_networks
from thoonk_bridge.plugin import Settings

SignatureMethod = Literal["sha1", "sha256", "sha384", "sha512"]

TEN_DAYS = 10 * 24 * 3600


class WebSubSettings(Settings):
    """``plugins.websub`` in the config.

    Hub (third parties subscribe to the documents this bridge serves):

    - ``hub``: run the hub at ``hub_path`` (default on).
    - ``hub_path``: where the hub listens (``POST``); the hub URL is ``public_url + hub_path``.
    - ``topics_path``: prefix of raw topics (``/topics/NAME``) for ``to: websub:NAME`` routes.
    - ``lease_default`` / ``lease_min`` / ``lease_max``: lease given when the subscriber asks for none,
      and the bounds a requested lease is clamped to (never perpetual).
    - ``signature``: the HMAC method of ``X-Hub-Signature`` when a subscriber gave a secret
      (``sha1`` is used for https callbacks only; plain-http callbacks then get ``sha256``, §8.3).
    - ``verify_timeout`` / ``delivery_timeout``: per request, whole request (connect, headers, body).
    - ``verify_concurrency``: verifications of intent in flight per daemon; ``verify_per_host``: of
      them, at most this many to one callback host (a verification whose host is busy goes back to
      the end of the queue, so hosts that never answer hold ``verify_per_host`` slots each, never
      the others').
    - ``max_pending_verifications``: subscription requests waiting for their verification, fleet-wide;
      beyond it new requests get ``429`` with ``Retry-After``.
    - ``delivery_batch``: subscribers per delivery job (posted concurrently); ``delivery_workers`` x
      ``delivery_batch``: POSTs in flight per daemon (twice ``delivery_workers`` jobs are claimed at once
      so that one batch's slow callback does not idle the others); ``per_host_concurrency``: POSTs in
      flight to one callback host.
    - ``retry_base`` / ``retry_max_delay`` / ``retry_window``: exponential backoff between attempts of one
      notification (each wait drawn between half and all of ``retry_base`` doubled per attempt, at most
      ``retry_max_delay``), given up (dropped, counted) once ``retry_window`` has passed since it
      was first tried. The subscription stays.
    - ``breaker_threshold`` / ``breaker_cooldown`` / ``breaker_max_cooldown``: after that many failures in a
      row a callback host is left alone for the cooldown (doubling up to the max); its notifications wait.
    - ``subscribe_rate`` per ``subscribe_rate_window``: subscription requests allowed per callback;
      ``subscribe_rate_per_host``: per callback host; ``subscribe_rate_per_client``: per client
      address (IPv6: per /64). Over a limit: ``429`` with ``Retry-After``. ``rate_limit_max_keys``:
      distinct clients (hosts, callbacks) counted per window; when that many have been seen, requests
      from new ones get ``429`` until the window ends (the tables are bounded).
    - ``max_subscriptions``: verified subscriptions the hub keeps, fleet-wide; when reached, requests
      for new (topic, callback) pairs get ``429`` (renewals and unsubscriptions still go through).
      Checked on request and again before verifying; verifications finishing at the same moment may
      pass it by a few (at most ``verify_concurrency`` per daemon).
    - ``trusted_proxies``: CIDR networks of reverse proxies whose ``X-Forwarded-For`` names the
      client (default none: the peer address is the client).
    - ``max_request_bytes`` / ``max_param_chars``: request body and single parameter limits.
    - ``outbound``: which addresses callbacks, hubs and fetched topics may resolve to
      (``thoonk_bridge.net.OutboundPolicy``: ``allow_loopback``, ``allow_private``,
      ``allowed_networks``); by default loopback, private, link-local, CGNAT, ULA and metadata
      addresses are refused, checked on the resolved address and pinned for the request.
    - ``job_timeout``: a claimed job not finished after this long is put back (the worker died).
    - ``sweep_interval``: how often expired subscriptions are removed; ``retry_poll``: how often due
      retries are put back on the job queue.

    Publisher:

    - ``publish_hubs``: outside hubs to ping (``hub.mode=publish&hub.url=...``) whenever a served
      document changes; with ``hub: false`` the first of them is the hub the documents advertise.
    - ``ping_retry_window``: how long a failing ping is retried.

    Subscriber (``from: websub:URL`` routes):

    - ``callback_path``: prefix of the per-subscription callback URLs.
    - ``max_delivery_bytes``: bigger deliveries are refused with 413.
    - ``max_delivery_entries``: entries read from one delivered (or polled) document, the first
      (newest) in document order; the rest are ignored with a logged note (default 1000).
    - ``renew_at``: fraction of the lease after which the subscription is renewed.
    - ``fetch_timeout``: discovery and polling fetches.
    """

    hub: bool = Field(default=True, description="Run the hub for the documents and raw topics this bridge serves.")
    hub_path: str = Field(
        default="/websub/hub", pattern=r"^/[A-Za-z0-9._~/-]*$",
        description="Where the hub listens (POST); the hub URL is public_url + hub_path.",
    )
    topics_path: str = Field(
        default="/topics", pattern=r"^/[A-Za-z0-9._~/-]*[^/]$",
        description="URL prefix of raw topics (/topics/NAME) for to: websub:NAME routes.",
    )
    callback_path: str = Field(
        default="/websub/callback", pattern=r"^/[A-Za-z0-9._~/-]*[^/]$",
        description="URL prefix of the subscriber's per-subscription callback URLs.",
    )

    lease_default: float = Field(
        default=TEN_DAYS, gt=0,
        description="Lease in seconds given when a subscriber asks for none.",
    )
    lease_min: float = Field(
        default=3600, gt=0,
        description="Shortest lease in seconds; requested leases are clamped to [lease_min, lease_max], never "
        "perpetual.",
    )
    lease_max: float = Field(default=31 * 24 * 3600, gt=0, description="Longest lease in seconds.")
    signature: SignatureMethod = Field(
        default="sha256",
        description="HMAC method of X-Hub-Signature when a subscriber gave a secret (sha1 for https callbacks only).",
    )

    verify_timeout: float = Field(
        default=5.0, gt=0,
        description="Seconds for a whole verification request (connect, headers, body).",
    )
    delivery_timeout: float = Field(
        default=5.0, gt=0,
        description="Seconds for a whole delivery request (connect, headers, body).",
    )
    verify_concurrency: int = Field(
        default=50, ge=1, le=10000,
        description="Verifications of intent in flight per daemon.",
    )
    verify_per_host: int = Field(default=2, ge=1, description="Verifications in flight to one callback host, at most.")
    max_pending_verifications: int = Field(
        default=1000, ge=1,
        description="Subscription requests waiting for verification, fleet-wide; more get 429 with Retry-After.",
    )
    delivery_workers: int = Field(
        default=8, ge=1, le=1000,
        description="Delivery jobs worked on at once per daemon; times delivery_batch is the POSTs in flight.",
    )
    delivery_batch: int = Field(
        default=25, ge=1, le=1000,
        description="Subscribers per delivery job, posted concurrently.",
    )
    per_host_concurrency: int = Field(default=20, ge=1, description="POSTs in flight to one callback host, at most.")

    retry_base: float = Field(
        default=10.0, gt=0,
        description=(
            "Seconds before the first retry of a failed delivery, then doubling "
            "(each wait drawn between half and all of it)."
        ),
    )
    retry_max_delay: float = Field(
        default=600.0, gt=0,
        description="Longest wait in seconds between delivery attempts.",
    )
    retry_window: float = Field(
        default=3600.0, ge=0,
        description="Seconds after the first attempt when a failing notification is given up (the subscription "
        "stays).",
    )

    breaker_threshold: int = Field(default=5, ge=1, description="Failures in a row before a callback host is paused.")
    breaker_cooldown: float = Field(
        default=30.0, gt=0,
        description="Seconds a paused callback host is left alone, doubling while it keeps failing.",
    )
    breaker_max_cooldown: float = Field(
        default=600.0, gt=0,
        description="Longest pause in seconds of a failing callback host.",
    )

    subscribe_rate: int = Field(
        default=20, ge=1,
        description="Subscription requests allowed per callback URL per window; more get 429.",
    )
    subscribe_rate_window: float = Field(default=60.0, gt=0, description="Seconds of the subscription rate window.")
    subscribe_rate_per_host: int = Field(
        default=60, ge=1,
        description="Subscription requests allowed per callback host per window.",
    )
    subscribe_rate_per_client: int = Field(
        default=60, ge=1,
        description="Subscription requests allowed per client address (IPv6: per /64) per window.",
    )
    rate_limit_max_keys: int = Field(
        default=10000, ge=1,
        description="Distinct clients, hosts or callbacks counted per window; new ones beyond get 429 until the "
        "window ends.",
    )
    max_subscriptions: int = Field(
        default=100_000, ge=1,
        description="Verified subscriptions kept, fleet-wide; requests for new (topic, callback) pairs beyond get "
        "429.",
    )
    trusted_proxies: tuple[str, ...] = Field(
        default=(),
        description="CIDR networks of reverse proxies whose X-Forwarded-For names the client.",
    )
    max_request_bytes: int = Field(default=16384, ge=256, description="Largest hub request body in bytes (413 above).")
    max_param_chars: int = Field(
        default=2048, ge=64,
        description="Longest single hub request parameter in characters (400 above).",
    )

    outbound: OutboundPolicy = Field(
        default_factory=OutboundPolicy,
        description="Which addresses callbacks, outside hubs and fetched topics may resolve to.",
    )

    job_timeout: float = Field(
        default=60.0, gt=0,
        description="Seconds after which a claimed job not finished is put back (its daemon died).",
    )
    sweep_interval: float = Field(
        default=60.0, gt=0,
        description="How often, in seconds, expired subscriptions are removed.",
    )
    retry_poll: float = Field(
        default=1.0, gt=0,
        description="How often, in seconds, due retries are put back on their job feed.",
    )

    publish_hubs: tuple[str, ...] = Field(
        default=(),
        description="Outside hubs to ping whenever a served document changes; with hub: false the first is the one "
        "advertised.",
    )
    ping_retry_window: float = Field(default=3600.0, ge=0, description="Seconds a failing publish ping is retried.")

    max_delivery_bytes: int = Field(
        default=10 * 1024 * 1024, ge=1024,
        description="Subscriber: larger deliveries from outside hubs are refused with 413.",
    )
    max_delivery_entries: int = Field(
        default=MAX_FEED_ENTRIES, gt=0,
        description="Subscriber: entries read from one delivered or polled document (the newest); the rest are "
        "ignored.",
    )
    renew_at: float = Field(
        default=0.8, gt=0.1, lt=1.0,
        description="Subscriber: fraction of the lease after which the subscription is renewed.",
    )
    fetch_timeout: float = Field(
        default=10.0, gt=0,
        description="Subscriber: seconds for discovery and polling fetches.",
    )

    @field_validator("publish_hubs")
    @classmethod
    def _http_urls(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for url in value:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{url!r} is not an http(s) URL")
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        cidr_networks(value)
        return value

    def proxy_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return cidr_networks(self.trusted_proxies)

    @model_validator(mode="after")
    def _bounds(self) -> WebSubSettings:
        if self.lease_min > self.lease_max:
            raise ValueError("lease_min must not exceed lease_max")
        if not self.lease_min <= self.lease_default <= self.lease_max:
            raise ValueError("lease_default must lie within [lease_min, lease_max]")
        if self.retry_base > self.retry_max_delay:
            raise ValueError("retry_base must not exceed retry_max_delay")
        return self


class WebSubSinkOptions(Settings):
    """``to: websub:NAME`` (or the mapping form with options).

    - ``address``: NAME. In ``mode: auto`` (the default) the sink distributes the feeds plugin's
      documents named NAME (``<path_prefix>/NAME.atom|.rss|.json``, found through the topic registry)
      when they exist: nothing is done per item, the documents' changes drive the hub. When no such
      document is registered, or with ``mode: raw``, NAME is exposed as a raw topic ``/topics/NAME``
      whose body is the latest item's payload, distributed on every publish and edit.
    - ``content_type``: the raw topic's Content-Type (default: by the route format, else guessed
      from the payload: JSON object, XML, or plain text).
    """

    address: str = Field(
        pattern=r"^[A-Za-z0-9._~-]{1,200}$",
        description="The topic NAME: the feeds plugin's documents for NAME, or the raw topic /topics/NAME.",
    )
    mode: Literal["auto", "documents", "raw"] = Field(
        default="auto",
        description="auto: the feeds plugin's documents for NAME when they exist, else a raw topic; documents: only "
        "the documents; raw: only the raw topic.",
    )
    content_type: str | None = Field(
        default=None, max_length=200, pattern=r"^[\x21-\x7e][\x20-\x7e]*$",
        description="The raw topic's Content-Type; default by the route's format, else guessed from the payload.",
    )


class WebSubSourceOptions(Settings):
    """``from: websub:https://topic.example/feed``.

    - ``address``: the topic URL to discover hub and self from.
    - ``lease_seconds``: lease to ask the hub for (default: the hub's choice).
    - ``secret``: subscribe with a random secret and require signed deliveries: ``https`` (the
      default) only when the hub URL is https (§5.1: a secret sent over plain HTTP is no secret),
      ``true`` always, ``false`` never.
    - ``poll_after``: with no delivery for this long (or when the hub denied or cannot be reached)
      the topic is fetched directly (reconcile) and again every ``poll_after``.
    - ``outbound``: this route's own address policy (default: the plugin's ``outbound``).
    """

    address: str = Field(
        pattern=r"^https?://\S{1,2000}$",
        description="The outside topic URL, from which the hub and self URLs are discovered.",
    )
    lease_seconds: int | None = Field(
        default=None, ge=60,
        description="Lease in seconds to ask the hub for; default the hub's choice.",
    )
    secret: bool | Literal["https"] = Field(
        default="https",
        description="Subscribe with a random secret and require signed deliveries: https (only to an https hub), true "
        "(always) or false (never).",
    )
    poll_after: float = Field(
        default=3600.0, gt=0,
        description="With no delivery for this many seconds (or no usable hub) the topic is fetched directly, and "
        "again every poll_after.",
    )
    outbound: OutboundPolicy | None = Field(
        default=None,
        description="This route's own address policy; default the plugin's outbound.",
    )
