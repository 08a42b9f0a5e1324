"""The plugin contract: what a plugin offers, how the daemon drives it, and what it may use.

A plugin is a subclass of :class:`Plugin` exposed through the entry-point group
``thoonk_bridge.plugins`` (``name = "package.module:plugin"``, where ``plugin`` is the class).
The built-in plugins under ``plugins/`` are registered exactly the same way, so a third-party
plugin installs with pip and nothing else. ``docs/plugins.md`` walks through a complete example.

Lifecycle, driven by the daemon (all plugins in dependency order, reverse order on stop):

1. ``validate()``: checks beyond the settings schema, without connecting anywhere (``check``).
2. ``setup()``: acquire resources (connections, HTTP routes on ``context.http``).
3. ``start()``: begin work; endpoints are asked for after this.
4. ``stop()``: release everything; must not raise.

Endpoints: a plugin offers one or more :class:`EndpointKind` (``feeds``, ``xmpp``...). The router
asks ``plugin.source(endpoint, route)`` / ``plugin.sink(endpoint, route)`` for each route using that
kind, and drives the returned :class:`Source` / :class:`Sink`. Plugins never import each other:
they talk through the router, the Thoonk core and the :class:`TopicRegistry`.

Typing: ``class MyPlugin(Plugin[MySettings])`` gets ``self.settings: MySettings``; the config hands
``source()`` / ``sink()`` an :class:`Endpoint` whose ``options`` are already an instance of the
kind's ``source_options`` / ``sink_options`` model, so a plugin annotates
``sink(self, endpoint: Endpoint[MySinkOptions], route)`` and never checks them again.
"""

from __future__ import annotations

import asyncio
import enum
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict

# Moved to their own modules; re-exported here, where third-party plugins import them from
# (discovery, tasks, topics; the payload names are for ItemEvent's parse cache).
from thoonk_bridge.discovery import ENTRY_POINT_GROUP, PluginLoadError, discover_plugins, start_order
from thoonk_bridge.payload import MAX_PAYLOAD_BYTES, Entry, Format, PayloadError
from thoonk_bridge.payload.detect import check_size
from thoonk_bridge.payload.parsing import Parsed, detect_parsed, parse_payload
from thoonk_bridge.tasks import cancel_and_wait
from thoonk_bridge.topics import TOPICS_KEY, Topic, TopicChange, TopicRegistry

if TYPE_CHECKING:
    import structlog
    from aiohttp import web
    from prometheus_client import CollectorRegistry

    from thoonk_bridge.redis_client import AsyncRedis
    from thoonk_bridge.thoonk import AsyncThoonk

__all__ = [
    "ENTRY_POINT_GROUP",
    "DeliveryError",
    "Endpoint",
    "EndpointKind",
    "EventKind",
    "Health",
    "HealthState",
    "ItemEvent",
    "NoSnapshot",
    "Plugin",
    "PluginContext",
    "PluginLoadError",
    "Resync",
    "RouteContext",
    "Settings",
    "Sink",
    "Source",
    "Topic",
    "TopicChange",
    "TOPICS_KEY",
    "TopicRegistry",
    "cancel_and_wait",
    "discover_plugins",
    "start_order",
]

