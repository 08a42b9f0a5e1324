"""Outbound HTTP guard: every request the bridge makes to the outside goes through here.

The rule (DESIGN.md, "Reliability rules"): outbound HTTP refuses loopback, private, link-local
and metadata addresses unless the config allows them. The check is made on the *resolved*
address, and that same address is the one connected to (no second lookup a DNS-rebinding server
could answer differently), for literal-IP URLs too, and on every redirect hop.

How it is enforced:

- :class:`GuardedResolver` wraps aiohttp's default resolver and drops every resolved address the
  :class:`OutboundPolicy` refuses; when none is left it raises :class:`AddressRefused`. aiohttp
  connects only to the addresses the resolver returned, so the checked address is the pinned one.
- :class:`GuardedConnector` (a ``TCPConnector``) also applies the policy to literal-IP hosts,
  which aiohttp never hands to a resolver (``http://127.0.0.1/``, ``http://[::1]/``).
- :func:`make_session` builds a session with both, ``trust_env=False`` (no proxy from the
  environment could route around the check) and no cookie jar.
- :func:`fetch_limited` follows redirects itself (each hop counted, limited, and connected through
  the same guard; only ``http``/``https`` targets) and reads at most ``max_bytes`` of *decoded*
  body, so a gzip bomb is refused with :class:`ResponseTooLarge` instead of filling memory.

Addresses refused (each named in the error):

- unspecified (``0.0.0.0``, ``::``), multicast, reserved and other non-global ranges
  (documentation, benchmarking, ``240.0.0.0/4``, ...): always;
- link-local (``169.254.0.0/16`` incl. the cloud metadata address ``169.254.169.254``,
  ``fe80::/10``, ``fd00:ec2::254``): always;
- loopback (``127.0.0.0/8``, ``::1``): unless ``allow_loopback``;
- private (RFC 1918 ``10/8``, ``172.16/12``, ``192.168/16``; CGNAT ``100.64.0.0/10``; ULA
  ``fc00::/7``): unless ``allow_private``;
- IPv6 forms embedding an IPv4 address (IPv4-mapped ``::ffff:a.b.c.d``, NAT64 ``64:ff9b::/96``,
  6to4 ``2002::/16``) are judged by the embedded address.

``allowed_networks`` (CIDR strings) lets chosen networks through whatever their category.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from multidict import CIMultiDict, CIMultiDictProxy
from pydantic import BaseModel, ConfigDict, Field, field_validator
from yarl import URL

__all__ = [
    "AddressRefused",
    "FetchError",
    "FetchResult",
    "GuardedConnector",
    "GuardedResolver",
    "OutboundPolicy",
    "ResponseTooLarge",
    "TooManyRedirects",
    "address_refusal",
    "fetch_limited",
    "make_session",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_METADATA = {
    ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, OpenStack...
    ipaddress.ip_address("169.254.170.2"),  # AWS ECS task metadata
    ipaddress.ip_address("fd00:ec2::254"),  # AWS IPv6 metadata
}
_PRIVATE_NETS: tuple[IPNetwork, ...] = (
    ipaddress.ip_network("10.0.0.0/8"),
    ipaddress.ip_network("172.16.0.0/12"),
    ipaddress.ip_network("192.168.0.0/16"),
    ipaddress.ip_network("100.64.0.0/10"),  # CGNAT (RFC 6598)
    ipaddress.ip_network("fc00::/7"),  # unique local (ULA)
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


class OutboundPolicy(BaseModel):
    """Which addresses outbound HTTP may reach. Usable as a settings block in plugin settings.

    - ``allow_loopback`` (default false): allow ``127.0.0.0/8`` and ``::1`` (tests, local setups).
    - ``allow_private`` (default false): allow RFC 1918, CGNAT ``100.64.0.0/10`` and ULA ``fc00::/7``.
    - ``allowed_networks`` (default empty): CIDR networks allowed whatever their category (the only
      way to reach a link-local or otherwise always-refused address).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    allow_loopback: bool = Field(
        default=False,
        description="Allow loopback addresses (127.0.0.0/8, ::1), for tests and local setups.",
    )
    allow_private: bool = Field(
        default=False,
        description="Allow private addresses: RFC 1918, CGNAT 100.64.0.0/10 and ULA fc00::/7.",
    )
    allowed_networks: tuple[str, ...] = Field(
        default=(),
        description="CIDR networks allowed whatever their category (the only way to reach a link-local or otherwise "
        "refused address).",
    )

    @field_validator("allowed_networks")
    @classmethod
    def _check_networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        cidr_networks(value)
        return value

    def networks(self) -> tuple[IPNetwork, ...]:
        return cidr_networks(self.allowed_networks)


