"""An outside publisher with topics in every discovery style, and its hub (like websub.rocks), on
loopback: what the websub subscriber tests and the conformance run subscribe to."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

ATOM_NS = "http://www.w3.org/2005/Atom"


def atom(hub: str | None = None, self_url: str | None = None, entries: tuple[tuple[str, str], ...] = ()) -> bytes:
    links = ""
    if hub:
        links += f'<link rel="hub" href="{hub}"/>'
    if self_url:
        links += f'<link rel="self" href="{self_url}"/>'
    items = "".join(
        f"<entry><id>urn:{i}</id><title>{t}</title><link href='https://e.example/{i}'/>"
        f"<updated>2024-01-01T00:00:00Z</updated></entry>"
        for i, t in entries
    )
    return (f'<?xml version="1.0" encoding="utf-8"?><feed xmlns="{ATOM_NS}"><title>T</title><id>urn:t</id>'
            f"<updated>2024-01-01T00:00:00Z</updated>{links}{items}</feed>").encode()


class Outside:
    """A publisher with topics in every discovery style, and its hub (like websub.rocks)."""

    def __init__(self) -> None:
        self.subscribe_posts: list[tuple[str, dict[str, str]]] = []
        self.verify_results: list[tuple[int, str]] = []
        self.lease = 3600
        self.topic_suffix = ""  # appended to hub.topic in verifications ("?invalid": websub.rocks 205)
        self.entries: tuple[tuple[str, str], ...] = (("e1", "first"),)
        app = web.Application()
        app.router.add_route("*", "/topic/{kind}", self.topic)
        app.router.add_post("/hub", self.hub)
        self.server = TestServer(app, host="127.0.0.1")

    async def start(self) -> Outside:
        await self.server.start_server()
        return self

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))

    async def topic(self, request: web.Request) -> web.Response:
        kind = request.match_info["kind"]
        hub, me = self.url("/hub"), self.url(f"/topic/{kind}")
        head = request.method == "HEAD"
        if kind == "header":
            return web.Response(body=atom(entries=self.entries), content_type="application/atom+xml",
                                headers={"Link": f'<{hub}>; rel="hub", <{me}>; rel="self"'})
        if kind == "split-header":
            resp = web.Response(body=atom(entries=self.entries), content_type="application/atom+xml")
            resp.headers.add("Link", f'<{me}>; rel="self"')
            resp.headers.add("Link", f'<{hub}>; rel="hub"')
            return resp
        if kind == "html":
            if head:
                return web.Response(content_type="text/html")
            return web.Response(text=f'<!doctype html><html><head><title>x</title><link rel="hub" href="{hub}">'
                                f'<link rel="self" href="{me}"></head><body><link rel="hub" href="/evil"></body>'
                                "</html>", content_type="text/html")
        if kind == "atom":  # served as text/xml (websub.rocks 102)
            return web.Response(body=atom(hub, me, self.entries), content_type="text/xml")
        if kind == "rss":
            body = (f'<?xml version="1.0"?><rss version="2.0" xmlns:atom="{ATOM_NS}"><channel><title>R</title>'
                    f'<link>https://r.example/</link><description>d</description>'
                    f'<atom:link rel="hub" href="{hub}"/><atom:link rel="self" href="{me}"/>'
                    "<item><guid>r1</guid><title>one</title></item></channel></rss>")
            return web.Response(text=body, content_type="text/xml")
        if kind == "priority":  # websub.rocks 104: the body's hub is wrong
            return web.Response(body=atom(self.url("/hub?error=wrongtag"), me, self.entries),
                                content_type="application/atom+xml",
                                headers={"Link": f'<{hub}>; rel="hub", <{me}>; rel="self"'})
        if kind == "otherself":  # websub.rocks 200
            return web.Response(body=atom(entries=self.entries), content_type="application/atom+xml",
                                headers={"Link": f'<{hub}>; rel="hub", <{me}?self=other>; rel="self"'})
        if kind in ("r301", "r302"):
            cls = web.HTTPMovedPermanently if kind == "r301" else web.HTTPFound
            raise cls(location=self.url("/topic/header") + "?redirect=complete")
        if kind in ("hub307", "hub308"):
            code = kind[3:]
            return web.Response(body=atom(entries=self.entries), content_type="application/atom+xml",
                                headers={"Link": f'<{hub}?redirect={code}>; rel="hub", <{me}>; rel="self"'})
        if kind == "nohub":
            return web.Response(body=atom(entries=self.entries), content_type="application/atom+xml")
        return web.Response(status=404)

    async def hub(self, request: web.Request) -> web.Response:
        form = dict(await request.post())
        self.subscribe_posts.append((request.path_qs, form))  # type: ignore[arg-type]
        if request.query.get("error"):
            return web.Response(status=400, text="wrong hub")
        code = request.query.get("redirect")
        if code in ("307", "308"):
            return web.Response(status=int(code), headers={"Location": self.url("/hub")})
        asyncio.get_running_loop().create_task(self.verify(form))  # type: ignore[arg-type]
        return web.Response(status=202)

    async def verify(self, form: dict[str, str], mode: str | None = None) -> None:
        challenge = secrets.token_hex(16)
        params = {"hub.mode": mode or form["hub.mode"], "hub.topic": form["hub.topic"] + self.topic_suffix,
                  "hub.challenge": challenge, "hub.lease_seconds": str(self.lease)}
        async with aiohttp.ClientSession() as s, s.get(form["hub.callback"], params=params) as resp:
            self.verify_results.append((resp.status, await resp.text()))

    async def deny(self, form: dict[str, str]) -> int:
        params = {"hub.mode": "denied", "hub.topic": form["hub.topic"], "hub.reason": "no thanks"}
        async with aiohttp.ClientSession() as s, s.get(form["hub.callback"], params=params) as resp:
            return resp.status

    async def deliver(self, form: dict[str, str], body: bytes, ctype: str = "application/atom+xml",
                      signature: str | None = "good", method: str = "sha256") -> int:
        headers = {"Content-Type": ctype, "Link": f'<{self.url("/hub")}>; rel="hub", <{form["hub.topic"]}>; rel="self"'}
        secret = form.get("hub.secret", "")
        if signature == "good":
            headers["X-Hub-Signature"] = f"{method}=" + hmac.new(secret.encode(), body,
                                                                 getattr(hashlib, method)).hexdigest()
        elif signature == "bad":
            good = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
            headers["X-Hub-Signature"] = "sha256=" + good + "1234"  # websub.rocks 301
        async with aiohttp.ClientSession() as s, s.post(form["hub.callback"], data=body, headers=headers) as resp:
            return resp.status
