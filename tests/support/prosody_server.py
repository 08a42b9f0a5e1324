"""A real Prosody on loopback for the XMPP tests (recipe: ../shared/notes/xmpp-test-server.md).

``ProsodyServer`` writes ``tests/prosody/prosody.cfg.lua.in`` into a fresh temp dir with a free
loopback port, registers ``bridge`` (admin: owner of every node), ``alice`` and ``bob`` (password
``pw-<user>``), and runs ``prosody -F``. ``stop()``/``start()`` restart it on the same port and
data dir (items, nodes and subscriptions persist with ``internal`` storage).

Components: ``pubsub.localhost`` (``internal`` storage: keep nodes small, max_items <= 20-50),
``autopubsub.localhost`` (the same, but a publish to a missing node creates it with the defaults, as
ejabberd does) and, when ``lua-dbi-sqlite3`` is installed, ``sqlpubsub.localhost`` (SQLite, for the
benchmark).

Fixtures: ``prosody`` (one server for the session), ``fresh_prosody`` (one per test, for restarts),
``node_name`` (a unique node name per test). Every test using them is skipped when ``prosody`` is
not installed (``scripts/test`` installs it).
"""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
import subprocess
import tempfile
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.xmpp_server import DOMAIN, USERS, XmppServerProcess, password

HERE = Path(__file__).resolve().parent / "prosody"
TEMPLATE = HERE / "prosody.cfg.lua.in"
SQL_TEMPLATE = HERE / "sql-component.lua.in"
PUBSUB = "pubsub.localhost"
AUTO_PUBSUB = "autopubsub.localhost"  # autocreate_on_publish = true, as ejabberd
SQL_PUBSUB = "sqlpubsub.localhost"


def prosody_installed() -> bool:
    return shutil.which("prosody") is not None and shutil.which("prosodyctl") is not None


def sqlite_available() -> bool:
    return bool(glob.glob("/usr/lib/*/lua/5.*/dbd/sqlite3.so") or glob.glob("/usr/lib/lua/5.*/dbd/sqlite3.so"))


class ProsodyServer(XmppServerProcess):
    """One throwaway Prosody process; ``start()`` may be called again after ``stop()``."""

    name = "prosody"
    log_files = ("console.log", "prosody.log")

    def __init__(self, directory: Path | None = None, port: int | None = None) -> None:
        super().__init__(directory, port, "prosody-")
        self.sql = sqlite_available()
        self.config = self.dir / "prosody.cfg.lua"
        self._configured = False

    # ------------------------------------------------------------------ setup
    def _configure(self) -> None:
        (self.dir / "data").mkdir(parents=True, exist_ok=True)
        (self.dir / "certs").mkdir(exist_ok=True)  # silences "Error indexing certificate directory"
        sql = SQL_TEMPLATE.read_text() if self.sql else ""
        text = TEMPLATE.read_text().replace("@SQL@", sql)
        text = text.replace("@DIR@", str(self.dir)).replace("@PORT@", str(self.port))
        self.config.write_text(text)
        for user in USERS:
            self.register(user, password(user))
        self._configured = True

    def prosodyctl(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            ["prosodyctl", "--config", str(self.config), *args],
            capture_output=True,
            timeout=30,
            check=True,
        )

    def register(self, user: str, pw: str) -> None:
        self.prosodyctl("register", user, DOMAIN, pw)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> ProsodyServer:
        if not self._configured:
            self._configure()
        self._launch(["prosody", "--config", str(self.config), "-F"])
        self._wait_ready(15)
        return self

def _require_prosody() -> None:
    if not prosody_installed():
        pytest.skip("prosody is not installed (scripts/test installs it: apt-get install prosody)")


@pytest.fixture(scope="session")
def prosody() -> Iterator[ProsodyServer]:
    _require_prosody()
    server = ProsodyServer().start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def fresh_prosody() -> Iterator[ProsodyServer]:
    """A server of the test's own, for tests that stop or restart it."""
    _require_prosody()
    server = ProsodyServer().start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def node_name() -> str:
    return f"test/{uuid.uuid4().hex[:10]}"


if os.environ.get("PROSODY_DEBUG"):  # pragma: no cover - manual debugging aid
    print("prosody fixtures loaded; sqlite:", sqlite_available())


# ---------------------------------------------------------------------- helpers for the xmpp tests


