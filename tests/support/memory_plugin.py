"""An in-memory sink plugin for engine tests: what the router delivered, per sink address."""

from __future__ import annotations

import asyncio
from typing import Any

from thoonk_bridge.plugin import (
    DeliveryError,
    Endpoint,
    EndpointKind,
    EventKind,
    ItemEvent,
    Plugin,
    RouteContext,
    Settings,
    Sink,
)
from thoonk_bridge.testing import wait_until


class MemoryOptions(Settings):
    address: str


class MemorySink(Sink):
    """Holds items in memory; can be told to fail."""

    def __init__(self) -> None:
        self.items: dict[str, str] = {}
        self.applied: list[ItemEvent] = []
        self.fail: DeliveryError | None = None

    async def ids(self) -> dict[str, str | None] | None:
        return None  # like a webhook: the router must rely on its ledger

    async def apply(self, event: ItemEvent) -> None:
        if self.fail is not None:
            raise self.fail
        self.applied.append(event)
        if event.kind is EventKind.RETRACT:
            self.items.pop(event.id, None)
        else:
            assert event.payload is not None
            self.items[event.id] = event.payload


SINKS: dict[str, MemorySink] = {}


class MemoryPlugin(Plugin):
    name = "memory"
    endpoint_kinds = (EndpointKind("memory", sink_options=MemoryOptions),)

    def sink(self, endpoint: Endpoint, route: RouteContext) -> Sink:
        return SINKS.setdefault(endpoint.address, MemorySink())


PLUGINS: dict[str, type[Plugin]] = {"memory": MemoryPlugin}


def route(name: str, source: str, sinks: str | list[str], **options: Any) -> dict[str, Any]:
    return {"name": name, "from": source, "to": sinks, **options}


async def items(daemon: Any, feed: str) -> dict[str, str]:
    return dict(await (await daemon.thoonk.feed(feed)).get_all())


async def idle(daemon: Any) -> None:
    for runner in daemon.routes.values():
        await wait_until(lambda r=runner: r.ready, message=f"route {runner.name} ready")
        for worker in runner.workers:
            await asyncio.wait_for(worker.wait_idle(), 10)
