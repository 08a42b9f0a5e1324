"""The operator's console: one page with the whole fleet, refreshed live, and dead-letter actions.

Every daemon writes a report of what it runs to ``bridge.console.reports`` (a hash, field = its
instance id, JSON, every ``REPORT_SECONDS``): its version, its routes (state, source and sinks,
deliveries, the rate per second over the last minute, lag p50/p99 from the router receiving an event
to the sink applying it, the last error), its plugins' health and its XMPP accounts. Any daemon with
the console enabled (``http.console``) serves:

- ``GET {path}``: the page, rendered on the server, with ``static/console.js`` polling
- ``GET {path}/state.json``: the fleet (daemons from their heartbeats, routes from the reports and
  the leases, dead-letter counts, WebSub topics with subscriber counts and failing callback hosts),
  the same document ``thoonk-bridge fleet --json`` prints;
- ``GET {path}/deadletters.json?route=R`` and ``GET {path}/trace.json?feed=F&id=I``;
- ``POST {path}/replay`` and ``POST {path}/discard`` (JSON ``{"route": R, "entries": [...]}``, or
  ``"all": true``).

Access: reads need the token in the ``X-Console-Token`` header, or come from loopback with
``loopback_without_token`` (not when they carry ``Forwarded``/``X-Forwarded-For``: proxied).
Actions always need the token in that header, which a cross-site form cannot send and a cross-site
script cannot send without a CORS preflight we never answer; a cross-site ``Origin`` or
``Sec-Fetch-Site`` is refused too. The token is compared in constant time and never echoed. What
the page shows is redacted (URLs without user info or query, callback hosts only).
"""

from __future__ import annotations

import asyncio
import hmac
import html
import ipaddress
import json
import time
from collections.abc import Callable, Mapping
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from aiohttp import web

from thoonk_bridge import __version__, keys
from thoonk_bridge.deadletters import REQUESTS_KEY, DeadLetter, replay_reply_key, replay_request_key
from thoonk_bridge.fleet import parse_heartbeat
from thoonk_bridge.lease import token_holder
from thoonk_bridge.redact import redact_text, redact_url
from thoonk_bridge.router import DEAD_LETTER_MAX, dead_letter_feed
from thoonk_bridge.tasks import cancel_and_wait
from thoonk_bridge.thoonk.keys import FeedKeys
from thoonk_bridge.thoonk.text import as_text
from thoonk_bridge.trace import TraceRecord, trace_key

if TYPE_CHECKING:
    import structlog

    from thoonk_bridge.console.settings import ConsoleSettings
    from thoonk_bridge.plugin import Plugin
    from thoonk_bridge.redis_client import AsyncRedis
    from thoonk_bridge.router import RouteRunner

__all__ = ["REPORTS_KEY", "Console", "fleet_state"]

REPORTS_KEY = keys.CONSOLE_REPORTS
REPORT_SECONDS = 2.0
REPORT_STALE = 30.0  # a report older than this is left out (its daemon stopped or hangs)
WEBSUB_MAX_SUBSCRIPTIONS = 2000  # subscriptions read per state (bounded work per poll)
TOKEN_HEADER = "X-Console-Token"
ACTION_TIMEOUT = 10.0
STATIC_FILES = {"console.js": "application/javascript", "console.css": "text/css"}


# --------------------------------------------------------------------------- what a daemon reports


