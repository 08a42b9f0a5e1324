"""A real ejabberd on loopback, the second XMPP server of the xmpp tests (Debian's ``ejabberd`` 23.01).

``EjabberdServer`` has the interface of :class:`prosody_server.ProsodyServer` (``start``, ``stop``,
``restart``, ``cleanup``, ``account``, ``port``, ``logs``), so a test written for one runs against
both. It writes ``tests/ejabberd/ejabberd.yml.in`` into a fresh temp dir with a free loopback port and
runs the Erlang VM directly as the current user (``ejabberdctl`` insists on the ``ejabberd`` user and
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
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.prosody_server import DOMAIN, USERS, free_port, password

TEMPLATE = Path(__file__).resolve().parent / "ejabberd" / "ejabberd.yml.in"


def ejabberd_lib() -> str | None:
    """The directory holding ejabberd's Erlang applications (Debian: /usr/lib/<arch>/ejabberd-*)."""
    found = sorted(glob.glob("/usr/lib/*/ejabberd-[0-9]*/ebin/ejabberd.app"))
    return str(Path(found[-1]).parent.parent.parent) if found else None


def ejabberd_installed() -> bool:
    return shutil.which("erl") is not None and ejabberd_lib() is not None


class EjabberdServer:
    """One throwaway ejabberd VM; ``start()`` may be called again after ``stop()``."""

    def __init__(self, directory: Path | None = None, port: int | None = None) -> None:
        self.dir = Path(directory or tempfile.mkdtemp(prefix="ejabberd-"))
        self.port = port or free_port()
        self.config = self.dir / "ejabberd.yml"
        self.proc: subprocess.Popen[bytes] | None = None

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
        console = open(self.dir / "console.log", "ab")  # noqa: SIM115 - kept by the child
        self.proc = subprocess.Popen(
            ["erl", "-noinput", "-noshell", "+K", "true",
             "-mnesia", "dir", f'"{self.dir / "db"}"', "-s", "ejabberd", "-eval", script],
            stdout=console,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=self.dir,
        )
        console.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if ready.exists():
                try:
                    socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                    return self
                except OSError:
                    pass
            time.sleep(0.05)
        logs = self.logs()
        self.stop()
        raise RuntimeError(f"ejabberd did not start on port {self.port}:\n{logs}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)  # the VM shuts down cleanly (init:stop) on SIGTERM
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def logs(self) -> str:
        out = []
        for name in ("console.log", "ejabberd.log"):
            path = self.dir / name
            if path.exists():
                out.append(path.read_text(errors="replace")[-4000:])
        return "\n".join(out)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def account(self, user: str = "bridge", **extra: object) -> dict[str, object]:
        """Settings of the xmpp plugin for ``user`` on this server (plain TCP on loopback)."""
        settings: dict[str, object] = {
            "jid": f"{user}@{DOMAIN}",
            "password": password(user),
            "host": "127.0.0.1",
            "port": self.port,
            "tls": "disabled",
            "timeout": 5,
            "reconnect_min": 0.05,
            "reconnect_max": 0.5,
        }
        settings.update(extra)
        return settings


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
