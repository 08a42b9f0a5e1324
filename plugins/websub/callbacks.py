"""The subscriber's callbacks (any daemon of the fleet answers them): ``GET`` for the
verification of intent (§5.3), ``POST`` for content distribution (§7) into the route's inbox."""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Mapping
from typing import Any, Protocol

from aiohttp import web

from .deliveries import HASHES
from .errors import BadURL
from .metrics import Metrics
from .settings import WebSubSettings
from .store import cb_key, client_key, decode_hash, encode_body, inbox_key, s
from .urls import normalize_url

INBOX_MAX = 1000  # deliveries kept per subscription until its route turns them into events


class Waker(Protocol):
    """A subscriber route running on this daemon: woken when its subscription was verified."""

    def wake(self) -> None: ...


class Callbacks:
    """``GET`` (verification) and ``POST`` (content distribution) at ``{callback_path}/{id}``."""

    def __init__(self, redis: Any, settings: WebSubSettings, metrics: Metrics, log: Any,
                 sources: Mapping[str, Waker]) -> None:
        self.redis = redis
        self.settings = settings
        self.metrics = metrics
        self.log = log
        self.sources = sources  # the subscriber routes running here, by client key

    async def _client(self, request: web.Request) -> tuple[str, dict[str, str]] | None:
        cbid = request.match_info["cbid"]
        if len(cbid) > 100:
            return None
        key = s(await self.redis.get(cb_key(cbid)))
        if not key:
            return None
        state = decode_hash(await self.redis.hgetall(client_key(key)))
        if state.get("cbid") != cbid:
            return None
        return key, state

    async def verify(self, request: web.Request) -> web.Response:
        m = self.metrics
        found = await self._client(request)
        q = request.query
        mode, topic = q.get("hub.mode", ""), q.get("hub.topic", "")
        if found is None or not topic:
            m.received.labels(result="verify_unknown").inc()
            return web.Response(status=404, text="no such subscription\n")
        key, state = found
        if not _same_topic(topic, state.get("self", "")):
            m.received.labels(result="verify_unknown").inc()
            return web.Response(status=404, text="no such subscription\n")
        if mode == "denied":
            await self.redis.hset(client_key(key), mapping={"state": "denied", "pending": "",
                                                            "reason": q.get("hub.reason", "")[:500]})
            self.log.warning("websub.subscription_denied", topic=topic, reason=q.get("hub.reason", ""))
            m.received.labels(result="denied").inc()
            return web.Response(status=200, text="ok\n")
        challenge = q.get("hub.challenge", "")
        if mode not in ("subscribe", "unsubscribe") or mode != state.get("pending") or not challenge:
            m.received.labels(result="verify_unknown").inc()
            return web.Response(status=404, text="no such pending subscription\n")
        if mode == "subscribe":
            lease_text = q.get("hub.lease_seconds", "")
            lease = float(lease_text) if lease_text.isdigit() and int(lease_text) > 0 else 86400.0
            await self.redis.hset(client_key(key), mapping={"state": "active", "pending": "",
                                                            "lease": repr(lease), "verified": repr(time.time())})
        else:  # hub.lease_seconds is ignored on unsubscribe (§5.3)
            await self.redis.hset(client_key(key), mapping={"state": "unsubscribed", "pending": ""})
        m.received.labels(result=f"verified_{mode}").inc()
        local = self.sources.get(key)
        if local is not None:
            local.wake()
        return web.Response(status=200, body=challenge.encode(), content_type="text/plain")

    async def deliver(self, request: web.Request) -> web.Response:
        m = self.metrics
        found = await self._client(request)
        if found is None:
            m.received.labels(result="unknown").inc()
            return web.Response(status=410, text="no such subscription\n")
        key, state = found
        if state.get("state") == "unsubscribed":
            return web.Response(status=410, text="unsubscribed\n")
        limit = self.settings.max_delivery_bytes
        if request.content_length is not None and request.content_length > limit:
            m.received.labels(result="too_large").inc()
            return web.Response(status=413, text="too large\n")
        chunks, total = [], 0
        while chunk := await request.content.read(65536):
            total += len(chunk)
            if total > limit:
                m.received.labels(result="too_large").inc()
                return web.Response(status=413, text="too large\n")
            chunks.append(chunk)
        body = b"".join(chunks)
        secret = state.get("secret", "")
        if secret:
            header = request.headers.get("X-Hub-Signature", "")
            if not header:
                m.received.labels(result="missing_signature").inc()
                return web.Response(status=403, text="signature required\n")
            method, _, digest = header.partition("=")
            algo = HASHES.get(method.strip().lower())
            expected = hmac.new(secret.encode(), body, algo).hexdigest() if algo else ""
            # compared as bytes: compare_digest refuses non-ASCII str (a TypeError, i.e. a 500 before)
            given = digest.strip().lower().encode("utf-8", "surrogateescape")
            if not algo or not hmac.compare_digest(expected.encode("ascii"), given):
                m.received.labels(result="invalid_signature").inc()
                self.log.warning("websub.invalid_signature", topic=state.get("self"))
                return web.Response(status=202, text="received (signature invalid: ignored)\n")
        entry = json.dumps({"body": encode_body(body), "ctype": request.headers.get("Content-Type", ""),
                            "base": state.get("self"), "ts": time.time()})
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.lpush(inbox_key(key), entry)
            pipe.ltrim(inbox_key(key), 0, INBOX_MAX - 1)
            await pipe.execute()
        m.received.labels(result="accepted").inc()
        return web.Response(status=202, text="received\n")


def _same_topic(given: str, expected: str) -> bool:
    if not expected:
        return False
    if given == expected:
        return True
    try:
        return normalize_url(given) == normalize_url(expected)
    except BadURL:
        return False


__all__ = ["INBOX_MAX", "Callbacks"]
