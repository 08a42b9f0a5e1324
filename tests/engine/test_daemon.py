"""The daemon as a real process: readiness, metrics, SIGKILL and restart, SIGHUP reload, SIGTERM drain."""

from __future__ import annotations

import asyncio
import http.server
import signal
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis
import structlog

from tests.support.bridge_process import BridgeProcess, wait
from thoonk_bridge.testing import FAST_RETRY, running_bridge, wait_until
from thoonk_bridge.thoonk import Empty, Thoonk


def config(redis_url: str, *routes: dict[str, Any]) -> dict[str, Any]:
    return {"redis": redis_url, "routes": list(routes)}


COPY = {"name": "copy", "from": "thoonk:in", "to": "thoonk:out", "mirror": True}


def test_readyz_and_metrics(tmp_path: Path, redis_url: str, pubsub: Any) -> None:
    bridge = BridgeProcess(tmp_path, config(redis_url, COPY)).start()
    try:
        body = bridge.wait_ready()
        assert body["redis"] == "ok"
        assert body["routes"]["copy"]["state"] == "following"
        assert body["routes"]["copy"]["sinks"]["thoonk:out"]["pending"] == 0
        status, _ = bridge.get("/healthz")
        assert status == 200
        pubsub.feed("in").publish("hello", id="h1")
        wait(lambda: pubsub.feed("out").get_item("h1") == "hello", message="item copied")

        # The counters move once the worker has recorded the delivery, just after the sink's write.
        def counted() -> str | None:
            status, text = bridge.get("/metrics")
            assert status == 200
            out = 'thoonk_bridge_route_items_out_total{route="copy",sink="thoonk:out"} 1.0'
            return text if out in text else None

        text = wait(counted, message="the delivery counted in /metrics")
        assert 'thoonk_bridge_route_items_in_total{route="copy"} 1.0' in text
        assert 'thoonk_bridge_route_items_out_total{route="copy",sink="thoonk:out"} 1.0' in text
        assert 'thoonk_bridge_route_ready{route="copy"} 1.0' in text
        assert "thoonk_bridge_route_last_success_timestamp_seconds" in text
    finally:
        assert bridge.stop() == 0


def test_readyz_is_503_naming_the_route_that_is_not_ready(tmp_path: Path, redis_url: str, pubsub: Any) -> None:
    # A queue named like the route's source: the route cannot open it and keeps retrying.
    pubsub.queue("in")
    bridge = BridgeProcess(tmp_path, config(redis_url, COPY)).start()
    try:
        def not_ready() -> Any:
            try:
                status, body = bridge.readyz()
            except OSError:
                return None
            return body if status == 503 and body.get("routes", {}).get("copy", {}).get("state") == "retrying" else None

        body = wait(not_ready, message="503 with the retrying route")
        assert body["ready"] is False
        assert body["not_ready_routes"] == ["copy"]
        assert "in" in body["routes"]["copy"]["detail"]
    finally:
        assert bridge.stop() == 0


def test_sigkill_and_restart_delivers_what_was_published_meanwhile_once(
    tmp_path: Path, redis_url: str, pubsub: Any
) -> None:
    raw = redis.Redis.from_url(redis_url, decode_responses=True)
    bridge = BridgeProcess(tmp_path, config(redis_url, COPY)).start()
    bridge.wait_ready()
    feed = pubsub.feed("in")
    for i in range(5):
        feed.publish(f"before {i}", id=f"b{i}")
    wait(lambda: len(pubsub.feed("out").get_ids()) == 5, message="first five copied")
    bridge.kill9()
    for i in range(5):
        feed.publish(f"while down {i}", id=f"d{i}")
    feed.retract("b0")
    feed.publish("before 1, edited", id="b1")
    bridge.start()
    try:
        bridge.wait_ready()
        expected = {f"b{i}": f"before {i}" for i in range(2, 5)}
        expected |= {f"d{i}": f"while down {i}" for i in range(5)}
        expected["b1"] = "before 1, edited"
        wait(lambda: pubsub.feed("out").get_all() == expected, message="out caught up")
        # Nothing delivered twice: 5 + 5 publishes + 1 edit reached the sink, no more.
        assert int(raw.get("feed.publishes:out")) == 11
    finally:
        assert bridge.stop() == 0
        raw.close()


