"""The worker's local control socket, for `switchboard admin` on the same host.

A unix socket in the data dir (`admin-<node_id>.sock`, mode 0600): whoever may read the
database may ask; nothing listens on the network. One JSON object per line in, one out, then
the connection closes. Operations:

* {"op": "sessions", "user": U or null, "limit": N}: the connected devices (of U), with peer
  address, state and messages in flight.
* {"op": "device_revoked", "user": U, "device": D}: the admin CLI revoked D in the store; this
  worker forgets it was admitted and closes its connection with 4011.
* {"op": "chat_changed", "chat_id": C, "seq": S, "change": "added"|"removed", "users": [U...]}:
  the admin CLI changed C's members in the store with the membership event at seq S; this
  worker reloads the member map (new members may send at once), offers the event to its
  connected devices of the members before and after it, and has removed users' connections
  stop C at their range's end. `change` and `users` are for the log only.

Every change is logged at INFO with what it was and who asked (the admin process's pid and
uid, read from the socket with SO_PEERCRED).

The CLI writes the store first, then tells every worker it finds in the data dir, so a change
holds even when no worker is running.

At start a socket file that still answers means another worker with the same node_id uses this
data dir: that is refused, since both would mint the same server ids.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from switchboard.config import ConfigError
from switchboard.proto.codes import Close
from switchboard.router.base import Invalidation


if TYPE_CHECKING:
    from .server import Gateway

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = 5.0
MAX_REQUEST_BYTES = 64 * 1024
DEFAULT_LIMIT = 1000


class ControlServer:
    def __init__(self, gateway: Gateway, path: Path) -> None:
        self._gw = gateway
        self.path = path
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        if self.path.exists():
            if _answers(self.path):
                raise ConfigError(f"server.node_id: {self.path} answers: another worker "
                                  "with this node id runs on this data dir")
            self.path.unlink()
        self._server = await asyncio.start_unix_server(self._handle, str(self.path),
                                                       limit=MAX_REQUEST_BYTES)
        os.chmod(self.path, 0o600)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
            self.path.unlink(missing_ok=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), REQUEST_TIMEOUT)
            try:
                request = orjson.loads(line)
                reply = await self._answer(request, _peer(writer))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                reply = {"error": f"bad request: {exc}"}
            writer.write(orjson.dumps(reply) + b"\n")
            await asyncio.wait_for(writer.drain(), REQUEST_TIMEOUT)
        except (asyncio.TimeoutError, asyncio.LimitOverrunError, ConnectionError):
            pass
        except Exception:
            log.exception("control request failed")
        finally:
            writer.close()

    async def _answer(self, request: dict[str, Any], who: str) -> dict[str, Any]:
        """Answer one request; a change made by an operator is logged at INFO with who made
        it (the admin process's pid and uid, from the socket) and what it was."""
        op = request["op"]
        gw = self._gw
        if op == "sessions":
            return {"node_id": gw.config.server.node_id, "connections": gw.hub.connections,
                    "sessions": self._sessions(request.get("user"),
                                               int(request.get("limit") or DEFAULT_LIMIT))}
        if op == "device_revoked":
            user, device = str(request["user"]), str(request["device"])
            # Already revoked in the store (that call is a no-op now); this drops the cached
            # admission, which would otherwise let the device straight back in.
            await gw.services.devices.revoke(user, device)
            closed = [c for c in gw.hub.devices_of(user) if c.device == device]
            gw.router.kick(user, device, Close.DEVICE_REVOKED, "device revoked")
            log.info("admin (%s): device %s/%s revoked, %d connections here closed (4011)",
                     who, user, device, len(closed),
                     extra={"admin": who, "user": user, "device": device})
            return {"closed": len(closed)}
        if op == "chat_changed":
            chat_id = str(request["chat_id"])
            chats = gw.services.chats
            before = set(chats.cached_members(chat_id) or ())
            chats.forget(chat_id)
            after = await chats.members(chat_id)
            gone = [user for user in before if user not in after]
            gw.router.invalidate(Invalidation.CHAT_MEMBERS, chat_id, gone)
            seq = int(request.get("seq") or 0)
            event = await gw.services.store.read_messages(chat_id, seq - 1, 1) if seq else []
            if event and event[0].seq == seq and event[0].event is not None:
                named = dict.fromkeys(event[0].event.users)
                gw.hub.deliver(chat_id, {**named, **dict.fromkeys(before), **after}, event)
            change = request.get("change") or "changed"
            users = [str(u) for u in request.get("users") or ()]
            log.info("admin (%s): chat %s members %s %s at seq %d; %d members now, %d removed here",
                     who, chat_id, change, ", ".join(users) or "?", seq, len(after), len(gone),
                     extra={"admin": who, "chat_id": chat_id, "change": change, "users": users,
                            "seq": seq})
            return {"members": len(after), "dropped": len(gone)}
        raise ValueError(f"unknown op {op!r}")

    def _sessions(self, user: str | None, limit: int) -> list[dict[str, Any]]:
        conns = self._gw.hub.devices_of(user) if user else self._gw.hub.all()
        out = []
        for conn in conns[:limit]:
            transport = conn.transport
            peer = transport.underlying_transport.get_extra_info("peername") if transport else None
            out.append({"user": conn.user, "device": conn.device, "state": conn.state.name,
                        "peer": f"{peer[0]}:{peer[1]}" if peer else None,
                        "inflight": conn.inflight, "chats": len(conn.streams)})
        return out


def _peer(writer: asyncio.StreamWriter) -> str:
    """"pid P uid U" of the process at the other end of the control socket (SO_PEERCRED)."""
    sock = writer.get_extra_info("socket")
    try:
        pid, uid, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                          struct.calcsize("3i")))
    except (AttributeError, OSError):
        return "unknown peer"
    return f"pid {pid} uid {uid}"


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True
