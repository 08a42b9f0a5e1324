"""The Lua scripts, and the two executors (sync and asyncio) that run operations.

Every Thoonk operation is written once, as a generator (see feed.py, queue.py, ...): it validates
its arguments, then yields *calls* -- :class:`Eval` (EVALSHA of a script), :class:`Cmd` (one plain
command, e.g. a blocking BRPOP or a read) or :class:`Batch` (a pipeline) -- receives each result and
returns the operation's value. :class:`SyncExecutor` drives such a generator with a ``redis.Redis``
client, :class:`AsyncExecutor` with a ``redis.asyncio.Redis``; they are the only code that differs
between the two faces. EVALSHA is tried first; on NOSCRIPT the script is loaded and the call repeated.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, TypeVar

import redis
import redis.asyncio

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
Op = Generator[Call, Any, T]


def describe(client: Any) -> str:
    """host:port (or unix:path) a client talks to, for error messages."""
    try:
        kw = client.connection_pool.connection_kwargs
    except AttributeError:
        return repr(client)
    if kw.get("path"):
        return f"unix:{kw['path']}"
    return f"{kw.get('host', 'localhost')}:{kw.get('port', 6379)}"


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
                    pipe.evalsha(SCRIPTS[c.script].sha, len(c.keys), *c.keys, *c.args)
                else:
                    pipe.execute_command(*c.args)
            return list(pipe.execute(raise_on_error=False))


class AsyncExecutor:
    """Runs operations with a ``redis.asyncio.Redis`` client (same steps as SyncExecutor, awaited)."""

    def __init__(self, client: redis.asyncio.Redis) -> None:
        self.client = client
        self.address = describe(client)
        self._loaded: set[str] = set()

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
        script = SCRIPTS[call.script]
        try:
            return await self.client.evalsha(script.sha, len(call.keys), *call.keys, *call.args)
        except redis.exceptions.NoScriptError:
            await self.client.script_load(script.source)
            self._loaded.add(script.sha)
            return await self.client.evalsha(script.sha, len(call.keys), *call.keys, *call.args)

    async def _batch(self, batch: Batch) -> list[Any]:
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
            if isinstance(r, redis.ResponseError):
                raise r
        return results

    async def _pipeline(self, calls: Sequence[Eval | Cmd], atomic: bool) -> list[Any]:
        async with self.client.pipeline(transaction=atomic) as pipe:
            for c in calls:
                if isinstance(c, Eval):
                    pipe.evalsha(SCRIPTS[c.script].sha, len(c.keys), *c.keys, *c.args)
                else:
                    pipe.execute_command(*c.args)
            return list(await pipe.execute(raise_on_error=False))
