"""The xmpp plugin: XMPP PubSub nodes (XEP-0060) as route sources and sinks, over slixmpp."""

from __future__ import annotations

import asyncio
import contextlib
import re

from slixmpp import JID
from slixmpp.exceptions import IqError, IqTimeout

from thoonk_bridge import __version__
from thoonk_bridge.plugin import (
    Endpoint,
    EndpointKind,
    Health,
    HealthState,
    Plugin,
    PluginContext,
    RouteContext,
)

from .connection import Connection
from .errors import AuthFailed, ConnectFailed, describe_endpoint_error, describe_iq_error, iq_condition
from .health import Problems, plugin_health
from .metrics import XmppMetrics
from .settings import (
    DEFAULT_ACCOUNT,
    AccountSettings,
    XmppSettings,
    XmppSinkOptions,
    XmppSourceOptions,
    split_address,
)
from .sink import XmppSink
from .source import XmppSource

XMPP_KIND = EndpointKind(
    name="xmpp",
    source_options=XmppSourceOptions,
    sink_options=XmppSinkOptions,
    description="XMPP PubSub nodes (XEP-0060): xmpp:SERVICE/NODE",
)


class XmppPlugin(Plugin[XmppSettings]):
    name = "xmpp"
    version = __version__  # the built-in plugins are released with the bridge
    description = "XMPP PubSub nodes (XEP-0060) as sources and sinks, one connection per account"
    settings_model = XmppSettings
    endpoint_kinds = (XMPP_KIND,)

    START_WAIT = 10.0  # seconds start() waits for the first login's outcome

    def __init__(self, settings: XmppSettings, context: PluginContext) -> None:
        super().__init__(settings, context)
        self.log = context.log
        self._metrics: XmppMetrics | None = None
        self.connections: dict[str, Connection] = {}
        self.problems = Problems()  # what the endpoints report, shown in health()
        self.endpoints: set[tuple[str, str, str]] = set()  # (account, service, node) seen
        self._stopped = False

    # ------------------------------------------------------------------ lifecycle
    @property
    def metrics(self) -> XmppMetrics:
        if self._metrics is None:
            self._metrics = XmppMetrics(self.context.metrics)
        return self._metrics

    def validate(self) -> list[str]:
        problems = []
        for name, account in self._accounts().items():
            if account.ca_file is not None and not account.ca_file.is_file():
                problems.append(f"xmpp account {name}: ca_file {account.ca_file} does not exist")
            if not account.password.get_secret_value():
                problems.append(f"xmpp account {name}: password is empty")
        return problems

    def _accounts(self) -> dict[str, AccountSettings]:
        """The configured accounts, each with a resource: a daemon of its own gets a resource of its own."""
        own = "thoonk-bridge-" + re.sub(r"[^A-Za-z0-9._-]", "-", self.context.instance_id)
        return {
            name: account if account.resource else account.model_copy(update={"resource": own})
            for name, account in self.settings.all_accounts().items()
        }

    async def setup(self) -> None:
        for name, account in self._accounts().items():
            if name not in self.connections:
                self.connections[name] = Connection(name, account, log=self.log, metrics=self.metrics)

    async def start(self) -> None:
        await self.setup()
        self._stopped = False
        await asyncio.gather(*(c.start(wait=self.START_WAIT) for c in self.connections.values()))

    async def stop(self) -> None:
        self._stopped = True
        await asyncio.gather(*(c.stop() for c in self.connections.values()), return_exceptions=True)
        self.set_health(Health.STOPPED)

    def connection(self, account: str) -> Connection:
        if account not in self.connections:
            if account not in self._accounts():
                known = ", ".join(sorted(self._accounts()))
                raise ValueError(f"xmpp: unknown account {account!r} (configured: {known})")
            self.connections[account] = Connection(
                account, self._accounts()[account], log=self.log, metrics=self.metrics
            )
        return self.connections[account]

    # ------------------------------------------------------------------ endpoints
    def source(self, endpoint: Endpoint[XmppSourceOptions], route: RouteContext) -> XmppSource:
        options = endpoint.options
        return XmppSource(options, route, conn=self._use(options), problems=self.problems, metrics=self.metrics)

    def sink(self, endpoint: Endpoint[XmppSinkOptions], route: RouteContext) -> XmppSink:
        options = endpoint.options
        return XmppSink(options, route, conn=self._use(options), problems=self.problems, metrics=self.metrics,
                        redis=self.context.redis)

    def _use(self, options: XmppSourceOptions | XmppSinkOptions) -> Connection:
        """The connection of the endpoint's account (an unknown account raises); its node is recorded."""
        service, node = split_address(options.address)
        conn = self.connection(options.account)
        self.endpoints.add((options.account, service, node))
        return conn

    # ------------------------------------------------------------------ health
    def health(self) -> HealthState:
        if self._stopped:
            return HealthState(Health.STOPPED)
        return plugin_health(self.connections.values(), self.problems)

    # ------------------------------------------------------------------ check --live
    async def check_live(self) -> list[str]:
        """Log in with each account (fresh connections) and look up every known endpoint's
        service and node; returns one readable line per problem."""
        problems: list[str] = []
        accounts = self._accounts()
        for name, settings in accounts.items():
            problems.extend(await self._check_account(name, settings))
        return problems

    async def _check_account(self, name: str, settings: AccountSettings) -> list[str]:
        probe = Connection(name, settings, log=self.log, metrics=self.metrics)
        client = probe.make_client()
        try:
            await probe.login(client)
        except (AuthFailed, ConnectFailed) as exc:
            return [f"xmpp account {name}: {exc}"]
        problems = []
        try:
            timeout = settings.timeout
            disco = client.plugin["xep_0030"]
            services: dict[str, str | None] = {}
            for account, service, node in sorted(self.endpoints):
                if account != name:
                    continue
                if service not in services:
                    try:
                        await disco.get_info(jid=JID(service), timeout=timeout)
                        services[service] = None
                    except (IqError, IqTimeout) as exc:
                        services[service] = (
                            f"xmpp service {service} (account {name}): unknown or unreachable: "
                            f"{describe_iq_error(exc)}"
                        )
                        problems.append(services[service] or "")
                        continue
                elif services[service] is not None:
                    continue
                try:
                    await disco.get_info(jid=JID(service), node=node, timeout=timeout)
                except (IqError, IqTimeout) as exc:
                    if iq_condition(exc) == "item-not-found":
                        continue  # a sink creates it; a source waits for it (reported at runtime)
                    problems.append(describe_endpoint_error("cannot look up", service, node, settings.bare_jid, exc))
        finally:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(client.disconnect(wait=0.5), 2)
        return problems


__all__ = ["DEFAULT_ACCOUNT", "XMPP_KIND", "XmppPlugin"]
