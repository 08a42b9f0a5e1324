"""One document set (``NAME.atom``/``.rss``/``.json``): its items, its files, its coalesced renders.

State: the items the documents hold live in memory and in ``NAME.state.json`` beside the documents
(written atomically with them). ``known`` keeps the id and content hash (and order) of the newest
``KNOWN_PER_WINDOW * max_items`` items pushed out of the window, so that ``Sink.ids()`` reports
them and a restart does not re-deliver them; their payloads are not kept. Older ones are
forgotten, so the state file holds at most ``(1 + KNOWN_PER_WINDOW) * max_items`` ids whatever
went through the document. A reconcile needs only the newest ``max_items`` of them: the sink's
``capacity`` (``max_items``) makes the router send only the newest ``max_items`` items of a
snapshot. The rest lets an edit of an item recently pushed out keep its place (out of the
documents); an edit of a forgotten item is an upsert like any other (events are coalesced by id,
so an edit may stand for a publish), and shows as a new entry.

Rendering: ``apply`` only changes memory and wakes the render loop. The loop renders once no event
came for ``quiet`` seconds, or at the latest ``max_staleness`` seconds after the first change it has
not rendered yet, so a burst of 10,000 events costs a handful of renders. Renders run in a worker
thread; files are written atomically (temp file in the same directory, fsync, rename, fsync of the
directory) and only when their bytes changed. Temporary files a killed process left behind are
removed when the document opens.

Disk trouble (a directory turned read-only, a full disk): the new rendering is served from memory
all the same; ``write_error`` says what failed (the route shows it in ``/readyz``), the writes are
retried with backoff, and the log says it once, then at most once per ``WRITE_LOG_INTERVAL``
with a count, then when writing works again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gzip
import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any

from thoonk_bridge.backoff import Backoff
from thoonk_bridge.payload import Entry, PayloadError, content_hash, parse
from thoonk_bridge.tasks import cancel_and_wait

# atomic_write is called through this module (tests replace it here to simulate a full disk)
from .errors import BadItem
from .files import atomic_write, stale_temp_files
from .render import CONTENT_TYPES, FeedMeta, StoredItem, render_documents

EXTENSIONS = {"atom": "atom", "rss": "rss", "json": "json"}
STATE_VERSION = 1
KNOWN_PER_WINDOW = 10  # ids of pushed-out items remembered, per item of the window
WRITE_LOG_INTERVAL = 60.0  # seconds between log lines while the files cannot be written
WRITE_RETRY = Backoff(base=0.5, cap=30.0)  # renders and file writes that failed


@dataclass(frozen=True)
class Served:
    """One rendered document, ready to serve."""

    body: bytes
    gzipped: bytes
    etag: str  # quoted strong ETag of the identity body
    last_modified: float
    content_type: str

    @property
    def last_modified_http(self) -> str:
        return format_datetime(datetime.fromtimestamp(int(self.last_modified), tz=UTC), usegmt=True)


def _entry_is_empty(entry: Entry) -> bool:
    return not any((value or "").strip() for value in (entry.title, entry.link, entry.content, entry.summary))


class FeedDocument:
    """The items and files of one ``feeds:NAME`` sink."""

    def __init__(
        self,
        meta: FeedMeta,
        *,
        directory: Path,
        formats: tuple[str, ...],
        max_items: int,
        max_staleness: float,
        quiet: float,
        max_payload_bytes: int,
        on_render: Callable[[dict[str, float], list[str]], Awaitable[None]] | None = None,
        log: Any = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.meta = meta
        self.directory = directory
        self.formats = formats
        self.max_items = max_items
        self.max_staleness = max_staleness
        self.quiet = quiet
        self.max_payload_bytes = max_payload_bytes
        self.on_render = on_render
        self.log = log
        self.clock = clock
        self.hub_provider: Callable[[], str | None] = lambda: None  # the WebSub hub to advertise
        self.guard: Callable[[], bool] | None = None  # several daemons: True while we own the route
        self.items: OrderedDict[str, StoredItem] = OrderedDict()  # oldest first (by seq)
        # id -> (hash, seq) of the newest items pushed out of the window, oldest first (bounded)
        self.known: OrderedDict[str, tuple[str, int]] = OrderedDict()
        self.seq = 0
        self.changed_at = clock()  # the last change: the feed's ``updated`` while it is empty
        self.served: dict[str, Served] = {}
        self.renders = 0
        self.write_error: str | None = None  # why the files on disk are behind (None: they are not)
        self.on_write_state: Callable[[str | None], None] | None = None  # told when write_error changes
        self._write_failures = 0
        self._write_failures_logged = 0
        self._write_logged_at = 0.0
        self._write_retry_at = 0.0
        self._write_retry_timer: asyncio.TimerHandle | None = None
        self._dirty = asyncio.Event()
        self._changed = asyncio.Event()
        self._rendered = asyncio.Event()
        self._generation = 0  # bumped by every change
        self._rendered_generation = -1
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    # ----------------------------------------------------------------- paths and state

    def path(self, fmt: str) -> Path:
        return self.directory / f"{self.meta.name}.{EXTENSIONS[fmt]}"

    @property
    def state_path(self) -> Path:
        return self.directory / f"{self.meta.name}.state.json"

    def file_names(self) -> list[str]:
        """Every file of this document (its formats, all of them, and its state)."""
        return [*(f"{self.meta.name}.{ext}" for ext in EXTENSIONS.values()), self.state_path.name]

    def load(self) -> None:
        """Read the state file; a missing or broken one means "holds nothing" (the router refills).

        Temporary files a killed write left behind are removed first. A directory that cannot be
        created is not an error here: the documents are served from memory and the writes report it.
        """
        with contextlib.suppress(OSError):
            self.directory.mkdir(parents=True, exist_ok=True)
        for stale in stale_temp_files(self.directory, self.file_names()):
            with contextlib.suppress(OSError):
                stale.unlink()
                if self.log is not None:
                    self.log.info("left-over temporary file removed", feed=self.meta.name, path=str(stale))
        self.items.clear()
        self.known.clear()
        self.seq = 0
        self.changed_at = self.clock()
        try:
            raw = json.loads(self.state_path.read_bytes())
            if raw.get("version") != STATE_VERSION:
                raise ValueError(f"state version {raw.get('version')!r}")
            items = []
            for record in raw["items"]:
                item = StoredItem(
                    id=str(record["id"]),
                    payload=str(record["payload"]),
                    hash=content_hash(str(record["payload"])),
                    seq=int(record["seq"]),
                    first_seen=float(record["first_seen"]),
                    edited_at=None if record.get("edited_at") is None else float(record["edited_at"]),
                )
                item.entry = parse(item.payload, max_bytes=None)
                items.append(item)
            known = {str(k): (str(v[0]), int(v[1])) for k, v in raw.get("known", {}).items()}
            seq = int(raw.get("seq", 0))
            changed_at = float(raw.get("changed_at", self.changed_at))
        except FileNotFoundError:
            return
        except OSError as exc:
            if self.log is not None:
                self.log.warning("feed state unreadable, rebuilding from the feed", feed=self.meta.name,
                                 path=str(self.state_path), error=f"{type(exc).__name__}: {exc}")
            return
        except (ValueError, KeyError, TypeError, AttributeError, PayloadError) as exc:
            if self.log is not None:
                self.log.warning(
                    "feed state unreadable, rebuilding from the feed",
                    feed=self.meta.name,
                    path=str(self.state_path),
                    error=str(exc),
                )
            return
        for item in sorted(items, key=lambda i: i.seq):
            self.items[item.id] = item
        # Oldest first, and only as many as can still matter (older states kept every id ever seen).
        self.known = OrderedDict(sorted(known.items(), key=lambda kv: kv[1][1]))
        self.seq = max([seq, *(i.seq for i in items), *(s for _, s in known.values())])
        self.changed_at = changed_at
        self._trim()

    def _state_bytes(
        self, seq: int, changed_at: float, items: list[StoredItem], known: list[tuple[str, tuple[str, int]]]
    ) -> bytes:
        return json.dumps(
            {
                "version": STATE_VERSION,
                "name": self.meta.name,
                "seq": seq,
                "changed_at": changed_at,
                "items": [
                    {
                        "id": i.id,
                        "seq": i.seq,
                        "first_seen": i.first_seen,
                        "edited_at": i.edited_at,
                        "payload": i.payload,
                    }
                    for i in items
                ],
                "known": {k: [h, s] for k, (h, s) in known},
            },
            ensure_ascii=False,
        ).encode("utf-8", "surrogatepass")

    def ids(self) -> dict[str, str | None]:
        """What the documents hold, for the router's reconcile.

        Items pushed out of the window count as held, except the newest of them when the window
        has room (after retracts or a larger ``max_items``): leaving those out makes the router
        deliver them again, and they come back at their old place.
        """
        held: dict[str, str | None] = {i.id: i.hash for i in self.items.values()}
        room = self.max_items - len(self.items)
        refill: set[str] = set()
        if room > 0 and self.known:
            newest = sorted(self.known.items(), key=lambda kv: kv[1][1], reverse=True)[:room]
            refill = {k for k, _ in newest}
        held.update({k: h for k, (h, _) in self.known.items() if k not in refill})
        return held

    # ----------------------------------------------------------------- changes

    def check(self, item_id: str, payload: str, *, parsed: Callable[[int | None], Entry] | None = None) -> Entry:
        """Parse a payload the way the documents will use it; raises :class:`BadItem`.

        ``parsed``: gives the payload's entry under a size limit, parsed once for the whole route
        (``ItemEvent.entry``), instead of parsing it here.
        """
        try:
            limit = self.max_payload_bytes
            entry = parse(payload, max_bytes=limit) if parsed is None else parsed(limit)
        except PayloadError as exc:
            reason = "too_large" if "too large" in str(exc) else "invalid"
            raise BadItem(f"item {item_id!r}: {exc}", reason) from None
        if _entry_is_empty(entry):
            raise BadItem(f"item {item_id!r}: no title, link, content or summary", "empty")
        return entry

    def put(
        self,
        item_id: str,
        payload: str,
        *,
        entry: Entry | None = None,
        parsed: Callable[[int | None], Entry] | None = None,
    ) -> bool:
        """Add or replace an item; returns False when nothing changed. Raises :class:`BadItem`.

        ``entry``: what :meth:`check` gave for this payload (parsed already, in a worker thread);
        ``parsed``: as for :meth:`check`.
        """
        digest = content_hash(payload)
        current = self.items.get(item_id)
        if current is not None and current.hash == digest:
            return False
        if entry is None:
            entry = self.check(item_id, payload, parsed=parsed)
        now = self.clock()
        if current is not None:
            item = StoredItem(item_id, payload, digest, current.seq, current.first_seen, now, entry)
            self.items[item_id] = item
        else:
            previous = self.known.pop(item_id, None)
            if previous is not None:
                if previous[0] == digest:  # delivered again (refill): back at its place
                    seq, edited = previous[1], None
                else:
                    seq, edited = previous[1], now
            else:
                self.seq += 1
                seq, edited = self.seq, None
            item = StoredItem(item_id, payload, digest, seq, now, edited, entry)
            self.items[item_id] = item
            if seq != self.seq:  # an old item back at its place
                self._resort()
            self._trim()
        self._touch()
        return True

    def remove(self, item_id: str) -> bool:
        found = self.items.pop(item_id, None) is not None
        found = self.known.pop(item_id, None) is not None or found
        if found:
            self._touch()
        return found

    def _resort(self) -> None:
        ordered = sorted(self.items.values(), key=lambda i: i.seq)
        self.items = OrderedDict((i.id, i) for i in ordered)

    def _trim(self) -> None:
        while len(self.items) > self.max_items:
            _, oldest = self.items.popitem(last=False)
            self.known[oldest.id] = (oldest.hash, oldest.seq)
            self.known.move_to_end(oldest.id)
        while len(self.known) > KNOWN_PER_WINDOW * self.max_items:
            self.known.popitem(last=False)

    def _touch(self) -> None:
        self.changed_at = self.clock()
        self._generation += 1
        self._rendered.clear()
        self._changed.set()
        self._dirty.set()

    # ----------------------------------------------------------------- rendering

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name=f"feeds-render:{self.meta.name}")

    async def stop(self) -> None:
        if self._write_retry_timer is not None:
            self._write_retry_timer.cancel()
            self._write_retry_timer = None
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def _loop(self) -> None:
        render_failures = 0  # in a row; logged once, then at most once per WRITE_LOG_INTERVAL
        render_failure_logged = 0.0
        while True:
            await self._dirty.wait()
            first = asyncio.get_running_loop().time()
            deadline = first + self.max_staleness
            while True:  # coalesce: wait for a pause, but never past the deadline
                self._changed.clear()
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    break
                try:
                    await asyncio.wait_for(self._changed.wait(), min(self.quiet, left) if self.quiet else 0)
                except TimeoutError:
                    break
            self._dirty.clear()
            try:
                await self.render_now()
                render_failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep serving the last good documents
                render_failures += 1
                now = time.monotonic()
                if self.log is not None and (render_failures == 1 or now - render_failure_logged >= WRITE_LOG_INTERVAL):
                    self.log.error("feed render failed", feed=self.meta.name, error=f"{type(exc).__name__}: {exc}",
                                   failures=render_failures)
                    render_failure_logged = now
                await asyncio.sleep(max(min(1.0, self.max_staleness), WRITE_RETRY.delay(render_failures)))
                self._dirty.set()

    async def render_now(self, *, first: bool = False) -> dict[str, float]:
        """Render and write everything now (under a lock, so renders never interleave).

        Returns the seconds each format took. ``first``: compare with the files on disk and keep
        their modification time when the bytes are the same (stable Last-Modified over restarts).
        The new rendering is served even when the files cannot be written (see ``write_error``).
        """
        async with self._lock:
            generation = self._generation
            if self.guard is not None and not self.guard():
                # Another daemon owns the route now: it writes the files; this one must not.
                if self.log is not None:
                    self.log.warning("not the owner of the route any more: documents not written",
                                     feed=self.meta.name)
                self._rendered_generation = generation
                self._rendered.set()
                return {}
            loop = asyncio.get_running_loop()
            window = list(reversed(self.items.values()))
            state = self._state_snapshot()
            meta = dataclasses.replace(self.meta, hub_url=self.hub_provider(), updated_when_empty=self.changed_at)
            write = first or self.write_error is None or loop.time() >= self._write_retry_at
            timings, served, changed, error = await asyncio.to_thread(
                self._render_and_write, meta, window, state, first, write
            )
            self.served.update(served)
            self.renders += 1
            if write:
                self._write_result(error)
            self._rendered_generation = generation
            if generation == self._generation:
                self._rendered.set()
        if self.on_render is not None:
            await self.on_render(timings, changed)
        return timings

    def _state_snapshot(self) -> tuple[Any, ...]:
        """What ``_state_bytes`` needs, copied on the loop; the bytes are made in the worker thread."""
        return (self.seq, self.changed_at, list(self.items.values()), list(self.known.items()))

    def _note(self, item_id: str, message: str) -> None:
        """A field of an item left out of the documents (said once per item version)."""
        if self.log is not None:
            self.log.warning("item field left out of the feed", feed=self.meta.name, item=item_id, note=message)

    def _render_and_write(
        self, meta: FeedMeta, window: list[StoredItem], state: tuple[Any, ...], first: bool, write: bool
    ) -> tuple[dict[str, float], dict[str, Served], list[str], OSError | None]:
        """In a worker thread: the documents, then the files (when ``write``).

        Returns (seconds per format, new renderings to serve, formats whose bytes changed, the error
        that stopped the writes or None).
        """
        timings: dict[str, float] = {}
        bodies: dict[str, bytes] = {}
        for fmt in self.formats:
            started = time.perf_counter()
            bodies.update(render_documents(meta, window, (fmt,), self._note))
            timings[fmt] = time.perf_counter() - started
        served: dict[str, Served] = {}
        changed: list[str] = []
        now = self.clock()
        behind = self.write_error is not None  # the files may hold older bytes than we served
        for fmt, body in bodies.items():
            previous = self.served.get(fmt)
            path = self.path(fmt)
            if previous is not None and previous.body == body:
                continue
            modified = now
            if first or previous is None:
                with contextlib.suppress(OSError):
                    if path.read_bytes() == body:
                        modified = path.stat().st_mtime
            changed.append(fmt)
            served[fmt] = Served(
                body=body,
                gzipped=gzip.compress(body, compresslevel=6, mtime=0),
                etag='"' + hashlib.sha256(body).hexdigest()[:32] + '"',
                last_modified=modified,
                content_type=CONTENT_TYPES[fmt],
            )
        if not write:
            return timings, served, changed, None
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            atomic_write(self.state_path, self._state_bytes(*state))
            for fmt, body in bodies.items():
                path = self.path(fmt)
                if fmt in changed or behind or first or not path.exists():
                    with contextlib.suppress(OSError):
                        if path.read_bytes() == body:
                            continue
                    atomic_write(path, body)
        except OSError as exc:
            return timings, served, changed, exc
        return timings, served, changed, None

    def _write_result(self, error: OSError | None) -> None:
        """Record how the last write went: the state ``/readyz`` shows, the log (backed off), retries."""
        loop = asyncio.get_running_loop()
        if error is None:
            if self.write_error is not None:
                if self.log is not None:
                    self.log.info("feed files written again", feed=self.meta.name, failures=self._write_failures)
                self.write_error = None
                self._write_failures = 0
                if self.on_write_state is not None:
                    self.on_write_state(None)
            return
        detail = f"cannot write in {self.directory}: {type(error).__name__}: {error}"
        first_failure = self.write_error is None
        self._write_failures += 1
        self._write_retry_at = loop.time() + WRITE_RETRY.delay(self._write_failures)
        if self._write_retry_timer is not None:
            self._write_retry_timer.cancel()
        # The rendering is in memory already; the retry only has to write it.
        self._write_retry_timer = loop.call_at(self._write_retry_at, self._retry_write)
        now = time.monotonic()
        if first_failure or now - self._write_logged_at >= WRITE_LOG_INTERVAL:
            if self.log is not None:
                self.log.error("feed files cannot be written; serving the documents from memory, retrying",
                               feed=self.meta.name, error=detail,
                               failures_since_last_log=self._write_failures - self._write_failures_logged)
            self._write_logged_at = now
            self._write_failures_logged = self._write_failures
        if detail != self.write_error:
            self.write_error = detail
            if self.on_write_state is not None:
                self.on_write_state(detail)

    def _retry_write(self) -> None:
        self._write_retry_timer = None
        if self._task is not None and self.write_error is not None:
            self._dirty.set()

    async def wait_rendered(self) -> None:
        """Until everything applied so far is in the files."""
        while self._rendered_generation != self._generation:
            self._rendered.clear()
            if self._rendered_generation == self._generation:
                return
            await self._rendered.wait()

    async def flush(self) -> None:
        if self._rendered_generation != self._generation:
            self._dirty.clear()
            await self.render_now()
