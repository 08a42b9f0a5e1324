"""XMPP PubSub nodes (XEP-0060) as route sources and sinks (slixmpp)."""

from .plugin import XmppPlugin as plugin

__all__ = ["plugin"]
