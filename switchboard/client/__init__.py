"""The reference asyncio client SDK of protocol v1 (docs/protocol.md)."""
from switchboard.keepalive import TcpKeepalive

from .ordering import ChatOrder
from .sdk import AuthError, Client, ClientStats, ConnectionLost, ServerError

__all__ = ["Client", "ClientStats", "ServerError", "AuthError", "ConnectionLost", "ChatOrder",
           "TcpKeepalive"]
