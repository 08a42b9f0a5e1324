"""The plugin's health: its accounts' sessions, and the problems its endpoints report."""

from __future__ import annotations

from collections.abc import Iterable

from thoonk_bridge.plugin import Health, HealthState

from .connection import Connection


class Problems:
    """What keeps an endpoint from working (a node missing, forbidden...), by endpoint key; shown
    in the plugin's health until the endpoint works again (``clear``)."""

    def __init__(self) -> None:
        self._problems: dict[str, str] = {}

    def set(self, key: str, message: str) -> None:
        self._problems[key] = message

    def clear(self, key: str) -> None:
        self._problems.pop(key, None)

    def __bool__(self) -> bool:
        return bool(self._problems)

    def lines(self) -> list[str]:
        return [f"{k}: {v}" for k, v in sorted(self._problems.items())]


def plugin_health(connections: Iterable[Connection], problems: Problems) -> HealthState:
    """Failed while an account's login is refused; starting while one connects; degraded while one
    is away or an endpoint reports a problem; else ready. The detail names each."""
    details = []
    status = Health.READY
    for conn in connections:
        if conn.state == "auth-failed":
            status = Health.FAILED
            details.append(f"{conn.name}: {conn.detail}")
        elif conn.state == "starting":
            if status is Health.READY:
                status = Health.STARTING
            details.append(f"{conn.name}: connecting")
        elif not conn.ready:
            if status in (Health.READY, Health.STARTING):
                status = Health.DEGRADED
            details.append(f"{conn.name}: {conn.state} ({conn.detail})")
    if problems and status is Health.READY:
        status = Health.DEGRADED
    details.extend(problems.lines())
    return HealthState(status, "; ".join(details))


__all__ = ["Problems", "plugin_health"]