def cidr_networks(items: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    """CIDR strings as networks; ValueError naming the first that is not one (settings validators)."""
    networks = []
    for item in items:
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError as exc:
            raise ValueError(f"not a CIDR network: {item!r} ({exc})") from None
    return tuple(networks)


def _parse_ip(ip: str | IPAddress) -> IPAddress:
    if isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return ip
    text = ip.strip().strip("[]")
    if "%" in text:  # scope id (fe80::1%eth0)
        text = text.split("%", 1)[0]
    return ipaddress.ip_address(text)


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return ip.sixtofour
    return None


def _category(ip: IPAddress, policy: OutboundPolicy) -> str | None:
    if ip.is_unspecified:
        return "unspecified address"
    if ip.is_loopback:
        return None if policy.allow_loopback else "loopback address"
    if ip in _METADATA:
        return "cloud metadata address"
    if ip.is_link_local:
        return "link-local address"
    if ip.is_multicast:
        return "multicast address"
    if any(ip in net for net in _PRIVATE_NETS if net.version == ip.version):
        if policy.allow_private:
            return None
        return (
            "CGNAT address"
            if ip in _PRIVATE_NETS[3]
            else ("unique local address" if ip.version == 6 else "private address")
        )
    if ip.is_reserved:
        return "reserved address"
    if not ip.is_global:
        return "non-global address"
    return None


def address_refusal(ip: str | IPAddress, policy: OutboundPolicy) -> str | None:
    """Why ``policy`` refuses a connection to ``ip`` (e.g. ``"loopback address"``), or None if allowed.

    A string that is not an IP address at all is refused (``"not an IP address"``).
    """
    try:
        addr = _parse_ip(ip)
    except ValueError:
        return "not an IP address"
    nets = policy.networks()
    candidates: list[IPAddress] = [addr]
    if isinstance(addr, ipaddress.IPv6Address):
        inner = _embedded_v4(addr)
        if inner is not None:
            candidates.append(inner)
    if nets and any(c in net for c in candidates for net in nets if net.version == c.version):
        return None
    if len(candidates) == 2:
        inner_reason = _category(candidates[1], policy)
        if inner_reason is not None:
            return f"{inner_reason} (embedded in {addr})"
        if getattr(addr, "ipv4_mapped", None) is not None:  # ::ffff:a.b.c.d is just a.b.c.d
            return None
    return _category(addr, policy)


class FetchError(aiohttp.ClientError):
    """Base of the guard's own errors (all are ``aiohttp.ClientError`` too)."""


class AddressRefused(FetchError, aiohttp.ClientConnectionError):
    """The policy refused every address ``host`` resolved to; no connection was attempted."""

    def __init__(self, host: str, address: str, reason: str) -> None:
        self.host = host
        self.address = address
        self.reason = reason
        super().__init__(f"refusing to connect to {host} ({address}): {reason}")


class TooManyRedirects(FetchError):
    """More redirect hops than allowed (or a redirect to a non-HTTP scheme)."""


class ResponseTooLarge(FetchError):
    """The decoded response body exceeds ``max_bytes``."""


def _filter(host: str, results: list[ResolveResult], policy: OutboundPolicy) -> list[ResolveResult]:
    kept: list[ResolveResult] = []
    first_refusal: tuple[str, str] | None = None
    for item in results:
        reason = address_refusal(item["host"], policy)
        if reason is None:
            kept.append(item)
        elif first_refusal is None:
            first_refusal = (item["host"], reason)
    if not kept:
        if first_refusal is None:
            raise AddressRefused(host, "-", "name resolved to no address")
        raise AddressRefused(host, *first_refusal)
    return kept


class GuardedResolver(AbstractResolver):
    """A resolver returning only the addresses ``policy`` allows (raises when none is left).

    ``inner`` defaults to aiohttp's ``DefaultResolver``; tests pass a stub mapping names to
    addresses so that no real lookup (and no packet to a refused address) ever happens.
    """

    def __init__(self, policy: OutboundPolicy, inner: AbstractResolver | None = None) -> None:
        self.policy = policy
        self._inner = inner if inner is not None else aiohttp.resolver.DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        return _filter(host, results, self.policy)

    async def close(self) -> None:
        await self._inner.close()


class GuardedConnector(aiohttp.TCPConnector):
    """A ``TCPConnector`` that applies the policy to literal-IP hosts too (and, again, to names).

    aiohttp does not pass literal IP hosts to the resolver, so this check is what refuses
    ``http://127.0.0.1/`` or ``http://[::ffff:10.0.0.1]/`` before any connection attempt.
    """

    def __init__(self, policy: OutboundPolicy, **kwargs: Any) -> None:
        resolver = kwargs.pop("resolver", None)
        if not isinstance(resolver, GuardedResolver):
            resolver = GuardedResolver(policy, resolver)
        super().__init__(resolver=resolver, **kwargs)
        self.policy = policy

    async def _resolve_host(self, host: str, port: int, traces: Any = None) -> list[ResolveResult]:
        try:
            literal = _parse_ip(host)
        except ValueError:
            literal = None
        if literal is not None:
            reason = address_refusal(literal, self.policy)
            if reason is not None:
                raise AddressRefused(host, str(literal), reason)
        results = await super()._resolve_host(host, port, traces=traces)
        return _filter(host, list(results), self.policy)


def make_session(
    policy: OutboundPolicy,
    *,
    user_agent: str = "thoonk-bridge",
    timeout: float | aiohttp.ClientTimeout = 30.0,
    resolver: AbstractResolver | None = None,
    limit: int = 100,
    limit_per_host: int = 0,
) -> aiohttp.ClientSession:
    """A client session whose every connection goes through the policy.

    ``timeout`` in seconds bounds the whole request (connect, headers and body) unless a
    ``ClientTimeout`` is given. ``resolver`` replaces the inner resolver (tests: a stub).
    Must be called inside a running event loop.
    """
    connector = GuardedConnector(
        policy,
        resolver=GuardedResolver(policy, resolver),
        limit=limit,
        limit_per_host=limit_per_host,
    )
    client_timeout = timeout if isinstance(timeout, aiohttp.ClientTimeout) else aiohttp.ClientTimeout(total=timeout)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=client_timeout,
        headers={"User-Agent": user_agent},
        trust_env=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=True,
    )


