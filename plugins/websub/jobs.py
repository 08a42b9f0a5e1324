"""Thin wrapper around the Thoonk job feeds the plugin uses (one place to adapt to the core's API).

Job feeds (names are the Thoonk feed names)::

    websub.verify    verification of intent / denial GETs, one job per (un)subscribe request
    websub.fanout    one job per distribution of a topic: lists the active subscribers, queues deliveries
    websub.deliver   one job per batch of subscribers of one distribution (``delivery_batch`` callbacks)
    websub.ping      one job per (outside hub, topic) publish ping

Failed deliveries and pings are retried later: the job is finished and a new item is kept in the
``websub:retry`` sorted set until due, then put back on its job feed (by whichever daemon is free).
"""

from __future__ import annotations

import asyncio
from typing import Any

from thoonk_bridge.thoonk.exceptions import Empty

QUEUES = ("websub.verify", "websub.fanout", "websub.deliver", "websub.ping")


class JobQueue:
    def __init__(self, thoonk: Any, name: str, timeout: float) -> None:
        self.thoonk = thoonk
        self.name = name
        self.timeout = timeout
        self.job: Any = None

    async def open(self) -> None:
        self.job = await self.thoonk.job(self.name, {"timeout": self.timeout})
        await self.thoonk.set_config(self.name, {"timeout": self.timeout})  # an existing feed: keep it current

    async def put(self, item: str, high: bool = False) -> str:
        if high:
            return await self.job.put(item, priority=self.job.HIGH)
        return await self.job.put(item)

    async def put_many(self, items: list[str]) -> None:
        put_many = getattr(self.job, "put_many", None)
        if put_many is not None:
            await put_many(items)
            return
        await asyncio.gather(*(self.job.put(item) for item in items))

    async def get(self, timeout: float) -> tuple[str, str] | None:
        try:
            job_id, item, _ = await self.job.get(timeout=timeout)
        except Empty:
            return None
        return job_id, item

    async def finish(self, job_id: str) -> None:
        await self.job.finish(job_id)

    async def maintenance(self) -> int:
        return int(await self.job.maintenance())

    async def length(self) -> int:
        return int(await self.job.length())
