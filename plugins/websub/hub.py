"""The hub's HTTP side: subscription requests and publish pings at ``POST {hub_path}``, and verification.

Per the W3C WebSub Recommendation (§5.1-§5.3): the request is checked synchronously (4xx with a
plain-text reason for malformed requests), answered ``202 Accepted``, and verified afterwards by a
``websub.verify`` Thoonk job, so the response never depends on the verification's outcome. The
subscription's state changes only once the subscriber echoed a fresh single-use challenge.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import math
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import aiohttp
from aiohttp import web

from thoonk_bridge.net import address_refusal

from .errors import BadURL, HubError
from .jobs import JobQueue
from .limits import HostSlots, RateLimiter, client_address
from .metrics import Metrics
from .sessions import Sessions
from .settings import WebSubSettings
from .store import HubStore, sub_id
from .urls import check_callback, host_of, normalize_url, with_params
from .workers import Workers

MAX_SECRET_BYTES = 200  # hub.secret MUST be less than 200 bytes (§5.1)
MAX_FIELDS = 100
_WHAT = {"client": "client address", "host": "callback host", "callback": "callback"}


def text_response(status: int, text: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=text + "\n", content_type="text/plain", headers=headers)


async def read_form(request: web.Request, max_bytes: int, max_param: int) -> list[tuple[str, str]]:
    """The form parameters of a hub request, with every limit enforced (HubError otherwise)."""
    if request.content_type != "application/x-www-form-urlencoded":
        raise HubError(415, "Content-Type must be application/x-www-form-urlencoded")
    charset = (request.charset or "utf-8").lower()
    if charset not in ("utf-8", "utf8"):
        raise HubError(415, "the request body must be UTF-8")
    if request.content_length is not None and request.content_length > max_bytes:
        raise HubError(413, f"request body larger than {max_bytes} bytes")
    chunks: list[bytes] = []
    total = 0
    while True:
        chunk = await request.content.read(65536)
        if not chunk:
            break
        total += len(chunk)
        if total > max_bytes:
            raise HubError(413, f"request body larger than {max_bytes} bytes")
        chunks.append(chunk)
    try:
        text = b"".join(chunks).decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_FIELDS, encoding="utf-8",
                          errors="strict")
    except UnicodeDecodeError:
        raise HubError(400, "the request body is not valid UTF-8") from None
    except ValueError:
        raise HubError(400, f"too many parameters (at most {MAX_FIELDS})") from None
    for name, value in pairs:
        if len(name) > 200:
            raise HubError(400, "parameter name too long")
        if len(value) > max_param:
            raise HubError(400, f"{name} longer than {max_param} characters")
        if "\x00" in value:
            raise HubError(400, f"{name} contains a NUL character")
    return pairs


def single(pairs: list[tuple[str, str]], name: str, required: bool = False) -> str | None:
    values = [v for k, v in pairs if k == name]
    if not values or (len(values) == 1 and values[0] == "" and not required):
        if required:
            raise HubError(400, f"{name} is required")
        return None
    if len(set(values)) > 1:
        raise HubError(400, f"{name} given more than once with different values")
    if required and not values[0]:
        raise HubError(400, f"{name} is required")
    return values[0]


def publish_urls(pairs: list[tuple[str, str]]) -> list[str]:
    """``hub.url`` (repeatable), ``hub.url[]``, comma-separated lists, and ``hub.topic``."""
    urls: list[str] = []
    for name, value in pairs:
        if name in ("hub.url", "hub.url[]", "hub.topic"):
            for part in value.split(","):
                part = part.strip()
                if part and part not in urls:
                    urls.append(part)
    return urls


@dataclass(frozen=True)
class VerifyItem:
    mode: str  # subscribe | unsubscribe | denied
    topic: str  # as the subscriber gave it (echoed in the verification)
    topic_key: str  # normalized: the subscription's identity
    callback: str
    secret: str | None = None
    lease: float = 0.0
    reason: str = ""

    def dumps(self) -> str:
        return json.dumps(self.__dict__, separators=(",", ":"))

    @classmethod
    def loads(cls, text: str) -> VerifyItem:
        return cls(**json.loads(text))


class Hub:
    """The hub endpoint and the verifications of intent.

    Receives what it uses: ``settings``, ``store`` (subscriptions in Redis), ``queues`` (the job
    feeds), ``sessions`` (``control``: verification GETs), ``metrics``, ``workers`` (verifications
    run in tasks of their own), ``redis`` (rate limits), ``log``, ``serves(topic)`` (whether the
    hub serves a topic URL) and ``distribute(topic)`` (publish pings).
    """

    def __init__(self, settings: WebSubSettings, store: HubStore, queues: Mapping[str, JobQueue],
                 sessions: Sessions, metrics: Metrics, workers: Workers, *, redis: Any, log: Any,
                 serves: Callable[[str], Awaitable[bool]], distribute: Callable[[str], Awaitable[bool]]) -> None:
        self.settings = settings
        self.store = store
        self.queues = queues
        self.sessions = sessions
        self.metrics = metrics
        self.workers = workers
        self.log = log
        self.serves = serves
        self.distribute = distribute
        self.limiter = RateLimiter(redis)
        self.proxies = self.settings.proxy_networks()
        self.verify_hosts = HostSlots(self.settings.verify_per_host)
        self.verifying = 0  # verifications in flight here
        self._freed = asyncio.Event()  # a verification ended (a slot, maybe a host, is free)

    # ----------------------------------------------------------------- the endpoint

    async def handle(self, request: web.Request) -> web.Response:
        try:
            pairs = await read_form(request, self.settings.max_request_bytes, self.settings.max_param_chars)
            mode = single(pairs, "hub.mode", required=True)
            if mode in ("subscribe", "unsubscribe"):
                return await self._subscription(mode, pairs, request)
            if mode == "publish":
                return await self._publish(pairs, request)
            raise HubError(400, f"unsupported hub.mode {mode!r} (subscribe, unsubscribe or publish)")
        except HubError as err:
            self.metrics.requests.labels(result=str(err.status)).inc()
            return text_response(err.status, err.reason, err.headers)

    async def _subscription(self, mode: str, pairs: list[tuple[str, str]], request: web.Request) -> web.Response:
        callback_raw = single(pairs, "hub.callback", required=True)
        topic = single(pairs, "hub.topic", required=True)
        assert callback_raw is not None and topic is not None
        try:
            callback = check_callback(callback_raw)
        except BadURL as exc:
            raise HubError(400, str(exc)) from None
        try:
            topic_key = normalize_url(topic)
        except BadURL as exc:
            raise HubError(400, f"hub.topic: {exc}") from None
        host = host_of(callback)
        try:
            literal = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            literal = None
        if literal is not None:
            reason = address_refusal(literal, self.settings.outbound)
            if reason is not None:
                raise HubError(400, f"hub.callback refused by policy: {reason}")
        secret = None
        lease = 0.0
        if mode == "subscribe":
            secret = single(pairs, "hub.secret")
            if secret is not None and len(secret.encode("utf-8")) >= MAX_SECRET_BYTES:
                raise HubError(400, f"hub.secret must be less than {MAX_SECRET_BYTES} bytes")
            lease = self._lease(single(pairs, "hub.lease_seconds"))
        await self._admit(request, host, callback)
        if mode == "subscribe" and not await self.store.has_room(sub_id(topic_key, callback),
                                                                 self.settings.max_subscriptions):
            self.metrics.refusals.labels(reason="subscriptions_full").inc()
            raise HubError(429, "this hub holds as many subscriptions as it may; try again later",
                           {"Retry-After": "3600"})
        deny = ""
        if mode == "subscribe" and not await self.serves(topic_key):
            deny = "this hub does not serve that topic"
        item = VerifyItem(
            mode="denied" if deny else mode,
            topic=topic,
            topic_key=topic_key,
            callback=callback,
            secret=secret,
            lease=lease,
            reason=deny,
        )
        await self.queues["websub.verify"].put(item.dumps())
        self.metrics.requests.labels(result="202").inc()
        self.log.info("websub.request", mode=mode, topic=topic_key, callback_host=host,
                             denied=bool(deny))
        return text_response(202, "accepted: verification of intent follows")

    async def _admit(self, request: web.Request, host: str, callback: str) -> None:
        """Refuse (429) when the hub has too many verifications waiting, or when the client, the
        callback host or the callback asked too often in this window."""
        st = self.settings
        if await self.queues["websub.verify"].length() >= st.max_pending_verifications:
            self.metrics.refusals.labels(reason="pending_full").inc()
            raise HubError(429, "too many subscription requests waiting for verification; try again later",
                           {"Retry-After": str(max(1, math.ceil(2 * st.verify_timeout)))})
        await self._check_rates(request, [("host", host, st.subscribe_rate_per_host),
                                          ("callback", callback, st.subscribe_rate)])

    async def _check_rates(self, request: web.Request, limits: list[tuple[str, str, int]]) -> None:
        """Count the request against its client address, then ``limits``; 429 when over one."""
        st = self.settings
        client = client_address(request.remote, request.headers.get("X-Forwarded-For"), self.proxies)
        verdict = await self.limiter.check(st.subscribe_rate_window, st.rate_limit_max_keys,
                                           [("client", client, st.subscribe_rate_per_client), *limits])
        if verdict.allowed:
            return
        window = st.subscribe_rate_window
        retry_after = str(max(1, math.ceil(window - time.time() % window)))
        self.metrics.refusals.labels(reason=f"{verdict.kind}_table_full" if verdict.full
                                            else f"{verdict.kind}_rate").inc()
        if verdict.full:
            text = "too many different senders in this window; try again later"
        else:
            text = f"too many hub requests for this {_WHAT[verdict.kind]}; try again later"
        raise HubError(429, text, {"Retry-After": retry_after})

    def _lease(self, requested: str | None) -> float:
        st = self.settings
        if requested is None:
            return st.lease_default
        if not requested.isascii() or not requested.isdigit():
            raise HubError(400, "hub.lease_seconds must be a positive decimal integer")
        value = int(requested)
        if value <= 0:
            raise HubError(400, "hub.lease_seconds must be a positive decimal integer")
        return float(min(max(value, st.lease_min), st.lease_max))

    async def _publish(self, pairs: list[tuple[str, str]], request: web.Request) -> web.Response:
        urls = publish_urls(pairs)
        if not urls:
            raise HubError(400, "hub.url (or hub.topic) is required with hub.mode=publish")
        if len(urls) > 50:
            raise HubError(400, "at most 50 URLs per publish ping")
        # each ping renders (or reads from Redis) and hashes every topic it names: counted per client
        # like subscription requests, so that pings cannot be used to keep the daemon busy
        await self._check_rates(request, [])
        for url in urls:
            try:
                key = normalize_url(url)
            except BadURL:
                continue  # not ours, whatever it is
            if await self.serves(key):
                await self.distribute(key)
        self.metrics.requests.labels(result="204").inc()
        return web.Response(status=204)

    # ----------------------------------------------------------------- verification (jobs)

    async def run_verifier(self) -> None:
        """Claim ``websub.verify`` jobs and run them concurrently: at most ``verify_concurrency`` here,
        at most ``verify_per_host`` to one callback host. A job whose host has no free slot goes back
        to the end of the queue at once, so callbacks that never answer (each held for at most
        ``verify_timeout``) delay only the verifications of their own host."""
        st = self.settings
        q = self.queues["websub.verify"]
        sent_back = 0  # jobs put back in a row because their host was busy
        while not self.workers.stopping.is_set():
            if self.verifying >= st.verify_concurrency:
                await self._wait_freed()
                continue
            try:
                got = await q.get(timeout=0.5)
                if got is None:
                    continue
                sent_back = await self._dispatch(q, *got, sent_back)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Redis trouble: the job stays claimed (maintenance)
                self.log.warning("websub.queue_error", queue=q.name, error=str(exc))
                await asyncio.sleep(1)

    async def _dispatch(self, q: JobQueue, job_id: str, text: str, sent_back: int) -> int:
        """Start the verification of a claimed job, or put it back when its host is busy; returns
        how many jobs in a row were put back."""
        try:
            item = VerifyItem.loads(text)
        except (ValueError, KeyError, TypeError) as exc:  # a malformed item: never retried
            self.log.error("websub.bad_job", queue=q.name, error=f"{type(exc).__name__}: {exc}")
            await q.finish(job_id)
            return sent_back
        host = host_of(item.callback)
        if not self.verify_hosts.try_take(host):
            await q.put(text)  # put back before finishing: it never stops counting as pending
            await q.finish(job_id)
            if sent_back + 1 >= await q.length():  # a whole round of busy hosts: wait for a free one
                await self._wait_freed()
                return 0
            return sent_back + 1
        self.verifying += 1
        self.workers.spawn_job(self._verify_job(q, job_id, item, host), name="websub-verification")
        return 0

    async def _wait_freed(self) -> None:
        self._freed.clear()
        try:
            await asyncio.wait_for(self._freed.wait(), timeout=0.5)
        except TimeoutError:
            pass

    async def _verify_job(self, q: JobQueue, job_id: str, item: VerifyItem, host: str) -> None:
        try:
            try:
                await self.run_verification(item)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - left claimed: maintenance puts it back
                self.log.error("websub.job_failed", queue=q.name, error=f"{type(exc).__name__}: {exc}")
                return
            try:
                await q.finish(job_id)
            except Exception as exc:  # noqa: BLE001 - Redis away: maintenance puts it back (verified twice)
                self.log.warning("websub.queue_error", queue=q.name, error=str(exc))
        finally:
            self.verifying -= 1
            self.verify_hosts.release(host)
            self._freed.set()

    async def run_verification(self, item: VerifyItem) -> None:
        log = self.log.bind(topic=item.topic_key, callback_host=host_of(item.callback), mode=item.mode)
        m = self.metrics
        if item.mode == "denied":
            params = [("hub.mode", "denied"), ("hub.topic", item.topic)]
            if item.reason:
                params.append(("hub.reason", item.reason))
            try:
                async with self.sessions.control.get(with_params(item.callback, params),
                                                   allow_redirects=False) as resp:
                    await resp.read()
                    log.info("websub.denied", status=resp.status)
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.info("websub.denied", error=str(exc))
            m.verifications.labels(mode="denied", result="sent").inc()
            return
        if item.mode == "subscribe" and not await self.store.has_room(sub_id(item.topic_key, item.callback),
                                                                      self.settings.max_subscriptions):
            # the cap was reached after this request was admitted (it waited in the queue)
            m.verifications.labels(mode=item.mode, result="refused").inc()
            log.warning("websub.subscriptions_full", limit=self.settings.max_subscriptions)
            return
        challenge = secrets.token_urlsafe(32)  # 256 bits, single use
        params = [("hub.mode", item.mode), ("hub.topic", item.topic), ("hub.challenge", challenge)]
        if item.mode == "subscribe":
            params.append(("hub.lease_seconds", str(max(1, round(item.lease)))))
        since = time.time()  # the lease counts from the verification request (§5.3)
        ok = False
        status: int | None = None
        try:
            async with self.sessions.control.get(with_params(item.callback, params), allow_redirects=False) as resp:
                status = resp.status
                body = await resp.content.read(len(challenge) + 64)
                ok = 200 <= resp.status < 300 and body == challenge.encode()
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.info("websub.verify_failed", error=str(exc) or type(exc).__name__)
        if not ok:
            m.verifications.labels(mode=item.mode, result="failed").inc()
            if status is not None:
                log.info("websub.verify_failed", status=status)
            return
        if item.mode == "subscribe":
            await self.store.activate(item.topic_key, item.callback, item.secret, item.lease, since)
        else:
            await self.store.remove(sub_id(item.topic_key, item.callback), item.topic_key)
        m.verifications.labels(mode=item.mode, result="verified").inc()
        log.info("websub.verified", lease=item.lease if item.mode == "subscribe" else None)


def served_path(topic_key: str, public_url: str) -> str | None:
    """The path of ``topic_key`` on this daemon, or None when it is not under ``public_url``."""
    base = normalize_url(public_url + "/").rstrip("/")
    if not topic_key.startswith(base + "/"):
        return None
    rest = topic_key[len(base):]
    if "?" in rest:
        return None
    return urlsplit(rest).path


__all__ = ["Hub", "HubError", "VerifyItem", "publish_urls", "read_form", "served_path"]
