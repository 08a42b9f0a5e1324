"""config/grafana-dashboard.json: every metric it queries is served by a running daemon's /metrics."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.bridge_process import BridgeProcess, wait
from tests.support.prosody_server import ProsodyServer
from thoonk_bridge.thoonk import Thoonk

DASHBOARD = Path(__file__).resolve().parents[2] / "config" / "grafana-dashboard.json"
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",),
            "summary": ("_sum", "_count")}
# PromQL words that look like metric names but are not.
PROMQL = {"sum", "by", "rate", "increase", "max", "count", "or", "vector", "time", "histogram_quantile", "le",
          "label_values", "instance", "route", "sink", "result", "reason", "account", "kind"}


def queried_metrics(dashboard: dict[str, Any]) -> set[str]:
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    names: set[str] = set()
    for expr in exprs:
        expr = re.sub(r'"[^"]*"|\{\{[^}]*\}\}|\[[^]]*\]', "", expr)  # strings, legends, ranges
        names |= {w for w in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr) if w not in PROMQL}
    return names


def served_metrics(text: str) -> set[str]:
    """Sample names /metrics serves or declares (a labelled family without samples yet declares
    its TYPE: the series appear with the first label values)."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, family, kind = line.split(" ", 3)
            family = family.removesuffix("_total") if kind == "counter" else family  # (declared either way)
            names |= {family + suffix for suffix in SUFFIXES.get(kind, ("",))}
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


@pytest.fixture
def bridge(redis_url: str, tmp_path: Path, prosody: ProsodyServer) -> Iterator[BridgeProcess]:
    process = BridgeProcess(tmp_path, {
        "redis": redis_url,
        "plugins": {"feeds": {"output_dir": str(tmp_path / "docs")}, "websub": {}, "xmpp": prosody.account()},
        "routes": [{"name": "news", "from": "thoonk:news", "to": ["thoonk:copy", "feeds:news", "websub:news"]}],
    })
    process.start().wait_ready()
    try:
        yield process
    finally:
        process.stop()


def test_every_metric_the_dashboard_queries_is_served(bridge: BridgeProcess, redis_url: str) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    queried = queried_metrics(dashboard)
    # What the dashboard is for (issue 14 §4): routes, lag, deliveries, retries, dead letters,
    # WebSub, XMPP sessions, event loop lag.
    for wanted in ("thoonk_bridge_route_ready", "thoonk_bridge_route_lag_items", "thoonk_bridge_route_items_out_total",
                   "thoonk_bridge_route_errors_total", "thoonk_bridge_route_dead_letters_total",
                   "thoonk_bridge_websub_deliveries_total", "thoonk_bridge_websub_delivery_retries_total",
                   "thoonk_bridge_xmpp_connected",
                   "thoonk_bridge_event_loop_lag_seconds"):
        assert wanted in queried, wanted
    with Thoonk(url=redis_url) as pubsub:
        pubsub.feed("news").publish(json.dumps({"title": "Hello"}), id="1")
    wait(lambda: "thoonk_bridge_route_items_out_total{" in bridge.get("/metrics")[1], message="a delivery counted")
    served = served_metrics(bridge.get("/metrics")[1])
    assert queried - served == set()
    assert "thoonk_bridge_xmpp_connected" in served and 'thoonk_bridge_xmpp_connected{account="default"} 1.0' in \
        bridge.get("/metrics")[1]


def test_dashboard_is_importable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}" and panel["targets"], panel["title"]
        assert all(t["expr"] for t in panel["targets"]), panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
