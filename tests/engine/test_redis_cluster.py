"""Redis Cluster beyond the core suite (which runs test_thoonk_feed/queue/job/sorted_feed on the cluster
too, see conftest.py): feed lifecycle in separate steps, events from feeds on every node, a daemon
route, and the fleet status read from a cluster.

Three masters on loopback, made one cluster with ``redis-cli --cluster create`` (redis_topologies.py).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis

from tests.support.redis_topologies import RedisCluster3
from thoonk_bridge.fleet import read_fleet
from thoonk_bridge.redis_client import sync_client
from thoonk_bridge.testing import running_bridge, wait_until
from thoonk_bridge.thoonk import AsyncThoonk, FeedDoesNotExist, FeedExists, Thoonk


@pytest.fixture
def cluster(redis_cluster: RedisCluster3) -> RedisCluster3:
    redis_cluster.flush()
    return redis_cluster


def tags_on_every_node(client: redis.cluster.RedisCluster, count: int = 3) -> list[str]:
    """Hash tags whose slots belong to ``count`` different primaries."""
    found: dict[str, str] = {}
    i = 0
    while len(found) < count:
        tag = f"t{i}"
        node = client.get_node_from_key(f"{{{tag}}}").name
        found.setdefault(node, tag)
        i += 1
    return list(found.values())


def test_names_without_a_hash_tag_are_refused(cluster: RedisCluster3) -> None:
    with Thoonk(url=cluster.url) as pubsub:
        with pytest.raises(ValueError, match="hash tag"):
            pubsub.feed("plain")
        with pytest.raises(ValueError, match="hash tag"):
            pubsub.delete_feed("plain")
        assert pubsub.get_feed_names() == set()
        assert pubsub.feed("{ok}").publish("x", id="1") == "1"


async def test_lifecycle_in_separate_steps_with_events(cluster: RedisCluster3) -> None:
    raw = sync_client(cluster.url, decode_responses=True)
    pubsub = AsyncThoonk(cluster.url)
    try:
        async with pubsub.events(lifecycle=True) as events:
            await pubsub.create_feed("{a}", {"max_length": 5})
            with pytest.raises(FeedExists):
                await pubsub.create_feed("{a}")
            await pubsub.queue("{b}")
            await pubsub.queue("{b}")  # ensure: no second announcement
            await pubsub.set_config("{a}", {"title": "A"})
            await pubsub.delete_feed("{b}")
            with pytest.raises(FeedDoesNotExist):
                await pubsub.delete_feed("{b}")
            with pytest.raises(FeedDoesNotExist):
                await pubsub.set_config("{b}", {"x": "1"})
            got = []
            while len(got) < 6:
                event = await events.get(5)
                assert event is not None, got
                # An earlier test's publish can still be crossing the cluster bus: only these feeds count.
                if event.feed in ("{a}", "{b}"):
                    got.append((event.kind, event.feed))
        # Events of different feeds come from different nodes and may interleave; each feed's own
        # lifecycle events all come from its node, in the order they happened.
        per_feed = {name: [kind for kind, feed in got if feed == name] for name in ("{a}", "{b}")}
        assert per_feed == {"{a}": ["create", "config", "config"], "{b}": ["create", "config", "delete"]}, got
        assert await pubsub.get_feed_names() == {"{a}"}
        assert await pubsub.get_config("{a}") == {"type": "feed", "max_length": "5", "title": "A"}
        assert raw.keys("feed.*{b}*", target_nodes=redis.cluster.RedisCluster.PRIMARIES) == []

        # A create cut short between its two steps (config hash written, `feeds` not): the feed works,
        # and the next ensure lists it. The reverse (listed, no keys) is repaired by delete or ensure.
        raw.hset("feed.config:{half}", "type", "feed")
        assert "{half}" not in await pubsub.get_feed_names()
        await (await pubsub.feed("{half}")).publish("x", id="1")
        assert "{half}" in await pubsub.get_feed_names()
        raw.sadd("feeds", "{ghost}")
        await pubsub.delete_feed("{ghost}")
        assert "{ghost}" not in await pubsub.get_feed_names()
    finally:
        raw.close()
        await pubsub.aclose()


async def test_events_from_feeds_on_every_node(cluster: RedisCluster3) -> None:
    raw = sync_client(cluster.url)
    names = [f"{{{tag}}}news" for tag in tags_on_every_node(raw)]
    raw.close()
    pubsub = AsyncThoonk(cluster.url)
    try:
        feeds = [await pubsub.feed(name) for name in names]
        async with pubsub.events(*names) as named, pubsub.events() as every:
            for n in range(20):
                await asyncio.gather(*(f.publish(f"{f.name} {n}", id=str(n)) for f in feeds))
            await feeds[0].publish("edited", id="0")
            await feeds[1].retract("1")
            for stream in (named, every):
                got: dict[str, list[tuple[str, str | None]]] = {name: [] for name in names}
                count = 0
                while count < len(names) * 20 + 2:
                    event = await stream.get(5)
                    assert event is not None, got
                    if event.feed not in got:
                        continue  # an earlier test's event, late through the cluster bus
                    got[event.feed].append((event.kind, event.id))
                    count += 1
                for name in names:  # each feed's events in its own order
                    ids = [i for kind, i in got[name] if kind == "publish"]
                    assert ids == [str(n) for n in range(20)]
                assert got[names[0]][-1] == ("edit", "0")
                assert got[names[1]][-1] == ("retract", "1")
    finally:
        await pubsub.aclose()


async def test_daemon_route_on_a_cluster(cluster: RedisCluster3, tmp_path: Path) -> None:
    config = {"routes": [{"name": "copy", "from": "thoonk:{copy}in", "to": "thoonk:{copy}out", "mirror": True}]}
    pubsub = AsyncThoonk(cluster.url)
    try:
        source = await pubsub.feed("{copy}in")
        await source.publish_many([(f"old{i}", f"before {i}") for i in range(50)])
        async with running_bridge(config, redis_url=cluster.url, tmp_path=tmp_path, plugins={}) as daemon:
            await wait_until(lambda: "copy" in daemon.routes and daemon.routes["copy"].ready, 30,
                             message="route ready")
            await asyncio.gather(*(source.publish(f"item {i}", id=f"i{i}") for i in range(200)))
            await source.retract("old3")
            sink = await pubsub.feed("{copy}out")

            async def copied() -> bool:
                return await sink.get_all() == await source.get_all()

            await wait_until(copied, 30, message="sink equals source")
            fleet = await asyncio.to_thread(_fleet, cluster.url)
            assert fleet["leases"] == {"copy": daemon.instance_id}
            assert [r["instance"] for r in fleet["instances"]] == [daemon.instance_id]
    finally:
        await pubsub.aclose()


def _fleet(url: str) -> dict:
    client = sync_client(url)
    try:
        return read_fleet(client)
    finally:
        client.close()
