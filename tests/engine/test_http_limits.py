"""Slow and idle HTTP clients (issue 11 §2): a header timeout, a keep-alive idle timeout, a cap on
open connections under the file limit, and loop errors logged at most once per interval."""

from __future__ import annotations

import asyncio
import resource
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.bridge_process import BIN, BridgeProcess, wait
from thoonk_bridge.http import HttpLimits, LoopErrorLog
from thoonk_bridge.testing import running_bridge, wait_until

HEADER_TIMEOUT = 0.5


@pytest.fixture
async def daemon(redis_url: str, tmp_path: Path) -> AsyncIterator[Any]:
    http = {"header_timeout": HEADER_TIMEOUT, "keepalive_timeout": 1.0, "max_connections": 4}
    async with running_bridge({"routes": [], "http": http}, redis_url=redis_url, tmp_path=tmp_path,
                              plugins={}) as bridge:
        yield bridge


async def connect(daemon: Any) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", daemon.http_port)


async def read_to_eof(reader: asyncio.StreamReader) -> bytes:
    """What the server sends until it closes (a 5 s guard: a server that never closes fails)."""
    return await asyncio.wait_for(reader.read(), 5)


def connections(daemon: Any) -> float:
    return daemon.metrics.registry.get_sample_value("thoonk_bridge_http_connections") or 0.0


async def test_a_client_that_never_finishes_its_headers_is_closed(daemon: Any) -> None:
    reader, writer = await connect(daemon)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: slow\r\nX-Trickle: 1")  # and then nothing more
    answer = await read_to_eof(reader)
    assert answer.startswith(b"HTTP/1.1 408 ")
    writer.close()
    closed = daemon.metrics.registry.get_sample_value(
        "thoonk_bridge_http_connections_closed_total", {"reason": "header_timeout"})
    assert closed == 1


async def test_a_silent_client_is_closed_and_a_prompt_one_is_answered(daemon: Any) -> None:
    silent_reader, silent = await connect(daemon)
    prompt_reader, prompt = await connect(daemon)
    prompt.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert (await read_to_eof(prompt_reader)).startswith(b"HTTP/1.1 200 ")
    assert (await read_to_eof(silent_reader)).startswith(b"HTTP/1.1 408 ")
    silent.close()
    prompt.close()


async def test_connections_past_the_cap_are_refused_at_once(daemon: Any) -> None:
    idle = [await connect(daemon) for _ in range(4)]
    await wait_until(lambda: connections(daemon) == 4, message="four open connections")
    reader, writer = await connect(daemon)
    started = time.monotonic()
    answer = await read_to_eof(reader)
    assert answer.startswith(b"HTTP/1.1 503 ") and time.monotonic() - started < HEADER_TIMEOUT
    writer.close()
    for idle_reader, _ in idle:  # the idle ones go at the header timeout: room again
        assert (await read_to_eof(idle_reader)).startswith(b"HTTP/1.1 408 ")
    await wait_until(lambda: connections(daemon) == 0, message="the idle connections closed")
    reader, writer = await connect(daemon)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert (await read_to_eof(reader)).startswith(b"HTTP/1.1 200 ")
    for _, idle_writer in idle:
        idle_writer.close()
    writer.close()


