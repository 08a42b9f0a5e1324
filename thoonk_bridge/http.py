"""The one aiohttp application of the daemon: plugins mount their routes on it.

The engine adds ``/healthz`` (alive), ``/readyz`` (Redis and every route ready; 503 with a JSON
body naming what is not, while starting, draining or broken) and ``/metrics`` (Prometheus text).

Connections are bounded (:class:`HttpLimits`, the ``http:`` settings): a header timeout, a
keep-alive idle timeout and a cap on open connections kept below the process's file limit, so idle
or slow clients cannot use up the file descriptors and lock out ``/healthz``; and loop errors such
as failing ``accept()`` calls are logged at most once per interval (:class:`LoopErrorLog`), and so
are connections the limits close (:class:`RefusalLog`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import resource
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

ReadinessProbe = Callable[[], Awaitable[tuple[bool, dict[str, Any]]]]

MAX_REQUEST_BYTES = 1024 * 1024  # WebSub requests and pings are small; bigger bodies are refused with 413


def build_app(
    registry: CollectorRegistry, readiness: ReadinessProbe, *, before_metrics: Callable[[], None] | None = None,
    request_timeout: float | None = None,
) -> web.Application:
    middlewares = [request_deadline(request_timeout)] if request_timeout else []
    app = web.Application(client_max_size=MAX_REQUEST_BYTES, middlewares=middlewares)

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"alive": True})

    async def readyz(_: web.Request) -> web.Response:
        ready, body = await readiness()
        return web.json_response({"ready": ready, **body}, status=200 if ready else 503)

    async def metrics(_: web.Request) -> web.Response:
        if before_metrics is not None:
            before_metrics()
        resp = web.Response(body=generate_latest(registry))
        resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return resp

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


def request_deadline(seconds: float) -> Any:
    """Middleware: a request gets ``seconds`` from its complete headers to its answer, reading
    its body included; then ``408``. The header timeout bounds a slow head, this a slow body
    (a client announcing a body and sending it a byte at a time would hold its connection for ever)."""

    @web.middleware
    async def deadline(request: web.Request, handler: Any) -> web.StreamResponse:
        timer = asyncio.timeout(seconds)
        try:
            async with timer:
                response: web.StreamResponse = await handler(request)
                return response
        except TimeoutError:
            if not timer.expired():
                raise  # the handler's own timeout, not ours
            answer = web.HTTPRequestTimeout(text=f"request not complete within {seconds:g} s")
            answer.force_close()  # aiohttp still reads what is left of the body for up to 10 s, then closes
            raise answer from None

    return deadline


def parse_listen(listen: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port)."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    return host or "127.0.0.1", int(port)


# --------------------------------------------------------------------------- connection limits


@dataclass(frozen=True)
class HttpLimits:
    """What one client connection may cost (the ``http:`` settings; see docs/security.md).

    - ``header_timeout``: seconds from accepting a connection until its first request's headers are
      complete; a client that has not sent them by then is answered ``408`` and closed.
    - ``keepalive_timeout``: seconds an idle kept-alive connection waits for its next request (its
      headers complete) before it is closed (aiohttp's own ``keepalive_timeout``).
    - ``max_connections``: open connections at most; past it a new connection is answered ``503``
      and closed at once, so its file descriptor is free again before the process runs out of them.
    """

    header_timeout: float = 10.0
    keepalive_timeout: float = 75.0
    max_connections: int = 512

    def fitted(self, reserve: int = 256) -> HttpLimits:
        """These limits with ``max_connections`` kept below the process's file limit
        (``RLIMIT_NOFILE``), leaving ``reserve`` descriptors and half the rest to Redis, outbound
        fetches and files: past the limit ``accept()`` fails and nothing gets in, not even ``/healthz``."""
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            return self
        room = max(16, (soft - reserve) // 2)
        return dataclasses.replace(self, max_connections=min(self.max_connections, room))


_REFUSED = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\nRetry-After: 1\r\n\r\n"
_TIMED_OUT = b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"


class ConnectionGuard:
    """Counts the open connections of one listening site and applies :class:`HttpLimits`.

    ``on_refused(reason)`` is called for each connection closed by a limit (``max_connections``,
    ``header_timeout``): the daemon counts it and logs at most once per interval.
    """

    def __init__(self, limits: HttpLimits, on_refused: Callable[[str], None] | None = None,
                 on_count: Callable[[int], None] | None = None) -> None:
        self.limits = limits
        self.on_refused = on_refused
        self.on_count = on_count
        self.active = 0

    def protocol(self, make: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        """A protocol factory for ``loop.create_server`` wrapping ``make`` (aiohttp's server)."""
        return lambda: _GuardedProtocol(self, make)

    def _changed(self, delta: int) -> None:
        self.active += delta
        if self.on_count is not None:
            self.on_count(self.active)

    def _refused(self, reason: str) -> None:
        if self.on_refused is not None:
            self.on_refused(reason)


class _GuardedProtocol(asyncio.Protocol):
    """aiohttp's request handler behind the connection cap and the header timeout.

    aiohttp 3.14 closes a connection that sends no complete request within ``keepalive_timeout``
    (counted from the connection's start and from each response); the first request gets the
    shorter ``header_timeout`` here. A head is complete at its first empty line: no body can come
    before the first request's head, so the first ``\\r\\n\\r\\n`` (or bare ``\\n\\n``) is it.
    """

    def __init__(self, guard: ConnectionGuard, make: Callable[[], asyncio.Protocol]) -> None:
        self.guard = guard
        self.make = make
        self.inner: asyncio.Protocol | None = None
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have the same methods.
        self.transport = cast(asyncio.Transport, transport)
        if self.guard.active >= self.guard.limits.max_connections:
            self.transport.write(_REFUSED)
            self.transport.close()
            self.guard._refused("max_connections")  # noqa: SLF001 - the guard's own callback
            return
        self.guard._changed(+1)  # noqa: SLF001
        self.timer = asyncio.get_running_loop().call_later(self.guard.limits.header_timeout, self._timed_out)
        self.inner = self.make()
        self.inner.connection_made(self.transport)

    def _timed_out(self) -> None:
        self.timer = None
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_TIMED_OUT)
            self.transport.close()
            self.guard._refused("header_timeout")  # noqa: SLF001

    def data_received(self, data: bytes) -> None:
        if self.timer is not None:
            seen = self.tail + data
            if b"\r\n\r\n" in seen or b"\n\n" in seen:
                self.timer.cancel()
                self.timer = None
                self.tail = b""
            else:
                self.tail = seen[-3:]
        if self.inner is not None:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.inner is not None else None

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.inner is not None:
            self.guard._changed(-1)  # noqa: SLF001
            inner, self.inner = self.inner, None
            inner.connection_lost(exc)


class LimitedTCPSite(web.TCPSite):
    """``web.TCPSite`` whose connections go through a :class:`ConnectionGuard`."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, guard: ConnectionGuard,
                 **kwargs: Any) -> None:
        super().__init__(runner, host, port, **kwargs)
        self.guard = guard

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self.guard.protocol(server), self._host, self._port, ssl=self._ssl_context, backlog=self._backlog,
            reuse_address=self._reuse_address, reuse_port=self._reuse_port,
        )
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port


class RefusalLog:
    """Counts connections closed by the limits (``ConnectionGuard(on_refused=...)``) and logs them
    at most once per ``interval`` seconds, however many clients.

    - ``counter``: the ``http_refused{reason}`` metric, incremented at once.
    - ``log``: gets ``http connections closed by the limits`` with the counts since the last line.
    """

    def __init__(self, counter: Any, log: Any, interval: float = 10.0) -> None:
        self.counter = counter
        self.log = log
        self.interval = interval
        self._counts: dict[str, int] = {}  # not yet logged
        self._logged = -interval  # monotonic time of the last line
        self._flush: asyncio.TimerHandle | None = None

    def __call__(self, reason: str) -> None:
        self.counter.labels(reason).inc()
        self._counts[reason] = self._counts.get(reason, 0) + 1
        if self._flush is None:
            delay = max(0.0, self._logged + self.interval - time.monotonic())
            self._flush = asyncio.get_running_loop().call_later(delay, self.flush)

    def flush(self) -> None:
        """Log what is counted now (the daemon calls it when it stops)."""
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        self._logged = time.monotonic()
        if self._counts:
            self.log.warning("http connections closed by the limits", counts=dict(self._counts),
                             limits="http.max_connections, http.header_timeout")
            self._counts.clear()


class LoopErrorLog:
    """An event loop exception handler that logs each kind of error at most once per ``interval``.

    With its file descriptors used up, asyncio reports ``socket.accept() out of system resource``
    with a traceback at every retry; 1,100 idle connections produced 152 MB of it in 40 s. Here the
    first occurrence of a message is logged, then the next one after ``interval`` seconds with how
    many were left out meanwhile (``repeated``).
    """

    def __init__(self, log: Any, interval: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.log = log
        self.interval = interval
        self.clock = clock
        self._seen: dict[str, tuple[float, int]] = {}

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message") or "event loop error")
        now = self.clock()
        last = self._seen.get(message)
        if last is not None and now - last[0] < self.interval:
            self._seen[message] = (last[0], last[1] + 1)
            return
        if len(self._seen) > 100:  # messages that embed an object's repr: keep the table small
            self._seen.clear()
        self._seen[message] = (now, 0)
        exc = context.get("exception")
        fields: dict[str, Any] = {"message": message, "repeated": last[1] if last else 0}
        if exc is not None:
            fields["error"] = f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, OSError):
                fields["exc_info"] = exc  # a bug: its traceback is worth the lines
        self.log.error("event loop error", **fields)
