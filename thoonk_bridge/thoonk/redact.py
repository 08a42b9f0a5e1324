"""URLs without their secrets: the one function that decides what of a URL may be printed.

:func:`redact_url`: user info (``user:password@``, or a token used as user name) becomes ``***@``;
every query value becomes ``***`` (keys stay, so an operator can tell which option was meant), except
the non-secret connection options of a Redis URL (``socket_timeout``, ``db``...); a fragment becomes
``#***``. Scheme, host, port and path stay.

In the Thoonk core because its Redis clients name their server in messages
(:mod:`thoonk_bridge.thoonk.redis_client`); the application's :mod:`thoonk_bridge.redact` re-exports
it and adds the text and data helpers built on it.
"""

from __future__ import annotations

__all__ = ["MASK", "redact_url"]

MASK = "***"

# Query options of a Redis URL that carry no secret (redis-py's own URL options and ours); every
# other value (``password``, ``sentinel_password``, anything unknown) is masked.
_REDIS_SCHEMES = frozenset({"redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel",
                            "redis+cluster", "rediss+cluster"})
_REDIS_PLAIN_OPTIONS = frozenset({
    "db", "socket_timeout", "socket_connect_timeout", "socket_keepalive", "retry_on_timeout",
    "max_connections", "health_check_interval", "ssl_check_hostname", "ssl_cert_reqs", "protocol",
    "timeout", "client_name",
})


def redact_url(url: str) -> str:
    """``url`` without user info, query values (but a Redis URL's plain options) or fragment.

    Never raises. Split by hand rather than with ``urlsplit`` so that a password holding an
    unescaped ``#`` or ``?`` (``redis://:p#ss@host``) is masked whole, not cut at that character.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    cut = rest.find("/")
    authority, remainder = (rest, "") if cut < 0 else (rest[:cut], rest[cut:])
    if "@" in authority:
        authority = f"{MASK}@{authority.rpartition('@')[2]}"
    # what follows the host: [/path][?query][#fragment] (the host part may hold ? or # when no / follows)
    for mark in "?#":
        if mark in authority:
            authority, _, extra = authority.partition(mark)
            remainder = mark + extra + remainder
            break
    remainder, hashmark, fragment = remainder.partition("#")
    path, qmark, query = remainder.partition("?")
    out = f"{scheme}://{authority}{path}"
    if qmark:
        out += "?" + _redact_query(query, scheme.lower() in _REDIS_SCHEMES)
    if hashmark:
        out += "#" + (MASK if fragment else "")
    return out


def _redact_query(query: str, redis_url: bool) -> str:
    if not query:
        return ""
    out = []
    for pair in query.split("&"):
        key, eq, _value = pair.partition("=")
        if not eq:  # a bare word (``?TOKEN``) is a value
            out.append(MASK if pair else pair)
        elif redis_url and key in _REDIS_PLAIN_OPTIONS:
            out.append(pair)
        else:
            out.append(f"{key}={MASK}")
    return "&".join(out)