def daemon_report(
    instance_id: str, runners: Mapping[str, RouteRunner], plugins: Mapping[str, Plugin[Any]]
) -> dict[str, Any]:
    """This daemon's routes, plugins and XMPP accounts, redacted (see the module doc)."""
    now = time.time()
    routes: dict[str, Any] = {}
    for name, runner in runners.items():
        recorder = next((w.recorder for w in runner.workers if w.recorder is not None), None)
        state = runner.state()
        rates = recorder.rates(now) if recorder is not None else []
        error = recorder.last_error if recorder is not None else None
        routes[name] = {
            "state": state["state"],
            "detail": redact_text(state.get("degraded") or state["detail"]),
            "source": redact_text(str(runner.source_endpoint)),
            "sinks": {redact_text(sink): info for sink, info in state["sinks"].items()},
            "delivered": recorder.delivered_total if recorder is not None else 0,
            "rate": round(sum(rates) / len(rates), 2) if rates else 0.0,
            "sparkline": rates,
            "lag": recorder.lag_quantiles(now) if recorder is not None else None,
            "last_error": {"at": error[0], "reason": redact_text(error[1])} if error else None,
        }
        for info in routes[name]["sinks"].values():
            if "detail" in info:
                info["detail"] = redact_text(info["detail"])
    health_of = {}
    xmpp = []
    for name, plugin in plugins.items():
        health = plugin.health()
        health_of[name] = {"status": str(health.status), "detail": redact_text(health.detail)}
        for account, conn in (getattr(plugin, "connections", None) or {}).items() if name == "xmpp" else ():
            jid = getattr(getattr(conn, "settings", None), "bare_jid", "")  # never its password
            xmpp.append({"account": account, "jid": str(jid), "state": str(getattr(conn, "state", "?")),
                         "detail": redact_text(str(getattr(conn, "detail", "")))})
    return {"instance": instance_id, "version": __version__, "at": now, "routes": routes,
            "plugins": health_of, "xmpp": xmpp}


# --------------------------------------------------------------------------- the fleet (async redis)


async def fleet_state(redis: Any, configured: list[str] | None = None) -> dict[str, Any]:
    """The console's document (also ``thoonk-bridge fleet --json``)."""
    now = time.time()
    daemons = []
    for raw in (await redis.hgetall(keys.INSTANCES)).values():
        beat = parse_heartbeat(raw, now)
        if beat is None:
            continue
        daemons.append({"instance": beat.get("instance"), "host": beat.get("host"), "phase": beat.get("phase"),
                        "started": beat.get("started"), "heartbeat": beat.get("heartbeat"),
                        "heartbeat_age": round(beat["heartbeat_age"], 1), "stale": beat["stale"],
                        "owns": sorted(beat.get("owns", {})), "version": None})
    reports = {}
    for field, raw in (await redis.hgetall(REPORTS_KEY)).items():
        try:
            report = json.loads(as_text(raw))
        except ValueError:
            continue
        if now - float(report.get("at", 0)) <= REPORT_STALE:
            reports[as_text(field)] = report
    for entry in daemons:
        entry["version"] = reports.get(str(entry["instance"]), {}).get("version")
    daemons.sort(key=lambda d: str(d["instance"]))
    leases: dict[str, str] = {}
    async for key in redis.scan_iter(match=keys.ROUTE_LEASE_PATTERN, count=500):
        value = await redis.get(key)
        route = keys.route_of_lease(key)
        if value is not None and route is not None:
            leases[route] = token_holder(as_text(value))
    routes: dict[str, dict[str, Any]] = {}
    for instance, report in sorted(reports.items()):
        for name, info in report.get("routes", {}).items():
            routes[name] = {"name": name, "owner": instance, **info}
    for name in sorted(set(leases) | set(configured or ())):
        routes.setdefault(name, {"name": name, "owner": leases.get(name), "state": "not reported" if name in leases
                                 else "not running", "detail": "", "source": "", "sinks": {}, "delivered": None,
                                 "rate": None, "sparkline": [], "lag": None, "last_error": None})
    names = sorted(routes)
    if names:
        pipe = redis.pipeline(transaction=False)
        for name in names:
            pipe.zcard(FeedKeys(dead_letter_feed(name)).ids)
        for name, count in zip(names, await pipe.execute(), strict=True):
            routes[name]["dead_letters"] = int(count)
    plugins = [{"instance": i, "plugin": p, **h} for i, r in sorted(reports.items())
               for p, h in sorted(r.get("plugins", {}).items())]
    xmpp = [{"instance": i, **a} for i, r in sorted(reports.items()) for a in r.get("xmpp", [])]
    return {"generated": now, "daemons": daemons, "routes": [routes[n] for n in names], "plugins": plugins,
            "websub": await _websub_topics(redis) if any(p["plugin"] == "websub" for p in plugins) else None,
            "xmpp": xmpp}


