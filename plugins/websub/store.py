"""Everything the websub plugin keeps in Redis (so any daemon sharing the Redis can act on it).

Key layout (all under ``websub:``; the names are built in :mod:`thoonk_bridge.keys`)::

    websub:sub:{T}P             hash  one verified hub subscription (topic, callback, secret, lease, ...)
    websub:subs                 zset  sid -> lease end (epoch s): every subscription, for sweeps and the CLI
    websub:topic:{T}            zset  sid -> lease end: the subscriptions of one topic URL
    websub:tstate:{T}           hash  seq (distributions so far), hash (sha256 of the last body), ctype
    websub:body:{T}sha256       str   a distributed body, shared by all its deliveries (expires)
    websub:retry                zset  delivery/ping job item -> due time (epoch s)
    websub:rl:{rl}KIND:{window} hash  subscription requests per client / callback host / callback in one
                                      window (hashed keys, at most rate_limit_max_keys fields, expires)
    websub:raw:{name}           hash  body, content_type of a raw topic (/topics/NAME)
    websub:rawtopics            set   the names of the raw topics
    websub:client:{key}         hash  one subscription of ours at an outside hub
    websub:cb:{callback id}     str   callback id -> client key
    websub:inbox:{key}          list  deliveries received for a client, not yet turned into events
    websub:seen:{key}           hash  item id -> content hash, of a client's items

``T`` is ``sha256(topic)[:16]`` (a Redis Cluster hash tag: a topic's subscriptions share a slot, so
the per-batch scripts below touch one slot), ``P`` is ``sha256(topic + "\\n" + callback)[:32]``: one
subscription per (topic, callback) pair; the subscription id ``sid`` is ``T.P``.
Values are written as text; bodies (bytes) are stored with a one-letter marker so they read back
the same whether or not the Redis client decodes responses.
"""

from __future__ import annotations

import base64
import hashlib
import time
from dataclasses import dataclass
from typing import Any

from thoonk_bridge import keys
from thoonk_bridge.thoonk.text import as_text

P = keys.WEBSUB_PREFIX

SUBS = keys.WEBSUB_SUBS
RAW_TOPICS = keys.WEBSUB_RAW_TOPICS  # set: the names of raw topics (``websub:NAME`` sinks in raw mode)
RETRY = keys.WEBSUB_RETRY

SUB_FIELDS = (
    "topic",
    "callback",
    "secret",
    "lease",
    "expires",
    "created",
    "verified",
    "failures",
    "total_failures",
    "delivered",
    "last_success",
    "last_failure",
    "last_status",
)


def s(value: Any) -> str:
    """A Redis reply as str (the shared client may or may not decode responses)."""
    return "" if value is None else as_text(value)


def decode_hash(raw: dict[Any, Any]) -> dict[str, str]:
    return {s(k): s(v) for k, v in raw.items()}


def topic_tag(topic: str) -> str:
    return hashlib.sha256(topic.encode()).hexdigest()[:16]


def sub_id(topic: str, callback: str) -> str:
    """``{topic tag}.{pair hash}``: the tag keeps one topic's keys in one Redis Cluster slot."""
    return topic_tag(topic) + "." + hashlib.sha256(f"{topic}\n{callback}".encode()).hexdigest()[:32]


sub_key = keys.websub_subscription


def topic_key(topic: str) -> str:
    return keys.websub_topic(topic_tag(topic))


def tstate_key(topic: str) -> str:
    return keys.websub_topic_state(topic_tag(topic))


def body_key(topic: str, digest: str) -> str:
    return keys.websub_body(topic_tag(topic), digest)


def encode_body(body: bytes) -> str:
    try:
        return "t" + body.decode("utf-8")
    except UnicodeDecodeError:
        return "b" + base64.b64encode(body).decode("ascii")


def decode_body(stored: Any) -> bytes | None:
    if stored is None:
        return None
    text = s(stored) if not isinstance(stored, bytes) else stored.decode("utf-8")
    if text.startswith("t"):
        return text[1:].encode("utf-8")
    if text.startswith("b"):
        return base64.b64decode(text[1:])
    return None


# ---------------------------------------------------------------- the subscriber's keys (our subscriptions)


client_key = keys.websub_client
cb_key = keys.websub_callback
inbox_key = keys.websub_inbox


