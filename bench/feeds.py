"""Benchmark of the feeds sink.

1. Render time of a 1,000-entry feed in Atom and RSS (and JSON Feed): cold (every entry parsed,
   sanitised and rendered) and warm (entries already prepared: what a re-render after one change costs).
2. End to end, through a real daemon (Redis, router, feeds sink): 10,000 publishes to a Thoonk feed,
   then the time from the last publish to an up-to-date ``news.atom`` on disk. The same run measures
   a naive baseline: the same daemon with a sink that renders and writes the documents on every event.
   Prints both and the ratio.

    .venv/bin/python bench/feeds.py [--events 10000] [--baseline-events N] [--max-items 50]

``--baseline-events`` sets how many events the baseline gets when the
naive sink is too slow to wait for (its time then is extrapolated linearly and marked so); by default
the baseline runs min(events, 1000) events, since it needs one render (and fsyncs) per event.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from thoonk_bridge.payload import parse
from thoonk_bridge.plugin import ItemEvent
from thoonk_bridge.plugins.feeds.plugin import FeedsPlugin
from thoonk_bridge.plugins.feeds.render import FeedMeta, StoredItem, render_documents
from thoonk_bridge.plugins.feeds.sink import FeedSink
from thoonk_bridge.testing import running_bridge
from thoonk_bridge.thoonk.embedded import EmbeddedRedis


def payload(i: int) -> str:
    return json.dumps(
        {
            "title": f"Entry {i}",
            "link": f"https://example.org/posts/{i}",
            "content": f"<p>Body of entry <b>{i}</b> with <a href='https://example.org/{i}'>a link</a>.</p>" * 3,
            "content_type": "html",
            "author": "Bench",
            "published": "2024-05-01T10:00:00Z",
            "categories": ["bench", "feeds"],
        }
    )


def bench_render(entries: int, repeat: int) -> dict[str, dict[str, float]]:
    meta = FeedMeta(
        name="bench",
        title="Bench",
        subtitle="bench",
        link="https://example.org/",
        author="bench",
        author_email=None,
        language="en",
        feed_id="https://example.org/feeds/bench.atom",
        self_urls={f: f"https://example.org/feeds/bench.{f}" for f in ("atom", "rss", "json")},
        hub_url="https://example.org/hub",
    )
    results: dict[str, dict[str, float]] = {}
    for fmt in ("atom", "rss", "json"):
        cold, warm = [], []
        for _ in range(repeat):
            items = [
                StoredItem(str(i), payload(i), str(i), i, 1714557600.0, entry=parse(payload(i))) for i in range(entries)
            ]
            started = time.perf_counter()
            render_documents(meta, items, (fmt,))
            cold.append(time.perf_counter() - started)
            started = time.perf_counter()
            render_documents(meta, items, (fmt,))
            warm.append(time.perf_counter() - started)
        results[fmt] = {"cold": statistics.median(cold), "warm": statistics.median(warm)}
    return results


class NaiveSink(FeedSink):
    """The baseline: render and write every document on every event."""

    async def apply(self, event: ItemEvent) -> None:
        await super().apply(event)
        await self.document.render_now()


class NaiveFeedsPlugin(FeedsPlugin):
    def sink(self, endpoint: Any, route: Any) -> Any:
        sink = super().sink(endpoint, route)
        return NaiveSink(sink.document, route, open_document=self.open_document,  # type: ignore[attr-defined]
                         close_document=self.close_document, bad_items=self.metrics.bad_items)


async def end_to_end(redis_url: str, plugin: type, events: int, max_items: int) -> tuple[float, float, int]:
    """(seconds publishing, seconds from the last publish to an up-to-date file, renders)."""
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp:
        tmp_path = Path(tmp)
        out = tmp_path / "docs"
        config = {
            "log_level": "warning",
            "plugins": {"feeds": {"output_dir": str(out)}},
            "routes": [
                {
                    "name": "bench",
                    "from": "thoonk:bench",
                    "to": {"endpoint": "feeds:bench", "max_items": max_items, "formats": ["atom", "rss"]},
                }
            ],
        }
        async with running_bridge(
            config, redis_url=redis_url, tmp_path=tmp_path, plugins={"feeds": plugin}, drain=0.1
        ) as daemon:
            while not daemon.routes["bench"].ready:
                await asyncio.sleep(0.01)
            feed = await daemon.thoonk.feed("bench")
            last = f"<title>Entry {events - 1}</title>"
            started = time.perf_counter()
            chunk = 200
            for base in range(0, events, chunk):
                await asyncio.gather(
                    *(feed.publish(payload(i), id=str(i)) for i in range(base, min(events, base + chunk)))
                )
            published = time.perf_counter()
            path = out / "bench.atom"
            while True:
                try:
                    if last in path.read_text():
                        break
                except OSError:
                    pass
                await asyncio.sleep(0.002)
            done = time.perf_counter()
            renders = daemon.plugins["feeds"].documents["bench"].renders
            # clear the feed so the next run starts empty
            await daemon.redis.flushall()
        return published - started, done - published, renders


async def sink_only(naive: bool, events: int, max_items: int) -> tuple[float, float, int]:
    """The sink alone, no Redis or router: (seconds applying, seconds from the last apply to the
    file being up to date, renders)."""
    from thoonk_bridge.plugins.feeds.document import FeedDocument

    meta = FeedMeta(
        name="bench",
        title="Bench",
        subtitle="bench",
        link="https://example.org/",
        author="bench",
        author_email=None,
        language=None,
        feed_id="https://example.org/feeds/bench.atom",
        self_urls={f: f"https://example.org/feeds/bench.{f}" for f in ("atom", "rss", "json")},
    )
    payloads = [payload(i) for i in range(events)]
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp:
        doc = FeedDocument(
            meta,
            directory=Path(tmp),
            formats=("atom", "rss"),
            max_items=max_items,
            max_staleness=0.25,
            quiet=0.02,
            max_payload_bytes=1_000_000,
        )
        doc.load()
        await doc.render_now(first=True)
        if not naive:
            doc.start()
        before = doc.renders
        started = time.perf_counter()
        for i, body in enumerate(payloads):
            doc.put(str(i), body)
            if naive:
                await doc.render_now()
            elif i % 100 == 0:
                await asyncio.sleep(0)  # events arrive over time, as from the router
        applied = time.perf_counter()
        await doc.wait_rendered()
        done = time.perf_counter()
        await doc.stop()
        return applied - started, done - applied, doc.renders - before


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--baseline-events", type=int, default=None)
    parser.add_argument("--max-items", type=int, default=50)
    parser.add_argument("--render-entries", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    print(f"render of a {args.render_entries}-entry feed (median of {args.repeat}):")
    for fmt, times in bench_render(args.render_entries, args.repeat).items():
        print(f"  {fmt:5s} cold {times['cold'] * 1000:8.1f} ms   warm {times['warm'] * 1000:8.1f} ms")

    print("\nsink alone (no Redis, no router), from the first event to the file up to date:")
    apply_s, lag_s, renders_s = await sink_only(False, args.events, args.max_items)
    print(
        f"  coalesced: {args.events} events applied in {apply_s * 1000:.0f} ms, file up to date "
        f"{lag_s * 1000:.0f} ms later; {renders_s} renders; total {(apply_s + lag_s) * 1000:.0f} ms"
    )
    naive_events = args.baseline_events or min(args.events, 1000)
    napply, nlag, nrenders = await sink_only(True, naive_events, args.max_items)
    nscale = args.events / naive_events
    ntotal = (napply + nlag) * nscale
    print(
        f"  naive:     {naive_events} events, one render each: {(napply + nlag) * 1000:.0f} ms; {nrenders} renders"
        + (f"; x{nscale:g} -> {ntotal * 1000:.0f} ms for {args.events}" if nscale != 1 else "")
    )
    print(f"  ratio (naive / coalesced, total time): {ntotal / (apply_s + lag_s):.1f}x")

    redis = EmbeddedRedis(port=0, persistent=False).start()
    try:
        pub, lag, renders = await end_to_end(redis.url, FeedsPlugin, args.events, args.max_items)
        print(
            f"\ncoalesced sink: {args.events} publishes in {pub:.2f} s; last publish -> file up to date: "
            f"{lag * 1000:.0f} ms; {renders} renders"
        )
        base_events = args.baseline_events or min(args.events, 1000)
        bpub, blag, brenders = await end_to_end(redis.url, NaiveFeedsPlugin, base_events, args.max_items)
        scale = args.events / base_events
        mark = f" (measured on {base_events} events, x{scale:g} extrapolated)" if scale != 1 else ""
        print(
            f"naive baseline: {base_events} publishes in {bpub:.2f} s; last publish -> file up to date: "
            f"{blag * 1000:.0f} ms; {brenders} renders{mark}"
        )
        blag_scaled = (bpub + blag) * scale - pub if scale != 1 else blag
        print(f"\nratio (baseline lag / coalesced lag): {blag_scaled / lag:.1f}x")
    finally:
        redis.stop()
    return 0


if __name__ == "__main__":
    del yaml  # imported to fail early with a clear message when the test extras are missing
    sys.exit(asyncio.run(main()))
