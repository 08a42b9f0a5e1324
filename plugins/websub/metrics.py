"""Prometheus collectors of the websub plugin (registered on ``PluginContext.metrics``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from thoonk_bridge.metrics import collector


class Metrics:
    """- ``requests{result}``: hub requests by HTTP status answered.
    - ``verifications{mode,result}``, ``distributions{result}``, ``deliveries{result}`` (ok, failed,
      gone, deferred), ``retries``, ``drops{reason}``, ``breaker_opened``, ``latency`` (from a
      topic change to its successful delivery), ``pings{result}``, ``refusals{reason}`` (429s),
      ``received{result}`` (requests at subscriber callbacks).
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry  # every name gets the thoonk_bridge_ prefix: thoonk_bridge_websub_...
        self.requests = collector(r, Counter, "websub_hub_requests", "Hub requests by HTTP status answered", ["result"])
        self.verifications = collector(r, Counter, "websub_verifications",
                                       "Verifications of intent by mode and outcome", ["mode", "result"])
        self.distributions = collector(r, Counter, "websub_distributions", "Topic changes seen by the hub", ["result"])
        self.deliveries = collector(r, Counter, "websub_deliveries",
                                    "Delivery attempts by outcome (ok, failed, gone, deferred)", ["result"])
        self.retries = collector(r, Counter, "websub_delivery_retries", "Deliveries scheduled for another attempt")
        self.drops = collector(r, Counter, "websub_delivery_drops", "Notifications given up, by reason", ["reason"])
        self.breaker_opened = collector(r, Counter, "websub_breaker_opened",
                                        "Times a failing callback host was paused")
        self.latency = collector(
            r, Histogram, "websub_delivery_latency_seconds", "From a topic change to its successful delivery",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600))
        self.pings = collector(r, Counter, "websub_publish_pings", "Publish pings sent to outside hubs", ["result"])
        self.refusals = collector(r, Counter, "websub_hub_refusals",
                                  "Subscription requests refused with 429, by limit", ["reason"])
        self.received = collector(r, Counter, "websub_subscriber_requests",
                                  "Requests at subscriber callbacks by outcome", ["result"])


__all__ = ["Metrics"]