@dataclass
class FetchResult:
    """What :func:`fetch_limited` returns: the final hop's status, headers and URL, the decoded body."""

    status: int
    headers: CIMultiDictProxy[str]
    url: URL
    body: bytes
    history: list[URL] = field(default_factory=list)

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "")


async def _read_limited(resp: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    encoding = resp.headers.get("Content-Encoding", "identity")
    declared = resp.content_length
    if declared is not None and encoding in ("", "identity") and declared > max_bytes:
        raise ResponseTooLarge(f"{resp.url}: Content-Length {declared} exceeds the limit of {max_bytes} bytes")
    chunks: list[bytes] = []
    total = 0
    async for chunk in resp.content.iter_chunked(65536):
        total += len(chunk)
        if total > max_bytes:
            raise ResponseTooLarge(
                f"{resp.url}: body exceeds the limit of {max_bytes} bytes"
                + (f" after decoding (Content-Encoding: {encoding})" if encoding not in ("", "identity") else "")
            )
        chunks.append(chunk)
    return b"".join(chunks)


async def fetch_limited(
    session: aiohttp.ClientSession,
    method: str,
    url: str | URL,
    *,
    max_bytes: int = 10 * 1024 * 1024,
    max_redirects: int = 5,
    headers: Mapping[str, str] | None = None,
    data: bytes | None = None,
    allowed_schemes: Sequence[str] = ("http", "https"),
) -> FetchResult:
    """Send one request, following up to ``max_redirects`` redirects, and read a bounded body.

    Every hop goes through ``session``'s connector (a guarded one from :func:`make_session`).
    301/302/303 turn a non-GET/HEAD request into a GET without a body (as browsers do); 307/308
    keep method and body. ``Authorization`` and ``Cookie`` are dropped when a redirect leaves the
    origin. A redirect status without ``Location`` is returned as is.

    Raises :class:`TooManyRedirects`, :class:`ResponseTooLarge`, :class:`AddressRefused`, or the
    usual ``aiohttp.ClientError`` / ``TimeoutError``.
    """
    current = URL(url) if not isinstance(url, URL) else url
    hdrs: CIMultiDict[str] = CIMultiDict(headers or {})
    history: list[URL] = []
    method = method.upper()
    body = data
    origin = current.origin() if current.absolute else None
    while True:
        if current.scheme not in allowed_schemes:
            raise TooManyRedirects(f"refusing URL scheme {current.scheme!r}: {current}")
        async with session.request(method, current, headers=hdrs, data=body, allow_redirects=False) as resp:
            location = resp.headers.get("Location")
            if resp.status in _REDIRECT_STATUSES and location:
                resp.release()
                if len(history) >= max_redirects:
                    raise TooManyRedirects(f"{url}: more than {max_redirects} redirects (last: {current})")
                history.append(current)
                target = current.join(URL(location))
                if target.scheme not in allowed_schemes:
                    raise TooManyRedirects(f"{current}: refusing redirect to scheme {target.scheme!r}")
                if resp.status in (301, 302, 303) and method not in ("GET", "HEAD"):
                    method, body = "GET", None
                    hdrs.popall("Content-Type", None)
                if target.origin() != origin:
                    hdrs.popall("Authorization", None)
                    hdrs.popall("Cookie", None)
                    origin = target.origin()
                current = target
                continue
            content = b"" if method == "HEAD" else await _read_limited(resp, max_bytes)
            return FetchResult(resp.status, resp.headers, resp.url, content, history)
