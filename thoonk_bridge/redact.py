"""Secrets never shown: the one place that decides what of a URL or a long value may be printed.

- :func:`redact_url`: a URL without its secrets. User info (``user:password@``, or a token used as
  user name) becomes ``***@``; every query value becomes ``***`` (keys stay, so an operator can tell
  which option was meant), except the non-secret connection options of a Redis URL
  (``socket_timeout``, ``db``...); a fragment becomes ``#***``. Scheme, host, port and path stay.
- :func:`redact_text`: the same for every URL inside a free text (an error message, a log field).
- :func:`redact_data`: :func:`redact_text` over every string (and mapping key) of nested data, for
  JSON bodies such as ``/readyz``.
- :func:`shorten`: a value cut to a printable size, saying how much was left out.

Used by the config errors, the CLI's output, the log processor (``thoonk_bridge.logs``), the Redis
client's messages and ``/readyz``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["MASK", "redact_data", "redact_text", "redact_url", "shorten"]

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

# A URL inside free text: scheme://, then everything up to white space or a quote/bracket that
# usually ends a URL in a message (``'...'``, ``"..."``, ``<...>``).
_URL_IN_TEXT = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]{0,30}://[^\s'\"<>`]+")


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


def redact_text(text: str) -> str:
    """``text`` with every URL in it passed through :func:`redact_url`."""
    if "://" not in text:
        return text
    return _URL_IN_TEXT.sub(_redact_match, text)


def _redact_match(match: re.Match[str]) -> str:
    # Punctuation that ends a sentence or closes a bracket around the URL is not part of it.
    url = match.group(0)
    end = len(url.rstrip(").,;:!?]}"))
    return redact_url(url[:end]) + url[end:]


def redact_data(value: Any) -> Any:
    """A copy of ``value`` (dicts, lists, tuples, strings...) with :func:`redact_text` applied to every
    string and mapping key; other values as they are."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {redact_text(k) if isinstance(k, str) else k: redact_data(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_data(v) for v in value]
    if isinstance(value, tuple):
        return tuple(redact_data(v) for v in value)
    return value


def shorten(text: str, limit: int = 300) -> str:
    """``text`` if it has at most ``limit`` characters, else its head and tail around a note of how
    many characters were left out (so a 50 MB value never lands whole in a message)."""
    if len(text) <= limit:
        return text
    head = limit * 2 // 3
    tail = limit - head
    return f"{text[:head]}[... {len(text) - head - tail} characters left out ...]{text[-tail:]}"
