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


def test_thoonk_without_arguments_works_from_any_directory(tmp_path: Path, monkeypatch) -> None:
    # The README's `Thoonk()`: a private redis-server in ./data/redis of the working directory. A
    # relative state dir used to meet redis-server's --dir and fail ("Can't open the log file").
    from thoonk_bridge.thoonk import Thoonk

    monkeypatch.chdir(tmp_path)
    t = Thoonk()
    try:
        assert t.embedded is not None
        assert t.embedded.directory.is_absolute()
        assert t.embedded.directory == tmp_path / "data" / "redis"
        t.feed("kept").publish("across restarts", id="1")
    finally:
        t.close()
    assert (tmp_path / "data" / "redis" / "redis.log").is_file()
    again = Thoonk()
    try:
        assert again.feed("kept").get_item("1") == "across restarts"
    finally:
        again.close()


async def test_async_thoonk_without_arguments_works_from_any_directory(tmp_path: Path, monkeypatch) -> None:
    from thoonk_bridge.thoonk import AsyncThoonk

    monkeypatch.chdir(tmp_path)
    t = AsyncThoonk()
    try:
        feed = await t.feed("kept")
        await feed.publish("across restarts", id="1")
    finally:
        await t.aclose()
    again = AsyncThoonk()
    try:
        assert await (await again.feed("kept")).get_item("1") == "across restarts"
    finally:
        await again.aclose()
    assert (tmp_path / "data" / "redis" / "appendonlydir").is_dir()


def test_relative_state_directory_is_made_absolute(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    server = EmbeddedRedis("rel/state", persistent=False)
    assert server.directory == tmp_path / "rel" / "state"
    monkeypatch.chdir("/")  # where it was asked for counts, not where it is started
    with server:
        assert redis.Redis.from_url(server.url).ping()
    assert (tmp_path / "rel" / "state" / "redis.log").is_file()
