"""Every Redis key name the bridge writes beside the Thoonk data (one module: the wire format at a glance).

The Thoonk core's own keys (``feed.ids:NAME``, ``job.stalled:NAME``...) are in
:mod:`thoonk_bridge.thoonk.keys`; everything else is here, built by the functions below and never
spelled elsewhere in the engine or the built-in plugins. A ``{...}`` part is a Redis Cluster hash tag:
the keys of one route (one lease, one feed document, one WebSub topic) live in one slot.

Engine (prefix ``bridge.``):

============================================  =====  ==================================================
``bridge.route:{ROUTE}:ledger:{SINK}``        hash   item id -> ``HASH@US``: what a route delivered to a
                                                     sink (docs/reconcile.md)
``bridge.route:{ROUTE}:started``              hash   sink -> unix time of its first reconcile
``bridge.route:{ROUTE}:checkpoint``           hash   sink -> ``FINGERPRINT|SOURCE|SINK`` versions
                                                     (a drained stop; the next start may skip reconcile)
``bridge.lease:{NAME}``                       str    a lease's holder, ``INSTANCE:FENCE`` (expires)
``bridge.fence:{NAME}``                       str    the lease's term counter
``bridge.lease.spec:{NAME}``                  str    fingerprint of what the holder runs (expires)
``bridge.instances``                          hash   instance id -> JSON heartbeat (the fleet)
``bridge.topics``                             set    every HTTP path some daemon serves
``bridge.console.reports``                    hash   instance id -> JSON report (the console)
``bridge.deadletter.{ROUTE}``                 Thoonk feed of a route's undeliverable items
``bridge.deadletter.{ROUTE}:replay``          list   replay requests not yet taken
``bridge.deadletter.{ROUTE}:replay:REQUEST``  str    a replay's answer (expires)
``bridge.deadletter.requests``                str    counter bumped with each replay request (doorbell)
``bridge.trace.{ROUTE}``                      list   the route's newest delivery outcomes
``bridge.trace.{ROUTE}:route``                hash   ``source``/``sinks`` of the traced route
============================================  =====  ==================================================

A route's lease is named ``route:ROUTE`` (:func:`route_lease`), so its key is
``bridge.lease:{route:ROUTE}``.

Built-in plugins: ``bridge.feeds.doc:{NAME}:FMT`` (feeds: a rendered document),
``bridge.xmpp.created`` and ``bridge.xmpp.sink:ACCOUNT:SERVICE/NODE`` (xmpp), and the WebSub keys
under ``websub:``::

    websub:sub:{T}P             hash  one verified hub subscription (topic, callback, secret, lease, ...)
    websub:subs                 zset  sid -> lease end (epoch s): every subscription, for sweeps and the CLI
    websub:topic:{T}            zset  sid -> lease end: the subscriptions of one topic URL
    websub:tstate:{T}           hash  seq (distributions so far), hash (sha256 of the last body), ctype
    websub:body:{T}sha256       str   a distributed body, shared by all its deliveries (expires)
    websub:retry                zset  delivery/ping job item -> due time (epoch s)
    websub:rl:{rl}KIND:{window} hash  subscription requests per client / callback host / callback in one
                                      window (hashed keys, at most rate_limit_max_keys fields, expires)
    websub:rawtopics            set   names of the raw topics published (/topics/NAME)
    websub:raw:{name}           hash  body, content_type of a raw topic
    websub:client:{key}         hash  one subscription of ours at an outside hub
    websub:cb:{callback id}     str   callback id -> client key
    websub:inbox:{key}          list  deliveries received for a client, not yet turned into events
    websub:seen:{key}           hash  item id -> content hash, of a client's items
"""

from __future__ import annotations

from thoonk_bridge.thoonk.text import as_text

