"""Plugins made up for the config tests, each shaped like a built-in one (chat ~ xmpp, files ~ feeds,
hook ~ a WebSub subscriber), and a config that uses every kind of key with them."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, Field

from thoonk_bridge.plugin import EndpointKind, NoSettings, Plugin, Settings


class ChatTls(BaseModel):
    model_config = Settings.model_config
    verify: bool = True


class ChatSettings(Settings):
    jid: str
    password: str
    tls: ChatTls = Field(default_factory=lambda: ChatTls())


class ChatNode(Settings):
    address: str = Field(pattern=r"^[a-z.]+/[a-z-]+$")


class ChatSinkNode(ChatNode):
    max_items: int = Field(default=10, ge=1)


class ChatPlugin(Plugin):
    """Like xmpp: required settings, a kind that is source and sink."""

    name: ClassVar[str] = "chat"
    settings_model: ClassVar[type[Settings]] = ChatSettings
    endpoint_kinds: ClassVar[tuple[EndpointKind, ...]] = (
        EndpointKind("chat", source_options=ChatNode, sink_options=ChatSinkNode),
    )


class FileSink(Settings):
    address: str
    title: str | None = None


class FilesSettings(Settings):
    directory: str = "feeds"


class FilesPlugin(Plugin):
    """Like feeds: sink only, settings all optional, resource = the file written."""

    name: ClassVar[str] = "files"
    settings_model: ClassVar[type[Settings]] = FilesSettings
    endpoint_kinds: ClassVar[tuple[EndpointKind, ...]] = (
        EndpointKind("files", sink_options=FileSink, resource=lambda ep: f"file:{ep.address}.atom"),
    )


class HookSource(Settings):
    address: str


class HookPlugin(Plugin):
    """Like a WebSub subscriber: source only, no settings."""

    name: ClassVar[str] = "hook"
    settings_model: ClassVar[type[Settings]] = NoSettings
    endpoint_kinds: ClassVar[tuple[EndpointKind, ...]] = (EndpointKind("hook", source_options=HookSource),)


PLUGINS: dict[str, type[Plugin]] = {"chat": ChatPlugin, "files": FilesPlugin, "hook": HookPlugin}


# Every kind of key: engine keys, a plugin's settings with ${PW}, string and mapping endpoints, options.
FULL_CONFIG = """\
redis: redis://127.0.0.1:6379/0
state_dir: /var/lib/bridge
http:
  listen: "[::1]:9000"
  public_url: https://bridge.example.org/prefix/
plugins:
  chat: {jid: bridge@example.org, password: "${PW}"}
routes:
  - name: out
    from: thoonk:news
    to:
      - files:news
      - {endpoint: "chat:pubsub.example.org/news", max_items: 50}
      - endpoint: thoonk:copy
        max_length: 100
    mirror: true
    format: json
    initial: latest:5
  - name: in
    from: hook:https://partner.example/feed.atom
    to: thoonk:partner
    initial: none
drain_seconds: 2.5
log_level: debug
log_format: json
job_maintenance_seconds: 5
"""
