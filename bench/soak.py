"""Chaos soak: steady publishing through every landed plugin while Redis, Prosody and daemons restart.

    .venv/bin/python bench/soak.py --minutes 2 --seed 7

One run, all on loopback, bounded in time and traffic:

- a redis-server with append-only persistence (fsync always, so an acknowledged publish survives
  a SIGKILL), Prosody when installed, and ``--daemons`` bridge daemons (subprocesses) sharing the
  Redis, each with its own state dir, with short route leases;
- routes: ``thoonk:in -> thoonk:out`` (mirror), ``thoonk:in -> feeds:soak + websub:soak`` (documents
  in a directory the daemons share, served by every daemon, hub-advertised), and with Prosody
  ``thoonk:in -> xmpp node`` and ``xmpp node -> thoonk:back``;
- all daemons share one ``public_url`` (as behind a load balancer), so the document topic is the same
  whoever owns the route; a WebSub subscriber (an ``http.server`` on loopback in this process)
  subscribes through the hub of the last daemon and records every content delivery;
- a publisher writes ``--rate`` new items a second to ``in``, counting only acknowledged publishes
  (it retries through outages);
- at random moments (seeded: the same ``--seed`` gives the same schedule) it SIGKILLs and restarts
  Redis, a daemon, or Prosody;
- at the end it stops the chaos, waits for the sinks to settle, and compares every sink with its
  source: items published, delivered, duplicated at sinks, lost (must be 0), plus the longest
  recovery time (from a chaos event until every route is owned and ready again); then it publishes
  one last item once all is quiet and checks that the last WebSub delivery received holds it.

Exit status 0 when nothing was lost, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import redis
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.plugins.websub.receiver import Receiver  # noqa: E402
from thoonk_bridge.thoonk import Thoonk  # noqa: E402
from thoonk_bridge.thoonk.embedded import EmbeddedRedis, free_tcp_port  # noqa: E402

NODE = "soak"
NODE_ITEMS = 50
DOC_ITEMS = 50


class Daemon:
    def __init__(self, workdir: Path, index: int, config: dict[str, Any], port: int, public_url: str) -> None:
        self.index = index
        self.port = port
        self.dir = workdir / f"daemon{index}"
        self.dir.mkdir(parents=True, exist_ok=True)
        # One XMPP account for the fleet: each daemon binds its own resource by default
        # (thoonk-bridge-<instance>), so they do not replace each other's sessions.
        config = {**config, "http": {"listen": f"127.0.0.1:{self.port}", "public_url": public_url},
                  "state_dir": str(self.dir / "state"),
                  "instance": f"soak{index}", "log_format": "json"}
        self.config = self.dir / "bridge.yaml"
        self.config.write_text(yaml.safe_dump(config, sort_keys=False))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = (self.dir / "daemon.log").open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "thoonk_bridge.cli", "run", str(self.config)],
                                     stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def readyz(self) -> dict[str, Any] | None:
        if not self.proc or self.proc.poll() is not None:
            return None
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as resp:
                return dict(json.loads(resp.read()))
        except urllib.error.HTTPError as exc:
            try:
                return dict(json.loads(exc.read()))
            except ValueError:
                return None
        except (OSError, ValueError):
            return None


def fetch_doc(port: int) -> bytes:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/feeds/soak.atom", timeout=5) as resp:
            return bytes(resp.read())
    except OSError as exc:
        return repr(exc).encode()


def routes_ready(daemons: list[Daemon], names: list[str]) -> bool:
    ready: set[str] = set()
    for d in daemons:
        body = d.readyz()
        if body:
            ready |= {n for n, r in body.get("routes", {}).items() if r.get("ready")}
    return ready >= set(names)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rate", type=float, default=20.0, help="publishes per second")
    ap.add_argument("--daemons", type=int, default=2)
    ap.add_argument("--chaos-every", type=float, default=8.0, help="mean seconds between chaos events")
    ap.add_argument("--no-xmpp", action="store_true", help="leave Prosody and the xmpp routes out")
    return ap.parse_args()


def fleet_config(redis_url: str, workdir: Path, prosody: Any) -> dict[str, Any]:
    """The daemons' shared config: a copy, a document with WebSub, and with Prosody a node both ways."""
    routes: list[dict[str, Any]] = [
        {"name": "copy", "from": "thoonk:in", "to": "thoonk:out", "mirror": True},
        {"name": "doc", "from": "thoonk:in", "to": [{"endpoint": "feeds:soak", "max_items": DOC_ITEMS}, "websub:soak"]},
    ]
    config: dict[str, Any] = {
        "redis": redis_url, "lease_seconds": 2.0, "drain_seconds": 2,
        "plugins": {
            "feeds": {"output_dir": str(workdir / "documents")},
            "websub": {"outbound": {"allow_loopback": True}, "job_timeout": 3, "retry_base": 0.5,
                       "retry_max_delay": 5, "delivery_timeout": 3},
        },
        "routes": routes,
    }
    if prosody is not None:
        config["plugins"]["xmpp"] = {
            "jid": "bridge@localhost", "password": "pw-bridge", "host": "127.0.0.1", "port": prosody.port,
            "tls": "disabled", "reconnect_min": 0.2, "reconnect_max": 2, "timeout": 10, "keepalive": 5,
        }
        routes += [
            {"name": "to-node", "from": "thoonk:in",
             "to": {"endpoint": f"xmpp:pubsub.localhost/{NODE}", "max_items": NODE_ITEMS}},
            {"name": "from-node", "from": f"xmpp:pubsub.localhost/{NODE}", "to": "thoonk:back", "mirror": True},
        ]
    return config


