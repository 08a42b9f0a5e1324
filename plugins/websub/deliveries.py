"""Distribution: content notifications to subscribers, as Thoonk jobs (§7), and publish pings.

Flow for one change of a topic:

1. ``distribute(topic)``: render the topic once; when the body (with its content type) differs from
   the last distribution, store it under its hash (``websub:body:{T}sha256``), bump the topic's
   sequence number and queue one ``websub.fanout`` job.
2. fanout job: list the topic's subscriptions whose lease has not ended and queue one
   ``websub.deliver`` job per ``delivery_batch`` of them.
3. deliver job: POST the body to each callback of the batch, concurrently (at most
   ``per_host_concurrency`` per callback host), with the topic's exact Content-Type, one combined
   ``Link: <hub>; rel="hub", <self>; rel="self"`` header and, for a subscription with a secret, an
   ``X-Hub-Signature``. Redirects are not followed; only 2xx is success; ``410 Gone`` ends the
   subscription. Outcomes are recorded on each subscription. The failed ones are put into one new item
   in ``websub:retry`` (due after an exponential backoff, jittered in [d/2, d]) until ``retry_window`` has
   passed since the first attempt; then that notification is dropped for them (counted), the
   subscriptions stay. A retry of a notification that a newer distribution of the same topic has
   superseded is dropped too: the newer one carries the full content.

A daemon that dies mid-job leaves the job claimed; job maintenance puts it back after
``job_timeout`` and another daemon sends it (at-least-once: a callback may see a notification twice).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from thoonk_bridge.backoff import Backoff

from .jobs import JobQueue
from .limits import HostSlots
from .metrics import Metrics
from .sessions import Sessions
from .settings import WebSubSettings
from .store import HubStore, Subscription
from .urls import exact, host_of

Render = Callable[[str], Awaitable["tuple[bytes, str] | None"]]

HASHES = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "sha384": hashlib.sha384, "sha512": hashlib.sha512}


def sign(method: str, secret: str, body: bytes) -> str:
    return f"{method}={hmac.digest(secret.encode('utf-8'), body, method).hex()}"


@dataclass
class Breaker:
    """Per callback host: consecutive failures; when open, the host is left alone until ``until``."""

    failures: int = 0
    until: float = 0.0
    cooldown: float = 0.0


@dataclass
class DeliverItem:
    topic: str
    seq: int
    hash: str
    ctype: str
    ts: float  # when the change was distributed (for the latency metric)
    sids: list[str]
    attempt: int = 0
    first: float = 0.0  # first attempt

    def dumps(self) -> str:
        return json.dumps(self.__dict__, separators=(",", ":"))

    @classmethod
    def loads(cls, text: str) -> DeliverItem:
        return cls(**json.loads(text))


@dataclass
class PingItem:
    hub: str
    url: str
    attempt: int = 0
    first: float = 0.0

    def dumps(self) -> str:
        return json.dumps(self.__dict__, separators=(",", ":"))


class Distributor:
    """Distribution of topic changes (see the module's docstring); one per plugin.

    Receives what it uses: ``store`` (Redis), ``queues`` (the job feeds), ``sessions`` (the HTTP
    clients: ``delivery`` for content, ``control`` for pings), ``metrics``, ``settings``, ``log``,
    ``render(topic)`` (a topic's current body and content type, None when unknown) and ``hub_url``
    (the hub named in every delivery's ``Link`` header).
    """

    max_breakers = 10000  # callback hosts with a breaker at once (the oldest forgotten beyond)

    def __init__(self, store: HubStore, queues: Mapping[str, JobQueue], sessions: Sessions, metrics: Metrics,
                 settings: WebSubSettings, *, log: Any, render: Render, hub_url: str | None) -> None:
        self.store = store
        self.queues = queues
        self.sessions = sessions
        self.metrics = metrics
        self.settings = settings
        self.log = log
        self.render = render
        self.hub_url = hub_url
        self.breakers: dict[str, Breaker] = {}  # oldest first, at most max_breakers
        self.host_slots = HostSlots(settings.per_host_concurrency)
        self.bodies: OrderedDict[str, bytes] = OrderedDict()
        self.slots = asyncio.Semaphore(200)  # POSTs in flight (set from the settings when the plugin starts)

    # ---------------------------------------------------------------- 1. a change

    async def distribute(self, topic: str, found: tuple[bytes, str] | None = None) -> bool:
        """Queue the distribution of ``topic``'s content; False when unchanged or unknown.

        ``found``: the new body and content type, when the change brought them (else rendered).
        """
        if found is None:
            found = await self.render(topic)
        if found is None:
            return False
        body, ctype = found
        ttl = self.settings.retry_window + 2 * self.settings.retry_max_delay + self.settings.job_timeout + 3600
        nxt = await self.store.next_distribution(topic, body, ctype, ttl)
        if nxt is None:
            self.metrics.distributions.labels(result="unchanged").inc()
            return False
        seq, digest = nxt
        self._remember(digest, body)
        item = {"topic": topic, "seq": seq, "hash": digest, "ctype": ctype, "ts": time.time()}
        await self.queues["websub.fanout"].put(json.dumps(item, separators=(",", ":")))
        self.metrics.distributions.labels(result="queued").inc()
        return True

    def _remember(self, digest: str, body: bytes) -> None:
        self.bodies[digest] = body
        self.bodies.move_to_end(digest)
        while len(self.bodies) > 32:
            self.bodies.popitem(last=False)

    async def _body(self, topic: str, digest: str) -> bytes | None:
        body = self.bodies.get(digest)
        if body is None:
            body = await self.store.body(topic, digest)
            if body is not None:
                self._remember(digest, body)
        return body

    # ---------------------------------------------------------------- 2. fan-out

    async def run_fanout(self, text: str) -> None:
        d = json.loads(text)
        sids = await self.store.active_sids(d["topic"])
        n = self.settings.delivery_batch
        items = [
            DeliverItem(d["topic"], d["seq"], d["hash"], d["ctype"], d["ts"], sids[i:i + n]).dumps()
            for i in range(0, len(sids), n)
        ]
        if items:
            await self.queues["websub.deliver"].put_many(items)
        self.log.debug("websub.fanout", topic=d["topic"], subscribers=len(sids), jobs=len(items))

    # ---------------------------------------------------------------- 3. deliveries

    async def run_delivery(self, text: str) -> None:
        item = DeliverItem.loads(text)
        m = self.metrics
        store = self.store
        now = time.time()
        if item.first == 0.0:
            item.first = now
        if item.attempt > 0 and await store.topic_seq(item.topic) > item.seq:
            m.drops.labels(reason="superseded").inc(len(item.sids))
            return
        body = await self._body(item.topic, item.hash)
        if body is None:
            m.drops.labels(reason="body_expired").inc(len(item.sids))
            self.log.warning("websub.body_expired", topic=item.topic)
            return
        subs = await store.get_many(item.sids)
        live = [sub for sid in item.sids if (sub := subs.get(sid)) is not None and sub.expires > now]
        gone = len(item.sids) - len(live)
        if gone:
            m.drops.labels(reason="unsubscribed_or_expired").inc(gone)
        link = f'<{self.hub_url}>; rel="hub", <{item.topic}>; rel="self"'
        outcomes = await asyncio.gather(*(self._post(sub, body, item, link) for sub in live))
        done = time.time()
        results: list[tuple[str, int | None, bool]] = []
        failed: list[str] = []
        for sub, (status, ok, attempted) in zip(live, outcomes, strict=True):
            if status == 410:
                await store.remove(sub.sid, sub.topic)
                m.deliveries.labels(result="gone").inc()
                self.log.info("websub.gone", topic=sub.topic, callback_host=host_of(sub.callback))
                continue
            if attempted:
                results.append((sub.sid, status, ok))
            if ok:
                m.deliveries.labels(result="ok").inc()
                m.latency.observe(max(0.0, done - item.ts))
            else:
                if attempted:
                    m.deliveries.labels(result="failed").inc()
                failed.append(sub.sid)
        await store.record_results(results, done)
        if failed:
            await self._retry_later(item, failed, done)

    async def _retry_later(self, item: DeliverItem, sids: list[str], now: float) -> None:
        st = self.settings
        m = self.metrics
        delay = Backoff(st.retry_base, st.retry_max_delay, jitter=0.5).delay(item.attempt)
        due = now + delay
        if due - item.first > st.retry_window:
            m.drops.labels(reason="retries_exhausted").inc(len(sids))
            self.log.info("websub.dropped", topic=item.topic, subscribers=len(sids),
                                 attempts=item.attempt + 1)
            return
        retry = DeliverItem(item.topic, item.seq, item.hash, item.ctype, item.ts, sids, item.attempt + 1,
                            item.first)
        await self.store.schedule_retry("websub.deliver", retry.dumps(), due)
        m.retries.inc(len(sids))

    async def _post(self, sub: Subscription, body: bytes, item: DeliverItem, link: str
                    ) -> tuple[int | None, bool, bool]:
        """(status, success, attempted): not attempted while the host's breaker is open."""
        host = host_of(sub.callback)
        br = self.breakers.get(host)
        now = time.time()
        if br is not None and br.until > now:
            self.metrics.deliveries.labels(result="deferred").inc()
            return None, False, False
        headers = {"Content-Type": item.ctype, "Link": link}
        if sub.secret:
            method = self.settings.signature
            if method == "sha1" and not sub.callback.startswith("https:"):
                method = "sha256"  # §8.3: SHA-1 only where TLS protects the body; sha256 or stronger otherwise
            headers["X-Hub-Signature"] = sign(method, sub.secret, body)
        status: int | None = None
        try:
            async with self.host_slots.hold(host), self.slots:
                async with self.sessions.delivery.post(
                    exact(sub.callback), data=body, headers=headers, allow_redirects=False
                ) as resp:
                    status = resp.status
                    await resp.content.read(4096)  # the body is ignored (§7)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            self.log.info("websub.delivery_error", callback_host=host, error=str(exc) or type(exc).__name__)
        ok = status is not None and 200 <= status < 300
        self._breaker(host, ok or status == 410)
        return status, ok, True

    def _breaker(self, host: str, ok: bool) -> None:
        st = self.settings
        br = self.breakers.get(host)
        if ok:
            if br is not None:
                del self.breakers[host]
            return
        if br is None:
            while len(self.breakers) >= self.max_breakers:  # many failing hosts: forget the oldest
                del self.breakers[next(iter(self.breakers))]
            br = self.breakers[host] = Breaker()
        br.failures += 1
        if br.failures >= st.breaker_threshold:
            br.cooldown = min(st.breaker_max_cooldown, br.cooldown * 2 if br.cooldown else st.breaker_cooldown)
            br.until = time.time() + br.cooldown
            br.failures = 0
            self.metrics.breaker_opened.inc()
            self.log.warning("websub.breaker_open", callback_host=host, cooldown=br.cooldown)

    # ---------------------------------------------------------------- publish pings (publisher side)

    async def queue_pings(self, topic_url: str) -> None:
        for hub in self.settings.publish_hubs:
            await self.queues["websub.ping"].put(PingItem(hub, topic_url, 0, time.time()).dumps())

    async def run_ping(self, text: str) -> None:
        item = PingItem(**json.loads(text))
        status: int | None = None
        try:
            async with self.sessions.control.post(
                exact(item.hub), data={"hub.mode": "publish", "hub.url": item.url}, allow_redirects=False
            ) as resp:
                status = resp.status
                await resp.content.read(4096)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            self.log.info("websub.ping_error", hub=item.hub, error=str(exc) or type(exc).__name__)
        m = self.metrics
        if status is not None and 200 <= status < 300:
            m.pings.labels(result="ok").inc()
            return
        m.pings.labels(result="failed").inc()
        now = time.time()
        due = now + Backoff(self.settings.retry_base, self.settings.retry_max_delay, jitter=0.5).delay(item.attempt)
        if due - item.first > self.settings.ping_retry_window:
            m.drops.labels(reason="ping_retries_exhausted").inc()
            self.log.warning("websub.ping_dropped", hub=item.hub, url=item.url)
            return
        item.attempt += 1
        await self.store.schedule_retry("websub.ping", item.dumps(), due)
