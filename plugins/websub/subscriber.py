"""The subscriber: ``from: websub:https://topic.example/feed`` routes (outside topics into Thoonk).

- Discovery (§4): GET the topic (following 301/302), then ``Link`` headers first; only when they
  name no hub, the body: Atom ``<link>``, RSS ``<atom:link>`` (also when served as ``text/xml``),
  or the ``<link>`` elements of an HTML ``<head>``. ``hub.topic`` is the discovered ``rel=self``.
- Subscription (§5.1): ``POST`` to the hub with an unguessable per-subscription callback URL
  (``{public_url}{callback_path}/{id}``, 192 random bits) and a random 64-character secret;
  307/308 from the hub are followed by re-POSTing to ``Location``.
- Verification (§5.3): only a pending (un)subscription with the exact topic gets its challenge
  echoed; anything else gets 404. ``hub.mode=denied`` is honoured at any time.
- Renewal at ``renew_at`` (80 %) of the lease, with the same callback (see docs/websub.md for why).
- Deliveries (§7): 2xx means received. With a secret, a missing ``X-Hub-Signature`` gets 403, an
  invalid one is acknowledged (202) and dropped; the signature is compared in constant time over the
  raw body. Accepted bodies go to a Redis list (so the receipt survives a restart) and the route's
  ``follow()`` turns them into events: Atom/RSS/JSON Feed through ``thoonk_bridge.feedparse``,
  anything else as one item whose id is the hash of the body.
- Polling fallback: with no delivery for ``poll_after`` (or while the hub refuses or denied),
  ``follow()`` raises :class:`Resync`; the router's new ``snapshot()`` fetches the topic directly.
- All state is in Redis (``websub:client:{key}``), so a restarted daemon resumes without
  re-subscribing while the lease is good.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urljoin

import aiohttp

from thoonk_bridge.backoff import Backoff
from thoonk_bridge.feedparse import FeedParseError, in_parser_thread, parse_feed_async
from thoonk_bridge.net import FetchError, fetch_limited
from thoonk_bridge.payload import content_hash
from thoonk_bridge.plugin import Endpoint, EventKind, ItemEvent, Resync, RouteContext, Source
from thoonk_bridge.tasks import cancel_and_wait

from .callbacks import INBOX_MAX, Callbacks
from .discovery import discover_links, parse_link_header
from .sessions import Sessions
from .settings import WebSubSettings, WebSubSourceOptions
from .store import (
    SEEN_PER_ENTRY_CAP,
    cb_key,
    client_key,
    decode_body,
    decode_hash,
    inbox_key,
    s,
    seen_key,
)
from .urls import exact

MAX_HUB_REDIRECTS = 5


# ------------------------------------------------------------------------- the source


class WebSubSource(Source):
    absence = "unknown"  # a topic's document shows its latest entries: one gone from it was not retracted

    def __init__(self, endpoint: Endpoint[WebSubSourceOptions], route: RouteContext, *, redis: Any,
                 settings: WebSubSettings, sessions: Sessions, sources: dict[str, WebSubSource],
                 public_url: str) -> None:
        self.redis = redis
        self.settings = settings
        self.sessions = sessions
        self.sources = sources  # the subscriber routes running here, by client key (the callbacks wake them)
        self.public_url = public_url
        self.options = endpoint.options
        self.route = route
        self.topic = self.options.address
        self.key = hashlib.sha256(f"{route.name}\x00{self.topic}".encode()).hexdigest()[:24]
        self.log = route.log.bind(plugin="websub", topic=self.topic)
        self.session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._last_data = time.time()
        self._wake = asyncio.Event()
        self._snapshot_state = ""  # the subscription's state when the last snapshot was taken
        self.checks = 0  # rounds of the upkeep loop so far (tests wait on it)

    async def state(self) -> dict[str, str]:
        return decode_hash(await self.redis.hgetall(client_key(self.key)))

    async def open(self) -> None:
        policy = self.options.outbound or self.settings.outbound
        self.session = self.sessions.make(policy, self.settings.fetch_timeout)
        await self.redis.hset(client_key(self.key), mapping={"topic_url": self.topic, "route": self.route.name})
        self._last_data = time.time()
        self.sources[self.key] = self
        self._task = asyncio.create_task(self._maintain(), name=f"websub-subscriber-{self.route.name}")

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        if self.sources.get(self.key) is self:
            del self.sources[self.key]
        if self.session is not None:
            await self.session.close()
            self.session = None

    def wake(self) -> None:
        self._wake.set()

    # -- subscription upkeep

    async def _maintain(self) -> None:
        failures = 0
        st = self.settings
        while True:
            state = await self.state()
            now = time.time()
            wait = 1.0
            try:
                mode = state.get("state", "")
                if mode == "denied":
                    wait = self.options.poll_after
                elif mode == "active":
                    lease = float(state.get("lease") or 0)
                    verified = float(state.get("verified") or 0)
                    renew = verified + st.renew_at * lease
                    if now >= renew and state.get("pending") != "subscribe":
                        await self.subscribe()
                        wait = 1.0
                    elif now >= renew:  # a renewal waiting for its verification
                        if now - float(state.get("requested") or 0) > st.verify_timeout * 6:
                            await self.subscribe()
                        wait = 1.0
                    else:
                        wait = renew - now
                elif mode == "pending" and now - float(state.get("requested") or 0) < st.verify_timeout * 6:
                    wait = 1.0  # the verification may arrive at another daemon: look again soon
                elif mode == "unsubscribed":
                    wait = 3600.0
                else:  # new, failed, or a pending request that was never verified
                    await self.subscribe()
                    failures = 0
                    wait = 1.0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - report, back off, try again
                failures += 1
                wait = Backoff(st.retry_base, st.retry_max_delay, jitter=0).delay(failures)
                self.log.warning("websub.subscribe_failed", error=f"{type(exc).__name__}: {exc}", retry_in=wait)
                await self.redis.hset(client_key(self.key), mapping={"state": "failed", "error": str(exc)[:500]})
            self.checks += 1
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=max(0.05, min(wait, 3600)))
            except TimeoutError:
                pass

    async def discover(self) -> tuple[list[str], str, str]:
        assert self.session is not None
        res = await fetch_limited(self.session, "GET", self.topic, max_bytes=self.settings.max_delivery_bytes,
                                  headers={"Accept": "application/atom+xml, application/rss+xml, "
                                           "application/feed+json, text/html;q=0.8, */*;q=0.5"})
        if not 200 <= res.status < 300:
            raise FetchError(f"topic {self.topic} answered {res.status}")
        base = str(res.url)
        # An outsider's document of up to max_delivery_bytes (a DOM of it, or HTML): off the loop.
        hubs, self_url, where = await in_parser_thread(lambda: discover_links(res.headers, res.body, base))
        if not hubs:
            raise FetchError(f"topic {self.topic} advertises no WebSub hub")
        return hubs, self_url or base, where

    async def subscribe(self, mode: str = "subscribe") -> None:
        assert self.session is not None
        hubs, self_url, where = await self.discover()
        state = await self.state()
        cbid = state.get("cbid") or secrets.token_urlsafe(24)
        wanted = self.options.secret is True or (self.options.secret == "https" and hubs[0].startswith("https:"))
        secret = (state.get("secret") or secrets.token_hex(32)) if wanted else ""
        callback = f"{self.public_url}{self.settings.callback_path}/{cbid}"
        fields = {
            "cbid": cbid,
            "hub": hubs[0],
            "self": self_url,
            "pending": mode,
            "requested": repr(time.time()),
            "discovered_in": where,
        }
        if secret:
            fields["secret"] = secret
        if state.get("state") != "active":
            fields["state"] = "pending"
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(client_key(self.key), mapping=fields)
            pipe.set(cb_key(cbid), self.key)
            await pipe.execute()
        form = {"hub.mode": mode, "hub.topic": self_url, "hub.callback": callback}
        if secret and mode == "subscribe":
            form["hub.secret"] = secret
        if self.options.lease_seconds and mode == "subscribe":
            form["hub.lease_seconds"] = str(self.options.lease_seconds)
        last_error = ""
        for hub in hubs:
            status, final = await self._post_hub(hub, form)
            if 200 <= status < 300:
                if final != hubs[0]:
                    await self.redis.hset(client_key(self.key), "hub", final)
                self.log.info("websub.subscription_requested", hub=final, mode=mode, discovered_in=where)
                return
            last_error = f"hub {final} answered {status}"
        raise FetchError(last_error)

    async def _post_hub(self, hub: str, form: dict[str, str]) -> tuple[int, str]:
        assert self.session is not None
        url = hub
        for _ in range(MAX_HUB_REDIRECTS + 1):
            async with self.session.post(exact(url) if "%" in url else url, data=form,
                                         allow_redirects=False) as resp:
                await resp.content.read(4096)
                location = resp.headers.get("Location")
                if resp.status in (307, 308) and location:
                    url = urljoin(url, location)
                    if not url.startswith(("http://", "https://")):
                        return resp.status, url
                    continue
                return resp.status, url
        return 310, url

    async def unsubscribe(self) -> None:
        """Ask the hub to end the subscription (used when a route is removed for good)."""
        await self.subscribe("unsubscribe")

    # -- items

    async def _parse(self, body: bytes, ctype: str, base: str | None) -> list[tuple[str, str]]:
        limit = self.settings.max_delivery_entries
        try:
            # Seconds of pure-Python work for a big document: on the parser threads, never the loop.
            parsed = await parse_feed_async(body, ctype, fmt=self.route.format or "json", base_url=base,
                                            max_bytes=self.settings.max_delivery_bytes, max_entries=limit)
        except FeedParseError:
            text = body.decode("utf-8", "replace")
            return [("sha256:" + hashlib.sha256(body).hexdigest(), text)]
        if parsed.ignored_entries:
            self.log.warning("websub.entries_ignored", reason="document has more entries than max_delivery_entries",
                             kept=limit, ignored=parsed.ignored_entries)
        return parsed.items

    async def snapshot(self) -> list[tuple[str, str]]:
        """The topic fetched directly (also the polling fallback)."""
        assert self.session is not None
        state = await self.state()
        url = state.get("self") or self.topic
        res = await fetch_limited(self.session, "GET", url, max_bytes=self.settings.max_delivery_bytes)
        if not 200 <= res.status < 300:
            raise FetchError(f"topic {url} answered {res.status}")
        items = await self._parse(res.body, res.headers.get("Content-Type", ""), str(res.url))
        self._last_data = time.time()
        self._snapshot_state = state.get("state", "")
        await self._mark_seen(items, replace=True)
        return items

    async def _mark_seen(self, items: list[tuple[str, str]], replace: bool = False) -> list[ItemEvent]:
        key = seen_key(self.key)
        known = decode_hash(await self.redis.hgetall(key)) if items or replace else {}
        events = []
        mapping = {}
        for item_id, payload in items:
            h = content_hash(payload)
            old = known.get(item_id)
            if old is None:
                events.append(ItemEvent(EventKind.PUBLISH, item_id, payload))
            elif old != h:
                events.append(ItemEvent(EventKind.EDIT, item_id, payload))
            mapping[item_id] = h
        if self.route.mirror and replace:
            pass  # the router retracts what a snapshot no longer has
        elif self.route.mirror and items:
            present = {i for i, _ in items}
            for gone in [i for i in known if i not in present]:
                events.append(ItemEvent(EventKind.RETRACT, gone))
                await self.redis.hdel(key, gone)
        # Bounded: past SEEN_PER_ENTRY_CAP times the entries a document may carry, only what this
        # document holds is kept (an entry forgotten and seen again is one idempotent upsert more).
        replace = replace or len(known) > SEEN_PER_ENTRY_CAP * self.settings.max_delivery_entries
        async with self.redis.pipeline(transaction=True) as pipe:
            if replace:
                pipe.delete(key)
            if mapping:
                pipe.hset(key, mapping=mapping)
            await pipe.execute()
        return events

    async def follow(self) -> AsyncIterator[ItemEvent]:
        inbox = inbox_key(self.key)
        processing = inbox + ":processing"
        # a delivery taken but not finished before a restart goes first
        while True:
            raw = await self.redis.lindex(processing, -1)
            if raw is None:
                raw = await self.redis.blmove(inbox, processing, 1.0, "RIGHT", "LEFT")
            if raw is None:
                state = await self.state()
                if state.get("state") == "active" and self._snapshot_state != "active":
                    # pushes start now: what changed between the last snapshot and the verification
                    # would otherwise wait for the next change
                    self._snapshot_state = "active"
                    raise Resync("subscription verified: reconciling once")
                quiet = time.time() - self._last_data
                if quiet >= self.options.poll_after or (
                    state.get("state") in ("denied", "failed") and quiet >= min(self.options.poll_after, 60)
                ):
                    self._last_data = time.time()
                    raise Resync(f"no delivery for {quiet:.0f}s (subscription {state.get('state', 'new')}): polling")
                continue
            self._last_data = time.time()
            try:
                d = json.loads(s(raw))
                body = decode_body(d["body"]) or b""
                items = await self._parse(body, d.get("ctype", ""), d.get("base"))
            except Exception as exc:  # noqa: BLE001 - a bad stored entry must not stop the route
                self.log.warning("websub.bad_delivery", error=str(exc))
                items = []
            for event in await self._mark_seen(items):
                yield event
            await self.redis.lrem(processing, -1, raw)


__all__ = [  # the callbacks, discovery and key names re-exported: tests and older imports use them here
    "INBOX_MAX",
    "SEEN_PER_ENTRY_CAP",
    "Callbacks",
    "WebSubSource",
    "cb_key",
    "client_key",
    "discover_links",
    "inbox_key",
    "parse_link_header",
    "seen_key",
]