def make_context(**extra: Any) -> Any:
    """The xmpp plugin's context with a fresh metrics registry; thoonk and redis are None unless given
    (the plugin's unit tests reach no Redis); other ``extra`` go to ``build_plugin_context``."""
    from thoonk_bridge.context import build_plugin_context

    return build_plugin_context(
        "xmpp", thoonk=extra.pop("thoonk", None), redis=extra.pop("redis", None), public_url="http://127.0.0.1:0",
        state_dir=Path(tempfile.mkdtemp(prefix="xmpp-state-")), **extra,
    )


class DeadLetters:
    """Collects what a route context's dead_letter receives."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str | None, str]] = []

    async def __call__(self, item_id: str, payload: str | None, reason: str) -> None:
        self.items.append((item_id, payload, reason))


def make_route(name: str = "r", *, fmt: str | None = None, mirror: bool = True) -> Any:
    import structlog

    from thoonk_bridge.plugin import RouteContext

    return RouteContext(
        name=name,
        mirror=mirror,
        format=fmt,
        initial="all",
        log=structlog.get_logger().bind(route=name),
        dead_letter=DeadLetters(),
    )


def metric(context: Any, name: str, **labels: str) -> float:
    value = context.metrics.get_sample_value(name, labels)
    return value or 0.0


class Outsider:
    """An independent slixmpp client (alice, bob or bridge) as an outside publisher/subscriber."""

    def __init__(self, server: ProsodyServer, user: str, resource: str = "outsider") -> None:
        self.server = server
        self.user = user
        self.jid = f"{user}@{DOMAIN}/{resource}"
        self.client: Any = None
        self.events: asyncio.Queue[tuple[str, str, str | None, Any]] = asyncio.Queue()

    async def __aenter__(self) -> Outsider:
        from slixmpp import ClientXMPP

        c = ClientXMPP(self.jid, password(self.user))
        for p in ("xep_0030", "xep_0004", "xep_0060"):
            c.register_plugin(p)
        c.enable_direct_tls = False
        c.plugin["feature_mechanisms"].unencrypted_scram = True
        c.add_event_handler("pubsub_publish", self._on_publish)
        c.add_event_handler("pubsub_retract", self._on_retract)
        c.connect("127.0.0.1", self.server.port)
        await c.wait_until("session_start", 10)
        c.send_presence()
        self.client = c
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.disconnect()

    @property
    def ps(self) -> Any:
        return self.client.plugin["xep_0060"]

    def _on_publish(self, msg: Any) -> None:
        # slixmpp fires pubsub_publish once per item with the whole message: read the first only
        # (Prosody sends one item per message)
        items = msg["pubsub_event"]["items"]
        item = items.xml.find("{http://jabber.org/protocol/pubsub#event}item")
        if item is not None:
            self.events.put_nowait(("item", items["node"], item.get("id"), next(iter(item), None)))

    def _on_retract(self, msg: Any) -> None:
        items = msg["pubsub_event"]["items"]
        item = items.xml.find("{http://jabber.org/protocol/pubsub#event}retract")
        if item is not None:
            self.events.put_nowait(("retract", items["node"], item.get("id"), None))

    async def create(self, node: str, service: str = PUBSUB, max_items: int = 20, **config: Any) -> None:
        form = self.client.plugin["xep_0004"].make_form(ftype="submit")
        form.add_field(var="pubsub#max_items", value=str(max_items))
        for var, value in config.items():
            form.add_field(var=f"pubsub#{var}", value=value)
        await self.ps.create_node(service, node, config=form)

    async def publish(self, node: str, item_id: str, element: ET.Element, service: str = PUBSUB) -> None:
        await self.ps.publish(service, node, id=item_id, payload=element)

    async def items(self, node: str, service: str = PUBSUB) -> list[tuple[str, Any]]:
        r = await self.ps.get_items(service, node)
        return [(it["id"], next(iter(it.xml), None)) for it in r["pubsub"]["items"]]


def atom(item_id: str, title: str, content: str = "body") -> ET.Element:
    from thoonk_bridge.payload import Entry, entry_to_element

    return entry_to_element(Entry(title=title, content=content), item_id)


async def eventually(check: Any, timeout: float = 15.0, interval: float = 0.05) -> Any:
    """Poll ``check()`` (sync or async) until it returns a truthy value; the last value otherwise."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value or asyncio.get_running_loop().time() > deadline:
            return value
        await asyncio.sleep(interval)
