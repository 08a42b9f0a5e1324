"""URL helpers shared by the hub and the subscriber."""

from __future__ import annotations

import functools
import re
import string
from urllib.parse import urlencode, urlsplit, urlunsplit

from yarl import URL

from .errors import BadURL

_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")
_PCT = re.compile(r"%([0-9A-Fa-f]{2})")
# characters a URL may carry as they are (RFC 3986 reserved + unreserved + '%')
_URL_SAFE = re.compile(r"^[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+$")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _decode_unreserved(part: str) -> str:
    def repl(m: re.Match[str]) -> str:
        ch = chr(int(m.group(1), 16))
        return ch if ch in _UNRESERVED else "%" + m.group(1).upper()

    return _PCT.sub(repl, part)


def normalize_url(url: str) -> str:
    """Canonical form used to compare topic URLs (RFC 3986 §6.2.2 syntax-based normalization).

    Percent-encoded unreserved characters are decoded (§5.1.1 of WebSub), other escapes uppercased,
    scheme and host lowercased, a default port dropped, an empty path made ``/``; the fragment goes.
    """
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise BadURL(f"not a valid URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise BadURL("not an absolute http(s) URL")
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port is None or port == _DEFAULT_PORTS[scheme] else f"{host}:{port}"
    if parts.username is not None or parts.password is not None:
        raise BadURL("user information in URLs is not allowed")
    path = _decode_unreserved(parts.path) or "/"
    query = _decode_unreserved(parts.query)
    return urlunsplit((scheme, netloc, path, query, ""))


def check_callback(url: str) -> str:
    """A callback URL as it will be used (kept byte for byte when it is already well-formed)."""
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise BadURL("hub.callback contains spaces or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise BadURL(f"hub.callback is not a valid URL: {exc}") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise BadURL("hub.callback must be an absolute http or https URL")
    if parts.fragment or url.endswith("#"):
        raise BadURL("hub.callback must not have a fragment")
    if parts.username is not None or parts.password is not None:
        raise BadURL("hub.callback must not carry user information")
    if not _URL_SAFE.match(url):
        url = str(URL(url))  # percent-encode what must be
    return url


@functools.lru_cache(maxsize=4096)
def host_of(url: str) -> str:
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""


def with_params(url: str, params: list[tuple[str, str]]) -> URL:
    """``url`` with ``params`` appended to its query string (existing parameters kept as they are)."""
    extra = urlencode(params)
    if "?" in url:
        sep = "" if url.endswith(("?", "&")) else "&"
    else:
        sep = "?"
    return URL(url + sep + extra, encoded=True)


@functools.lru_cache(maxsize=4096)
def exact(url: str) -> URL:
    """The URL exactly as given (already checked and encoded)."""
    return URL(url, encoded=True)
