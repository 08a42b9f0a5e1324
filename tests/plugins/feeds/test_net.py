"""thoonk_bridge.net: the outbound guard.

No test here sends a packet to a non-loopback address: refused names resolve through a stub
resolver, refused literal IPs are refused before connect, and ``start_connection`` is watched to
prove no connection was attempted.
"""

from __future__ import annotations

import gzip
import socket

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver

from thoonk_bridge import net
from thoonk_bridge.net import (
    AddressRefused,
    OutboundPolicy,
    ResponseTooLarge,
    TooManyRedirects,
    address_refusal,
    fetch_limited,
    make_session,
)

STRICT = OutboundPolicy()
LOOPBACK_OK = OutboundPolicy(allow_loopback=True)


@pytest.mark.parametrize(
    ("ip", "fragment"),
    [
        ("127.0.0.1", "loopback"),
        ("127.5.6.7", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.168.1.1", "private"),
        ("100.64.0.1", "CGNAT"),
        ("100.127.255.254", "CGNAT"),
        ("169.254.169.254", "metadata"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("fe80::1%eth0", "link-local"),
        ("fd00:ec2::254", "metadata"),
        ("fc00::1", "unique local"),
        ("fd12:3456::1", "unique local"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "address"),
        ("192.0.2.1", "non-global"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:10.0.0.1", "private"),
        ("::ffff:169.254.169.254", "metadata"),
        ("64:ff9b::a00:1", "private"),
        ("2002:a00:1::1", "private"),
        ("not-an-ip", "not an IP"),
    ],
)
def test_refused_addresses(ip: str, fragment: str) -> None:
    reason = address_refusal(ip, STRICT)
    assert reason is not None and fragment in reason


@pytest.mark.parametrize("ip", ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_allowed(ip: str) -> None:
    assert address_refusal(ip, STRICT) is None


def test_allow_flags_and_networks() -> None:
    assert address_refusal("127.0.0.1", LOOPBACK_OK) is None
    assert address_refusal("::ffff:127.0.0.1", LOOPBACK_OK) is None
    assert address_refusal("10.0.0.1", LOOPBACK_OK) is not None
    private = OutboundPolicy(allow_private=True)
    for ip in ("10.0.0.1", "192.168.0.1", "100.64.1.1", "fd00::1"):
        assert address_refusal(ip, private) is None
    # allow_private never opens the metadata address or loopback
    assert address_refusal("169.254.169.254", private) is not None
    assert address_refusal("127.0.0.1", private) is not None
    nets = OutboundPolicy(allowed_networks=("169.254.0.0/16", "10.9.0.0/16"))
    assert address_refusal("169.254.169.254", nets) is None
    assert address_refusal("10.9.1.1", nets) is None
    assert address_refusal("10.8.1.1", nets) is not None


def test_policy_validation() -> None:
    with pytest.raises(ValueError, match="not a CIDR"):
        OutboundPolicy(allowed_networks=("10.0.0.0/33",))
    with pytest.raises(ValueError):
        OutboundPolicy(allow_lookback=True)  # type: ignore[call-arg]


class StubResolver(AbstractResolver):
    """Maps names to fixed addresses; never asks DNS."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.asked: list[str] = []

    async def resolve(self, host, port=0, family=socket.AF_INET):  # type: ignore[override]
        self.asked.append(host)
        if host not in self.table:
            raise OSError(f"stub: no such host {host}")
        return [
            {
                "hostname": host,
                "host": ip,
                "port": port,
                "family": socket.AF_INET6 if ":" in ip else socket.AF_INET,
                "proto": 0,
                "flags": 0,
            }
            for ip in self.table[host]
        ]

    async def close(self) -> None:
        pass


@pytest.fixture
def no_connect(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Fail loudly on any connection attempt to a non-loopback address; record all attempts."""
    attempts: list[object] = []
    real = net.aiohttp.connector.aiohappyeyeballs.start_connection

    async def watched(addr_infos, *args, **kwargs):  # type: ignore[no-untyped-def]
        attempts.append(addr_infos)
        for info in addr_infos:
            host = info[4][0]
            if address_refusal(host, LOOPBACK_OK) is not None:
                raise AssertionError(f"connection attempt to {host}")
        return await real(addr_infos, *args, **kwargs)

    monkeypatch.setattr(net.aiohttp.connector.aiohappyeyeballs, "start_connection", watched)
    return attempts


@pytest.fixture
async def server() -> object:
    app = web.Application()
    hits: list[str] = []

    async def ok(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(text="hello", headers={"X-Seen-Auth": request.headers.get("Authorization", "")})

    async def redirect(request: web.Request) -> web.Response:
        hits.append(request.path)
        raise web.HTTPFound(request.query["to"])

    async def loop(request: web.Request) -> web.Response:
        hits.append(request.path)
        n = int(request.match_info["n"])
        raise web.HTTPFound(f"/loop/{n + 1}")

    async def bomb(request: web.Request) -> web.Response:
        body = gzip.compress(b"\0" * (20 * 1024 * 1024))
        return web.Response(body=body, headers={"Content-Encoding": "gzip", "Content-Type": "text/plain"})

    async def big(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * 5000)

    async def post_echo(request: web.Request) -> web.Response:
        return web.Response(text=f"{request.method}:{await request.text()}")

    app.router.add_get("/ok", ok)
    app.router.add_get("/redirect", redirect)
    app.router.add_post("/redirect", redirect)
    app.router.add_get("/loop/{n}", loop)
    app.router.add_get("/bomb", bomb)
    app.router.add_get("/big", big)
    app.router.add_route("*", "/echo", post_echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", hits
    finally:
        await runner.cleanup()


async def test_literal_loopback_refused_before_connect(server, no_connect) -> None:
    base, hits = server
    async with make_session(STRICT, timeout=5) as session:
        with pytest.raises(AddressRefused, match="loopback") as info:
            await fetch_limited(session, "GET", f"{base}/ok", max_bytes=1000)
        assert info.value.host == "127.0.0.1"
        # a plain session.get goes through the same connector
        with pytest.raises(AddressRefused):
            await session.get(f"{base}/ok")
    assert hits == [] and no_connect == []


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:1/",
        "http://[fe80::1]/",
        "http://[::ffff:192.168.0.1]/",
        "http://100.64.0.1/",
        "http://0.0.0.0/",
    ],
)
async def test_literal_ips_refused(url: str, no_connect) -> None:
    async with make_session(STRICT, timeout=5) as session:
        with pytest.raises(AddressRefused):
            await fetch_limited(session, "GET", url, max_bytes=1000)
    assert no_connect == []


async def test_resolved_names_refused(no_connect) -> None:
    stub = StubResolver(
        {
            "metadata.test": ["169.254.169.254"],
            "intranet.test": ["10.1.2.3"],
            "mixed.test": ["192.168.1.1", "fd00::1"],
        }
    )
    async with make_session(STRICT, timeout=5, resolver=stub) as session:
        for host, fragment in [("metadata.test", "metadata"), ("intranet.test", "private"), ("mixed.test", "private")]:
            with pytest.raises(AddressRefused, match=fragment) as info:
                await fetch_limited(session, "GET", f"http://{host}/x", max_bytes=1000)
            assert info.value.host == host
    assert set(stub.asked) == {"metadata.test", "intranet.test", "mixed.test"}
    assert no_connect == []


async def test_allowed_name_is_pinned_to_checked_address(server, no_connect) -> None:
    base, hits = server
    port = base.rsplit(":", 1)[1]
    # the name resolves to a refused and an allowed address: only the allowed one is connected to
    stub = StubResolver({"feeds.test": ["10.0.0.7", "127.0.0.1"]})
    async with make_session(LOOPBACK_OK, timeout=5, resolver=stub) as session:
        result = await fetch_limited(session, "GET", f"http://feeds.test:{port}/ok", max_bytes=1000)
    assert result.status == 200 and result.body == b"hello"
    hosts = [info[4][0] for attempt in no_connect for info in attempt]  # type: ignore[index]
    assert hosts == ["127.0.0.1"]


async def test_redirect_hop_to_refused_address(server, no_connect) -> None:
    base, hits = server
    stub = StubResolver({"internal.test": ["10.0.0.5"]})
    async with make_session(LOOPBACK_OK, timeout=5, resolver=stub) as session:
        with pytest.raises(AddressRefused, match="internal.test"):
            await fetch_limited(session, "GET", f"{base}/redirect?to=http://internal.test/secret", max_bytes=1000)
        with pytest.raises(AddressRefused, match="metadata"):
            await fetch_limited(session, "GET", f"{base}/redirect?to=http://169.254.169.254/", max_bytes=1000)
    assert hits == ["/redirect", "/redirect"]


async def test_redirects_followed_and_limited(server) -> None:
    base, hits = server
    async with make_session(LOOPBACK_OK, timeout=5) as session:
        result = await fetch_limited(session, "GET", f"{base}/redirect?to=/ok", max_bytes=1000)
        assert result.status == 200 and str(result.url).endswith("/ok")
        assert len(result.history) == 1
        with pytest.raises(TooManyRedirects, match="more than 3"):
            await fetch_limited(session, "GET", f"{base}/loop/0", max_bytes=1000, max_redirects=3)
        with pytest.raises(TooManyRedirects, match="scheme"):
            await fetch_limited(session, "GET", f"{base}/redirect?to=file:///etc/passwd", max_bytes=1000)


async def test_redirect_drops_credentials_cross_origin(server) -> None:
    base, _ = server
    other = base.replace("127.0.0.1", "localhost")
    stub = StubResolver({"localhost": ["127.0.0.1"]})
    async with make_session(LOOPBACK_OK, timeout=5, resolver=stub) as session:
        same = await fetch_limited(
            session, "GET", f"{base}/redirect?to=/ok", headers={"Authorization": "secret"}, max_bytes=100
        )
        assert same.headers["X-Seen-Auth"] == "secret"
        cross = await fetch_limited(
            session, "GET", f"{base}/redirect?to={other}/ok", headers={"Authorization": "secret"}, max_bytes=100
        )
        assert cross.status == 200 and cross.headers["X-Seen-Auth"] == ""


async def test_post_303_becomes_get(server) -> None:
    base, _ = server
    async with make_session(LOOPBACK_OK, timeout=5) as session:
        result = await fetch_limited(session, "POST", f"{base}/redirect?to=/echo", data=b"body", max_bytes=100)
    assert result.body == b"GET:"


async def test_gzip_bomb_refused(server) -> None:
    base, _ = server
    async with make_session(LOOPBACK_OK, timeout=10) as session:
        with pytest.raises(ResponseTooLarge, match="after decoding"):
            await fetch_limited(session, "GET", f"{base}/bomb", max_bytes=1024 * 1024)
        with pytest.raises(ResponseTooLarge, match="Content-Length 5000"):
            await fetch_limited(session, "GET", f"{base}/big", max_bytes=4999)
        ok = await fetch_limited(session, "GET", f"{base}/big", max_bytes=5000)
        assert len(ok.body) == 5000


async def test_errors_are_client_errors() -> None:
    assert issubclass(AddressRefused, aiohttp.ClientError)
    assert issubclass(ResponseTooLarge, aiohttp.ClientError)
    assert issubclass(TooManyRedirects, aiohttp.ClientError)
