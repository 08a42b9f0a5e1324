"""One XMPP account's connection: login, reconnect with backoff and jitter, keepalive, and the
dispatch of PubSub event notifications to the sources listening on a node.

A fresh ``slixmpp.ClientXMPP`` is built for every connection attempt, so no state of a dead
session leaks into the next one. Every session that starts gets a new ``generation`` number;
sources compare it with the session their subscription and snapshot belong to.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from slixmpp import JID, ClientXMPP
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from thoonk_bridge.backoff import Backoff
from thoonk_bridge.tasks import cancel_and_wait

from .errors import AuthFailed, ConnectFailed, NotConnected
from .settings import AccountSettings

T = TypeVar("T")

PUBSUB_EVENT_NS = "http://jabber.org/protocol/pubsub#event"
_EVENT_XPATH = "{jabber:client}message/{%s}event" % PUBSUB_EVENT_NS  # noqa: UP031 - slixmpp xpath


@dataclass(frozen=True, slots=True)
class NodeEvent:
    """One notification about a node: ``item`` (``element`` may be None when the node does not
    deliver payloads), ``retract``, ``purge`` or ``delete``."""

    kind: str
    node: str
    id: str | None = None
    element: ET.Element | None = None


NodeListener = Callable[[NodeEvent], None]
SessionListener = Callable[[int], None]


class Connection:
    """The connection of one configured account, shared by every route that uses it."""

    def __init__(self, name: str, settings: AccountSettings, *, log: Any, metrics: Any) -> None:
        self.name = name
        self.settings = settings
        self.log = log.bind(account=name, jid=settings.bare_jid)
        self.metrics = metrics
        self.client: ClientXMPP | None = None
        self.generation = 0
        self.state = "starting"  # starting, connected, reconnecting, auth-failed, stopped
        self.detail = ""
        self.last_stream_error: tuple[float, str] | None = None
        self._ready = asyncio.Event()
        self._session_started = asyncio.Event()  # set (and replaced) when a session starts
        self._lost: asyncio.Future[Any] | None = None
        self._first_attempt = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._keepalive_task: asyncio.Task[None] | None = None
        self._listeners: dict[tuple[str, str], list[NodeListener]] = {}
        self._session_listeners: list[SessionListener] = []

    # ------------------------------------------------------------------ public
    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    async def start(self, wait: float | None = None) -> None:
        """Start connecting in the background; wait up to ``wait`` s for the first attempt's outcome."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"xmpp:{self.name}")
        if wait:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._first_attempt.wait(), wait)

    async def stop(self) -> None:
        self.state = "stopped"
        task, self._task = self._task, None
        await cancel_and_wait(task)
        await self._drop_client()

    async def wait_ready(self) -> None:
        await self._ready.wait()

    async def wait_session(self, after: int, timeout: float) -> bool:
        """Wait up to ``timeout`` s for a session newer than generation ``after``; True when one is up."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not (self._ready.is_set() and self.generation > after):
            left = deadline - loop.time()
            if left <= 0:
                return False
            waiter = asyncio.ensure_future(self._session_started.wait())
            try:
                await asyncio.wait({waiter}, timeout=left)
            finally:
                waiter.cancel()
        return True

    def add_listener(self, service: str, node: str, listener: NodeListener) -> None:
        self._listeners.setdefault((service.lower(), node), []).append(listener)

    def remove_listener(self, service: str, node: str, listener: NodeListener) -> None:
        listeners = self._listeners.get((service.lower(), node), [])
        with contextlib.suppress(ValueError):
            listeners.remove(listener)
        if not listeners:
            self._listeners.pop((service.lower(), node), None)

    def add_session_listener(self, listener: SessionListener) -> None:
        self._session_listeners.append(listener)

    def remove_session_listener(self, listener: SessionListener) -> None:
        with contextlib.suppress(ValueError):
            self._session_listeners.remove(listener)

    async def call(self, make: Callable[[ClientXMPP], Awaitable[T]]) -> T:
        """Run one request on the current session; NotConnected when there is none or it dies
        before the answer (pending IQs of a dead stream would otherwise wait for their timeout)."""
        client, lost = self.client, self._lost
        if not self._ready.is_set() or client is None or lost is None or lost.done():
            raise NotConnected(f"account {self.name} ({self.settings.bare_jid}) is not connected")
        task = asyncio.ensure_future(make(client))
        try:
            await asyncio.wait({task, lost}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if task.done():
            return task.result()
        task.cancel()
        raise NotConnected(f"account {self.name} ({self.settings.bare_jid}) lost its connection")

    def pubsub(self, client: ClientXMPP) -> Any:
        return client.plugin["xep_0060"]

    # ------------------------------------------------------------------ client
    def make_client(self) -> ClientXMPP:
        s = self.settings
        client = ClientXMPP(s.full_jid, s.password.get_secret_value())
        for plugin in ("xep_0030", "xep_0004", "xep_0060", "xep_0199"):
            client.register_plugin(plugin)
        if s.tls == "disabled":
            client.enable_direct_tls = False
            client.enable_starttls = False
            client.enable_plaintext = True
            client.plugin["feature_mechanisms"].unencrypted_scram = True
        elif s.tls == "starttls":
            client.enable_direct_tls = False
            client.enable_starttls = True
            client.enable_plaintext = False
        else:
            client.enable_direct_tls = True
            client.enable_starttls = True
            client.enable_plaintext = False
        if s.ca_file is not None:
            client.ca_certs = s.ca_file
        client.register_handler(Callback("thoonk-bridge pubsub events", MatchXPath(_EVENT_XPATH), self._on_event))
        return client

    def _methods(self) -> int:
        """How many connection methods one slixmpp connect loop tries (each failure is an event)."""
        return 2 if self.settings.tls == "required" else 1

    async def login(self, client: ClientXMPP) -> asyncio.Future[Any]:
        """Connect and authenticate ``client``; returns a future resolved when the session ends.

        Raises AuthFailed or ConnectFailed (the client is then aborted)."""
        loop = asyncio.get_running_loop()
        started: asyncio.Future[None] = loop.create_future()
        lost: asyncio.Future[Any] = loop.create_future()
        failures: list[str] = []
        self._watch(client, started, lost, failures)
        if self.settings.host:
            client.connect(self.settings.host, self.settings.port)
        else:
            client.connect()
        try:
            # asyncio.wait, not wait_for: wait_for may swallow a cancellation when the future
            # completes at the same time (Python 3.11), and stop() would then never return.
            await asyncio.wait({started}, timeout=self.settings.timeout)
        except BaseException:
            self._abort(client)
            raise
        if not started.done():
            started.cancel()
            self._abort(client)
            raise ConnectFailed(
                f"no session with {self._where()} after {self.settings.timeout:g} s"
                + (f" ({'; '.join(failures)})" if failures else "")
            )
        if started.exception() is not None:
            self._abort(client)
            raise started.exception()  # type: ignore[misc]
        return lost

    def _watch(self, client: ClientXMPP, started: asyncio.Future[None], lost: asyncio.Future[Any],
               failures: list[str]) -> None:
        """Handlers of ``client``'s events during a login: ``started`` gets the outcome (None, or
        AuthFailed / ConnectFailed), ``lost`` the end of the session, ``failures`` the connection
        attempts that failed."""

        def fail(exc: Exception) -> None:
            if not started.done():
                started.set_exception(exc)
                started.exception()  # retrieved: no "never retrieved" warning when nobody waits

        def on_session(_: Any) -> None:
            if not started.done():
                started.set_result(None)

        def on_failed_auth(stanza: Any) -> None:
            condition = ""
            with contextlib.suppress(Exception):
                condition = stanza["condition"] or ""
            fail(
                AuthFailed(
                    f"login as {self.settings.bare_jid} refused"
                    + (f" ({condition})" if condition else "")
                    + ": wrong password or unknown account"
                )
            )

        def on_failed_all_auth(_: Any) -> None:
            fail(
                AuthFailed(
                    f"login as {self.settings.bare_jid} failed: no usable authentication mechanism "
                    "(the server offers none that is allowed on this stream; is TLS available?)"
                )
            )

        def on_connection_failed(err: Any) -> None:
            failures.append(str(err))
            if len(failures) >= self._methods():
                fail(ConnectFailed(f"cannot connect to {self._where()}: {'; '.join(failures)}"))

        def on_disconnected(reason: Any) -> None:
            fail(ConnectFailed(f"disconnected from {self._where()} before the session started: {reason}"))
            if not lost.done():
                lost.set_result(reason)

        def on_stream_error(err: Any) -> None:
            condition = ""
            with contextlib.suppress(Exception):
                condition = f"{err['condition']}" + (f": {err['text']}" if err["text"] else "")
            self.last_stream_error = (time.monotonic(), condition)
            self.log.error("xmpp stream error from server", error=condition)
            self.metrics.errors.labels(self.name, "stream").inc()

        def on_tls_failed(err: Any) -> None:
            fail(ConnectFailed(f"TLS with {self._where()} failed: {err}"))

        client.add_event_handler("session_start", on_session)
        client.add_event_handler("failed_auth", on_failed_auth)
        client.add_event_handler("failed_all_auth", on_failed_all_auth)
        client.add_event_handler("connection_failed", on_connection_failed)
        client.add_event_handler("disconnected", on_disconnected)
        client.add_event_handler("stream_error", on_stream_error)
        client.add_event_handler("ssl_invalid_chain", on_tls_failed)
        client.add_event_handler("ssl_invalid_cert", on_tls_failed)

    def _where(self) -> str:
        s = self.settings
        return f"{s.host}:{s.port}" if s.host else s.bare_jid.partition("@")[2]

    @staticmethod
    def _abort(client: ClientXMPP) -> None:
        with contextlib.suppress(Exception):
            client.cancel_connection_attempt()
        with contextlib.suppress(Exception):
            client.abort()
        Connection._release(client)

    @staticmethod
    def _release(client: ClientXMPP) -> None:
        """Cancel the client's background send task (else: "Task was destroyed but it is pending")."""
        task = getattr(client, "_run_out_filters", None)
        if task is not None:
            task.cancel()

    async def _drop_client(self) -> None:
        self._ready.clear()
        client, self.client = self.client, None
        ka, self._keepalive_task = self._keepalive_task, None
        await cancel_and_wait(ka)
        if client is not None:
            try:
                await asyncio.wait_for(client.disconnect(wait=0.5), 2)
            except BaseException:  # noqa: BLE001, S110 - best effort
                pass
            self._abort(client)

    # ------------------------------------------------------------------ loop
    async def _run(self) -> None:
        attempt = 0
        while True:
            client = self.make_client()
            try:
                lost = await self.login(client)
            except (AuthFailed, ConnectFailed) as exc:
                auth = isinstance(exc, AuthFailed)
                self.state = "auth-failed" if auth else "reconnecting"
                self.detail = str(exc)
                self.metrics.errors.labels(self.name, "auth" if auth else "connect").inc()
                delay = self._backoff(attempt, auth)
                attempt += 1
                self.log.error(
                    "xmpp login failed" if auth else "xmpp connection failed",
                    error=str(exc),
                    retry_in=round(delay, 3),
                )
                self._first_attempt.set()
                await asyncio.sleep(delay)
                continue
            # a session
            attempt = 0
            self.client = client
            self._lost = lost
            client.send_presence()  # bare-JID subscriptions are only delivered to available resources
            self.generation += 1
            self.state = "connected"
            self.detail = ""
            self.metrics.connects.labels(self.name).inc()
            self.metrics.connected.labels(self.name).set(1)
            self.log.info("xmpp session started", session=self.generation, bound=str(client.boundjid))
            if self.settings.keepalive:
                self._keepalive_task = asyncio.create_task(self._keepalive(client))
            self._ready.set()
            self._first_attempt.set()
            started, self._session_started = self._session_started, asyncio.Event()
            started.set()
            for listener in list(self._session_listeners):
                listener(self.generation)
            reason = await lost
            self._ready.clear()
            self.metrics.connected.labels(self.name).set(0)
            self.metrics.disconnects.labels(self.name).inc()
            self.state = "reconnecting"
            self.detail = f"connection lost: {reason}"
            self.log.warning("xmpp connection lost, reconnecting", reason=str(reason))
            await self._drop_client()
            await asyncio.sleep(self._backoff(0, False))

    def _backoff(self, attempt: int, auth: bool) -> float:
        s = self.settings
        # full jitter above reconnect_min; after a refused login the ceiling is reconnect_max at once
        base = s.reconnect_max if auth else s.reconnect_min
        return Backoff(base=base, cap=s.reconnect_max, floor=s.reconnect_min).delay(attempt)

    async def _keepalive(self, client: ClientXMPP) -> None:
        interval = self.settings.keepalive
        domain = self.settings.bare_jid.partition("@")[2]
        while True:
            await asyncio.sleep(interval)
            try:
                await client.plugin["xep_0199"].send_ping(JID(domain), timeout=self.settings.timeout)
            except IqTimeout:
                self.log.warning("xmpp keepalive ping unanswered, dropping the connection")
                self._abort(client)
                return
            except IqError:
                pass  # an error answer still proves the stream is alive
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001
                return

    # ------------------------------------------------------------------ events
    def _on_event(self, msg: Any) -> None:
        service = msg["from"].bare.lower()
        event = msg.xml.find(f"{{{PUBSUB_EVENT_NS}}}event")
        if event is None:
            return
        for child in event:
            tag = child.tag.rpartition("}")[2]
            node = child.get("node")
            if node is None:
                continue
            listeners = self._listeners.get((service, node))
            if not listeners:
                continue
            events: list[NodeEvent] = []
            if tag == "items":
                for sub in child:
                    sub_tag = sub.tag.rpartition("}")[2]
                    item_id = sub.get("id")
                    if not item_id:
                        self.metrics.errors.labels(self.name, "event").inc()
                        self.log.warning("pubsub notification item without id ignored", node=node)
                        continue
                    if sub_tag == "item":
                        payload = next(iter(sub), None)
                        events.append(NodeEvent("item", node, item_id, payload))
                    elif sub_tag == "retract":
                        events.append(NodeEvent("retract", node, item_id))
            elif tag in ("purge", "delete"):
                events.append(NodeEvent(tag, node))
            for ev in events:
                for listener in list(listeners):
                    listener(ev)