async def _websub_topics(redis: Any) -> dict[str, Any]:
    """Hub topics with their subscriber counts and the hosts of failing callbacks (never a callback's
    path or query: they often carry secrets)."""
    try:
        from thoonk_bridge.plugins.websub.store import SUBS, sub_key
    except ImportError:  # the websub plugin is not installed
        return {"topics": [], "truncated": False}
    sids = [as_text(s) for s in await redis.zrange(SUBS, 0, WEBSUB_MAX_SUBSCRIPTIONS)]
    truncated = len(sids) > WEBSUB_MAX_SUBSCRIPTIONS
    sids = sids[:WEBSUB_MAX_SUBSCRIPTIONS]
    topics: dict[str, dict[str, Any]] = {}
    if sids:
        pipe = redis.pipeline(transaction=False)
        for sid in sids:
            pipe.hmget(sub_key(sid), ["topic", "callback", "failures"])
        for topic, callback, failures in await pipe.execute():
            if topic is None:
                continue
            entry = topics.setdefault(redact_url(as_text(topic)), {"subscribers": 0, "failing": set()})
            entry["subscribers"] += 1
            if failures is not None and int(as_text(failures) or 0) > 0 and callback is not None:
                entry["failing"].add(urlsplit(as_text(callback)).hostname or "?")
    return {"topics": [{"topic": t, "subscribers": e["subscribers"], "failing": sorted(e["failing"])}
                       for t, e in sorted(topics.items())], "truncated": truncated}


async def dead_letters(redis: Any, route: str) -> list[dict[str, Any]]:
    from thoonk_bridge.thoonk import AsyncThoonk

    thoonk = AsyncThoonk(redis=redis)
    if not await thoonk.feed_exists(dead_letter_feed(route)):
        return []
    feed = await thoonk.feed(dead_letter_feed(route), {"max_length": DEAD_LETTER_MAX})
    out = []
    for entry_id, raw in (await feed.get_all()).items():
        summary = DeadLetter.parse(entry_id, raw).summary()
        summary["reason"] = redact_text(summary["reason"])
        summary["sink"] = redact_text(summary["sink"]) if summary["sink"] else None
        out.append(summary)
    return out


async def trace_of(redis: Any, feed: str, item_id: str) -> list[dict[str, Any]]:
    found = []
    async for key in redis.scan_iter(match=keys.TRACE_ROUTES_PATTERN, count=500):
        route = keys.route_of_trace(as_text(key)) or ""
        source = as_text(await redis.hget(key, "source") or "")
        if feed not in (source, source.partition(":")[2]):
            continue
        for raw in await redis.lrange(trace_key(route), 0, -1):
            record = TraceRecord.parse(as_text(raw))
            if record is not None and record.item_id == item_id:
                found.append({"route": route, "sink": redact_text(record.sink), "outcome": record.outcome,
                              "at": record.at})
    return sorted(found, key=lambda r: r["at"])


# --------------------------------------------------------------------------- access


def _is_loopback(request: web.Request) -> bool:
    if "Forwarded" in request.headers or "X-Forwarded-For" in request.headers:
        return False  # through a proxy: whoever is behind it is not local
    try:
        return ipaddress.ip_address((request.remote or "").split("%")[0]).is_loopback
    except ValueError:
        return False


def _refuse(status: int, message: str) -> web.HTTPException:
    cls = {401: web.HTTPUnauthorized, 403: web.HTTPForbidden}[status]
    return cls(text=json.dumps({"error": message}), content_type="application/json")


# --------------------------------------------------------------------------- the daemon's side


