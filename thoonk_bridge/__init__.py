"""thoonk-bridge: Thoonk feeds on Redis, bridged to XMPP PubSub, WebSub and Atom/RSS."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("thoonk-bridge")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
