"""Runs routes: reconcile once, then follow events; idempotent by item id.

A route has one source and one or more sinks. The :class:`RouteRunner` reads the source and fans
each event out to one :class:`SinkWorker` per sink. Each worker keeps its own queue of pending
events, coalesced by item id (only the newest event of an id is kept), so one slow or failing sink
never holds back the others and a burst on one id costs one write.

Progress lives in Redis (:class:`Ledger`): for each (route, sink), the content hash of every item
delivered. On start, and whenever a source reports a reconnect (:class:`~thoonk_bridge.plugin.Resync`),
the runner takes a snapshot of the source and each worker diffs it against what its sink holds
(``Sink.ids()``, or the ledger when the sink cannot tell): missing ids are published, changed ones
edited and, when the route mirrors, vanished ones retracted. That is what makes a daemon killed
with SIGKILL deliver, after a restart, what was published meanwhile, and nothing twice.

Echoes: when two routes run in opposite directions (``a -> b`` and ``b -> a``), every write a
route makes is remembered for a while by the :class:`EchoFilter`; the opposite route's source
drops the event its own sink write caused. Sinks that compare content (the thoonk sink does) stop
any echo that gets past, so a pair of opposite routes always converges.
"""

from __future__ import annotations

from thoonk_bridge.backoff import Backoff
from thoonk_bridge.keys import DEAD_LETTER_PREFIX, dead_letter_feed
from thoonk_bridge.router.dead_letters import DEAD_LETTER_MAX, store_dead_letter
from thoonk_bridge.router.echo import EchoFilter
from thoonk_bridge.router.ledger import Ledger, LedgerEntry
from thoonk_bridge.router.reconcile import SinkReconcile
from thoonk_bridge.router.runner import RouteRunner, RouteState
from thoonk_bridge.router.worker import SinkWorker

# Backoff for retryable failures: ``min(cap, base * 2**attempt)`` with full jitter (base 0.2 s, cap 30 s).
# The name stays: the daemon, the test harness and plugins build their retry policy with it.
RetryPolicy = Backoff

__all__ = [
    "DEAD_LETTER_MAX", "DEAD_LETTER_PREFIX", "EchoFilter", "Ledger", "LedgerEntry", "RetryPolicy", "RouteRunner",
    "RouteState", "SinkReconcile", "SinkWorker", "dead_letter_feed", "store_dead_letter",
]