SEEN_PER_ENTRY_CAP = 10  # the seen-ids hash keeps at most this many times max_delivery_entries ids


seen_key = keys.websub_seen


@dataclass(frozen=True)
class Subscription:
    sid: str
    topic: str
    callback: str
    secret: str | None
    lease: float
    expires: float
    failures: int = 0

    @classmethod
    def from_hash(cls, sid: str, h: dict[str, str]) -> Subscription | None:
        if not h.get("topic") or not h.get("callback"):
            return None
        return cls(
            sid=sid,
            topic=h["topic"],
            callback=h["callback"],
            secret=h.get("secret") or None,
            lease=float(h.get("lease") or 0),
            expires=float(h.get("expires") or 0),
            failures=int(h.get("failures") or 0),
        )


_GET_MANY = """
local out = {}
for i, key in ipairs(KEYS) do
    out[i] = redis.call('HMGET', key, 'topic', 'callback', 'secret', 'lease', 'expires', 'failures')
end
return out
"""

_RECORD = """
-- KEYS: subscription hashes; ARGV: now, then (ok '1'|'0', status) per key. Gone subscriptions are skipped.
for i, key in ipairs(KEYS) do
    if redis.call('EXISTS', key) == 1 then
        local ok, status = ARGV[2 * i], ARGV[2 * i + 1]
        if ok == '1' then
            redis.call('HSET', key, 'failures', '0', 'last_success', ARGV[1], 'last_status', status)
            redis.call('HINCRBY', key, 'delivered', 1)
        else
            redis.call('HINCRBY', key, 'failures', 1)
            redis.call('HINCRBY', key, 'total_failures', 1)
            redis.call('HSET', key, 'last_failure', ARGV[1], 'last_status', status)
        end
    end
end
return #KEYS
"""


