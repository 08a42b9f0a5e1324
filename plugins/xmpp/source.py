"""``from: xmpp:SERVICE/NODE``: relay a PubSub node's items into a route."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from slixmpp.exceptions import IqError, IqTimeout

from thoonk_bridge.payload import Format, Parsed, PayloadError, content_hash, parse_payload
from thoonk_bridge.plugin import EventKind, ItemEvent, NoSnapshot, Resync, RouteContext, Source

from .connection import Connection, NodeEvent
from .errors import NotConnected, XmppEndpointError, describe_endpoint_error, describe_iq_error, iq_condition
from .health import Problems
from .metrics import XmppMetrics
from .settings import XmppSourceOptions
from .xml import canonical, element_to_payload

if TYPE_CHECKING:
    import xml.etree.ElementTree as ET



class _Reconnected:
    __slots__ = ("generation",)

    def __init__(self, generation: int) -> None:
        self.generation = generation


class XmppSource(Source):
    """Subscribes to the node, snapshots it with get_items, then follows its notifications.

    Notifications are buffered from ``open()`` on. After a reconnect, ``follow()`` makes sure the
    subscription exists on the new session and raises :class:`Resync`.
    """

    absence = "window"  # a node with max_items drops its oldest items without a retract

    def __init__(self, options: XmppSourceOptions, route: RouteContext, *, conn: Connection,
                 problems: Problems, metrics: XmppMetrics) -> None:
        self.problems = problems
        self.metrics = metrics
        self.options = options
        self.route = route
        self.service, self.node = options.service, options.node
        self.conn = conn  # the connection of the endpoint's account
        self.log = route.log.bind(endpoint=f"xmpp:{options.address}", account=options.account)
        self.key = f"source xmpp:{options.address} ({route.name})"
        self._queue: asyncio.Queue[NodeEvent | _Reconnected] = asyncio.Queue()
        self._sub_generation = 0  # session on which the subscription was checked
        self._snap_generation = 0  # session of the last snapshot
        self._known: set[str] = set()
        self._dead: set[tuple[str, str]] = set()  # (id, reason) already dead-lettered
        self._opened = False

    # ------------------------------------------------------------------ lifecycle
    async def open(self) -> None:
        if not self._opened:
            self.conn.add_listener(self.service, self.node, self._on_event)
            self.conn.add_session_listener(self._on_session)
            self._opened = True
        await self._ensure_subscribed()

    async def close(self) -> None:
        if self._opened:
            self.conn.remove_listener(self.service, self.node, self._on_event)
            self.conn.remove_session_listener(self._on_session)
            self._opened = False

    def _on_event(self, event: NodeEvent) -> None:
        self._queue.put_nowait(event)

    def _on_session(self, generation: int) -> None:
        self._queue.put_nowait(_Reconnected(generation))

    # ------------------------------------------------------------------ subscription
    async def _ensure_subscribed(self) -> None:
        """Subscribe on the current session unless already checked on it; waits while offline."""
        while True:
            await self.conn.wait_ready()
            generation = self.conn.generation
            if self._sub_generation == generation:
                return
            try:
                await self._subscribe()
            except NotConnected:
                continue
            except (IqError, IqTimeout) as exc:
                raise self._fail("cannot subscribe to", exc) from None
            self._sub_generation = generation
            self.problems.clear(self.key)
            return

    async def _subscribe(self) -> None:
        ps = self.conn.pubsub
        bare = self.options.subscribe == "bare"
        want = self.conn.settings.bare_jid if bare else self.conn.settings.full_jid
        result = await self.conn.call(
            lambda c: ps(c).get_subscriptions(self.service, self.node, timeout=self.conn.settings.timeout)
        )
        present = False
        stale: list[tuple[str, str | None]] = []
        for sub in result["pubsub"]["subscriptions"]:
            jid = str(sub["jid"])
            if sub["node"] and sub["node"] != self.node:
                continue
            if jid == want and sub["subscription"] in ("subscribed", "pending"):
                present = True
            elif jid.partition("/")[0] == self.conn.settings.bare_jid and (
                jid == self.conn.settings.bare_jid or jid == self.conn.settings.full_jid
            ):
                stale.append((jid, sub["subid"] or None))
        for jid, subid in stale:  # the other form would double every notification
            def unsubscribe(c: Any, jid: str = jid, subid: str | None = subid) -> Any:
                return ps(c).unsubscribe(
                    self.service, self.node, subid=subid, bare="/" not in jid, timeout=self.conn.settings.timeout
                )

            try:
                await self.conn.call(unsubscribe)
                self.log.info("removed the other subscription form of this account", jid=jid)
            except (IqError, IqTimeout) as exc:
                self.log.warning("cannot remove a stale subscription", jid=jid, error=describe_iq_error(exc))
        if not present:
            await self.conn.call(
                lambda c: ps(c).subscribe(self.service, self.node, bare=bare, timeout=self.conn.settings.timeout)
            )
            self.log.info("subscribed to node", jid=want)

    def _fail(self, what: str, exc: BaseException) -> XmppEndpointError:
        message = describe_endpoint_error(what, self.service, self.node, self.conn.settings.bare_jid, exc)
        self.problems.set(self.key, message)
        self.metrics.errors.labels(self.conn.name, "iq").inc()
        self.log.error("xmpp node unusable", error=message)
        return XmppEndpointError(message)

    # ------------------------------------------------------------------ snapshot
    async def snapshot(self) -> list[tuple[str, str]]:
        while True:
            await self._ensure_subscribed()
            generation = self.conn.generation
            try:
                result = await self.conn.call(
                    lambda c: self.conn.pubsub(c).get_items(
                        self.service, self.node, timeout=self.conn.settings.timeout
                    )
                )
            except NotConnected:
                continue
            except IqError as exc:
                if iq_condition(exc) == "feature-not-implemented":
                    # A node that keeps no items (pubsub#persist_items = false) cannot be listed:
                    # the route follows its notifications, reconciling nothing.
                    self._snap_generation = generation
                    self.problems.clear(self.key)
                    raise NoSnapshot(
                        f"node {self.node!r} on {self.service} keeps no items to fetch "
                        f"({describe_iq_error(exc)}); items published while the bridge is away are not relayed"
                    ) from None
                raise self._fail("cannot fetch the items of", exc) from None
            except IqTimeout as exc:
                raise self._fail("cannot fetch the items of", exc) from None
            break
        self._snap_generation = generation
        items: list[tuple[str, str]] = []
        for item in result["pubsub"]["items"]:
            item_id = item["id"]
            if not item_id:
                continue
            payload = await self._payload(item_id, next(iter(item.xml), None))
            if payload is not None:
                items.append((item_id, payload[0]))
        self._known = {item_id for item_id, _ in items}
        self.problems.clear(self.key)
        return items

    # ------------------------------------------------------------------ follow
    async def follow(self) -> AsyncIterator[ItemEvent]:
        while True:
            event = await self._queue.get()
            if isinstance(event, _Reconnected):
                if event.generation <= self._snap_generation:
                    continue  # the snapshot was taken on this session already
                await self._ensure_subscribed()
                raise Resync(f"xmpp account {self.conn.name} reconnected (session {event.generation})")
            if event.kind == "item" and event.id:
                element = event.element
                if element is None:
                    element = await self._fetch(event.id)
                payload = await self._payload(event.id, element)
                if payload is None:
                    continue
                kind = EventKind.EDIT if event.id in self._known else EventKind.PUBLISH
                self._known.add(event.id)
                text, parsed = payload
                yield ItemEvent(kind, event.id, text).with_parsed(parsed)  # validated: nobody parses it again
            elif event.kind == "retract" and event.id:
                self._known.discard(event.id)
                yield ItemEvent(EventKind.RETRACT, event.id)
            elif event.kind in ("purge", "delete"):
                self.log.warning(f"node {event.kind}d by the service; retracting its items", items=len(self._known))
                known, self._known = list(self._known), set()
                for item_id in known:
                    yield ItemEvent(EventKind.RETRACT, item_id)
                if event.kind == "delete":
                    self._sub_generation = 0  # the subscription went with the node
                    message = f"node {self.node} on {self.service} was deleted"
                    self.problems.set(self.key, message)
                    raise XmppEndpointError(message)

    async def _fetch(self, item_id: str) -> ET.Element | None:
        """The payload of an item whose notification came without one."""
        try:
            result = await self.conn.call(
                lambda c: self.conn.pubsub(c).get_item(
                    self.service, self.node, item_id, timeout=self.conn.settings.timeout
                )
            )
        except (NotConnected, IqError, IqTimeout) as exc:
            self.log.warning("cannot fetch a notified item", item=item_id, error=describe_iq_error(exc))
            return None
        for item in result["pubsub"]["items"]:
            if item["id"] == item_id:
                return next(iter(item.xml), None)
        return None

    # ------------------------------------------------------------------ payloads
    async def _payload(self, item_id: str, element: ET.Element | None) -> tuple[str, Parsed | None] | None:
        """The payload relayed for a node item and its parse (Atom, JSON), or None (logged, counted,
        dead-lettered)."""
        if element is None:
            await self._malformed(item_id, None, "no-payload", "the item carries no payload element")
            return None
        fmt, text = element_to_payload(canonical(element))  # stable whatever order the server keeps
        size = len(text.encode("utf-8", "surrogatepass"))
        if size > self.options.max_payload_bytes:
            await self._malformed(
                item_id, None, "too-large",
                f"payload is {size} bytes, over max_payload_bytes={self.options.max_payload_bytes}",
            )
            return None
        parsed = None
        if fmt is not Format.TEXT:
            try:
                parsed = parse_payload(text, fmt, max_bytes=None)  # what detection gives too
            except PayloadError as exc:
                await self._malformed(item_id, text, "invalid", f"invalid {fmt} payload: {exc}")
                return None
        else:
            self.log.debug("payload in another namespace kept as XML text", item=item_id, tag=element.tag)
        self.metrics.received.labels(self.route.name, "xml" if fmt is Format.TEXT else str(fmt)).inc()
        return text, parsed

    async def _malformed(self, item_id: str, payload: str | None, reason: str, detail: str) -> None:
        self.metrics.malformed.labels(self.route.name, reason).inc()
        key = (item_id, content_hash(f"{reason}\x00{payload or ''}"))
        if key in self._dead:
            return  # seen in an earlier snapshot already
        self._dead.add(key)
        self.log.error("malformed item from node not relayed", item=item_id, reason=detail)
        try:
            await self.route.dead_letter(item_id, payload, f"xmpp:{self.options.address}: {detail}")
        except Exception as exc:  # noqa: BLE001 - the route goes on
            self.log.error("cannot store in the dead-letter feed", item=item_id, error=str(exc))