def test_sighup_reload_adds_a_route_and_keeps_the_others(tmp_path: Path, redis_url: str, pubsub: Any) -> None:
    bridge = BridgeProcess(tmp_path, config(redis_url, COPY)).start()
    try:
        bridge.wait_ready()
        second = {"name": "second", "from": "thoonk:in", "to": "thoonk:other"}
        bridge.write_config({**config(redis_url, COPY, second), "http": {"listen": f"127.0.0.1:{bridge.port}"},
                             "state_dir": str(tmp_path / "state"), "log_format": "json"})
        bridge.signal(signal.SIGHUP)
        wait(lambda: "second" in bridge.readyz()[1]["routes"], message="second route running")
        body = bridge.wait_ready()
        assert set(body["routes"]) == {"copy", "second"}
        reloads = [e for e in bridge.log_events() if e.get("event") == "config reloaded"]
        assert reloads and reloads[-1]["started"] == ["second"] and reloads[-1]["kept"] == ["copy"]
        pubsub.feed("in").publish("x", id="x")
        wait(lambda: pubsub.feed("other").get_item("x") == "x" and pubsub.feed("out").get_item("x") == "x",
             message="both routes deliver")
    finally:
        assert bridge.stop() == 0


def test_sighup_with_a_bad_config_keeps_running_the_old_one(tmp_path: Path, redis_url: str, pubsub: Any) -> None:
    bridge = BridgeProcess(tmp_path, config(redis_url, COPY)).start()
    try:
        bridge.wait_ready()
        bridge.write_config("routes:\n  - name: copy\n    from: nowhere:x\n    to: thoonk:out\n")
        bridge.signal(signal.SIGHUP)
        refused = wait(lambda: [e for e in bridge.log_events() if "reload refused" in e.get("event", "")],
                       message="reload refused in the log")
        assert any("nowhere" in p for p in refused[-1]["problems"])
        assert any(":3:" in p for p in refused[-1]["problems"])  # names the line
        assert bridge.proc is not None and bridge.proc.poll() is None
        pubsub.feed("in").publish("still here", id="s")
        wait(lambda: pubsub.feed("out").get_item("s") == "still here", message="old route still running")
    finally:
        assert bridge.stop() == 0


def test_sigterm_drains_and_exits_zero(tmp_path: Path, redis_url: str, pubsub: Any) -> None:
    bridge = BridgeProcess(tmp_path, config(redis_url, COPY)).start()
    bridge.wait_ready()
    bridge.signal(signal.SIGTERM)
    assert bridge.wait_exit(60) == 0
    events = [e.get("event") for e in bridge.log_events()]
    assert "draining" in events and events[-1] == "stopped"


def test_embedded_redis_when_no_redis_is_configured(tmp_path: Path) -> None:
    bridge = BridgeProcess(tmp_path, {"routes": [COPY]}).start()
    try:
        body = bridge.wait_ready()
        assert body["redis"] == "ok"
        assert (tmp_path / "state" / "redis" / "redis.sock").exists()
        with Thoonk(url=f"unix://{tmp_path / 'state' / 'redis' / 'redis.sock'}") as client:
            client.feed("in").publish("embedded", id="e")
            wait(lambda: client.feed("out").get_item("e") == "embedded", message="copied via embedded redis")
    finally:
        assert bridge.stop() == 0
    # Its data persists across restarts.
    again = BridgeProcess(tmp_path, {"routes": [COPY]}, name="again").start()
    try:
        again.wait_ready()
        with Thoonk(url=f"unix://{tmp_path / 'state' / 'redis' / 'redis.sock'}") as client:
            assert client.feed("out").get_item("e") == "embedded"
    finally:
        assert again.stop() == 0


async def test_job_maintenance_puts_back_timed_out_jobs(redis_url: str, tmp_path: Path) -> None:
    async with running_bridge({"routes": [COPY], "job_maintenance_seconds": 0.1}, redis_url=redis_url,
                              tmp_path=tmp_path, plugins={}, retry=FAST_RETRY) as daemon:
        job = await daemon.thoonk.job("work", {"timeout": "0.05"})
        job_id = await job.put("task")
        claimed = await job.get(timeout=1)
        assert claimed[0] == job_id
        # The worker "dies": maintenance puts the job back and another worker gets it.
        async def next_job() -> Any:
            try:
                return await job.get(timeout=0.2)
            except Empty:
                return None

        again = await wait_until(next_job, message="job put back")
        assert again[0] == job_id


async def test_daemon_refuses_a_port_in_use(redis_url: str, tmp_path: Path) -> None:
    from thoonk_bridge.daemon import DaemonError

    async with running_bridge({"routes": [COPY]}, redis_url=redis_url, tmp_path=tmp_path / "a", plugins={}) as first:
        listen = first.config.http.listen
        with pytest.raises(DaemonError, match=f"http.listen {listen}"):
            async with running_bridge({"routes": [COPY], "http": {"listen": listen}}, redis_url=redis_url,
                                      tmp_path=tmp_path, plugins={}):
                pass