class HubStore:
    """Hub subscriptions and distribution state."""

    def __init__(self, redis: Any) -> None:
        self.redis = redis
        self._get_many = redis.register_script(_GET_MANY)
        self._record = redis.register_script(_RECORD)

    async def activate(
        self, topic: str, callback: str, secret: str | None, lease: float, since: float
    ) -> str:
        """Store a verified subscription (replacing the pair's previous state, secret included)."""
        sid = sub_id(topic, callback)
        expires = since + lease
        now = time.time()
        key = sub_key(sid)
        old = decode_hash(await self.redis.hgetall(key))
        fields = {
            "topic": topic,
            "callback": callback,
            "lease": repr(float(lease)),
            "expires": repr(expires),
            "created": old.get("created") or repr(now),
            "verified": repr(now),
            "failures": old.get("failures") or "0",
            "total_failures": old.get("total_failures") or "0",
            "delivered": old.get("delivered") or "0",
        }
        for keep in ("last_success", "last_failure", "last_status"):
            if old.get(keep):
                fields[keep] = old[keep]
        if secret:
            fields["secret"] = secret
        async with self.redis.pipeline(transaction=True) as pipe:  # one slot (the topic's tag)
            pipe.delete(key)
            pipe.hset(key, mapping=fields)
            pipe.zadd(topic_key(topic), {sid: expires})
            await pipe.execute()
        await self.redis.zadd(SUBS, {sid: expires})  # the global index: a separate step (Cluster)
        return sid

    async def remove(self, sid: str, topic: str | None = None) -> bool:
        key = sub_key(sid)
        if topic is None:
            topic = s(await self.redis.hget(key, "topic")) or None
        async with self.redis.pipeline(transaction=True) as pipe:  # one slot (the topic's tag)
            pipe.delete(key)
            if topic:
                pipe.zrem(topic_key(topic), sid)
            deleted, *_ = await pipe.execute()
        await self.redis.zrem(SUBS, sid)
        return bool(deleted)

    async def has_room(self, sid: str, limit: int) -> bool:
        """Whether subscription ``sid`` may be stored: it exists already (a renewal), or there are
        fewer than ``limit`` subscriptions."""
        if await self.redis.zcard(SUBS) < limit:
            return True
        return await self.redis.zscore(SUBS, sid) is not None

    async def get(self, sid: str) -> Subscription | None:
        return Subscription.from_hash(sid, decode_hash(await self.redis.hgetall(sub_key(sid))))

    async def get_many(self, sids: list[str]) -> dict[str, Subscription]:
        if not sids:
            return {}
        rows = await self._get_many(keys=[sub_key(sid) for sid in sids])
        out: dict[str, Subscription] = {}
        for sid, row in zip(sids, rows, strict=True):
            h = dict(zip(("topic", "callback", "secret", "lease", "expires", "failures"), map(s, row), strict=True))
            sub = Subscription.from_hash(sid, h)
            if sub is not None:
                out[sid] = sub
        return out

    async def active_sids(self, topic: str, now: float | None = None) -> list[str]:
        now = time.time() if now is None else now
        return [s(x) for x in await self.redis.zrangebyscore(topic_key(topic), f"({now}", "+inf")]

    async def count_active(self, topic: str) -> int:
        return int(await self.redis.zcount(topic_key(topic), f"({time.time()}", "+inf"))

    async def record_results(self, results: list[tuple[str, int | None, bool]], now: float) -> None:
        """Per delivery: (sid, HTTP status or None, success). Only for subscriptions that still exist."""
        if not results:
            return
        args: list[str] = [repr(now)]
        for _, status, ok in results:
            args += ("1" if ok else "0", str(status) if status is not None else "error")
        await self._record(keys=[sub_key(sid) for sid, _, _ in results], args=args)

    async def sweep(self, now: float | None = None) -> int:
        """Remove subscriptions whose lease ended."""
        now = time.time() if now is None else now
        expired = [s(x) for x in await self.redis.zrangebyscore(SUBS, "-inf", now)]
        removed = 0
        for sid in expired:
            sub = await self.get(sid)
            # re-check: a renewal may have landed after the range was read
            score = await self.redis.zscore(SUBS, sid)
            if score is not None and float(score) > now:
                continue
            if await self.remove(sid, sub.topic if sub else None):
                removed += 1
            else:
                await self.redis.zrem(SUBS, sid)
        return removed

    async def all_subscriptions(self, topic: str | None = None) -> list[dict[str, str]]:
        sids = [s(x) for x in await self.redis.zrange(topic_key(topic) if topic else SUBS, 0, -1)]
        out = []
        for sid in sids:
            h = decode_hash(await self.redis.hgetall(sub_key(sid)))
            if h:
                h["sid"] = sid
                out.append(h)
        return out

    # -- distribution state

    async def next_distribution(self, topic: str, body: bytes, content_type: str, ttl: float
                                ) -> tuple[int, str] | None:
        """Store the body and bump the topic's sequence; None when the body did not change."""
        digest = hashlib.sha256(content_type.encode() + b"\n" + body).hexdigest()
        key = tstate_key(topic)
        if s(await self.redis.hget(key, "hash")) == digest:
            return None
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(body_key(topic, digest), encode_body(body), ex=max(1, int(ttl)))
            pipe.hincrby(key, "seq", 1)
            pipe.hset(key, mapping={"hash": digest, "ctype": content_type})
            _, seq, _ = await pipe.execute()
        return int(seq), digest

    async def topic_seq(self, topic: str) -> int:
        return int(s(await self.redis.hget(tstate_key(topic), "seq")) or 0)

    async def body(self, topic: str, digest: str) -> bytes | None:
        return decode_body(await self.redis.get(body_key(topic, digest)))

    # -- retries (delayed job items)

    async def schedule_retry(self, queue: str, item: str, due: float) -> None:
        await self.redis.zadd(RETRY, {f"{queue}\n{item}": due})

    async def due_retries(self, now: float, limit: int = 500) -> list[tuple[str, str]]:
        """Claim due retries (each is claimed by one daemon only): [(queue, item)]."""
        members = [s(m) for m in await self.redis.zrangebyscore(RETRY, "-inf", now, start=0, num=limit)]
        claimed = []
        for m in members:
            if await self.redis.zrem(RETRY, m):
                queue, _, item = m.partition("\n")
                claimed.append((queue, item))
        return claimed

    # -- raw topics

    async def set_raw(self, name: str, body: bytes, content_type: str) -> None:
        await self.redis.hset(keys.websub_raw(name), mapping={"body": encode_body(body), "ctype": content_type,
                                                         "updated": repr(time.time())})

    async def get_raw(self, name: str) -> tuple[bytes, str] | None:
        h = await self.redis.hmget(keys.websub_raw(name), "body", "ctype")
        if h[0] is None:
            return None
        return decode_body(h[0]) or b"", s(h[1])
