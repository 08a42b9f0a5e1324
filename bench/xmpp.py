"""Benchmark of the xmpp plugin against the raw slixmpp ceiling, in one run on one machine.

Starts a throwaway Prosody on loopback (the test fixture in ``tests/support/prosody_server.py``, its data in
/dev/shm unless ``--data disk``) and an embedded Redis, then, ``--rounds`` times with the same two
daemons, measures for the same number of items:

1. ``raw``: a bare slixmpp publisher and a bare slixmpp subscriber doing publish -> notification
   round trips, ``--inflight`` publishes outstanding: the ceiling.
2. ``node -> thoonk``: an outside slixmpp client publishes to a node (``--inflight`` outstanding); a
   daemon route relays the node into a Thoonk feed; timed until the feed holds every item.
3. ``thoonk -> node -> thoonk``: items published to a Thoonk feed (``--inflight`` outstanding) go
   through two routes (``thoonk:a -> xmpp:node`` with ``max_in_flight: --inflight``, and
   ``xmpp:node -> thoonk:b`` in a second daemon); timed until ``b`` holds every item.

Each round's relay rates are compared with that round's raw rate (the machine's load changes from one
minute to the next); medians are printed. The raw rate at 1 in flight is printed once, at the end.

Nodes live on the SQLite-backed component when ``lua-dbi-sqlite3`` is installed, else on the file
component with ``pubsub#persist_items = false`` (``--storage none`` chooses that), so Prosody's file
storage is not what is measured. Such nodes keep no items: the node -> Thoonk routes then follow their
notifications without a snapshot (``NoSnapshot``), which is what this run measures anyway.

    .venv/bin/python bench/xmpp.py [--items 2000] [--inflight 50] [--rounds 3] [--storage auto|sql|none]
        [--data memory|disk]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from slixmpp import ClientXMPP  # noqa: E402

from tests.support.prosody_server import PUBSUB, SQL_PUBSUB, ProsodyServer, password, sqlite_available  # noqa: E402
from thoonk_bridge.payload import Entry, entry_to_element  # noqa: E402
from thoonk_bridge.testing import running_bridge  # noqa: E402
from thoonk_bridge.thoonk.embedded import EmbeddedRedis  # noqa: E402

ATOM_BODY = "x" * 120  # ~200-byte Atom entries, as in the notes' measurements


async def client(server: ProsodyServer, user: str, resource: str) -> ClientXMPP:
    c = ClientXMPP(f"{user}@localhost/{resource}", password(user))
    for p in ("xep_0030", "xep_0004", "xep_0060"):
        c.register_plugin(p)
    c.enable_direct_tls = False
    c.plugin["feature_mechanisms"].unencrypted_scram = True
    c.connect("127.0.0.1", server.port)
    await c.wait_until("session_start", 10)
    c.send_presence()
    return c


def node_form(c: ClientXMPP, persist: bool, max_items: int) -> Any:
    form = c.plugin["xep_0004"].make_form(ftype="submit")
    form.add_field(var="pubsub#max_items", value=str(max_items))
    if not persist:
        form.add_field(var="pubsub#persist_items", ftype="boolean", value=False)
    return form


async def publish_all(c: ClientXMPP, service: str, node: str, ids: list[str], inflight: int) -> None:
    ps = c.plugin["xep_0060"]
    gate = asyncio.Semaphore(inflight)

    async def one(item_id: str) -> None:
        async with gate:
            elem = entry_to_element(Entry(title=f"item {item_id}", content=ATOM_BODY), item_id)
            await ps.publish(service, node, id=item_id, payload=elem, timeout=60)

    await asyncio.gather(*(one(i) for i in ids))


async def raw_ceiling(server: ProsodyServer, service: str, persist: bool, n: int, inflight: int) -> float:
    pub = await client(server, "bridge", f"raw-pub-{uuid.uuid4().hex[:6]}")
    sub = await client(server, "bob", f"raw-sub-{uuid.uuid4().hex[:6]}")
    node = f"bench/raw/{uuid.uuid4().hex[:8]}"
    await pub.plugin["xep_0060"].create_node(service, node, config=node_form(pub, persist, 1000))
    await sub.plugin["xep_0060"].subscribe(service, node)
    got: set[str] = set()
    done = asyncio.Event()
    want = n

    def on_publish(msg: Any) -> None:
        got.add(msg["pubsub_event"]["items"]["item"]["id"])
        if len(got) >= want:
            done.set()

    sub.add_event_handler("pubsub_publish", on_publish)
    warm = [f"w{i}" for i in range(20)]
    want = len(warm)
    await publish_all(pub, service, node, warm, inflight)
    await asyncio.wait_for(done.wait(), 60)
    got.clear()
    done.clear()
    want = n
    ids = [f"r{i}" for i in range(n)]
    started = time.perf_counter()
    await publish_all(pub, service, node, ids, inflight)
    await asyncio.wait_for(done.wait(), 300)
    elapsed = time.perf_counter() - started
    await pub.disconnect()
    await sub.disconnect()
    return n / elapsed


async def publish_feed(feed: Any, ids: list[str], inflight: int) -> None:
    """Thoonk publishes, ``inflight`` outstanding: the feed is fed faster than a node takes items."""
    gate = asyncio.Semaphore(inflight)

    async def one(item_id: str) -> None:
        async with gate:
            await feed.publish(json.dumps({"title": f"item {item_id}", "content": ATOM_BODY}), id=item_id)

    await asyncio.gather(*(one(i) for i in ids))


async def wait_feed(thoonk: Any, name: str, n: int, timeout: float = 120) -> None:
    feed = await thoonk.feed(name)
    deadline = time.monotonic() + timeout
    while await feed.length() < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"feed {name} has {await feed.length()} of {n} items")
        await asyncio.sleep(0.005)


async def bridge_runs(
    server: ProsodyServer, redis_url: str, service: str, persist: bool, n: int, inflight: int, rounds: int
) -> list[tuple[float, float, float]]:
    """``rounds`` times: raw ceiling at ``inflight``, node -> thoonk, thoonk -> node -> thoonk, one after
    the other with the same daemons, so the three of a round share the machine's load of the moment."""
    run = uuid.uuid4().hex[:8]
    in_node, relay_node = f"bench/in/{run}", f"bench/relay/{run}"
    admin = await client(server, "bridge", f"admin-{run}")
    for node in (in_node, relay_node):
        await admin.plugin["xep_0060"].create_node(service, node, config=node_form(admin, persist, 1000))
    settings = server.account("bridge", timeout=30, keepalive=0)
    # Full-JID subscriptions: each notification goes to the one daemon that reads the node, as the raw
    # subscriber gets one per item (a bare-JID one would reach every resource of the account).
    routes = [
        {"name": "in", "from": {"endpoint": f"xmpp:{service}/{in_node}", "subscribe": "full"}, "to": "thoonk:in",
         "initial": "all"},
        {"name": "relay-out", "from": "thoonk:a", "format": "atom",
         "to": [{"endpoint": f"xmpp:{service}/{relay_node}", "max_in_flight": inflight}]},
    ]
    # relay-in runs in a second daemon (same Redis, second resource of the account): one daemon
    # drops what it reads back from an endpoint it just wrote, as the echo of its own write.
    routes2 = [{"name": "relay-in", "from": {"endpoint": f"xmpp:{service}/{relay_node}", "subscribe": "full"},
                "to": "thoonk:b"}]
    settings2 = {**settings, "resource": "bench-2"}
    results: list[tuple[float, float, float]] = []
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory() as tmp2:
        cfg = {"plugins": {"xmpp": settings}, "routes": routes, "log_level": "warning"}
        cfg2 = {"plugins": {"xmpp": settings2}, "routes": routes2, "log_level": "warning"}
        async with (
            running_bridge(cfg, redis_url=redis_url, tmp_path=Path(tmp)) as daemon,
            running_bridge(cfg2, redis_url=redis_url, tmp_path=Path(tmp2)) as daemon2,
        ):
            while not all(r.ready for d in (daemon, daemon2) for r in d.routes.values()):
                await asyncio.sleep(0.01)
            # warm-up
            await publish_all(admin, service, in_node, [f"w{i}" for i in range(20)], inflight)
            await wait_feed(daemon.thoonk, "in", 20)
            feed = await daemon.thoonk.feed("a")
            await publish_feed(feed, [f"w{i}" for i in range(20)], inflight)
            await wait_feed(daemon.thoonk, "b", 20)
            for r in range(rounds):
                raw = await raw_ceiling(server, service, persist, n, inflight)
                # node -> thoonk
                started = time.perf_counter()
                await publish_all(admin, service, in_node, [f"n{r}-{i}" for i in range(n)], inflight)
                await wait_feed(daemon.thoonk, "in", 20 + (r + 1) * n)
                node_to_thoonk = n / (time.perf_counter() - started)
                # thoonk -> node -> thoonk
                started = time.perf_counter()
                await publish_feed(feed, [f"t{r}-{i}" for i in range(n)], inflight)
                await wait_feed(daemon.thoonk, "b", 20 + (r + 1) * n)
                round_trip = n / (time.perf_counter() - started)
                results.append((raw, node_to_thoonk, round_trip))
    await admin.disconnect()
    return results


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--inflight", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3, help="raw/relay rounds; medians are reported")
    parser.add_argument(
        "--storage", choices=("auto", "sql", "none"), default="auto",
        help="sql: the SQLite component (needs lua-dbi-sqlite3); none: nodes with persist_items=false "
        "(no disk, so the least noisy on a busy machine); auto: sql when available, else none",
    )
    parser.add_argument(
        "--data", choices=("memory", "disk"), default="memory",
        help="where Prosody keeps its data: memory (/dev/shm: the server is fast, the bridge's own CPU is "
        "measured) or disk (a temp dir: SQLite's fsyncs set the pace, as on a real server)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    if args.storage == "sql" and not sqlite_available():
        parser.error("--storage sql needs lua-dbi-sqlite3 (apt-get install lua-dbi-sqlite3)")
    if args.storage == "sql" or (args.storage == "auto" and sqlite_available()):
        service, persist, storage = SQL_PUBSUB, True, "sql (SQLite)"
    else:
        service, persist, storage = PUBSUB, False, "internal, persist_items=false"
    # Prosody's data in memory when possible: SQLite's fsyncs on a shared disk would measure the disk
    shm = Path("/dev/shm")
    in_memory = args.data == "memory" and shm.is_dir()
    server = ProsodyServer(Path(tempfile.mkdtemp(prefix="prosody-", dir=shm)) if in_memory else None).start()
    redis = EmbeddedRedis(port=0, persistent=False).start()
    try:
        n, w = args.items, args.inflight
        rounds = await bridge_runs(server, redis.url, service, persist, n, w, max(1, args.rounds))
        raw_1 = await raw_ceiling(server, service, persist, n, 1)
    finally:
        redis.stop()
        server.cleanup()
    raw_w = statistics.median(r[0] for r in rounds)
    n2t = statistics.median(r[1] for r in rounds)
    t2t = statistics.median(r[2] for r in rounds)
    n2t_ratio = statistics.median(r[1] / r[0] for r in rounds)
    t2t_ratio = statistics.median(r[2] / r[0] for r in rounds)
    print(f"xmpp bench: {n} items (~200-byte Atom entries), pubsub storage {storage} "
          f"({'in memory' if in_memory else 'on disk'}), Prosody on loopback, "
          f"median of {len(rounds)} rounds (ratios: median of each round's ratio to that round's raw)")
    print(f"  raw slixmpp publish->notification, {w:>3} in flight: {raw_w:8.0f} items/s")
    print(f"  raw slixmpp publish->notification,   1 in flight: {raw_1:8.0f} items/s")
    print(f"  node -> thoonk (outside publisher, {w} in flight):  {n2t:8.0f} items/s = {n2t_ratio:5.0%} of raw@{w}")
    print(f"  thoonk -> node -> thoonk (two routes, {w} in flight): {t2t:6.0f} items/s = {t2t_ratio:5.0%} of raw@{w}")
    for i, (raw, a, b) in enumerate(rounds, 1):
        print(f"    round {i}: raw@{w} {raw:.0f}/s, node -> thoonk {a:.0f}/s ({a / raw:.0%}), "
              f"thoonk -> node -> thoonk {b:.0f}/s ({b / raw:.0%})")


if __name__ == "__main__":
    asyncio.run(main())
