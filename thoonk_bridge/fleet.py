"""What every daemon sharing a Redis reports about itself (read by ``thoonk-bridge status``)."""

from __future__ import annotations

import json
import time
from typing import Any

from thoonk_bridge.daemon import INSTANCES_KEY
from thoonk_bridge.thoonk.text import as_text


def read_fleet(redis: Any) -> dict[str, Any]:
    """``{"instances": [...], "leases": {route: holder}}`` from a sync redis-py client.

    An instance whose heartbeat is older than three lease times is marked ``stale`` (it died
    without saying goodbye; its leases have expired and been taken over, or will be).
    """
    now = time.time()
    instances = []
    for raw in redis.hgetall(INSTANCES_KEY).values():
        try:
            record = json.loads(as_text(raw))
        except ValueError:
            continue
        age = now - float(record.get("heartbeat", 0))
        record["heartbeat_age"] = age
        record["stale"] = age > 3 * float(record.get("lease_seconds", 15))
        instances.append(record)
    instances.sort(key=lambda r: r["instance"])
    leases: dict[str, str] = {}
    for key in redis.scan_iter(match="bridge.lease:{route:*}", count=500):
        value = redis.get(key)
        if value is None:
            continue
        name = as_text(key)[len("bridge.lease:{route:"):-1]
        leases[name] = as_text(value).rsplit(":", 1)[0]
    return {"instances": instances, "leases": leases}
