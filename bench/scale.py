"""How the bridge's cost grows: reconcile size, no-op restart, live throughput, many routes.

Each point runs a real daemon process (``python -m thoonk_bridge.cli run``) against a private
redis-server on a loopback port (no persistence), and reads the daemon's peak RSS (VmHWM) from /proc,
Redis' memory from INFO and the slowest Redis command from SLOWLOG (threshold 10 ms):

    python bench/scale.py                       # the default curves (a few minutes)
    python bench/scale.py --reconcile 100000    # one reconcile size (copy, then no-op restart)
    python bench/scale.py --reconcile 1000,10000,100000,500000 --live 1,100 --routes 1,100,1000

Sections:

- reconcile N: a feed of N items (~250 B each) exists before the daemon starts; time until the route
  is ready and the sink holds all N (copy); then the daemon stopped with SIGTERM and started again
  (no-op restart: its checkpoint says nothing changed, time until /readyz is 200); then SIGKILLed and
  started again (no checkpoint: source and sink compared in full, nothing to send).
- live R: R routes ``in-i -> out-i``; 20,000 events published (batched) across them while the daemon
  follows; events/s until the last one is in its sink. Baseline beside it: the core's own publish rate.
- routes R: R routes with small feeds; time from start to ready, and the daemon's Redis connections
  (CLIENT LIST: every connection that is not the bench's own).
- documents D: D routes to feeds documents (Atom, RSS, JSON Feed each); 100 items published to each;
  time until every JSON document served over HTTP holds the last one.

WebSub fan-out at 1k..20k subscribers has its own benchmark: bench/websub.py.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import redis
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from thoonk_bridge.thoonk import Thoonk
from thoonk_bridge.thoonk.embedded import EmbeddedRedis, free_tcp_port

PAYLOAD = "<entry xmlns='http://www.w3.org/2005/Atom'><title>item</title><content>" + "x" * 180 + "</content></entry>"
SLOW_US = 10_000  # SLOWLOG threshold: commands over 10 ms are recorded


class Daemon:
    """A daemon process on a config; reports readiness and peak memory."""

    def __init__(self, workdir: Path, redis_url: str, routes: list[dict[str, Any]]) -> None:
        self.port = free_tcp_port()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        config = {"redis": redis_url, "http": {"listen": f"127.0.0.1:{self.port}"},
                  "state_dir": str(workdir / "state"), "log_format": "json", "routes": routes}
        self.config = workdir / "bridge.yaml"
        self.config.write_text(yaml.safe_dump(config, sort_keys=False))
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / "bridge.log"

    def start(self) -> float:
        self.started = time.perf_counter()
        log = self.log.open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "thoonk_bridge.cli", "run", str(self.config)],
                                     stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        return self.started

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=5) as resp:
                return resp.status == 200
        except (OSError, urllib.error.HTTPError):
            return False

    def wait(self, predicate: Any, timeout: float = 3600) -> float:
        """Seconds from start until ``predicate()`` holds."""
        deadline = time.monotonic() + timeout
        while not predicate():
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise SystemExit(f"daemon exited:\n{self.log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise SystemExit("timed out")
            time.sleep(0.02)
        return time.perf_counter() - self.started

    def peak_rss_mib(self) -> float:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def cpu_seconds(self) -> float:
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(60)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(120)


def slowest(raw: redis.Redis) -> str:
    """The slowest command SLOWLOG recorded since the last call (over SLOW_US), e.g. '12 ms (EVALSHA)'."""
    entries = raw.slowlog_get(1000)
    raw.slowlog_reset()
    if not entries:
        return f"none over {SLOW_US // 1000} ms"
    worst = max(entries, key=lambda e: e["duration"])
    command = worst["command"].decode(errors="replace") if isinstance(worst["command"], bytes) else worst["command"]
    return f"{worst['duration'] / 1000:.0f} ms ({command.split(' ')[0]})"


def redis_mib(raw: redis.Redis) -> float:
    return int(raw.info("memory")["used_memory"]) / 2**20


def bench_reconcile(url: str, raw: redis.Redis, size: int, workdir: Path) -> None:
    raw.flushall()
    with Thoonk(url=url) as pubsub:
        feed = pubsub.feed("in")
        for start in range(0, size, 5000):
            feed.publish_many([(f"item-{i}", PAYLOAD) for i in range(start, min(size, start + 5000))])
    raw.slowlog_reset()
    before = redis_mib(raw)
    daemon = Daemon(workdir / f"reconcile-{size}", url, [{"name": "copy", "from": "thoonk:in", "to": "thoonk:out"}])
    daemon.start()
    try:
        copied = daemon.wait(lambda: raw.zcard("feed.ids:out") == size and daemon.ready())
        rss = daemon.peak_rss_mib()
        slow = slowest(raw)
        print(f"reconcile {size:>7,} items: copied in {copied:6.1f} s ({size / copied:,.0f}/s), daemon peak "
              f"{rss:5.0f} MiB, Redis +{redis_mib(raw) - before:5.0f} MiB, slowest Redis command {slow}",
              flush=True)
    finally:
        daemon.stop()
    publishes = int(raw.get("feed.publishes:out") or 0)
    daemon.start()
    try:
        ready = daemon.wait(daemon.ready)
        rss = daemon.peak_rss_mib()
        slow = slowest(raw)
        sent = int(raw.get("feed.publishes:out") or 0) - publishes
        print(f"no-op restart {size:>7,} items: ready in {ready:6.1f} s, daemon peak {rss:5.0f} MiB, "
              f"slowest Redis command {slow}, items re-sent {sent}", flush=True)
    finally:
        daemon.kill()
    # Killed: no checkpoint, so this start compares everything (and still sends nothing).
    daemon.start()
    try:
        ready = daemon.wait(daemon.ready)
        rss = daemon.peak_rss_mib()
        slow = slowest(raw)
        sent = int(raw.get("feed.publishes:out") or 0) - publishes
        print(f"restart after SIGKILL {size:>7,} items (full compare): ready in {ready:6.1f} s, daemon peak "
              f"{rss:5.0f} MiB, slowest Redis command {slow}, items re-sent {sent}", flush=True)
    finally:
        daemon.stop()


def bench_live(url: str, raw: redis.Redis, routes: int, workdir: Path, events: int = 20_000) -> None:
    raw.flushall()
    specs = [{"name": f"r{i}", "from": f"thoonk:in{i}", "to": f"thoonk:out{i}"} for i in range(routes)]
    daemon = Daemon(workdir / f"live-{routes}", url, specs)
    daemon.start()
    try:
        daemon.wait(daemon.ready)
        with Thoonk(url=url) as pubsub:
            feeds = [pubsub.feed(f"in{i}") for i in range(routes)]
            per = events // routes
            # The core's own rate, publishing the same events (the baseline the route is measured against).
            cpu0 = daemon.cpu_seconds()
            started = time.perf_counter()
            for feed in feeds:
                for start in range(0, per, 500):
                    feed.publish_many([(f"e{n}", PAYLOAD) for n in range(start, min(per, start + 500))])
            published = time.perf_counter() - started

            def done() -> bool:
                pipe = raw.pipeline(transaction=False)
                for i in range(routes):
                    pipe.zcard(f"feed.ids:out{i}")
                return sum(pipe.execute()) == per * routes

            while not done():
                time.sleep(0.02)
            took = time.perf_counter() - started
            cpu = daemon.cpu_seconds() - cpu0
        total = per * routes
        print(f"live {routes:>4} route(s): {total:,} events in {took:5.2f} s = {total / took:7,.0f} events/s "
              f"(daemon CPU {cpu / total * 1000:.3f} ms/event); core publish_many alone {total / published:,.0f}/s",
              flush=True)
    finally:
        daemon.stop()


def bench_routes(url: str, raw: redis.Redis, routes: int, workdir: Path) -> None:
    raw.flushall()
    with Thoonk(url=url) as pubsub:
        for i in range(routes):
            pubsub.feed(f"in{i}").publish(PAYLOAD, id="one")
    specs = [{"name": f"r{i}", "from": f"thoonk:in{i}", "to": f"thoonk:out{i}"} for i in range(routes)]
    daemon = Daemon(workdir / f"routes-{routes}", url, specs)
    own = {c["id"] for c in raw.client_list()}
    daemon.start()
    try:
        ready = daemon.wait(daemon.ready)
        conns = [c for c in raw.client_list() if c["id"] not in own and c.get("name") != "bench"]
        print(f"routes {routes:>5}: ready in {ready:5.1f} s, daemon Redis connections {len(conns)}, "
              f"daemon peak {daemon.peak_rss_mib():5.0f} MiB", flush=True)
    finally:
        daemon.stop()


def bench_documents(url: str, raw: redis.Redis, count: int, workdir: Path, items: int = 100) -> None:
    """``count`` routes to Atom/RSS/JSON documents; ``items`` publishes each; until all are served."""
    raw.flushall()
    specs = [{"name": f"d{i}", "from": f"thoonk:in{i}", "to": f"feeds:d{i}"} for i in range(count)]
    daemon = Daemon(workdir / f"documents-{count}", url, specs)
    daemon.start()
    try:
        daemon.wait(daemon.ready)
        json_item = json.dumps({"title": "item", "content": "x" * 180})
        cpu0 = daemon.cpu_seconds()
        started = time.perf_counter()
        with Thoonk(url=url) as pubsub:
            for i in range(count):
                pubsub.feed(f"in{i}").publish_many([(f"e{n}", json_item) for n in range(items)])
        last = f"e{items - 1}"

        def served(i: int) -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{daemon.port}/feeds/d{i}.json", timeout=5) as resp:
                    return last in {item["id"] for item in json.load(resp)["items"]}
            except (OSError, ValueError, KeyError):
                return False

        waiting = set(range(count))
        while waiting:
            waiting = {i for i in waiting if not served(i)}
            time.sleep(0.02)
        took = time.perf_counter() - started
        print(f"documents {count:>4}: {count * items:,} items to {count} documents (x3 formats) served in "
              f"{took:5.2f} s, daemon CPU {daemon.cpu_seconds() - cpu0:.1f} s, peak {daemon.peak_rss_mib():5.0f} MiB",
              flush=True)
    finally:
        daemon.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reconcile", default="1000,10000,100000", help="feed sizes, comma-separated ('' skips)")
    parser.add_argument("--live", default="1,100", help="route counts for live throughput ('' skips)")
    parser.add_argument("--routes", default="1,100,1000", help="route counts for start-up ('' skips)")
    parser.add_argument("--documents", default="1,10,100", help="feeds documents served ('' skips)")
    args = parser.parse_args()
    sizes = [int(x) for x in args.reconcile.split(",") if x]
    lives = [int(x) for x in args.live.split(",") if x]
    counts = [int(x) for x in args.routes.split(",") if x]
    documents = [int(x) for x in args.documents.split(",") if x]
    with tempfile.TemporaryDirectory(prefix="thoonk-scale-") as tmp:
        workdir = Path(tmp)
        server = EmbeddedRedis(workdir / "redis", port=0, persistent=False).start()
        raw = redis.Redis.from_url(server.url, client_name="bench")
        raw.config_set("slowlog-log-slower-than", SLOW_US)
        raw.config_set("slowlog-max-len", 1000)
        try:
            print(f"python {sys.version.split()[0]}, redis {raw.info()['redis_version']}, {os.cpu_count()} cores",
                  flush=True)
            for size in sizes:
                bench_reconcile(server.url, raw, size, workdir)
            for routes in lives:
                bench_live(server.url, raw, routes, workdir)
            for routes in counts:
                bench_routes(server.url, raw, routes, workdir)
            for count in documents:
                bench_documents(server.url, raw, count, workdir)
        finally:
            raw.close()
            server.stop()


if __name__ == "__main__":
    main()