class Console:
    """Writes this daemon's report; serves the page when ``http.console.enabled``."""

    def __init__(
        self,
        settings: ConsoleSettings,
        redis: AsyncRedis,
        instance_id: str,
        log: structlog.typing.FilteringBoundLogger,
        report: Callable[[], dict[str, Any]],
        configured_routes: Callable[[], list[str]],
    ) -> None:
        """``report``: this daemon's report (:func:`daemon_report` of its routes and plugins, read
        when written); ``configured_routes``: the route names of the config in force (reloads change it)."""
        self.settings = settings
        self.redis = redis
        self.instance_id = instance_id
        self.log = log
        self._report = report
        self._configured_routes = configured_routes
        self._task: asyncio.Task[None] | None = None

    # -- report

    def start(self) -> None:
        self._task = asyncio.create_task(self._report_loop(), name="console-report")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        try:
            await self.redis.hdel(REPORTS_KEY, self.instance_id)
        except Exception:  # noqa: BLE001, S110 - stopping anyway; the report goes stale
            pass

    async def _report_loop(self) -> None:
        while True:
            try:
                await self.report()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the next round tries again
                self.log.warning("console report not written", error=f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(REPORT_SECONDS)

    async def report(self) -> None:
        await self.redis.hset(REPORTS_KEY, self.instance_id, json.dumps(self._report()))

    # -- HTTP

    def mount(self, app: web.Application) -> None:
        if not self.settings.enabled:
            return
        p = self.settings.path
        app.router.add_get(p, self.page)
        app.router.add_get(p + "/state.json", self.state)
        app.router.add_get(p + "/deadletters.json", self.dead_letters)
        app.router.add_get(p + "/trace.json", self.trace)
        app.router.add_post(p + "/replay", self.replay)
        app.router.add_post(p + "/discard", self.discard)
        app.router.add_get(p + "/static/{name}", self.static)

    def _token_ok(self, request: web.Request) -> bool | None:
        """True: the right token; False: a wrong one; None: none sent."""
        sent = request.headers.get(TOKEN_HEADER)
        if sent is None:
            return None
        token = self.settings.token
        return token is not None and hmac.compare_digest(sent.encode(), token.get_secret_value().encode())

    def _may_read(self, request: web.Request) -> bool:
        ok = self._token_ok(request)
        if ok is None:
            return self.settings.loopback_without_token and _is_loopback(request)
        return ok

    def _check_read(self, request: web.Request) -> None:
        if not self._may_read(request):
            raise _refuse(401, f"the console needs its token in the {TOKEN_HEADER} header")

    def _check_action(self, request: web.Request) -> None:
        origin = request.headers.get("Origin")
        if origin is not None and origin != f"{request.scheme}://{request.host}":
            raise _refuse(403, "cross-site request refused")
        if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
            raise _refuse(403, "cross-site request refused")
        if self.settings.token is None:
            raise _refuse(403, "actions are off: the console has no token (http.console.token)")
        if not self._token_ok(request):
            raise _refuse(401, f"actions need the console token in the {TOKEN_HEADER} header")
        if request.content_type != "application/json":
            raise _refuse(403, "actions take a JSON body (Content-Type: application/json)")

    @staticmethod
    def _headers(response: web.StreamResponse) -> web.StreamResponse:
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Content-Security-Policy"] = (
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
            "frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
        return response

    def _json(self, body: Any, status: int = 200) -> web.StreamResponse:
        return self._headers(web.json_response(body, status=status))

    async def _fleet(self) -> dict[str, Any]:
        return await fleet_state(self.redis, self._configured_routes())

    async def page(self, request: web.Request) -> web.StreamResponse:
        allowed = self._may_read(request)
        state = await self._fleet() if allowed else None
        body = render_page(self.settings.path, state, token_set=self.settings.token is not None)
        return self._headers(web.Response(text=body, content_type="text/html", status=200 if allowed else 401))

    async def state(self, request: web.Request) -> web.StreamResponse:
        self._check_read(request)
        return self._json(await self._fleet())

    async def dead_letters(self, request: web.Request) -> web.StreamResponse:
        self._check_read(request)
        route = request.query.get("route", "")
        if not route:
            raise web.HTTPBadRequest(text="route is missing")
        return self._json({"route": route, "entries": await dead_letters(self.redis, route)})

    async def trace(self, request: web.Request) -> web.StreamResponse:
        self._check_read(request)
        feed, item_id = request.query.get("feed", ""), request.query.get("id", "")
        if not feed or not item_id:
            raise web.HTTPBadRequest(text="feed and id are needed")
        return self._json({"feed": feed, "id": item_id, "path": await trace_of(self.redis, feed, item_id)})

    async def _action_body(self, request: web.Request) -> tuple[str, list[str] | None]:
        self._check_action(request)
        try:
            body = await request.json()
            route = body["route"]
            wanted = None if body.get("all") is True else body["entries"]
            if not isinstance(route, str) or not route or (wanted is not None and (
                    not isinstance(wanted, list) or not wanted or not all(isinstance(w, str) for w in wanted))):
                raise ValueError
        except (ValueError, KeyError, TypeError):
            raise web.HTTPBadRequest(text='want {"route": R, "entries": [ID, ...]} or {"route": R, "all": true}') \
                from None
        return route, wanted

    async def replay(self, request: web.Request) -> web.StreamResponse:
        route, wanted = await self._action_body(request)
        redis = self.redis
        assert redis is not None
        request_id = _new_request()
        await redis.rpush(replay_request_key(route), json.dumps({"request": request_id, "entries": wanted}))
        await redis.incr(REQUESTS_KEY)
        deadline = time.monotonic() + ACTION_TIMEOUT
        while time.monotonic() < deadline:
            raw = await redis.get(replay_reply_key(route, request_id))
            if raw is not None:
                return self._json(json.loads(as_text(raw)))
            await asyncio.sleep(0.1)
        raw_request = json.dumps({"request": request_id, "entries": wanted})
        if await redis.lrem(replay_request_key(route), 1, raw_request):
            return self._json({"error": f"no daemon running route {route} answered; nothing was replayed"}, 504)
        return self._json({"error": "the replay was taken but not answered in time"}, 504)

    async def discard(self, request: web.Request) -> web.StreamResponse:
        from thoonk_bridge.deadletters import matching
        from thoonk_bridge.thoonk import AsyncThoonk

        route, wanted = await self._action_body(request)
        thoonk = AsyncThoonk(redis=self.redis)
        if not await thoonk.feed_exists(dead_letter_feed(route)):
            return self._json({"discarded": [], "missing": wanted or []})
        feed = await thoonk.feed(dead_letter_feed(route), {"max_length": DEAD_LETTER_MAX})
        stored = [DeadLetter.parse(i, raw) for i, raw in (await feed.get_all()).items()]
        chosen, missing = (stored, []) if wanted is None else matching(stored, wanted)
        discarded = [e.entry_id for e in chosen if await feed.retract(e.entry_id)]
        return self._json({"discarded": discarded, "missing": missing})

    async def static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in STATIC_FILES:
            raise web.HTTPNotFound()
        data = resources.files("thoonk_bridge.console").joinpath("static", name).read_bytes()
        return self._headers(web.Response(body=data, content_type=STATIC_FILES[name]))


def _new_request() -> str:
    import uuid

    return uuid.uuid4().hex


# --------------------------------------------------------------------------- rendering


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _when(stamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(stamp)) if stamp else "-"


def sparkline(values: list[int]) -> str:
    """An inline SVG of a route's per-second deliveries (the JS draws the same)."""
    if not values:
        return ""
    top = max(values) or 1
    step = 120 / max(1, len(values) - 1)
    points = " ".join(f"{i * step:.1f},{20 - 18 * v / top:.1f}" for i, v in enumerate(values))
    return (f'<svg class="spark" viewBox="0 0 120 20" width="120" height="20" aria-hidden="true">'
            f'<polyline points="{points}"/></svg>')


def route_rows(state: dict[str, Any]) -> str:
    rows = []
    for r in state["routes"]:
        lag = r.get("lag") or {}
        err = r.get("last_error")
        sinks = ", ".join(f"{s} ({i.get('state', '?')})" for s, i in r.get("sinks", {}).items())
        rows.append(
            f'<tr data-route="{_e(r["name"])}"><td class="name">{_e(r["name"])}</td><td>{_e(r.get("owner"))}</td>'
            f'<td class="state">{_e(r.get("state"))}<div class="detail">{_e(r.get("detail"))}</div></td>'
            f'<td>{_e(r.get("source"))} &rarr; {_e(sinks)}</td>'
            f'<td class="delivered num">{_e(r.get("delivered"))}</td>'
            f'<td class="rate num">{_e(r.get("rate"))}</td><td>{sparkline(r.get("sparkline") or [])}</td>'
            f'<td class="num">{format_lag(lag.get("p50"))} / {format_lag(lag.get("p99"))}</td>'
            f'<td class="error">{_e(_when(err["at"]) + " " + err["reason"]) if err else ""}</td>'
            f'<td class="deadletters num"><a href="#" class="dl-open">{_e(r.get("dead_letters", 0))}</a></td></tr>')
    return "".join(rows)


def format_lag(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f} ms"


def daemon_rows(state: dict[str, Any]) -> str:
    return "".join(
        f'<tr><td>{_e(d["instance"])}</td><td>{_e(d.get("version"))}</td><td>{_e(d.get("host"))}</td>'
        f'<td>{_e("STALE" if d.get("stale") else d.get("phase"))}</td><td>{_when(d.get("started"))}</td>'
        f'<td>{_e(d.get("heartbeat_age"))} s ago</td></tr>' for d in state["daemons"])


def plugin_rows(state: dict[str, Any]) -> str:
    return "".join(f'<tr><td>{_e(p["instance"])}</td><td>{_e(p["plugin"])}</td><td>{_e(p["status"])}</td>'
                   f'<td>{_e(p["detail"])}</td></tr>' for p in state["plugins"])


def websub_rows(state: dict[str, Any]) -> str:
    topics = (state.get("websub") or {}).get("topics", [])
    return "".join(f'<tr><td>{_e(t["topic"])}</td><td class="num">{_e(t["subscribers"])}</td>'
                   f'<td>{_e(", ".join(t["failing"]))}</td></tr>' for t in topics)


def xmpp_rows(state: dict[str, Any]) -> str:
    return "".join(f'<tr><td>{_e(a["instance"])}</td><td>{_e(a["account"])}</td><td>{_e(a["jid"])}</td>'
                   f'<td>{_e(a["state"])}</td><td>{_e(a["detail"])}</td></tr>' for a in state["xmpp"])


def render_page(path: str, state: dict[str, Any] | None, *, token_set: bool) -> str:
    empty: dict[str, Any] = {"routes": [], "daemons": [], "plugins": [], "websub": None, "xmpp": []}
    s = state or empty
    notice = "" if state is not None else (
        '<p class="notice" id="locked">This console needs its token: enter it above.</p>')
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>thoonk-bridge console</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="{_e(path)}/static/console.css"></head>
<body data-base="{_e(path)}" data-token-set="{str(token_set).lower()}">
<header><h1>thoonk-bridge</h1>
<span id="updated">{_e(_when(s.get("generated")) + " UTC") if state else "not loaded"}</span>
<label>Token <input type="password" id="token" autocomplete="off" placeholder="X-Console-Token"></label>
<span id="message" role="status"></span></header>
{notice}
<section><h2>Daemons</h2><table id="daemons"><thead><tr><th>instance</th><th>version</th><th>host</th>
<th>phase</th><th>since</th><th>last heartbeat</th></tr></thead><tbody>{daemon_rows(s)}</tbody></table></section>
<section><h2>Routes</h2><table id="routes"><thead><tr><th>route</th><th>owner</th><th>state</th>
<th>source &rarr; sinks</th><th>delivered</th><th>events/s (1 min)</th><th>rate</th><th>lag p50 / p99</th>
<th>last error</th><th>dead letters</th></tr></thead><tbody>{route_rows(s)}</tbody></table></section>
<section id="dl-panel" hidden><h2>Dead letters of <span id="dl-route"></span></h2>
<p><button id="dl-replay-all">Replay all</button> <button id="dl-discard-all">Discard all</button></p>
<table id="deadletters"><thead><tr><th>entry</th><th>when</th><th>item</th><th>sink</th><th>reason</th><th></th>
</tr></thead><tbody></tbody></table></section>
<section><h2>Trace an item</h2><form id="trace-form"><input id="trace-feed" placeholder="feed">
<input id="trace-id" placeholder="item id"><button>Trace</button></form>
<table id="trace"><thead><tr><th>when</th><th>route</th><th>sink</th><th>outcome</th></tr></thead><tbody></tbody>
</table></section>
<section><h2>Plugins</h2><table id="plugins"><thead><tr><th>instance</th><th>plugin</th><th>status</th>
<th>detail</th></tr></thead><tbody>{plugin_rows(s)}</tbody></table></section>
<section><h2>WebSub topics</h2><table id="websub"><thead><tr><th>topic</th><th>subscribers</th>
<th>failing callback hosts</th></tr></thead><tbody>{websub_rows(s)}</tbody></table></section>
<section><h2>XMPP accounts</h2><table id="xmpp"><thead><tr><th>instance</th><th>account</th><th>jid</th>
<th>session</th><th>detail</th></tr></thead><tbody>{xmpp_rows(s)}</tbody></table></section>
<script src="{_e(path)}/static/console.js"></script>
</body></html>
"""
