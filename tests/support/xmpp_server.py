"""What the Prosody and ejabberd test servers share: the accounts, a free port, and the lifecycle of
one server process (start it with its output in ``console.log``, wait until it answers, stop it with
SIGTERM, restart on the same port and data, clean up). Each server says how it starts."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

USERS = ("bridge", "alice", "bob")
DOMAIN = "localhost"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def password(user: str) -> str:
    return f"pw-{user}"


class XmppServerProcess:
    """One throwaway XMPP server process on a loopback port; ``start()`` may be called again after
    ``stop()``. Subclasses set ``name``, ``log_files`` and ``stop_timeout`` and implement ``start``
    with :meth:`_launch` and :meth:`_wait_ready`."""

    name = "xmpp server"
    log_files: tuple[str, ...] = ("console.log",)
    stop_timeout = 10.0

    def __init__(self, directory: Path | None, port: int | None, prefix: str) -> None:
        self.dir = Path(directory or tempfile.mkdtemp(prefix=prefix))
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Any:
        raise NotImplementedError

    def _launch(self, args: list[str], **popen: Any) -> None:
        console = open(self.dir / "console.log", "ab")  # noqa: SIM115 - kept by the child
        self.proc = subprocess.Popen(args, stdout=console, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     **popen)
        console.close()

    def _wait_ready(self, timeout: float, ready: Callable[[], bool] = lambda: True) -> None:
        """Until ``ready()`` and the port accepts a connection; raises with the logs when the process
        ends or ``timeout`` seconds pass."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if ready():
                try:
                    socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                    return
                except OSError:
                    pass
            time.sleep(0.05)
        logs = self.logs()
        self.stop()
        raise RuntimeError(f"{self.name} did not start on port {self.port}:\n{logs}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(self.stop_timeout)
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
        for name in self.log_files:
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
