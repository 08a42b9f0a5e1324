"""Task helpers shared by the engine and the plugins.

The code lives in the Thoonk core, :mod:`thoonk_bridge.thoonk.tasks` (the core stops its own tasks
and must not import the application); this module re-exports it.
"""

from __future__ import annotations

from thoonk_bridge.thoonk.tasks import cancel_all, cancel_and_wait

__all__ = ["cancel_all", "cancel_and_wait"]
