"""``to: xmpp:SERVICE/NODE``: publish a route's items to a PubSub node."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from typing import Any

from slixmpp import JID
from slixmpp.exceptions import IqError, IqTimeout

from thoonk_bridge import keys
from thoonk_bridge.payload import Format, PayloadError, content_hash
from thoonk_bridge.plugin import DeliveryError, EventKind, ItemEvent, RouteContext, Sink
from thoonk_bridge.tasks import cancel_all
from thoonk_bridge.thoonk.text import as_text

from .connection import Connection
from .errors import (
    NodeMissing,
    NoSession,
    NotConnected,
    NotOwner,
    XmppEndpointError,
    describe_endpoint_error,
    describe_iq_error,
    iq_condition,
)
from .health import Problems
from .metrics import XmppMetrics
from .settings import XmppSinkOptions
from .xml import canonical_hash, payload_to_element, roundtrip_hash

NODE_CONFIG_FORM = "http://jabber.org/protocol/pubsub#node_config"
CREATED_KEY = keys.XMPP_CREATED  # Redis set of "SERVICE/NODE": nodes a sink created (it keeps their options)
STANZA_OVERHEAD = 400  # <iq><pubsub><publish><item> around the payload, without the names
PERMANENT_CONDITIONS = {"not-acceptable", "bad-request", "payload-too-big", "invalid-payload", "jid-malformed"}


class XmppSink(Sink):
    """Creates/configures the node on ``open()``; publish/edit = publish with the item id, retract
    = retract with notify. ``ids()`` reads the node's items."""

    def __init__(self, options: XmppSinkOptions, route: RouteContext, *, conn: Connection, problems: Problems,
                 metrics: XmppMetrics, redis: Any) -> None:
        self.problems = problems
        self.metrics = metrics
        self.redis = redis  # None: no Redis (the ledger and the record of created nodes live in memory only)
        self.options = options
        self.route = route
        self.service, self.node = options.service, options.node
        self.conn = conn  # the connection of the endpoint's account
        self.format = Format(route.format) if route.format else None
        self.log = route.log.bind(endpoint=f"xmpp:{options.address}", account=options.account)
        self.key = f"sink xmpp:{options.address} ({route.name})"
        self._node_ready = False
        self._created_here = False
        self._created_member = f"{self.service}/{self.node}"
        self._unlisted_logged = False
        self._lost_session: int | None = None  # the session whose loss made the last apply fail
        self._node_lock = asyncio.Lock()
        # what this sink published: {id: (canonical hash of the element, hash of the router's payload)}
        # kept in Redis when there is one, so reconcile after a restart compares exactly
        self._ledger: dict[str, tuple[str, str]] = {}
        self._ledger_key = keys.xmpp_sink_ledger(options.account, self.service, self.node)
        self._ledger_loaded = False

    # ------------------------------------------------------------------ node
    async def open(self) -> None:
        await self._retry_offline(self._ensure_node)

    async def wait_retry(self, delay: float) -> None:
        """The retry delay, cut short when the last failure was for want of a session and a newer one
        is up (at once when it already is: the other events of a batch that failed with it)."""
        lost = self._lost_session
        if lost is None:
            await asyncio.sleep(delay)
        else:
            await self.conn.wait_session(after=lost, timeout=delay)

    async def _retry_offline(self, fn: Any) -> Any:
        while True:
            await self.conn.wait_ready()
            try:
                return await fn()
            except NotConnected:
                continue

    def _fail(self, what: str, exc: BaseException) -> XmppEndpointError:
        message = describe_endpoint_error(what, self.service, self.node, self.conn.settings.bare_jid, exc)
        self.problems.set(self.key, message)
        self.metrics.errors.labels(self.conn.name, "iq").inc()
        self.log.error("xmpp node unusable", error=message)
        return XmppEndpointError(message)

    def _form(self) -> Any:
        client = self.conn.client
        assert client is not None
        form = client.plugin["xep_0004"].make_form(ftype="submit")
        for var, value in self.options.node_config().items():
            if isinstance(value, bool):
                form.add_field(var=var, ftype="boolean", value=value)
            else:
                form.add_field(var=var, value=value)
        return form

    async def _ensure_node(self) -> None:
        """Look the node up and create it when missing (``create``). A node this sink created, now or
        on an earlier run, gets the route's options whenever its configuration differs: a server may
        have re-created it with its defaults since (ejabberd auto-creates a missing node on publish).
        ``configure: true`` does the same for a node someone else created."""
        current: dict[str, Any] | None = None  # the node's configuration, when the account may read it
        exists, owner = True, True
        try:
            current = await self._node_config()
        except IqError as exc:
            condition = iq_condition(exc)
            if condition == "item-not-found":
                exists = False
            elif condition == "forbidden":
                owner = False  # not an owner: does the node exist at all?
                timeout = self.conn.settings.timeout
                try:
                    await self.conn.call(
                        lambda c: c.plugin["xep_0030"].get_info(jid=JID(self.service), node=self.node, timeout=timeout)
                    )
                except IqError as info_exc:
                    if iq_condition(info_exc) != "item-not-found":
                        raise self._fail("cannot look up", info_exc) from None
                    exists = False
                except IqTimeout as info_exc:
                    raise self._fail("cannot look up", info_exc) from None
            else:
                raise self._fail("cannot look up", exc) from None
        except IqTimeout as exc:
            raise self._fail("cannot look up", exc) from None

        if not exists:
            if not self.options.create:
                raise self._fail("cannot publish to", NodeMissing())
            await self._create()
            try:
                current = await self._node_config()  # what the server made of the options
            except (IqError, IqTimeout) as exc:
                raise self._fail("cannot read the configuration of", exc) from None
        elif self.options.configure and not owner:
            raise self._fail("cannot configure", NotOwner())
        if current is not None and (self.options.configure or await self._created()):
            await self._apply_options(current)
        self.capacity = (_max_items(current) if current is not None else None) or self.options.max_items
        self._node_ready = True
        self.problems.clear(self.key)

    async def _node_config(self) -> dict[str, Any]:
        ps, timeout = self.conn.pubsub, self.conn.settings.timeout
        result = await self.conn.call(lambda c: ps(c).get_node_config(self.service, self.node, timeout=timeout))
        try:
            return dict(result["pubsub_owner"]["configure"]["form"].get_values())
        except (KeyError, TypeError):
            return {}

    async def _create(self) -> None:
        ps, timeout = self.conn.pubsub, self.conn.settings.timeout
        try:
            await self.conn.call(
                lambda c: ps(c).create_node(self.service, self.node, config=self._form(), timeout=timeout)
            )
            self.log.info("node created", config=self.options.node_config())
        except IqError as exc:
            if iq_condition(exc) != "conflict":  # conflict: created meanwhile (maybe with the server's defaults)
                raise self._fail("cannot create", exc) from None
        except IqTimeout as exc:
            raise self._fail("cannot create", exc) from None
        self._created_here = True
        redis = self.redis
        if redis is not None:
            try:
                await redis.sadd(CREATED_KEY, self._created_member)
            except Exception as exc:  # noqa: BLE001 - only the next run's option check depends on it
                self.log.warning("cannot record that the sink created the node", error=str(exc))

    async def _created(self) -> bool:
        """True when this sink created the node (on this run or, recorded in Redis, an earlier one)."""
        if self._created_here:
            return True
        redis = self.redis
        if redis is None:
            return False
        try:
            self._created_here = bool(await redis.sismember(CREATED_KEY, self._created_member))
        except Exception as exc:  # noqa: BLE001
            self.log.warning("cannot read whether the sink created the node", error=str(exc))
        return self._created_here

    async def _apply_options(self, current: dict[str, Any]) -> None:
        """Set the route's node options that ``current`` (the node's configuration) does not have."""
        wanted = self.options.node_config()
        differ = {var: value for var, value in wanted.items() if not _same_option(current.get(var), value)}
        if not differ:
            return
        form = self._form()
        form.add_field(var="FORM_TYPE", ftype="hidden", value=NODE_CONFIG_FORM)
        ps, timeout = self.conn.pubsub, self.conn.settings.timeout
        try:
            await self.conn.call(lambda c: ps(c).set_node_config(self.service, self.node, form, timeout=timeout))
        except (IqError, IqTimeout) as exc:
            raise self._fail("cannot configure", exc) from None
        self.log.info(
            "node options applied", changed={var: current.get(var) for var in differ}, config=wanted
        )
        current.update(differ)

    # ------------------------------------------------------------------ ids
    async def ids(self) -> dict[str, str | None] | None:
        # Every reconcile looks the node up again: deleted without a notification (ejabberd's default),
        # re-created by the server with its defaults on a publish...
        await self._retry_offline(self._ensure_node)

        async def fetch() -> Any:
            return await self.conn.call(
                lambda c: self.conn.pubsub(c).get_items(self.service, self.node, timeout=self.conn.settings.timeout)
            )

        try:
            result = await self._retry_offline(fetch)
        except IqError as exc:
            condition = iq_condition(exc)
            if condition == "feature-not-implemented":
                # The node keeps no items (persist_items = false): the router goes by its own ledger.
                if not self._unlisted_logged:
                    self._unlisted_logged = True
                    self.log.info("node keeps no items to list; reconcile goes by what the route delivered",
                                  error=describe_iq_error(exc))
                return None
            if condition == "item-not-found" and self.options.create:
                await self._retry_offline(self._ensure_node)  # deleted between the look-up and the fetch
                return {}
            raise self._fail("cannot fetch the items of", exc) from None
        except IqTimeout as exc:
            raise self._fail("cannot fetch the items of", exc) from None
        await self._load_ledger()
        held: dict[str, str | None] = {}
        for item in result["pubsub"]["items"]:
            item_id = item["id"]
            if not item_id:
                continue
            element = next(iter(item.xml), None)
            known = self._ledger.get(item_id)
            if element is not None and known is not None and known[0] == canonical_hash(element):
                held[item_id] = known[1]  # exactly what this sink published for that payload
            else:
                held[item_id] = roundtrip_hash(element, self.format, item_id)
        return held

    async def _load_ledger(self) -> None:
        redis = self.redis
        if self._ledger_loaded or redis is None:
            return
        try:
            raw = await redis.hgetall(self._ledger_key)
        except Exception as exc:  # noqa: BLE001 - the ledger only saves republishing
            self.log.warning("cannot read the sink's ledger", error=str(exc))
            return
        for key, value in raw.items():
            element_hash, _, payload_hash = as_text(value).partition(" ")
            self._ledger.setdefault(as_text(key), (element_hash, payload_hash))
        self._ledger_loaded = True

    async def _remember(self, updates: dict[str, tuple[str, str] | None]) -> None:
        """Record what was published (id -> (element hash, payload hash)) or retracted (None), in one
        Redis round trip for a whole batch."""
        if not updates:
            return
        for item_id, entry in updates.items():
            if entry is None:
                self._ledger.pop(item_id, None)
            else:
                self._ledger[item_id] = entry
        redis = self.redis
        if redis is None:
            return
        present: dict[Any, Any] = {i: " ".join(entry) for i, entry in updates.items() if entry is not None}
        gone = [item_id for item_id, entry in updates.items() if entry is None]
        try:
            pipe = redis.pipeline(transaction=False)
            if present:
                pipe.hset(self._ledger_key, mapping=present)
            if gone:
                pipe.hdel(self._ledger_key, *gone)
            await pipe.execute()
        except Exception as exc:  # noqa: BLE001
            self.log.warning("cannot update the sink's ledger", error=str(exc))

    # ------------------------------------------------------------------ apply
    async def apply(self, event: ItemEvent) -> None:
        await self._remember({event.id: await self._tracked(event)})

    async def apply_many(self, events: Sequence[ItemEvent]) -> list[BaseException | None]:
        """Pipelined: up to ``max_in_flight`` publishes and retracts outstanding on the one stream.

        They are sent in the order given and the server handles a stream's stanzas in that order, so
        the node sees them in order. Each event gets its own result (retries and dead letters stay per
        event); after a failure for want of a session nothing more is sent, and the list ends there
        (the router sends the rest again). One ledger write for the whole batch.
        """
        window = asyncio.Semaphore(self.options.max_in_flight)
        tasks: list[asyncio.Task[tuple[str, str] | None]] = []
        no_session = False

        async def one(event: ItemEvent) -> tuple[str, str] | None:
            nonlocal no_session
            try:
                return await self._tracked(event)
            except NoSession:
                no_session = True
                raise
            finally:
                window.release()

        try:
            for event in events:
                await window.acquire()
                if no_session or (tasks and not self.conn.ready):  # the rest would fail alike
                    window.release()
                    break
                tasks.append(asyncio.create_task(one(event)))
            if tasks:
                await asyncio.wait(tasks)
        except BaseException:
            await cancel_all(tasks)
            raise
        results: list[BaseException | None] = []
        updates: dict[str, tuple[str, str] | None] = {}
        for event, task in zip(events, tasks, strict=False):
            failure = task.exception()
            results.append(failure)
            if failure is None:
                updates[event.id] = task.result()
        await self._remember(updates)
        return results

    async def _tracked(self, event: ItemEvent) -> tuple[str, str] | None:
        """``_apply``, remembering whether a failure was for want of a session (see ``wait_retry``)."""
        try:
            return await self._apply(event)
        except NoSession:
            raise
        except BaseException:
            self._lost_session = None  # failed on a live session: a retry waits its full delay
            raise

    async def _apply(self, event: ItemEvent) -> tuple[str, str] | None:
        """Publish or retract one event; returns its ledger entry (None: retracted)."""
        if not self.conn.ready:
            self._lost_session = self.conn.generation
            raise NoSession(f"xmpp account {self.conn.name} is not connected: {self.conn.detail}")
        if event.kind is EventKind.RETRACT:
            await self._retract(event.id)
            return None
        try:
            element = payload_to_element(event, self.format)
        except PayloadError as exc:
            self._reject("invalid", event.id, f"payload cannot be published: {exc}")
        payload = event.payload or ""
        if payload.lstrip().startswith("<"):  # published as parsed: its size is the payload's
            size = len(payload.encode("utf-8", "surrogatepass"))
        else:  # built from text or JSON (escaping may grow it): measure it
            size = len(ET.tostring(element, encoding="utf-8"))
        size += STANZA_OVERHEAD
        size += len(self.service) + len(self.node) + len(event.id) + 2 * len(self.conn.settings.full_jid)
        limit = self.conn.settings.max_stanza_bytes
        if size > limit:
            self._reject(
                "too-large", event.id,
                f"item is about {size} bytes as a stanza, over the server's stanza size limit "
                f"({limit} bytes, setting max_stanza_bytes)",
            )
        await self._publish(event.id, element, retry_missing=True)
        return (canonical_hash(element), content_hash(payload))

    def _reject(self, reason: str, item_id: str, message: str) -> None:
        self.metrics.rejected.labels(self.route.name, reason).inc()
        self.log.error("item cannot be published to the node", item=item_id, reason=message)
        raise DeliveryError(message, retryable=False)

    async def _publish(self, item_id: str, element: ET.Element, *, retry_missing: bool) -> None:
        timeout = self.conn.settings.timeout
        try:
            await self.conn.call(
                lambda c: self.conn.pubsub(c).publish(
                    self.service, self.node, id=item_id, payload=element, timeout=timeout
                )
            )
        except NotConnected as exc:
            self._lost_session = self.conn.generation
            error = self.conn.last_stream_error
            if error is not None and "policy-violation" in error[1]:
                self.conn.last_stream_error = None
                self._reject("refused", item_id, f"the server closed the stream on this item: {error[1]}")
            raise NoSession(str(exc)) from None
        except IqTimeout:
            raise DeliveryError(f"publish of {item_id!r} to {self.node!r}: no answer", retryable=True) from None
        except IqError as exc:
            condition = iq_condition(exc)
            if condition == "item-not-found" and retry_missing and self.options.create:
                self.log.warning("node vanished, creating it again")
                try:
                    async with self._node_lock:  # one look-up at a time when many publishes found it gone
                        await self._ensure_node()
                except XmppEndpointError as err:
                    raise DeliveryError(str(err), retryable=True) from None
                except NotConnected as err:
                    self._lost_session = self.conn.generation
                    raise NoSession(str(err)) from None
                await self._publish(item_id, element, retry_missing=False)
                return
            message = describe_endpoint_error(
                f"publish of item {item_id!r} to", self.service, self.node, self.conn.settings.bare_jid, exc
            )
            self.metrics.errors.labels(self.conn.name, "iq").inc()
            if condition in PERMANENT_CONDITIONS:
                self._reject("refused", item_id, message)
            self.problems.set(self.key, message)
            self.log.error("publish failed, will retry", item=item_id, error=message)
            raise DeliveryError(message, retryable=True) from None
        self.problems.clear(self.key)
        self.metrics.published.labels(self.route.name).inc()

    async def _retract(self, item_id: str) -> None:
        timeout = self.conn.settings.timeout
        try:
            await self.conn.call(
                lambda c: self.conn.pubsub(c).retract(self.service, self.node, item_id, notify=True, timeout=timeout)
            )
        except NotConnected as exc:
            self._lost_session = self.conn.generation
            raise NoSession(str(exc)) from None
        except IqTimeout:
            raise DeliveryError(f"retract of {item_id!r}: no answer", retryable=True) from None
        except IqError as exc:
            if iq_condition(exc) == "item-not-found":
                return  # already gone: retract is idempotent
            message = describe_endpoint_error(
                f"retract of item {item_id!r} from", self.service, self.node, self.conn.settings.bare_jid, exc
            )
            self.problems.set(self.key, message)
            self.metrics.errors.labels(self.conn.name, "iq").inc()
            raise DeliveryError(message, retryable=True) from None
        self.metrics.retracted.labels(self.route.name).inc()


def _max_items(values: dict[str, Any]) -> int | None:
    """``pubsub#max_items`` of a node's configuration (what the node keeps), None when unknown or "max"."""
    try:
        return int(values.get("pubsub#max_items"))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _same_option(current: Any, wanted: str | bool) -> bool:
    """Whether a node-config form value (a string, a bool, a one-value list) is the wanted one."""
    if isinstance(current, list):
        current = current[0] if len(current) == 1 else None
    if isinstance(wanted, bool):
        return str(current).lower() in (("1", "true") if wanted else ("0", "false"))
    return current is not None and str(current) == wanted
