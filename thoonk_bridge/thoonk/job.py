"""Jobs: a queue whose items stay until a worker finishes them.

States (contract): queued (``feed.ids`` list), claimed (``feed.claimed`` zset, scored with the claim
time in ms), stalled (``feed.stalled`` set). ``feed.items`` holds every job not yet finished or
retracted. ``maintenance()`` puts back jobs claimed longer than the config's ``timeout`` (seconds)
and jobs in no state at all (a worker died between taking and claiming).
"""

from __future__ import annotations

from collections.abc import Iterable

from .exceptions import Empty
from .feed import PUBLISH_CHUNK, FeedBase, check_timeout, new_id, op
from .queue import HIGH, NORMAL, blocking_take, check_priority
from .scripts import Batch, Cmd, Eval, Op
from .text import as_text, as_text_or_none

__all__ = ["Job"]


class Job(FeedBase):
    type = "job"
    NORMAL = NORMAL
    HIGH = HIGH

    def _state_keys(self) -> tuple[str, ...]:
        k = self.keys
        return (k.config, k.ids, k.items, k.claimed, k.cancelled, k.stalled, k.published)

    @op
    def put(self, item: str | bytes, priority: int = NORMAL) -> Op[str]:
        """Queue a job; returns its id."""
        data = self._check_item(item)
        high = check_priority(self.name, priority)
        id = new_id()
        k = self.keys
        yield Eval("job_put", (k.config, k.ids, k.items, k.publishes, k.published), (self.name, high, id, data))
        return id

    publish = put

    @op
    def put_many(self, items: Iterable[str | bytes], priority: int = NORMAL) -> Op[list[str]]:
        """Queue many jobs in few round trips (in order, like ``put`` one by one); returns their ids.

        Checked as a whole first: one bad item raises before anything is queued.
        """
        high = check_priority(self.name, priority)
        pairs = [(new_id(), self._check_item(item)) for item in items]
        if not pairs:
            return []
        k = self.keys
        keys = (k.config, k.ids, k.items, k.publishes, k.published)
        calls = [
            Eval("job_put", keys, (self.name, high, *(x for pair in pairs[i : i + PUBLISH_CHUNK] for x in pair)))
            for i in range(0, len(pairs), PUBLISH_CHUNK)
        ]
        yield calls[0] if len(calls) == 1 else Batch(calls)
        return [id for id, _ in pairs]

    @op
    def get(self, timeout: float = 0) -> Op[tuple[str, str, int]]:
        """Claim the next job: ``(id, item, times cancelled)``. ``timeout`` 0 waits forever; raises Empty."""
        wait = check_timeout(self.name, timeout)
        k = self.keys
        keys = (k.config, k.ids, k.items, k.claimed, k.cancelled)
        reply = yield from blocking_take(self, wait, "job_get", keys, "job")
        return as_text(reply[0]), as_text(reply[1]), int(reply[2])

    @op
    def finish(self, id: str, item: str | bytes | None = None, result: bool = False,
               timeout: float | None = None) -> Op[None]:
        """Finish a claimed job (JobNotClaimed otherwise).

        With ``item`` (the result), ``job.finish:NAME`` gets ``id\\x00item``; with ``result=True`` the
        result is also kept for ``get_result`` (for ``timeout`` seconds when given).
        """
        id = self._check_id(id, "job id")
        data = b"" if item is None else self._check_item(item)
        ttl = ""
        if timeout is not None:
            if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
                raise ValueError(f"feed {self.name!r}: result timeout must be a number of seconds > 0: {timeout!r}")
            ttl = str(max(1, round(timeout)))
        k = self.keys
        yield Eval(
            "job_finish",
            (k.config, k.items, k.claimed, k.cancelled, k.published, k.finishes, k.jobfinished(id)),
            (self.name, id, "0" if item is None else "1", data, "1" if result else "0", ttl),
        )

    @op
    def get_result(self, id: str, timeout: float = 0) -> Op[tuple[str, str]]:
        """Wait for a result kept by ``finish(id, result, result=True)``: ``(query, result)``; raises Empty."""
        id = self._check_id(id, "job id")
        wait = check_timeout(self.name, timeout)
        popped = yield Cmd("BRPOP", self.keys.jobfinished(id), wait)
        if popped is None:
            raise Empty(self.name, f"result for job {id!r}")
        query, _, res = as_text(popped[1]).partition("\x00")
        return query, res

    def _state(self, action: str, id: str) -> Op[int]:
        id = self._check_id(id, "job id")
        return int((yield Eval("job_state", self._state_keys(), (self.name, action, id))))

    @op
    def cancel(self, id: str) -> Op[None]:
        """Give a claimed job back to the queue; its failure count goes up by one."""
        yield from self._state("cancel", id)

    @op
    def stall(self, id: str) -> Op[None]:
        """Take a claimed job out of the running until ``retry``."""
        yield from self._state("stall", id)

    @op
    def retry(self, id: str) -> Op[None]:
        """Queue a stalled job again."""
        yield from self._state("retry", id)

    @op
    def retract(self, id: str) -> Op[bool]:
        """Remove a job from every state; True if it existed."""
        return bool((yield from self._state("retract", id)))

    @op
    def get_ids(self) -> Op[list[str]]:
        """Ids of every job not finished (queued, claimed or stalled)."""
        return [as_text(i) for i in (yield Cmd("HKEYS", self.keys.items))]

    @op
    def get_failure_count(self, id: str) -> Op[int]:
        id = self._check_id(id, "job id")
        return int(as_text_or_none((yield Cmd("HGET", self.keys.cancelled, id))) or 0)

    @op
    def maintenance(self) -> Op[int]:
        """Put back timed-out claims and orphaned jobs; returns how many were put back."""
        k = self.keys
        timed_out, orphans = yield Eval(
            "job_maintenance", (k.config, k.ids, k.items, k.claimed, k.cancelled, k.stalled), (self.name,)
        )
        return int(timed_out) + int(orphans)

    @op
    def length(self) -> Op[int]:
        """Jobs not finished."""
        return int((yield Cmd("HLEN", self.keys.items)))

    def get_channels(self) -> tuple[str, ...]:
        return (f"job.finish:{self.name}",)
