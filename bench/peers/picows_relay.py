"""Peer (1), the transport ceiling: a bare picows WebSocket relay.

No auth, no storage, no ordering, no acks: a device connects to /<me>/<partner> and every binary
frame it sends is forwarded as-is to the partner's connection, if that is open. Whatever
Switchboard does per message on top of moving bytes between two sockets shows up as the gap
between this relay and Switchboard in the same run. A partner named `group:<name>` makes the
connection a member of that group instead, and its frames go to every other member (the fanout
scenario's yardstick: the same frame written to G sockets in one loop callback).

Built as picows' best users would: uvloop, the payload forwarded as a memoryview of picows' read
buffer (no copy in Python), a read buffer sized for chat messages rather than the 16 KiB
default, and aiofastnet (picows' default transport when installed) switchable with
--aiofastnet/--no-aiofastnet. The default is off: on the chat scenario here (100 pairs, two runs
each) the relay's CPU per message was the same either way (6.4-6.8 us), and without aiofastnet
an idle connection costs less memory.

    python -m bench.peers.picows_relay --port 0
"""
from __future__ import annotations

import argparse

from picows import WSFrame, WSListener, WSMsgType, WSTransport, WSUpgradeRequest, ws_create_server


GROUP = "group:"


class Relay(WSListener):
    __slots__ = ("me", "partner", "registry", "transport")

    def __init__(self, me: str, partner: str, registry: dict[str, WSTransport]) -> None:
        super().__init__()
        self.me = me
        self.partner = partner
        self.registry = registry
        self.transport: WSTransport | None = None

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        self.registry[self.me] = transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        msg_type = frame.msg_type
        if msg_type == WSMsgType.BINARY:
            partner = self.registry.get(self.partner)
            if partner is not None:
                partner.send(WSMsgType.BINARY, frame.get_payload_as_memoryview())
        elif msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if self.registry.get(self.me) is transport:
            del self.registry[self.me]


class GroupRelay(WSListener):
    """A member of a group: its frames go to every other member's connection."""
    __slots__ = ("members", "transport")

    def __init__(self, members: set[WSTransport]) -> None:
        super().__init__()
        self.members = members
        self.transport: WSTransport | None = None

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        self.members.add(transport)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        msg_type = frame.msg_type
        if msg_type == WSMsgType.BINARY:
            payload = frame.get_payload_as_memoryview()
            for member in self.members:
                if member is not transport:
                    member.send(WSMsgType.BINARY, payload)
        elif msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.members.discard(transport)


async def serve(host: str, port: int, use_aiofastnet: bool, read_buffer: int) -> None:
    registry: dict[str, WSTransport] = {}
    groups: dict[str, set[WSTransport]] = {}

    def route(request: WSUpgradeRequest) -> WSListener | None:
        parts = request.path.decode().split("?", 1)[0].strip("/").split("/")
        if len(parts) != 2:
            return None
        if parts[1].startswith(GROUP):
            return GroupRelay(groups.setdefault(parts[1], set()))
        return Relay(parts[0], parts[1], registry)

    server = await ws_create_server(route, host, port, use_aiofastnet=use_aiofastnet,
                                    read_buffer_init_size=read_buffer, enable_auto_pong=True)
    print(f"picows relay listening on ws://{host}:{server.sockets[0].getsockname()[1]}/",
          flush=True)
    await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--aiofastnet", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument("--read-buffer", type=int, default=1024,
                        help="initial read buffer per connection (bytes; grows as needed)")
    args = parser.parse_args()
    import uvloop
    try:
        uvloop.run(serve(args.host, args.port, args.aiofastnet, args.read_buffer))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
