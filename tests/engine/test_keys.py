"""thoonk_bridge.keys: the wire format of the bridge's Redis keys, and reading a route back from a key."""

from __future__ import annotations

from thoonk_bridge import keys


def test_key_names_are_the_wire_format() -> None:
    assert keys.route_ledger("news", "feeds:news") == "bridge.route:news:ledger:feeds:news"
    assert keys.route_started("news") == "bridge.route:news:started"
    assert keys.route_checkpoint("news") == "bridge.route:news:checkpoint"
    assert keys.lease(keys.route_lease("news")) == "bridge.lease:{route:news}"
    assert keys.fence(keys.route_lease("news")) == "bridge.fence:{route:news}"
    assert keys.lease_spec(keys.route_lease("news")) == "bridge.lease.spec:{route:news}"
    assert keys.INSTANCES == "bridge.instances"
    assert keys.TOPICS == "bridge.topics"
    assert keys.CONSOLE_REPORTS == "bridge.console.reports"
    assert keys.dead_letter_feed("news") == "bridge.deadletter.{news}"
    assert keys.replay_requests("news") == "bridge.deadletter.{news}:replay"
    assert keys.replay_reply("news", "r1") == "bridge.deadletter.{news}:replay:r1"
    assert keys.REPLAY_DOORBELL == "bridge.deadletter.requests"
    assert keys.trace_ring("news") == "bridge.trace.{news}"
    assert keys.trace_route("news") == "bridge.trace.{news}:route"
    assert keys.feeds_document("news", "atom") == "bridge.feeds.doc:{news}:atom"
    assert keys.XMPP_CREATED == "bridge.xmpp.created"
    assert keys.xmpp_sink_ledger("bot", "pubsub.example.org", "news") == "bridge.xmpp.sink:bot:pubsub.example.org/news"
    assert keys.websub_subscription("0123456789abcdef.ff") == "websub:sub:{0123456789abcdef}ff"
    assert keys.websub_topic("t") == "websub:topic:{t}"
    assert keys.websub_rate("client", 7) == "websub:rl:{rl}client:7"


def test_a_route_is_read_back_from_its_keys() -> None:
    for route in ("news", "a:b", "with{braces}"):
        assert keys.route_of_lease(keys.lease(keys.route_lease(route))) == route
        assert keys.route_of_lease(keys.lease(keys.route_lease(route)).encode()) == route
        assert keys.route_of_lease(keys.route_lease(route)) == route
        assert keys.route_of_trace(keys.trace_route(route)) == route
        assert keys.dead_letter_route(keys.dead_letter_feed(route)) == route
    assert keys.route_of_lease("bridge.lease:{job:x}") is None
    assert keys.route_of_trace("bridge.trace.{news}") is None
    assert keys.dead_letter_route("news") is None


def test_scan_patterns_match_the_keys() -> None:
    from fnmatch import fnmatchcase

    # Redis SCAN's glob treats { and } literally, like fnmatch.
    assert fnmatchcase(keys.lease(keys.route_lease("news")), keys.ROUTE_LEASE_PATTERN)
    assert not fnmatchcase(keys.lease("job:x"), keys.ROUTE_LEASE_PATTERN)
    assert fnmatchcase(keys.trace_route("news"), keys.TRACE_ROUTES_PATTERN)
    assert not fnmatchcase(keys.trace_ring("news"), keys.TRACE_ROUTES_PATTERN)
