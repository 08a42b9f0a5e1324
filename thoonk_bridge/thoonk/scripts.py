"""The Lua scripts, and the two executors (sync and asyncio) that run operations.

Every Thoonk operation is written once, as a generator (see feed.py, queue.py, ...): it validates
its arguments, then yields *calls* -- :class:`Eval` (EVALSHA of a script), :class:`Cmd` (one plain
command, e.g. a blocking BRPOP or a read) or :class:`Batch` (a pipeline) -- receives each result and
returns the operation's value. :class:`SyncExecutor` drives such a generator with a ``redis.Redis``
client, :class:`AsyncExecutor` with a ``redis.asyncio.Redis``; they are the only code that differs
between the two faces. EVALSHA is tried first; on NOSCRIPT the script is loaded and the call repeated.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, TypeVar

import redis
import redis.asyncio

from . import redis_client
from .exceptions import SCRIPT_ERRORS, RedisUnavailable

__all__ = ["Script", "SCRIPTS", "Eval", "Cmd", "Batch", "Op", "SyncExecutor", "AsyncExecutor", "describe"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Script:
    name: str
    source: str
    sha: str


def _load_scripts() -> dict[str, Script]:
    lua = resources.files(__package__).joinpath("lua")
    prelude = lua.joinpath("_prelude.lua").read_text(encoding="utf-8")
    scripts = {}
    for entry in sorted(lua.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".lua") or entry.name.startswith("_"):
            continue
        source = prelude + "\n" + entry.read_text(encoding="utf-8")
        name = entry.name[: -len(".lua")]
        scripts[name] = Script(name, source, hashlib.sha1(source.encode()).hexdigest())
    return scripts


SCRIPTS: dict[str, Script] = _load_scripts()


@dataclass(frozen=True, slots=True)
class Eval:
    """EVALSHA of one of :data:`SCRIPTS`."""

    script: str
    keys: Sequence[str]
    args: Sequence[Any]
    #: The script takes ARGV = (name, pair, pair, ...) and returns one reply per pair, and running it
    #: once with the pairs of several calls equals running the calls one after the other
    #: (feed_publish). The async executor then merges concurrent calls into one EVALSHA.
    coalesce: bool = False


@dataclass(frozen=True, slots=True)
class Cmd:
    """One plain Redis command (redis-py's response callbacks apply)."""

    args: tuple[Any, ...]

    def __init__(self, *args: Any) -> None:
        object.__setattr__(self, "args", args)


@dataclass(frozen=True, slots=True)
class Batch:
    """Several calls in one round trip (MULTI/EXEC when ``atomic``); the result is their results."""

    calls: Sequence[Eval | Cmd]
    atomic: bool = False


Call = Eval | Cmd | Batch

COALESCE_LIMIT = 200  # most pairs merged into one EVALSHA
Op = Generator[Call, Any, T]


def describe(client: Any) -> str:
    """host:port, unix:path, sentinel:HOSTS/SERVICE or cluster:NODES a client talks to, for messages."""
    return redis_client.describe(client)


_SCRIPT_SUFFIX = re.compile(r"\s*script: \w+, on @user_script:\d+\.?\s*$")


def translate(error: redis.ResponseError) -> Exception:
    """A script's 'THOONK <Class> <json>' error -> that Thoonk exception; anything else unchanged."""
    message = str(error)
    if message.startswith("THOONK "):
        _, cls_name, payload = message.split(" ", 2)
        cls = SCRIPT_ERRORS.get(cls_name)
        if cls is not None:
            try:
                return cls(**json.loads(_SCRIPT_SUFFIX.sub("", payload)))
            except (ValueError, TypeError):
                pass
    return error


def _is_noscript(result: object) -> bool:
    return isinstance(result, redis.exceptions.NoScriptError)


class SyncExecutor:
    """Runs operations with a ``redis.Redis`` client."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.address = describe(client)
        self._loaded: set[str] = set()

    def run(self, op: Op[T]) -> T:
        try:
            call = next(op)
            while True:
                call = op.send(self._call(call))
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    def _call(self, call: Call) -> Any:
        try:
            if isinstance(call, Eval):
                return self._eval(call)
            if isinstance(call, Cmd):
                return self.client.execute_command(*call.args)
            return self._batch(call)
        except (redis.ConnectionError, redis.TimeoutError) as e:
            raise RedisUnavailable(self.address, e) from e
        except redis.ResponseError as e:
            translated = translate(e)
            if translated is e:
                raise
            raise translated from None

    def _eval(self, call: Eval) -> Any:
        script = SCRIPTS[call.script]
        try:
            return self.client.evalsha(script.sha, len(call.keys), *call.keys, *call.args)
        except redis.exceptions.NoScriptError:
            self.client.script_load(script.source)
            self._loaded.add(script.sha)
            return self.client.evalsha(script.sha, len(call.keys), *call.keys, *call.args)

    def _batch(self, batch: Batch) -> list[Any]:
        for c in batch.calls:
            if isinstance(c, Eval) and SCRIPTS[c.script].sha not in self._loaded:
                self.client.script_load(SCRIPTS[c.script].source)
                self._loaded.add(SCRIPTS[c.script].sha)
        results = self._pipeline(batch.calls, batch.atomic)
        retry = [i for i, r in enumerate(results) if _is_noscript(r)]
        if retry:  # scripts were flushed meanwhile: load again, run the failed calls again, in order
            for i in retry:
                self.client.script_load(SCRIPTS[batch.calls[i].script].source)  # type: ignore[union-attr]
            again = self._pipeline([batch.calls[i] for i in retry], batch.atomic)
            for i, r in zip(retry, again, strict=True):
                results[i] = r
        for r in results:
            if isinstance(r, redis.ResponseError):
                raise r
        return results

    def _pipeline(self, calls: Sequence[Eval | Cmd], atomic: bool) -> list[Any]:
        with self.client.pipeline(transaction=atomic) as pipe:
            for c in calls:
                if isinstance(c, Eval):
                    pipe.execute_command("EVALSHA", SCRIPTS[c.script].sha, len(c.keys), *c.keys, *c.args)
                else:
                    pipe.execute_command(*c.args)
            return list(pipe.execute(raise_on_error=False))


class AsyncExecutor:
    """Runs operations with a ``redis.asyncio.Redis`` client (same steps as SyncExecutor, awaited)."""

    def __init__(self, client: redis.asyncio.Redis) -> None:
        self.client = client
        self.address = describe(client)
        self._loaded: set[str] = set()
        self._pending: list[tuple[Eval, asyncio.Future[Any]]] = []
        self._flushes: set[asyncio.Future[None]] = set()

    async def run(self, op: Op[T]) -> T:
        try:
            call = next(op)
            while True:
                call = op.send(await self._call(call))
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    async def _call(self, call: Call) -> Any:
        try:
            if isinstance(call, Eval):
                return await self._eval(call)
            if isinstance(call, Cmd):
                return await self.client.execute_command(*call.args)
            return await self._batch(call)
        except (redis.ConnectionError, redis.TimeoutError) as e:
            raise RedisUnavailable(self.address, e) from e
        except redis.ResponseError as e:
            translated = translate(e)
            if translated is e:
                raise
            raise translated from None

    async def _eval(self, call: Eval) -> Any:
        """EVALSHA, auto-pipelined: the scripts that tasks issue in the same event-loop turn go out
        together in one pipeline (each still atomic on its own), which is what lets many concurrent
        tasks publish faster than one round trip each."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((call, future))
        if len(self._pending) == 1:
            loop.call_soon(self._start_flush)
        return await future

    def _start_flush(self) -> None:
        pending, self._pending = self._pending, []
        task = asyncio.ensure_future(self._flush(pending))
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def _flush(self, pending: list[tuple[Eval, asyncio.Future[Any]]]) -> None:
        # Calls in one flush come from different tasks (a task awaits each call), so they have no
        # order among themselves; coalescible calls on the same feed are merged into one EVALSHA.
        calls: list[Eval] = []
        owners: list[list[tuple[asyncio.Future[Any], int | None]]] = []
        open_merges: dict[tuple[Any, ...], int] = {}
        for call, future in pending:
            if not call.coalesce:
                calls.append(call)
                owners.append([(future, None)])
                continue
            pairs = (len(call.args) - 1) // 2
            key = (call.script, tuple(call.keys), call.args[0])
            at = open_merges.get(key)
            if at is None or len(calls[at].args) > 2 * COALESCE_LIMIT:
                open_merges[key] = len(calls)
                calls.append(Eval(call.script, call.keys, list(call.args)))
                owners.append([(future, pairs)])
            else:
                calls[at].args.extend(call.args[1:])  # type: ignore[attr-defined]
                owners[at].append((future, pairs))
        pending = []
        for call, group in zip(calls, owners, strict=True):
            if len(group) == 1 and group[0][1] is None:
                pending.append((call, group[0][0]))
            else:
                pending.append((call, self._splitter(group)))
        try:
            if len(calls) == 1:
                results: list[Any] = [await self._eval_one(calls[0])]
            else:
                results = await self._batch(Batch(calls), raise_errors=False)
        except BaseException as e:  # connection trouble: every caller of this flush gets it
            for _, future in pending:
                if not future.done():
                    future.set_exception(e)
            if not isinstance(e, Exception):
                raise
            return
        for (_, future), result in zip(pending, results, strict=True):
            if future.done():
                continue
            if isinstance(result, redis.ResponseError):
                future.set_exception(result)
            else:
                future.set_result(result)

    @staticmethod
    def _splitter(group: list[tuple[asyncio.Future[Any], int | None]]) -> asyncio.Future[Any]:
        """A future for a merged call that hands each original caller its share of the replies."""
        merged: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def deliver(done: asyncio.Future[Any]) -> None:
            error = done.exception()
            start = 0
            for future, count in group:
                if future.done():
                    start += count or 0
                    continue
                if error is not None:
                    future.set_exception(error)
                else:
                    future.set_result(done.result()[start : start + (count or 0)])
                start += count or 0

        merged.add_done_callback(deliver)
        return merged

    async def _eval_one(self, call: Eval) -> Any:
        script = SCRIPTS[call.script]
        try:
            return await self.client.evalsha(script.sha, len(call.keys), *call.keys, *call.args)
        except redis.exceptions.NoScriptError:
            await self.client.script_load(script.source)
            self._loaded.add(script.sha)
            return await self.client.evalsha(script.sha, len(call.keys), *call.keys, *call.args)
        except redis.ResponseError as e:
            return e

    async def _batch(self, batch: Batch, raise_errors: bool = True) -> list[Any]:
        for c in batch.calls:
            if isinstance(c, Eval) and SCRIPTS[c.script].sha not in self._loaded:
                await self.client.script_load(SCRIPTS[c.script].source)
                self._loaded.add(SCRIPTS[c.script].sha)
        results = await self._pipeline(batch.calls, batch.atomic)
        retry = [i for i, r in enumerate(results) if _is_noscript(r)]
        if retry:
            for i in retry:
                await self.client.script_load(SCRIPTS[batch.calls[i].script].source)  # type: ignore[union-attr]
            again = await self._pipeline([batch.calls[i] for i in retry], batch.atomic)
            for i, r in zip(retry, again, strict=True):
                results[i] = r
        for r in results:
            if raise_errors and isinstance(r, redis.ResponseError):
                raise r
        return results

    async def _pipeline(self, calls: Sequence[Eval | Cmd], atomic: bool) -> list[Any]:
        async with self.client.pipeline(transaction=atomic) as pipe:
            for c in calls:
                if isinstance(c, Eval):
                    pipe.execute_command("EVALSHA", SCRIPTS[c.script].sha, len(c.keys), *c.keys, *c.args)
                else:
                    pipe.execute_command(*c.args)
            return list(await pipe.execute(raise_on_error=False))
