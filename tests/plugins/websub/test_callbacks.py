"""Our subscriber callbacks as an outsider reaches them: whatever arrives, an answer, never a 500."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Iterator
from urllib.parse import quote, urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.plugins.websub.support import Node, start_node
from thoonk_bridge.plugins.websub.subscriber import cb_key, client_key, inbox_key

CBID = "fuzz-callback-id"
KEY = "fuzzclient"
SECRET = "s3cret-for-the-fuzz"
TOPIC = "https://topic.example/feed"


async def plant_subscription(node: Node, state: str = "active") -> str:
    """A subscription of ours at an outside hub, as ``WebSubSource.subscribe`` leaves it."""
    redis = node.context.redis
    await redis.hset(client_key(KEY), mapping={"cbid": CBID, "hub": "https://hub.example/", "self": TOPIC,
                                               "secret": SECRET, "state": state, "pending": "subscribe"})
    await redis.set(cb_key(CBID), KEY)
    return f"{node.plugin.settings.callback_path}/{CBID}"


async def raw_request(node: Node, method: str, target: str, headers: list[tuple[bytes, bytes]],
                      body: bytes = b"") -> int:
    """One HTTP/1.1 request written byte for byte (header values a client library would refuse)."""
    parts = urlsplit(node.url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        head = [f"{method} {target} HTTP/1.1".encode(), f"Host: {parts.netloc}".encode(),
                b"Connection: close", f"Content-Length: {len(body)}".encode()]
        head += [name + b": " + value for name, value in headers]
        writer.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 10)
        return int(status_line.split()[1])
    finally:
        writer.close()


async def test_non_ascii_signature_is_an_invalid_signature(node: Node) -> None:
    """A non-ASCII X-Hub-Signature is acknowledged and dropped like any invalid one (§7.1.2), not a 500."""
    path = await plant_subscription(node)
    body = b"<feed xmlns='http://www.w3.org/2005/Atom'/>"
    for value in ("sha256=é".encode(), b"sha256=\xff\xfe", "sha256=ａｂｃ".encode(), "şha256=00".encode()):
        status = await raw_request(node, "POST", path, [(b"Content-Type", b"application/atom+xml"),
                                                        (b"X-Hub-Signature", value)], body)
        assert status == 202, value
    assert node.metric("thoonk_bridge_websub_subscriber_requests_total", result="invalid_signature") == 4
    assert await node.context.redis.llen(inbox_key(KEY)) == 0  # dropped
    good = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    status = await raw_request(node, "POST", path, [(b"X-Hub-Signature", good.encode())], body)
    assert status == 202
    assert await node.context.redis.llen(inbox_key(KEY)) == 1  # the same path takes a good one


# ------------------------------------------------------------------ fuzzing


HEADER_BYTES = st.binary(max_size=120).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"").strip())
QUERY_NAMES = st.sampled_from(["hub.mode", "hub.topic", "hub.challenge", "hub.lease_seconds", "hub.reason", "x"])
QUERY_VALUES = st.one_of(st.sampled_from(["subscribe", "unsubscribe", "denied", TOPIC, TOPIC + "?x", "86400",
                                          "-1", "99999999999999999999999", ""]), st.text(max_size=200))


@settings(max_examples=150, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(known=st.booleans(), query=st.lists(st.tuples(QUERY_NAMES, QUERY_VALUES), max_size=6),
       signature=st.one_of(st.none(), st.tuples(st.sampled_from([b"sha256=", b"sha1=", b"SHA512 =", b"md5=", b""]),
                                                 HEADER_BYTES).map(b"".join)),
       ctype=st.one_of(st.none(), HEADER_BYTES), body=st.binary(max_size=300))
def test_fuzz_callback_endpoint_never_errors(fuzz_node: tuple[asyncio.AbstractEventLoop, Node, str], known: bool,
                                            query: list[tuple[str, str]], signature: bytes | None,
                                            ctype: bytes | None, body: bytes) -> None:
    loop, node, path = fuzz_node
    target = path if known else path + "x"
    qs = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in query)

    async def go() -> None:
        status = await raw_request(node, "GET", target + ("?" + qs if qs else ""), [])
        assert status in (200, 404), status
        headers = []
        if signature is not None:
            headers.append((b"X-Hub-Signature", signature))
        if ctype is not None:
            headers.append((b"Content-Type", ctype))
        status = await raw_request(node, "POST", target, headers, body)
        assert status in (202, 400, 403, 410, 413), status

    loop.run_until_complete(go())


@pytest.fixture
def fuzz_node(redis_url: str) -> Iterator[tuple[asyncio.AbstractEventLoop, Node, str]]:
    loop = asyncio.new_event_loop()
    node = loop.run_until_complete(start_node(redis_url))
    path = loop.run_until_complete(plant_subscription(node))
    try:
        yield loop, node, path
    finally:
        loop.run_until_complete(node.stop())
        loop.close()
