"""Prometheus collectors of the xmpp plugin (registered on ``PluginContext.metrics``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from thoonk_bridge.metrics import collector


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
        p = "xmpp_"
        self.connected = collector(r, Gauge, p + "connected", "1 while the account has an XMPP session", ["account"])
        self.connects = collector(r, Counter, p + "sessions", "XMPP sessions started", ["account"])
        self.disconnects = collector(r, Counter, p + "disconnects", "XMPP sessions lost", ["account"])
        self.errors = collector(r, Counter, p + "errors", "XMPP errors by kind", ["account", "kind"])
        self.received = collector(r, Counter, p + "items_received", "Items read from nodes", ["route", "format"])
        self.malformed = collector(
            r, Counter, p + "malformed_items", "Node items not relayed (bad payload)", ["route", "reason"]
        )
        self.published = collector(r, Counter, p + "items_published", "Items published to nodes", ["route"])
        self.retracted = collector(r, Counter, p + "items_retracted", "Items retracted from nodes", ["route"])
        self.rejected = collector(
            r, Counter, p + "items_rejected", "Items a node sink refused for good", ["route", "reason"]
        )
