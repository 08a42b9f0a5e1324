"""The errors the xmpp plugin raises, and how a server's errors are told to an operator (one place,
so that every part imports them from here)."""

from __future__ import annotations

from slixmpp.exceptions import IqError, IqTimeout

from thoonk_bridge.plugin import DeliveryError


class NotConnected(Exception):
    """The account has no session right now (or lost it while waiting for an answer)."""


class AuthFailed(Exception):
    """The server refused the login (wrong password, unknown account, no usable mechanism)."""


class ConnectFailed(Exception):
    """No session could be established (server down, wrong host/port, TLS failure, timeout)."""


class XmppEndpointError(Exception):
    """A node cannot be used (missing, forbidden, unknown service); the message says why."""


class NoSession(DeliveryError):
    """An event failed for want of a session (none, or it died before the answer): retryable."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=True)


class NodeMissing(Exception):
    """A sink's node does not exist and the sink may not create it."""

    def __str__(self) -> str:
        return "the node does not exist and create is false"


class NotOwner(Exception):
    """``configure: true`` on a node the account does not own."""

    def __str__(self) -> str:
        return "configure: true needs the owner affiliation (or a service admin account)"


def describe_iq_error(exc: BaseException) -> str:
    """``type/condition: text`` of an IqError, ``timeout`` for IqTimeout."""
    if isinstance(exc, IqTimeout):
        return "no answer (timeout)"
    if isinstance(exc, IqError):
        err = exc.iq["error"]
        text = err["text"]
        return f"{err['type']}/{err['condition']}" + (f": {text}" if text else "")
    return f"{type(exc).__name__}: {exc}"


def iq_condition(exc: BaseException) -> str | None:
    return exc.iq["error"]["condition"] if isinstance(exc, IqError) else None


def describe_endpoint_error(what: str, service: str, node: str, jid: str, exc: BaseException) -> str:
    """A message naming the node, the account and what the server said, with a hint."""
    condition = iq_condition(exc)
    base = f"{what} node {node!r} on {service} as {jid}: {describe_iq_error(exc)}"
    hint = {
        "item-not-found": "the node does not exist",
        "forbidden": "the account is not allowed to do this (ask the service's admin for an affiliation)",
        "not-allowed": "unknown or unreachable service (check the SERVICE part of the address)",
        "remote-server-not-found": "unknown service (check the SERVICE part of the address)",
        "remote-server-timeout": "the service's server does not answer",
        "service-unavailable": "the service does not exist or does not offer PubSub",
        "feature-not-implemented": "the service does not support this PubSub feature",
    }.get(condition or "")
    return f"{base} ({hint})" if hint else base


__all__ = [
    "AuthFailed",
    "ConnectFailed",
    "NoSession",
    "NodeMissing",
    "NotConnected",
    "NotOwner",
    "XmppEndpointError",
    "describe_endpoint_error",
    "describe_iq_error",
    "iq_condition",
]