def wait_for(predicate: Any, timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def subscribe(receiver: Receiver, topic: str, hub: str, redis_url: str) -> bool:
    """Subscribe the receiver to ``topic`` at ``hub``; True once the hub has verified it."""
    from thoonk_bridge.plugins.websub.cli import list_subscriptions

    form = urllib.parse.urlencode({"hub.mode": "subscribe", "hub.topic": topic, "hub.callback": receiver.url})
    with urllib.request.urlopen(urllib.request.Request(hub, data=form.encode()), timeout=5) as resp:
        assert resp.status == 202, resp.status
    return wait_for(lambda: list_subscriptions(redis_url, topic), 30)


class Publisher(threading.Thread):
    """Publishes to thoonk:in at ``rate`` per second; ``acknowledged`` holds what Redis accepted."""

    def __init__(self, redis_url: str, rate: float) -> None:
        super().__init__(daemon=True)
        self.redis_url = redis_url
        self.rate = rate
        self.acknowledged: list[str] = []
        self.halt = threading.Event()

    def run(self) -> None:
        client = Thoonk(url=self.redis_url)
        i = 0
        while not self.halt.is_set():
            item_id = f"item-{i:06d}"
            payload = json.dumps({"title": f"Item {i}", "link": f"https://example.org/{i}", "content": "x" * 50})
            try:
                client.feed("in").publish(payload, id=item_id)
            except Exception:  # noqa: BLE001 - Redis restarting: retry the same item
                time.sleep(0.05)
                continue
            self.acknowledged.append(item_id)
            i += 1
            time.sleep(1 / self.rate)
        client.close()


def kill_and_restart(kind: str, rng: random.Random, server: EmbeddedRedis, daemons: list[Daemon],
                     prosody: Any) -> None:
    """SIGKILL one part (no goodbye to anyone), wait 0.2-2 s, start it again."""
    if kind == "redis":
        server.kill()
        time.sleep(rng.uniform(0.2, 2.0))
        server.start()
    elif kind == "daemon":
        victim = rng.choice(daemons)
        victim.kill()
        time.sleep(rng.uniform(0.2, 2.0))
        victim.start()
    else:
        assert prosody is not None and prosody.proc is not None
        prosody.proc.kill()
        prosody.proc.wait()
        prosody.proc = None
        time.sleep(rng.uniform(0.2, 2.0))
        prosody.start()


def chaos(args: argparse.Namespace, rng: random.Random, server: EmbeddedRedis, daemons: list[Daemon],
          prosody: Any, names: list[str]) -> list[tuple[float, str, float]]:
    """Chaos events at random intervals for the run's length: (when, what, seconds to recover)."""
    events: list[tuple[float, str, float]] = []
    end = time.monotonic() + args.minutes * 60
    kinds = ["redis", "daemon"] + (["prosody"] if prosody is not None else [])
    while time.monotonic() < end:
        time.sleep(min(rng.expovariate(1 / args.chaos_every), max(0.0, end - time.monotonic())))
        if time.monotonic() >= end:
            break
        kind = rng.choice(kinds)
        started = time.monotonic()
        kill_and_restart(kind, rng, server, daemons, prosody)
        wait_for(lambda: routes_ready(daemons, names), 120)
        recovery = time.monotonic() - started
        events.append((started, kind, recovery))
        print(f"chaos: {kind:8s} recovered in {recovery:5.1f} s", flush=True)
    return events


class Outcome:
    """What the run left behind, read once everything settled, and whether it is what was promised."""

    def __init__(self, redis_url: str, workdir: Path, receiver: Receiver, prosody: Any,
                 acknowledged: list[str]) -> None:
        self.raw = redis.Redis.from_url(redis_url, decode_responses=True)
        self.pubsub = Thoonk(url=redis_url)
        self.receiver = receiver
        self.prosody = prosody
        # Once the deliveries of the run are done, one last item: the last delivery must hold it.
        time.sleep(3)
        final = len(acknowledged)
        payload = json.dumps({"title": f"Item {final}", "link": f"https://example.org/{final}", "content": "last"})
        self.pubsub.feed("in").publish(payload, id=f"item-{final:06d}")
        acknowledged.append(f"item-{final:06d}")
        self.acknowledged = acknowledged
        self.final_link = f'href="https://example.org/{final}"'.encode()
        self.source = self.pubsub.feed("in").get_all()
        self.newest_doc = list(self.source)[-DOC_ITEMS:]
        self.newest_node = list(self.source)[-NODE_ITEMS:]
        self.doc_path = workdir / "documents" / "soak.atom"

    def websub_ok(self) -> bool:
        return bool(self.receiver.deliveries) and self.final_link in self.receiver.deliveries[-1]

    def doc_ok(self) -> bool:
        text = self.doc_path.read_text() if self.doc_path.exists() else ""
        ids = re.findall(r"<link href=\"https://example.org/(\d+)\"", text)
        return sorted(ids) == sorted(str(int(i.split("-")[1])) for i in self.newest_doc)

    def node_lost(self) -> list[str]:
        if self.prosody is None:
            return []
        back = self.pubsub.feed("back").get_ids()
        return [i for i in self.newest_node if i not in back]

    def settled(self) -> bool:
        return (self.pubsub.feed("out").get_all() == self.source and self.doc_ok() and not self.node_lost()
                and self.websub_ok())

    def close(self) -> None:
        self.pubsub.close()
        self.raw.close()


def report(args: argparse.Namespace, outcome: Outcome, events: list[tuple[float, str, float]],
           daemons: list[Daemon]) -> bool:
    """Print the figures; True when something was lost or differs."""
    out = outcome.pubsub.feed("out").get_all()
    lost = [i for i in outcome.acknowledged if i not in out]
    missing_in_source = [i for i in outcome.acknowledged if i not in outcome.source]
    duplicated = int(outcome.raw.get("feed.publishes:out") or 0) - len(out)
    print()
    print(f"seed {args.seed}, {args.minutes} min, {args.daemons} daemons, xmpp {'on' if outcome.prosody else 'off'}")
    print(f"chaos events: {len(events)} ({', '.join(k for _, k, _ in events) or 'none'})")
    print(f"published (acknowledged): {len(outcome.acknowledged)}")
    print(f"delivered to thoonk:out:  {len(out)}  duplicated: {duplicated}  lost: {len(lost)}")
    print(f"lost from the source itself (Redis durability): {len(missing_in_source)}")
    doc_ok = outcome.doc_ok()
    print(f"feeds:soak document holds the newest {DOC_ITEMS}: {doc_ok}")
    served = [d for d in daemons if d.readyz() is not None]
    # the owner stores its last rendering just after writing the file
    same_doc = wait_for(lambda: len({fetch_doc(d.port) for d in served}) == 1, 10)
    print(f"document served alike by all {len(served)} daemons: {same_doc}")
    ws_ok = outcome.websub_ok()
    print(f"websub deliveries received: {len(outcome.receiver.deliveries)}  "
          f"(verifications: {len(outcome.receiver.verified)})  last delivery holds the newest item: {ws_ok}")
    node_lost = outcome.node_lost()
    if outcome.prosody is not None:
        print(f"xmpp node -> thoonk:back holds the newest {NODE_ITEMS}: lost {len(node_lost)}")
    longest = max((r for _, _, r in events), default=0.0)
    print(f"longest recovery: {longest:.1f} s")
    return bool(lost or missing_in_source or node_lost or not doc_ok or not ws_ok or not same_doc)


def main() -> int:
    args = parse_args()
    rng = random.Random(args.seed)
    workdir = Path(tempfile.mkdtemp(prefix="soak-"))
    server = EmbeddedRedis(workdir / "redis", port=0, extra_args=["--appendfsync", "always"]).start()
    prosody = None
    if not args.no_xmpp and shutil.which("prosody") is not None:
        from tests.support.prosody_server import ProsodyServer

        prosody = ProsodyServer(workdir / "prosody").start()
    config = fleet_config(server.url, workdir, prosody)
    names = [r["name"] for r in config["routes"]]
    ports = [free_tcp_port() for _ in range(args.daemons)]
    public_url = f"http://127.0.0.1:{ports[0]}"  # one URL for the fleet, as behind a load balancer
    daemons = [Daemon(workdir, i, config, ports[i], public_url) for i in range(args.daemons)]
    for d in daemons:
        d.start()
    if not wait_for(lambda: routes_ready(daemons, names), 60):
        print(f"routes never became ready; logs in {workdir}", file=sys.stderr)
        return 2
    # Subscribe through the hub of the last daemon (usually not the owner of the document's route).
    receiver = Receiver()
    hub = f"http://127.0.0.1:{daemons[-1].port}/websub/hub"
    if not subscribe(receiver, f"{public_url}/feeds/soak.atom", hub, server.url):
        print(f"the WebSub subscription was never verified; logs in {workdir}", file=sys.stderr)
        return 2
    publisher = Publisher(server.url, args.rate)
    publisher.start()
    events = chaos(args, rng, server, daemons, prosody, names)
    publisher.halt.set()
    publisher.join()
    outcome = Outcome(server.url, workdir, receiver, prosody, publisher.acknowledged)
    wait_for(outcome.settled, 120, 0.25)
    failed = report(args, outcome, events, daemons)
    for d in daemons:
        d.stop()
    if prosody is not None:
        prosody.cleanup()
    server.stop()
    outcome.close()
    receiver.close()
    print("RESULT:", "FAIL" if failed else "OK", f"(logs: {workdir})" if failed else "")
    if not failed:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
