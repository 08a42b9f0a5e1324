"""A real ejabberd on loopback, the second XMPP server of the xmpp tests (Debian's ``ejabberd`` 23.01).

``EjabberdServer`` and :class:`prosody_server.ProsodyServer` share their lifecycle and accounts
(:class:`xmpp_server.XmppServerProcess`: ``start``, ``stop``, ``restart``, ``cleanup``, ``account``,
``port``, ``logs``), so a test written for one runs against both. It writes
``tests/support/ejabberd/ejabberd.yml.in`` into a fresh temp dir with a free loopback port and runs
the Erlang VM directly as the current user (``ejabberdctl`` insists on the ``ejabberd`` user and
on Erlang distribution; neither is needed): no distribution (node ``nonode@nohost``), Mnesia in the
temp dir (so nodes, items and accounts survive ``stop()``/``start()``), the users ``bridge``, ``alice``
and ``bob`` (password ``pw-<user>``) registered by an ``-eval`` once the application is up.

The PubSub service is ``pubsub.localhost``, as on the Prosody fixture, with ejabberd's node defaults:
``send_last_published_item: on_sub_and_presence``, ``notify_delete: false``, auto-create on publish.

Fixtures: ``ejabberd`` (one server for the session), ``fresh_ejabberd`` (one per test, for restarts).
Tests using them are skipped when ejabberd is not installed (``scripts/test`` installs it).
"""

from __future__ import annotations

import glob
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.xmpp_server import DOMAIN, USERS, XmppServerProcess, password

TEMPLATE = Path(__file__).resolve().parent / "ejabberd" / "ejabberd.yml.in"


def ejabberd_lib() -> str | None:
    """The directory holding ejabberd's Erlang applications (Debian: /usr/lib/<arch>/ejabberd-*)."""
    found = sorted(glob.glob("/usr/lib/*/ejabberd-[0-9]*/ebin/ejabberd.app"))
    return str(Path(found[-1]).parent.parent.parent) if found else None


def ejabberd_installed() -> bool:
    return shutil.which("erl") is not None and ejabberd_lib() is not None


class EjabberdServer(XmppServerProcess):
    """One throwaway ejabberd VM; ``start()`` may be called again after ``stop()``."""

    name = "ejabberd"
    log_files = ("console.log", "ejabberd.log")
    stop_timeout = 15.0  # the VM shuts down cleanly (init:stop) on SIGTERM

    def __init__(self, directory: Path | None = None, port: int | None = None) -> None:
        super().__init__(directory, port, "ejabberd-")
        self.config = self.dir / "ejabberd.yml"

    def start(self) -> EjabberdServer:
        (self.dir / "db").mkdir(parents=True, exist_ok=True)
        self.config.write_text(TEMPLATE.read_text().replace("@PORT@", str(self.port)))
        ready = self.dir / "users-registered"
        ready.unlink(missing_ok=True)
        register = ", ".join(
            f'ejabberd_auth:try_register(<<"{user}">>, <<"{DOMAIN}">>, <<"{password(user)}">>)' for user in USERS
        )
        script = f'{register}, file:write_file("{ready}", <<"ok">>).'
        env = {
            **os.environ,
            "EJABBERD_CONFIG_PATH": str(self.config),
            "EJABBERD_LOG_PATH": str(self.dir / "ejabberd.log"),
            "ERL_LIBS": ejabberd_lib() or "",
            "ERL_CRASH_DUMP_BYTES": "0",
            "HOME": str(self.dir),
        }
        self._launch(
            ["erl", "-noinput", "-noshell", "+K", "true",
             "-mnesia", "dir", f'"{self.dir / "db"}"', "-s", "ejabberd", "-eval", script],
            env=env,
            cwd=self.dir,
        )
        self._wait_ready(30, ready.exists)
        return self


def _require_ejabberd() -> None:
    if not ejabberd_installed():
        pytest.skip("ejabberd is not installed (scripts/test installs it: apt-get install ejabberd)")


@pytest.fixture(scope="session")
def ejabberd() -> Iterator[EjabberdServer]:
    _require_ejabberd()
    server = EjabberdServer().start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def fresh_ejabberd() -> Iterator[EjabberdServer]:
    """A server of the test's own, for tests that stop or restart it."""
    _require_ejabberd()
    server = EjabberdServer().start()
    try:
        yield server
    finally:
        server.cleanup()
