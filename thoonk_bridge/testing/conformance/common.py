"""What the sink and source suites share."""

from __future__ import annotations

import inspect
from typing import Any

LATEST = ""  # the key of ``SinkTarget.held()`` for a target that keeps only the latest payload
TIMEOUT = 15.0  # seconds any awaited effect may take (a safety net, never a measurement)


async def maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value
