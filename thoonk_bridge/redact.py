"""Secrets never shown: the one place that decides what of a URL or a long value may be printed.

- :func:`redact_url`: a URL without its secrets. User info (``user:password@``, or a token used as
  user name) becomes ``***@``; every query value becomes ``***`` (keys stay, so an operator can tell
  which option was meant), except the non-secret connection options of a Redis URL
  (``socket_timeout``, ``db``...); a fragment becomes ``#***``. Scheme, host, port and path stay.
- :func:`redact_text`: the same for every URL inside a free text (an error message, a log field).
- :func:`redact_data`: :func:`redact_text` over every string (and mapping key) of nested data, for
  JSON bodies such as ``/readyz``.
- :func:`shorten`: a value cut to a printable size, saying how much was left out.

:func:`redact_url` lives in the Thoonk core (:mod:`thoonk_bridge.thoonk.redact`: its Redis clients
use it) and is re-exported here. Used by the config errors, the CLI's output, the log processor
(``thoonk_bridge.logs``), the Redis client's messages and ``/readyz``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from thoonk_bridge.thoonk.redact import MASK, redact_url

__all__ = ["MASK", "redact_data", "redact_text", "redact_url", "shorten"]


# A URL inside free text: scheme://, then everything up to white space or a quote/bracket that
# usually ends a URL in a message (``'...'``, ``"..."``, ``<...>``).
_URL_IN_TEXT = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]{0,30}://[^\s'\"<>`]+")


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