async def test_an_idle_keepalive_connection_is_closed(daemon: Any) -> None:
    reader, writer = await connect(daemon)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")  # keep-alive (HTTP/1.1 default)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200 ")
    lengths = [line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")]
    length = int(lengths[0])
    await reader.readexactly(length)
    # Then nothing: the server closes the idle connection after keepalive_timeout (1 s), not never.
    assert await read_to_eof(reader) == b""
    writer.close()


async def test_a_client_that_trickles_its_body_gets_408(redis_url: str, tmp_path: Path) -> None:
    config = {"routes": [], "plugins": {"websub": {}}, "http": {"request_timeout": 0.5}}
    async with running_bridge(config, redis_url=redis_url, tmp_path=tmp_path) as bridge:
        reader, writer = await connect(bridge)
        # A complete head announcing 100 bytes of body, then 12 of them and nothing more.
        writer.write(b"POST /websub/hub HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                     b"Content-Length: 100\r\n\r\nhub.mode=sub")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 408 ") and b"Connection: close" in head
        writer.close()


def test_max_connections_is_kept_under_the_open_file_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
    try:
        assert HttpLimits(max_connections=100_000).fitted().max_connections == (1024 - 256) // 2
        assert HttpLimits(max_connections=50).fitted().max_connections == 50
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


class ListLog:
    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []

    def error(self, event: str, **fields: Any) -> None:
        self.lines.append({"event": event, **fields})


def test_loop_errors_are_logged_once_per_interval_with_a_count() -> None:
    now = [0.0]
    log = ListLog()
    handler = LoopErrorLog(log, interval=10, clock=lambda: now[0])
    context = {"message": "socket.accept() out of system resource", "exception": OSError(24, "Too many open files")}
    for _ in range(1000):  # asyncio retries accept() every second, from every listening socket
        handler(asyncio.new_event_loop, context)  # type: ignore[arg-type]
        now[0] += 0.01
    assert len(log.lines) == 1 and log.lines[0]["repeated"] == 0
    assert "Too many open files" in log.lines[0]["error"] and "exc_info" not in log.lines[0]
    now[0] = 10.5
    handler(None, context)  # type: ignore[arg-type]
    assert len(log.lines) == 2 and log.lines[1]["repeated"] == 999
    handler(None, {"message": "something else"})  # type: ignore[arg-type]
    assert len(log.lines) == 3


# --------------------------------------------------------------------------- the flood, for real

FD_LIMIT = 1024
FLOOD = 1100


class FdLimitedBridge(BridgeProcess):
    """The daemon as a process with ``ulimit -n 1024``."""

    def start(self) -> FdLimitedBridge:
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [*BIN, "run", str(self.config_path)], stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT)),  # noqa: PLW1509
        )
        return self


def test_a_flood_of_idle_connections_under_ulimit_1024(tmp_path: Path, redis_url: str) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < FLOOD + 200:
        pytest.skip(f"this test process may open only {hard} files")  # never counted as passing
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, FLOOD + 200), hard))
    header_timeout = 2.0
    bridge = FdLimitedBridge(tmp_path, {"redis": redis_url, "routes": []})
    bridge.write_config({"redis": redis_url, "routes": [], "state_dir": str(tmp_path / "state"), "log_format": "json",
                         "http": {"listen": f"127.0.0.1:{bridge.port}", "header_timeout": header_timeout}})
    bridge.start()
    flood: list[socket.socket] = []
    try:
        bridge.wait_ready()
        for _ in range(FLOOD):
            sock = socket.socket()
            sock.settimeout(0.2)  # established once in the accept queue; a full queue times out
            sock.connect_ex(("127.0.0.1", bridge.port))
            sock.setblocking(False)
            flood.append(sock)
        for n, sock in enumerate(flood):
            if n % 2:  # half send part of a request head, half nothing at all
                try:
                    sock.send(b"GET /healthz HTTP/1.1\r\nHost: flood\r\n")
                except OSError:
                    pass
        flooded = time.monotonic()

        def healthy() -> bool:
            try:
                return bridge.get("/healthz")[0] == 200
            except OSError:
                return False

        wait(healthy, timeout=header_timeout + 20, message="/healthz answering during the flood")
        # Answered once the header timeout has closed the idle connections (the margin is for a
        # loaded machine); before the limits it never answered while the flood was open.
        assert time.monotonic() - flooded < header_timeout + 15
        time.sleep(header_timeout + 1)
        assert healthy()
        assert bridge.proc is not None and bridge.proc.poll() is None
    finally:
        for sock in flood:
            sock.close()
        bridge.stop()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    size = bridge.log_path.stat().st_size
    assert size < 64 * 1024, f"{size} bytes of log:\n{bridge.log()[:3000]}"
    closed = [e["counts"] for e in bridge.log_events() if e["event"] == "http connections closed by the limits"]
    assert closed and sum(sum(counts.values()) for counts in closed) >= FLOOD - 100  # counted, not one line each