__all__ = [
    "CONSOLE_REPORTS",
    "DEAD_LETTER_PREFIX",
    "INSTANCES",
    "REPLAY_DOORBELL",
    "ROUTE_LEASE_PATTERN",
    "ROUTE_PREFIX",
    "TOPICS",
    "TRACE_PREFIX",
    "TRACE_ROUTES_PATTERN",
    "WEBSUB_PREFIX",
    "WEBSUB_RAW_TOPICS",
    "WEBSUB_RETRY",
    "WEBSUB_SUBS",
    "XMPP_CREATED",
    "dead_letter_feed",
    "dead_letter_route",
    "feeds_document",
    "fence",
    "lease",
    "lease_spec",
    "replay_reply",
    "replay_requests",
    "route_checkpoint",
    "route_lease",
    "route_ledger",
    "route_of_lease",
    "route_of_trace",
    "route_started",
    "trace_ring",
    "trace_route",
    "websub_body",
    "websub_callback",
    "websub_client",
    "websub_inbox",
    "websub_raw",
    "websub_rate",
    "websub_seen",
    "websub_subscription",
    "websub_topic",
    "websub_topic_state",
    "xmpp_sink_ledger",
]

# --------------------------------------------------------------------------- routes (router/)

ROUTE_PREFIX = "bridge.route:"


def route_ledger(route: str, sink: str) -> str:
    """Hash: item id -> ``HASH@US`` of what ``route`` delivered to ``sink``."""
    return f"{ROUTE_PREFIX}{route}:ledger:{sink}"


def route_started(route: str) -> str:
    """Hash: sink -> unix time of that sink's first reconcile."""
    return f"{ROUTE_PREFIX}{route}:started"


def route_checkpoint(route: str) -> str:
    """Hash: sink -> the versions seen when the route last stopped drained."""
    return f"{ROUTE_PREFIX}{route}:checkpoint"


# --------------------------------------------------------------------------- leases (lease.py, ownership.py)


def lease(name: str) -> str:
    """The holder's token ``INSTANCE:FENCE`` of lease ``name`` (one hash tag per lease)."""
    return f"bridge.lease:{{{name}}}"


def fence(name: str) -> str:
    """The term counter of lease ``name``."""
    return f"bridge.fence:{{{name}}}"


def lease_spec(name: str) -> str:
    """The fingerprint of what the holder of lease ``name`` runs."""
    return f"bridge.lease.spec:{{{name}}}"


_ROUTE_LEASE = "route:"


def route_lease(route: str) -> str:
    """The name of ``route``'s lease (``route:ROUTE``)."""
    return f"{_ROUTE_LEASE}{route}"


ROUTE_LEASE_PATTERN = lease(_ROUTE_LEASE + "*")  # SCAN pattern of every route's lease key


def route_of_lease(key: str | bytes) -> str | None:
    """The route of a lease name (``route:R``) or lease key (``bridge.lease:{route:R}``); None for others."""
    text = as_text(key)
    head, tail = lease(_ROUTE_LEASE)[:-1], "}"  # "bridge.lease:{route:" ... "}"
    if text.startswith(head) and text.endswith(tail):
        return text[len(head) : -len(tail)]
    if text.startswith(_ROUTE_LEASE):
        return text[len(_ROUTE_LEASE) :]
    return None


# --------------------------------------------------------------------------- the fleet

INSTANCES = "bridge.instances"  # hash: instance id -> JSON heartbeat (fleet.py)
TOPICS = "bridge.topics"  # set: every path some daemon of the fleet has registered (topics.py)
CONSOLE_REPORTS = "bridge.console.reports"  # hash: instance id -> JSON report (console/web.py)

# --------------------------------------------------------------------------- dead letters

DEAD_LETTER_PREFIX = "bridge.deadletter."
REPLAY_DOORBELL = DEAD_LETTER_PREFIX + "requests"  # counter: bumped with each replay request


def dead_letter_feed(route: str) -> str:
    """Name of the Thoonk feed holding ``route``'s undeliverable items."""
    return f"{DEAD_LETTER_PREFIX}{{{route}}}"


def dead_letter_route(feed: str) -> str | None:
    """The route of a dead-letter feed name (None: not one)."""
    head = DEAD_LETTER_PREFIX + "{"
    if feed.startswith(head) and feed.endswith("}"):
        return feed[len(head) : -1]
    return None


def replay_requests(route: str) -> str:
    """List: replay requests for ``route`` not yet taken by its daemon."""
    return f"{dead_letter_feed(route)}:replay"


def replay_reply(route: str, request: str) -> str:
    """The answer to one replay request (expires)."""
    return f"{dead_letter_feed(route)}:replay:{request}"