class Settings(BaseModel):
    """Base for plugin settings and endpoint options: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NoSettings(Settings):
    """A plugin or endpoint that takes no options."""


SettingsT = TypeVar("SettingsT", bound=Settings)  # a plugin's settings model
# Covariant: an Endpoint[FeedSinkOptions] is an Endpoint[Settings] (the engine holds them mixed).
OptionsT = TypeVar("OptionsT", bound=Settings, covariant=True)
SourceOptionsT = TypeVar("SourceOptionsT", bound=Settings, covariant=True)
SinkOptionsT = TypeVar("SinkOptionsT", bound=Settings, covariant=True)


# --------------------------------------------------------------------------- events


class EventKind(enum.StrEnum):
    PUBLISH = "publish"  # a new id
    EDIT = "edit"  # a known id, new payload
    RETRACT = "retract"  # the id is gone


@dataclass(frozen=True, slots=True)
class ItemEvent:
    """One change along a route. ``payload`` is None for retract."""

    kind: EventKind
    id: str
    payload: str | None = None
    # The payload parsed once (or the PayloadError it raised) and its detected format, shared by the
    # router's format conversion and every sink the event goes to: see parsed().
    _parsed: Parsed | PayloadError | None = field(default=None, init=False, repr=False, compare=False)
    _format: Format | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise ValueError(f"item id must be a non-empty string, got {self.id!r}")
        if self.kind is not EventKind.RETRACT and not isinstance(self.payload, str):
            raise ValueError(f"{self.kind} of {self.id!r} needs a str payload")

    def parsed(self, max_bytes: int | None = MAX_PAYLOAD_BYTES) -> Parsed:
        """The payload parsed (format detected), once per event: ``parse_payload(payload)``.

        Raises ``PayloadError`` (on every call) for a payload that cannot be parsed, or one over
        ``max_bytes`` (UTF-8 bytes; checked on every call, each caller has its own limit; ``None``:
        no limit), and ``ValueError`` for a retract. Safe to call from a worker thread.
        """
        if self.payload is None:
            raise ValueError(f"retract of {self.id!r} has no payload")
        check_size(self.payload, max_bytes)
        parsed = self._parsed
        if parsed is None:
            try:
                parsed = parse_payload(self.payload, self._format, max_bytes=None)
            except PayloadError as exc:
                parsed = exc
            object.__setattr__(self, "_parsed", parsed)  # frozen: a cache, not a change of the event
        if isinstance(parsed, PayloadError):
            raise PayloadError(str(parsed))
        return parsed

    def entry(self, max_bytes: int | None = MAX_PAYLOAD_BYTES) -> Entry:
        """``parsed(max_bytes).entry``: what ``thoonk_bridge.payload.parse(payload)`` gives."""
        return self.parsed(max_bytes).entry

    def payload_format(self) -> Format:
        """``detect_format(payload)``, once per event (the parse's when there was one)."""
        if self.payload is None:
            raise ValueError(f"retract of {self.id!r} has no payload")
        if isinstance(self._parsed, Parsed):
            return self._parsed.format
        if self._format is None:
            fmt, parsed = detect_parsed(self.payload)  # JSON: detecting it is parsing it
            object.__setattr__(self, "_format", fmt)
            if parsed is not None and self._parsed is None:
                object.__setattr__(self, "_parsed", parsed)
            return fmt
        return self._format

    def with_parsed(self, parsed: Parsed | None) -> ItemEvent:
        """Record what :meth:`parsed` gives for this payload when it is known already (a source that
        validated it, the router that rendered it: ``render_parsed``), so that nobody parses it
        again; ``None`` records nothing. Returns the event."""
        if parsed is not None:
            object.__setattr__(self, "_parsed", parsed)
        return self


class Resync(Exception):
    """Raised by ``Source.follow()`` after the source reconnected and may have missed events.

    The router then takes a fresh ``snapshot()``, reconciles every sink, and calls ``follow()``
    again. The source must have re-established its subscription *before* raising, so that nothing
    published between the snapshot and the next ``follow()`` is lost.
    """


class NoSnapshot(Exception):
    """Raised by ``Source.snapshot()`` when the source cannot list its items (an XMPP node that
    keeps none: ``pubsub#persist_items = false``).

    The router then skips the reconcile (sinks keep what they hold: an empty snapshot would retract
    everything) and relays the source's live events only; ``str(error)`` goes to the route's detail.
    Raised again after a :class:`Resync`, it is logged only when the reason changes.
    """


class DeliveryError(Exception):
    """A sink could not apply an event.

    ``retryable=True``: a transient problem (connection lost, server busy); the router retries
    with backoff and jitter. ``retryable=False``: this event can never be applied (payload cannot
    be converted, too large for the target); the router sends it to the route's dead-letter feed
    with ``str(error)`` as the reason and goes on.
    """

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


# --------------------------------------------------------------------------- endpoints


def _no_options() -> Any:
    # Any: an Endpoint built by hand without options (old tests) holds NoSettings whatever its OptionsT.
    return NoSettings()


@dataclass(frozen=True)
class Endpoint(Generic[OptionsT]):
    """An endpoint reference from the config: ``KIND:ADDRESS`` plus its options.

    - ``kind``, ``address``: the two halves of ``KIND:ADDRESS``.
    - ``options``: an instance of the kind's options model for this endpoint's role (the config
      parses them: ``EndpointKind.source_options`` for a route's ``from``, ``sink_options`` for a
      ``to``), so ``options.address`` is the address when the model declares it.
    """

    kind: str
    address: str
    options: OptionsT = field(default_factory=_no_options)

    def __str__(self) -> str:
        return f"{self.kind}:{self.address}"


@dataclass(frozen=True)
class EndpointKind(Generic[SourceOptionsT, SinkOptionsT]):
    """An endpoint kind a plugin offers; its type parameters are its two options models.

    - ``name``: the ``KIND`` in ``KIND:ADDRESS``.
    - ``source_options`` / ``sink_options``: the options model when this kind can be a route's
      ``from`` / ``to``; ``None`` when it cannot. The config validates an endpoint's mapping form
      (``{endpoint: "KIND:ADDRESS", option: value}``) against the model; the ``address`` itself is
      passed to the model as the field ``address`` when the model declares one.
    - ``description``: one line for ``thoonk-bridge plugins``.
    - ``resource``: what a sink of this kind writes, for the "two routes write the same thing"
      check (default ``KIND:ADDRESS``).
    """

    name: str
    source_options: type[SourceOptionsT] | None = None
    sink_options: type[SinkOptionsT] | None = None
    description: str = ""
    resource: Callable[[Endpoint[Settings]], str] = field(default=str)

    @property
    def can_source(self) -> bool:
        return self.source_options is not None

    @property
    def can_sink(self) -> bool:
        return self.sink_options is not None


class Source(ABC):
    """Where a route reads items from.

    The router calls ``open()``, then ``snapshot_pages()`` (by default one page: ``snapshot()``),
    then iterates ``follow()``; events that happen after ``open()`` returned must show up in
    ``follow()`` (buffer them), so nothing falls between the snapshot and the follow.

    ``absence`` says what an id missing from the snapshot means, which decides what the route
    retracts on reconcile from the items it delivered earlier (``mirror`` retracts regardless):

    - ``"retracted"``: the snapshot is the whole source, an id not in it is gone (a Thoonk feed).
    - ``"window"``: the source keeps only its newest items and drops older ones without a retract
      (an XMPP node with ``max_items``): an id not in the snapshot counts as retracted only when the
      route delivered it after the oldest item the snapshot still holds.
    - ``"unknown"``: absence means nothing (an outside document showing its latest entries).
    """

    absence: ClassVar[Literal["retracted", "window", "unknown"]] = "retracted"

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Start listening."""

    @abstractmethod
    async def snapshot(self) -> list[tuple[str, str]]:
        """The current ``(id, payload)`` items, oldest first."""

    async def version(self) -> str | None:
        """A token that changes whenever the source's items change; None: the source cannot tell.

        With :meth:`barrier`, it lets a route that stopped cleanly skip its next reconcile when
        neither the source nor the sinks changed meanwhile (docs/reconcile.md, "Checkpoints")."""
        return None

    async def barrier(self) -> bool:
        """Return True once ``follow()`` has yielded every event that happened before the call
        (``follow()`` is being iterated meanwhile); False: this source cannot tell."""
        return False

    async def snapshot_pages(self) -> AsyncIterator[Sequence[tuple[str, str]]]:
        """The snapshot in pages, oldest first, so a huge source is never held whole in memory.

        The default yields ``snapshot()`` as one page; a source that can read in bounded pages (a
        Thoonk feed) overrides this. An id may appear again on a later page (edited during the
        read): its last appearance wins.
        """
        yield await self.snapshot()

    @abstractmethod
    def follow(self) -> AsyncIterator[ItemEvent]:
        """Events as they happen. Ends when the source is closed; raises :class:`Resync` after a
        reconnect that may have lost events."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Stop listening and release resources; must not raise."""


class Sink(ABC):
    """Where a route writes items to. ``apply`` must be idempotent by item id.

    ``capacity``: how many items the target keeps (an XMPP node's ``max_items``), ``None`` for no
    limit. On reconcile the router only sends the newest ``capacity`` items of the snapshot, so a
    target that trims old items is not refilled with them on every start.
    """

    capacity: int | None = None

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Prepare the target (create the node, the directory...)."""

    async def ids(self) -> dict[str, str | None] | None:
        """What the sink holds now: ``{id: content_hash or None}``.

        Return ``None`` when the sink cannot tell (a webhook); the router then uses its own ledger
        of what it delivered, kept in Redis. ``content_hash`` is
        ``thoonk_bridge.payload.content_hash`` of the payload as the router would send it; ``None``
        means "present, content unknown" (never edited on reconcile).
        """
        return None

    @abstractmethod
    async def apply(self, event: ItemEvent) -> None:
        """Apply one event. Raise :class:`DeliveryError` on failure."""

    async def apply_many(self, events: Sequence[ItemEvent]) -> list[BaseException | None]:
        """Apply several events (at most one per id), in order; one result per event attempted.

        ``None``: applied; an exception: that event failed as ``apply`` would have raised it. The
        list may be shorter than ``events``: the rest was not attempted (the router tries them
        again). The default applies one at a time and stops at the first failure; a sink that can
        write many items in one round trip (the Thoonk sink) overrides this.
        """
        results: list[BaseException | None] = []
        for event in events:
            try:
                await self.apply(event)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - reported to the router, which decides
                results.append(exc)
                break
            results.append(None)
        return results

    async def version(self) -> str | None:
        """A token that changes whenever what the sink holds changes, whoever writes it; None: the
        sink cannot tell (then every start reconciles it)."""
        return None

    async def wait_retry(self, delay: float) -> None:
        """Wait before the router retries an event that failed: ``delay`` seconds (backoff with jitter).

        A sink that knows when its target is back (a session re-established) returns as soon as it
        is, so that what waited is delivered at once instead of after the rest of the delay.
        """
        await asyncio.sleep(delay)

    def problem(self) -> str | None:
        """What is wrong while the sink keeps working (its files cannot be written...), or None.

        ``/readyz`` shows it as the sink's state ``degraded`` with this detail, and the route's
        ``degraded`` key; the route stays ready (its events are still applied).
        """
        return None

    async def flush(self) -> None:  # noqa: B027 - optional hook
        """Write out anything buffered (called when a route drains and before close)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources; must not raise."""


# --------------------------------------------------------------------------- health


class Health(enum.StrEnum):
    STARTING = "starting"
    READY = "ready"
    DEGRADED = "degraded"  # working, but something is wrong (retrying, reconnecting)
    FAILED = "failed"
    STOPPED = "stopped"


@dataclass(frozen=True)
class HealthState:
    status: Health
    detail: str = ""

    @property
    def ready(self) -> bool:
        return self.status is Health.READY


# --------------------------------------------------------------------------- contexts


@dataclass
class PluginContext:
    """What the daemon gives every plugin.

    - ``thoonk``: the shared asyncio Thoonk client; ``redis``: its redis.asyncio client (one server,
      Sentinel's master, or a ``RedisCluster``: :data:`thoonk_bridge.redis_client.AsyncRedis`).
    - ``http``: the one aiohttp application; add routes in ``setup()`` (it is frozen after start).
    - ``public_url``: the base URL outsiders use to reach ``http`` (no trailing slash).
    - ``metrics``: the Prometheus registry to register collectors with.
    - ``log``: a structlog logger bound with ``plugin=<name>``.
    - ``state_dir``: a directory this plugin may write to (``<state_dir>/<plugin name>``).
    - ``topics``: the :class:`TopicRegistry` shared by all plugins.
    - ``instance_id``: this daemon's id (unique among daemons sharing a Redis).
    """

    thoonk: AsyncThoonk
    redis: AsyncRedis
    http: web.Application
    public_url: str
    metrics: CollectorRegistry
    log: structlog.typing.FilteringBoundLogger
    state_dir: Path
    topics: TopicRegistry
    instance_id: str = "local"


@dataclass
class RouteContext:
    """What a source or sink knows of the route it serves.

    - ``name``: the route's name; ``mirror``: retract what the source no longer has on reconcile;
    - ``format``: the payload format sinks should write (``None``: the sink's own default);
    - ``initial``: ``"all"``, ``"none"`` or ``"latest:N"`` (what a new route delivers first);
    - ``log``: bound with ``route=<name>``; ``dead_letter(item_id, payload, reason)`` stores an item
      that cannot be delivered in the route's dead-letter feed.
    - ``guard``: with several daemons, True while this daemon holds the route's lease (``None``:
      always); a sink that writes shared state besides its events (a document stored in Redis for
      the whole fleet) checks it before each such write.
    """

    name: str
    mirror: bool
    format: str | None
    initial: str
    log: structlog.typing.FilteringBoundLogger
    dead_letter: Callable[[str, str | None, str], Awaitable[None]]
    options: dict[str, Any] = field(default_factory=dict)
    guard: Callable[[], bool] | None = None


# --------------------------------------------------------------------------- the plugin


class Plugin(ABC, Generic[SettingsT]):
    """Base class of every plugin. Class attributes describe it; instances run it.

    ``Plugin[SettingsT]``: ``SettingsT`` is its settings model (``self.settings: SettingsT``).

    - ``name``: the key under ``plugins:`` in the config.
    - ``version``: shown by ``thoonk-bridge plugins``.
    - ``description``: one line for ``thoonk-bridge plugins``.
    - ``settings_model``: the schema of its ``plugins.<name>`` settings (extra keys forbidden); the
      same model as ``SettingsT`` (a ClassVar cannot name a type parameter).
    - ``endpoint_kinds``: the endpoint kinds it offers.
    - ``depends_on``: names of plugins that must start before this one (when enabled).
    - ``always_enabled``: run whatever the config says, and offer its endpoint kinds to every config
      without a ``plugins:`` entry (the bridge's own ``thoonk`` kind); only for a plugin that needs
      no settings and costs nothing while no route uses it.
    - ``cli``: a click command or group added to ``thoonk-bridge`` under its own name (optional);
      ``thoonk_bridge.cli.with_redis`` and ``bridge_redis_url`` give it the bridge's Redis.
    """

    name: ClassVar[str]
    version: ClassVar[str] = "0"
    description: ClassVar[str] = ""
    settings_model: ClassVar[type[Settings]] = NoSettings
    endpoint_kinds: ClassVar[tuple[EndpointKind[Settings, Settings], ...]] = ()
    depends_on: ClassVar[tuple[str, ...]] = ()
    always_enabled: ClassVar[bool] = False
    cli: ClassVar[Any] = None

    def __init__(self, settings: SettingsT, context: PluginContext) -> None:
        self.settings: SettingsT = settings
        self.context = context
        self._health = HealthState(Health.STARTING)

    def validate(self) -> list[str]:
        """Problems beyond the schema, found without connecting anywhere (empty: fine)."""
        return []

    async def setup(self) -> None:  # optional hook
        """Acquire resources; add HTTP routes."""

    async def start(self) -> None:
        """Begin work. The default marks the plugin ready."""
        self.set_health(Health.READY)

    async def stop(self) -> None:
        """Release everything; must not raise."""
        self.set_health(Health.STOPPED)

    async def check_live(self) -> list[str]:
        """Problems found by reaching out (``check --live``): unreachable servers, bad login."""
        return []

    def health(self) -> HealthState:
        return self._health

    def set_health(self, status: Health, detail: str = "") -> None:
        self._health = HealthState(status, detail)

    # Endpoint[Any]: a plugin narrows it to its kind's options model (``Endpoint[MySinkOptions]``);
    # the config guarantees the model, so the override is sound although mypy cannot prove it.
    def source(self, endpoint: Endpoint[Any], route: RouteContext) -> Source:
        """A source for a route's ``from`` of one of this plugin's kinds (``endpoint.options`` parsed)."""
        raise NotImplementedError(f"plugin {self.name!r} offers no source for {endpoint.kind!r}")

    def sink(self, endpoint: Endpoint[Any], route: RouteContext) -> Sink:
        """A sink for a route's ``to`` of one of this plugin's kinds (``endpoint.options`` parsed)."""
        raise NotImplementedError(f"plugin {self.name!r} offers no sink for {endpoint.kind!r}")
