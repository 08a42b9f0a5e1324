"""Settings of the xmpp plugin and options of its ``xmpp:SERVICE/NODE`` endpoints."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from thoonk_bridge.plugin import Settings

DEFAULT_ACCOUNT = "default"
JID_PATTERN = r"^[^@/\s]+@[^@/\s]+(/\S+)?$"
ADDRESS_PATTERN = r"^[^/\s@]+/\S.*$"
PROSODY_STANZA_LIMIT = 256 * 1024


class AccountSettings(Settings):
    """One XMPP account (one connection, shared by every route that uses it).

    - ``jid``: ``user@domain`` (a resource here overrides ``resource``).
    - ``password``: use ``${ENV_VAR}`` in the config, never the literal password.
    - ``host``/``port``: where to connect (default: the JID's domain via DNS SRV, port 5222).
    - ``tls``: ``required`` (default: direct TLS, then STARTTLS; never authenticate in clear),
      ``starttls`` (STARTTLS on the c2s port only, required), ``disabled`` (plain TCP: allowed
      only when ``host`` is a loopback address or ``allow_insecure: true``).
    - ``ca_file``: PEM file of the CA (or self-signed certificate) to trust instead of the system's.
    - ``resource``: the resource bound (default ``thoonk-bridge-<instance id>``: stable across restarts,
      so full-JID subscriptions survive them, and distinct per daemon, so several daemons sharing one
      account do not replace each other's sessions).
    - ``keepalive``: seconds between XEP-0199 pings to the server; an unanswered ping (``timeout``)
      counts as a lost connection. 0 disables.
    - ``timeout``: seconds to wait for the login and for each IQ.
    - ``reconnect_min``/``reconnect_max``: backoff bounds (full jitter) between connection attempts.
    - ``max_stanza_bytes``: the server's stanza size limit (Prosody: ``c2s_stanza_size_limit``,
      256 KiB); items that would not fit go to the route's dead-letter feed.
    """

    jid: str = Field(
        pattern=JID_PATTERN,
        description="The account's JID, user@domain (a /resource here overrides resource).",
    )
    password: SecretStr = Field(description="The account's password; write it as ${ENV_VAR}, it is never logged.")
    host: str | None = Field(default=None, description="Host to connect to; default the JID's domain through DNS SRV.")
    port: int = Field(default=5222, ge=1, le=65535, description="Port to connect to when host is set.")
    tls: Literal["required", "starttls", "disabled"] = Field(
        default="required",
        description="required: direct TLS, then STARTTLS, never authenticating in clear; starttls: STARTTLS only; "
        "disabled: plain TCP, only with a loopback host or allow_insecure.",
    )
    allow_insecure: bool = Field(
        default=False,
        description="Allow tls: disabled with a host that is not loopback (the password then travels in clear).",
    )
    ca_file: Path | None = Field(
        default=None,
        description="PEM file of the CA (or self-signed certificate) to trust instead of the system's CAs.",
    )
    resource: str | None = Field(
        default=None, min_length=1, pattern=r"^\S+$",
        description="The bound resource; default thoonk-bridge-<instance id>, stable across restarts and distinct per "
        "daemon.",
    )
    keepalive: float = Field(
        default=60.0, ge=0,
        description="Seconds between XEP-0199 pings; an unanswered ping drops the connection, which then reconnects; "
        "0 disables.",
    )
    timeout: float = Field(default=30.0, gt=0, description="Seconds allowed for login and for each IQ.")
    reconnect_min: float = Field(
        default=1.0, gt=0,
        description="Shortest wait in seconds between connection attempts (exponential backoff with full jitter).",
    )
    reconnect_max: float = Field(default=60.0, gt=0, description="Longest wait in seconds between connection attempts.")
    max_stanza_bytes: int = Field(
        default=PROSODY_STANZA_LIMIT, ge=1024,
        description="The server's stanza size limit (Prosody: c2s_stanza_size_limit); larger items go to the "
        "dead-letter feed.",
    )

    @model_validator(mode="after")
    def _check(self) -> AccountSettings:
        if self.tls == "disabled" and not self.allow_insecure and not _is_loopback(self.host):
            raise ValueError(
                "tls: disabled sends the password in clear; it is only allowed with a loopback host "
                "(127.0.0.1, ::1, localhost) or with allow_insecure: true"
            )
        if self.reconnect_max < self.reconnect_min:
            raise ValueError("reconnect_max must be >= reconnect_min")
        return self

    @property
    def bare_jid(self) -> str:
        return self.jid.partition("/")[0]

    @property
    def full_jid(self) -> str:
        return self.jid if "/" in self.jid else f"{self.jid}/{self.resource or 'thoonk-bridge'}"


def _is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class XmppSettings(AccountSettings):
    """``plugins.xmpp``: the default account's settings, plus more named ``accounts``.

    An endpoint uses the default account unless its ``account`` option names another one.
    """

    accounts: dict[str, AccountSettings] = Field(
        default_factory=dict,
        description="More accounts by name, each with the keys above; an endpoint picks one with account: NAME.",
    )

    @field_validator("accounts")
    @classmethod
    def _names(cls, value: dict[str, AccountSettings]) -> dict[str, AccountSettings]:
        if DEFAULT_ACCOUNT in value:
            raise ValueError(f"account name {DEFAULT_ACCOUNT!r} is the top-level account")
        return value

    def all_accounts(self) -> dict[str, AccountSettings]:
        default = AccountSettings(**{k: getattr(self, k) for k in AccountSettings.model_fields})
        return {DEFAULT_ACCOUNT: default, **self.accounts}


def split_address(address: str) -> tuple[str, str]:
    """``SERVICE/NODE`` -> (service, node); the node may contain ``/`` (split at the first)."""
    service, sep, node = address.partition("/")
    if not sep or not service or not node:
        raise ValueError(f"xmpp address must be SERVICE/NODE, got {address!r}")
    return service.lower(), node


class _EndpointOptions(Settings):
    address: str = Field(
        pattern=ADDRESS_PATTERN,
        description="SERVICE/NODE: the PubSub service and the node (the node name may contain '/').",
    )
    account: str = Field(
        default=DEFAULT_ACCOUNT,
        description="Which configured account to use; default the top-level one.",
    )

    @property
    def service(self) -> str:
        return split_address(self.address)[0]

    @property
    def node(self) -> str:
        return split_address(self.address)[1]


class XmppSourceOptions(_EndpointOptions):
    """``from: xmpp:SERVICE/NODE``.

    - ``address``: ``SERVICE/NODE`` (the node name may contain ``/``).
    - ``account``: which configured account reads the node (default: the top-level one).
    - ``subscribe``: ``bare`` (default: the bare JID, delivered to every online resource of the
      account; the bridge sends presence) or ``full`` (the account's full JID, this resource only).
    - ``max_payload_bytes``: larger item payloads are not relayed; they go to the dead-letter feed.
    """

    subscribe: Literal["bare", "full"] = Field(
        default="bare",
        description="bare: subscribe the bare JID (the bridge sends presence); full: the account's full JID, this "
        "resource only.",
    )
    max_payload_bytes: int = Field(
        default=PROSODY_STANZA_LIMIT, ge=1,
        description="Larger item payloads are not relayed; they go to the dead-letter feed.",
    )


AccessModel = Literal["open", "presence", "roster", "authorize", "whitelist"]
PublishModel = Literal["publishers", "subscribers", "open"]


class XmppSinkOptions(_EndpointOptions):
    """``to: xmpp:SERVICE/NODE``.

    - ``address``: ``SERVICE/NODE``; ``account``: as for sources.
    - ``create``: create the node when missing (default true; needs the right to create nodes).
    - ``configure``: also apply the options below to a node that already exists (default false).
    - ``title``, ``max_items``, ``access_model``, ``publish_model``, ``notify_retract``: node
      configuration used on create (and on configure). Unset options keep the server's default.
    - ``max_in_flight``: how many publishes/retracts may await the server's answer at once (default
      50); they go out in order on the account's one stream.
    """

    create: bool = Field(
        default=True,
        description="Create the node when it is missing (needs the right to create nodes).",
    )
    configure: bool = Field(default=False, description="Also apply the node options to a node that already exists.")
    title: str | None = Field(default=None, description="Node title (pubsub#title), set on create or configure.")
    max_items: int | None = Field(
        default=None, ge=1,
        description="Items the node keeps (pubsub#max_items), set on create or configure; unset keeps the server's "
        "default.",
    )
    access_model: AccessModel | None = Field(
        default=None,
        description="Who may subscribe (pubsub#access_model), set on create or configure.",
    )
    publish_model: PublishModel | None = Field(
        default=None,
        description="Who may publish (pubsub#publish_model), set on create or configure.",
    )
    notify_retract: bool = Field(
        default=True,
        description="Notify subscribers of retractions (pubsub#notify_retract), set on create or configure.",
    )
    max_in_flight: int = Field(
        default=50, ge=1, le=1000,
        description="Publishes and retracts that may await the server's answer at once; they go out in order on the "
        "account's stream.",
    )

    def node_config(self) -> dict[str, str | bool]:
        config: dict[str, str | bool] = {"pubsub#notify_retract": self.notify_retract}
        if self.title is not None:
            config["pubsub#title"] = self.title
        if self.max_items is not None:
            config["pubsub#max_items"] = str(self.max_items)
        if self.access_model is not None:
            config["pubsub#access_model"] = self.access_model
        if self.publish_model is not None:
            config["pubsub#publish_model"] = self.publish_model
        return config
