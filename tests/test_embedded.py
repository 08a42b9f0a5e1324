"""The embedded redis-server: starts, persists across restarts, dies with its parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import redis

from thoonk_bridge.thoonk.embedded import EmbeddedRedis


def test_unix_socket_server_answers_and_persists(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "state").start()
    try:
        client = redis.Redis.from_url(server.url)
        client.set("kept", "yes")
        client.close()
    finally:
        server.stop()
    assert server.process is None
    again = EmbeddedRedis(tmp_path / "state").start()
    try:
        client = redis.Redis.from_url(again.url)
        assert client.get("kept") == b"yes"
        client.close()
    finally:
        again.stop()


def test_tcp_port_server(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path / "s", port=0, persistent=False) as server:
        assert server.url.startswith("redis://127.0.0.1:")
        assert redis.Redis.from_url(server.url).ping()


def test_server_dies_with_its_parent(tmp_path: Path) -> None:
    # A child python starts the server, prints its pid, then is SIGKILLed: the server must follow.
    script = textwrap.dedent(
        f"""
        import sys, time
        from thoonk_bridge.thoonk.embedded import EmbeddedRedis
        s = EmbeddedRedis({str(tmp_path / "orphan")!r}).start()
        print(s.process.pid, flush=True)
        time.sleep(60)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    redis_pid = int(parent.stdout.readline())
    os.kill(redis_pid, 0)  # alive now
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(redis_pid, 0)
        except ProcessLookupError:
            break
        # It is a child of init now; reap-free check via /proc state.
        stat = Path(f"/proc/{redis_pid}/stat")
        if stat.exists() and stat.read_text().split()[2] == "Z":
            break
        time.sleep(0.05)
    else:
        os.kill(redis_pid, signal.SIGKILL)
        raise AssertionError("redis-server outlived its parent")
