"""Prometheus collectors of the xmpp plugin (registered on ``PluginContext.metrics``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class XmppMetrics:
    """- ``connected{account}``: 1 while the account has a session.
    - ``connects{account}`` / ``disconnects{account}``: sessions started / lost.
    - ``errors{account,kind}``: kind = auth, connect, stream, iq, event.
    - ``received{route,format}``: items read from a node (snapshot and notifications), by payload
      format (atom, json, text = XML of another namespace).
    - ``malformed{route,reason}``: node items not relayed (no-payload, invalid, too-large).
    - ``published{route}`` / ``retracted{route}``: writes to a node.
    - ``rejected{route,reason}``: items a sink refused for good (too-large, invalid, refused).
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        p = "thoonk_bridge_xmpp_"
        self.connected = Gauge(p + "connected", "1 while the account has an XMPP session", ["account"], registry=r)
        self.connects = Counter(p + "sessions", "XMPP sessions started", ["account"], registry=r)
        self.disconnects = Counter(p + "disconnects", "XMPP sessions lost", ["account"], registry=r)
        self.errors = Counter(p + "errors", "XMPP errors by kind", ["account", "kind"], registry=r)
        self.received = Counter(p + "items_received", "Items read from nodes", ["route", "format"], registry=r)
        self.malformed = Counter(
            p + "malformed_items", "Node items not relayed (bad payload)", ["route", "reason"], registry=r
        )
        self.published = Counter(p + "items_published", "Items published to nodes", ["route"], registry=r)
        self.retracted = Counter(p + "items_retracted", "Items retracted from nodes", ["route"], registry=r)
        self.rejected = Counter(
            p + "items_rejected", "Items a node sink refused for good", ["route", "reason"], registry=r
        )