# --------------------------------------------------------------------------- traces (trace.py)

TRACE_PREFIX = "bridge.trace."


def trace_ring(route: str) -> str:
    """List: ``route``'s newest delivery outcomes."""
    return f"{TRACE_PREFIX}{{{route}}}"


def trace_route(route: str) -> str:
    """Hash: ``source``/``sinks`` of a traced route."""
    return f"{trace_ring(route)}:route"


TRACE_ROUTES_PATTERN = f"{TRACE_PREFIX}{{*}}:route"  # SCAN pattern of every trace_route key


def route_of_trace(key: str | bytes) -> str | None:
    """The route of a :func:`trace_route` key (None: not one)."""
    text = as_text(key)
    head, tail = TRACE_PREFIX + "{", "}:route"
    if text.startswith(head) and text.endswith(tail):
        return text[len(head) : -len(tail)]
    return None


# --------------------------------------------------------------------------- built-in plugins


def feeds_document(name: str, fmt: str) -> str:
    """Hash: one rendered format of ``feeds:NAME`` (``body``, ``gzip``, ``etag``, ``last_modified``,
    ``content_type``)."""
    return f"bridge.feeds.doc:{{{name}}}:{fmt}"


XMPP_CREATED = "bridge.xmpp.created"  # set of "SERVICE/NODE": nodes an xmpp sink created


def xmpp_sink_ledger(account: str, service: str, node: str) -> str:
    """Hash: what an xmpp sink published to ``service``'s ``node`` with ``account``."""
    return f"bridge.xmpp.sink:{account}:{service}/{node}"


# WebSub (plugins/websub): ``T`` is a topic's hash tag (``sha256(topic)[:16]``), ``sid`` a subscription
# id ``T.P`` (store.py says how both are made).
WEBSUB_PREFIX = "websub:"
WEBSUB_SUBS = WEBSUB_PREFIX + "subs"  # zset: sid -> lease end (epoch s), every subscription
WEBSUB_RETRY = WEBSUB_PREFIX + "retry"  # zset: delivery/ping job item -> due time (epoch s)
WEBSUB_RAW_TOPICS = WEBSUB_PREFIX + "rawtopics"  # set: names of the raw topics (/topics/NAME)


def websub_subscription(sid: str) -> str:
    """Hash: one verified hub subscription (``websub:sub:{T}P``)."""
    tag, _, rest = sid.partition(".")
    return f"{WEBSUB_PREFIX}sub:{{{tag}}}{rest}"


def websub_topic(tag: str) -> str:
    """Zset: sid -> lease end, the subscriptions of one topic."""
    return f"{WEBSUB_PREFIX}topic:{{{tag}}}"


def websub_topic_state(tag: str) -> str:
    """Hash: ``seq``, ``hash`` (of the last body) and ``ctype`` of one topic."""
    return f"{WEBSUB_PREFIX}tstate:{{{tag}}}"


def websub_body(tag: str, digest: str) -> str:
    """Str: a distributed body, shared by all its deliveries (expires)."""
    return f"{WEBSUB_PREFIX}body:{{{tag}}}{digest}"


def websub_rate(kind: str, window: int) -> str:
    """Hash: subscription requests per client / callback host / callback in one window (expires)."""
    return f"{WEBSUB_PREFIX}rl:{{rl}}{kind}:{window}"


def websub_raw(name: str) -> str:
    """Hash: ``body``, ``ctype`` of a raw topic (/topics/NAME)."""
    return f"{WEBSUB_PREFIX}raw:{name}"


def websub_client(key: str) -> str:
    """Hash: one subscription of ours at an outside hub."""
    return f"{WEBSUB_PREFIX}client:{key}"


def websub_callback(cbid: str) -> str:
    """Str: callback id -> client key."""
    return f"{WEBSUB_PREFIX}cb:{cbid}"


def websub_inbox(key: str) -> str:
    """List: deliveries received for a client, not yet turned into events."""
    return f"{WEBSUB_PREFIX}inbox:{key}"


def websub_seen(key: str) -> str:
    """Hash: item id -> content hash, of a client's items."""
    return f"{WEBSUB_PREFIX}seen:{key}"
