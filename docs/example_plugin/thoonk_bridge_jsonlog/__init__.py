"""Example thoonk-bridge plugin: a sink that appends every route event to a JSON-lines file.

Config::

    plugins:
      jsonlog: {directory: /var/log/bridge}     # optional; default: the plugin's state directory
    routes:
      - name: audit
        from: thoonk:news
        to: jsonlog:news                        # -> <directory>/news.jsonl

Each line is ``{"kind": "publish"|"edit"|"retract", "id": ..., "payload": ...}``. The sink can tell
what it holds (it replays its own file), so after a restart the router sends only what is missing.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from pydantic import Field

from thoonk_bridge.payload import content_hash
from thoonk_bridge.plugin import (
    DeliveryError,
    Endpoint,
    EndpointKind,
    EventKind,
    ItemEvent,
    Plugin,
    RouteContext,
    Settings,
    Sink,
)


class JsonLogSettings(Settings):
    """``plugins.jsonlog``.

    - ``directory``: where the ``NAME.jsonl`` files go (default: the plugin's state directory).
    """

    directory: Path | None = None


class JsonLogSinkOptions(Settings):
    """``to: jsonlog:NAME``.

    - ``address``: the file name without ``.jsonl`` (letters, digits, ``-``, ``_``, ``.``).
    """

    address: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,100}$")


class JsonLogSink(Sink):
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch(exist_ok=True)

    async def ids(self) -> dict[str, str | None]:
        held: dict[str, str | None] = {}
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a crash: the router sends that item again
            if record["kind"] == "retract":
                held.pop(record["id"], None)
            else:
                held[record["id"]] = content_hash(record["payload"])
        return held

    async def apply(self, event: ItemEvent) -> None:
        line = json.dumps({"kind": str(event.kind), "id": event.id, "payload": event.payload}, ensure_ascii=False)
        async with self._lock:
            try:
                with self.path.open("a", encoding="utf-8") as f:
                    f.write(line + "\n")
            except OSError as exc:
                raise DeliveryError(f"{self.path}: {exc.strerror}", retryable=True) from exc


class JsonLogPlugin(Plugin[JsonLogSettings]):
    name = "jsonlog"
    version = "1.0.0"
    description = "route events appended to JSON-lines files (example plugin)"
    settings_model = JsonLogSettings
    endpoint_kinds = (
        EndpointKind("jsonlog", sink_options=JsonLogSinkOptions, description="a JSON-lines file per NAME"),
    )

    def validate(self) -> list[str]:
        directory = self.settings.directory  # self.settings: JsonLogSettings, parsed by the config
        if directory is not None and directory.exists() and not directory.is_dir():
            return [f"directory {directory} exists and is not a directory"]
        return []

    def sink(self, endpoint: Endpoint[JsonLogSinkOptions], route: RouteContext) -> Sink:
        # endpoint.options: the sink_options model of the kind, parsed and validated by the config
        directory = self.settings.directory or self.context.state_dir
        return JsonLogSink(Path(directory) / f"{endpoint.options.address}.jsonl")


__all__ = ["EventKind", "JsonLogPlugin"]