async def test_readyz_is_503_while_a_configured_route_runs_nowhere(redis_url: str, tmp_path: Path) -> None:
    raw = redis.Redis.from_url(redis_url)
    # Another daemon holds the route and dies: its lease runs out long before this daemon's next
    # takeover attempt (every lease_seconds / 3 = 10 s), and meanwhile the route runs nowhere.
    raw.set("bridge.lease:{route:orphan}", "ghost:99", px=1500)
    route = {"name": "orphan", "from": "thoonk:orphan-in", "to": "thoonk:orphan-out"}
    async with running_bridge({"routes": [route], "lease_seconds": 30}, redis_url=redis_url, tmp_path=tmp_path,
                              plugins={}) as daemon:
        ready, body = await daemon.readiness()
        assert ready and body["standby_routes"] == ["orphan"]  # the holder is alive: a standby is fine

        async def run_nowhere() -> Any:
            ready, body = await daemon.readiness()
            return body if not ready else None

        body = await wait_until(run_nowhere, timeout=8, message="readyz 503 once the holder's lease is gone")
        assert body["unowned_routes"] == ["orphan"] and body["owned_routes"] == []
    raw.close()


def test_a_huge_outside_document_never_stalls_healthz_nor_loses_the_lease(tmp_path: Path, redis_url: str) -> None:
    # 290,000 tiny entries, just under the 10 MiB fetch limit: ~45 s of parsing when it was done on
    # the event loop, every poll.
    entries = "".join(f"<entry><title>{n}</title></entry>" for n in range(290_000))
    document = (f'<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom"><title>big</title>'
                f"<id>urn:big</id>{entries}</feed>").encode()
    assert len(document) < 10 * 1024 * 1024
    served: list[float] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            served.append(time.monotonic())
            self.send_response(200)
            self.send_header("Content-Type", "application/atom+xml")
            self.send_header("Content-Length", str(len(document)))
            self.end_headers()
            self.wfile.write(document)

        def log_message(self, *args: Any) -> None:
            pass

    site = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=site.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{site.server_address[1]}/big.xml"
    route = {"name": "big", "from": {"endpoint": f"feeds:{url}", "interval": 0.5}, "to": "thoonk:big-out"}
    config = {"redis": redis_url, "lease_seconds": 2, "routes": [route],
              "plugins": {"feeds": {"outbound": {"allow_loopback": True}}}}
    bridge = BridgeProcess(tmp_path, config).start()
    raw = redis.Redis.from_url(redis_url)
    try:
        bridge.wait_ready(60)
        token = raw.get("bridge.lease:{route:big}")
        assert token is not None
        worst = 0.0
        while len(served) < 4:  # the snapshot and three polls, each parsed while /healthz is probed
            started = time.monotonic()
            try:
                status, _ = bridge.get("/healthz")
            except OSError:  # urllib's 5 s timeout: the loop is stalled
                status = 0
            worst = max(worst, time.monotonic() - started)
            assert status == 200 and worst < 1.0, f"/healthz took {worst:.2f} s (status {status})"
            time.sleep(0.1)
        assert raw.get("bridge.lease:{route:big}") == token  # never lost: the same holder and term
        log = bridge.log()
        assert "lease lost" not in log and "lease expired" not in log
        assert "more entries than max_entries" in log
        status, body = bridge.readyz()
        assert status == 200 and body["owned_routes"] == ["big"]
    finally:
        bridge.stop()
        site.shutdown()
        raw.close()


async def test_event_loop_lag_is_measured_and_logged(redis_url: str, tmp_path: Path) -> None:
    async with running_bridge({"routes": [COPY]}, redis_url=redis_url, tmp_path=tmp_path, plugins={}) as daemon:
        with structlog.testing.capture_logs() as logs:
            time.sleep(1.5)  # work that blocks the loop
            await asyncio.sleep(0.6)  # the watcher's next timers
        lagged = [line for line in logs if line["event"] == "event loop lagged"]
        assert len(lagged) == 1 and lagged[0]["seconds"] >= 1.2
        lag = daemon.metrics.registry.get_sample_value("thoonk_bridge_event_loop_lag_seconds")
        assert lag is not None and lag >= 1.2
        async with aiohttp.ClientSession() as session, session.get(f"{daemon.base_url}/metrics") as resp:
            status, text = resp.status, await resp.text()
        assert status == 200 and "thoonk_bridge_event_loop_lag_seconds " in text
