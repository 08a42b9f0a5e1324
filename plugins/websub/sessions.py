"""The plugin's outbound HTTP clients (opened by ``start()``, closed by ``stop()``)."""

from __future__ import annotations

import aiohttp
from aiohttp.abc import AbstractResolver

from thoonk_bridge.net import OutboundPolicy, make_session

from .settings import WebSubSettings


class Sessions:
    """``control``: verifications, denials and publish pings; ``delivery``: content distribution.

    ``resolver``: tests set a stub resolver (no real lookups) before ``open()``.
    """

    def __init__(self, user_agent: str) -> None:
        self.user_agent = user_agent
        self.resolver: AbstractResolver | None = None
        self.control: aiohttp.ClientSession = None  # type: ignore[assignment]  # set by open()
        self.delivery: aiohttp.ClientSession = None  # type: ignore[assignment]  # set by open()

    def make(self, policy: OutboundPolicy, timeout: float, limit: int = 100) -> aiohttp.ClientSession:
        """A client that keeps ``policy`` (refused addresses) with a total ``timeout`` per request."""
        return make_session(policy, timeout=timeout, user_agent=self.user_agent, resolver=self.resolver, limit=limit)

    def open(self, st: WebSubSettings) -> None:
        # verifications, denials and pings: room for every verification in flight besides the pings,
        # so that a verification never waits for a connection (that wait would count in its timeout)
        self.control = self.make(st.outbound, st.verify_timeout, limit=max(100, 2 * st.verify_concurrency))
        self.delivery = self.make(st.outbound, st.delivery_timeout,
                                  limit=max(100, st.delivery_workers * st.delivery_batch))

    async def close(self) -> None:
        for session in (self.control, self.delivery):
            if session is not None:
                await session.close()
        self.control = self.delivery = None  # type: ignore[assignment]


__all__ = ["Sessions"]
