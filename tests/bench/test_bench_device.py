"""The bench's device survives a server that answers late: a Welcome arriving after the device
gave up waiting for it is taken (its ordering state reset), not an InvalidStateError raised in
the transport's callback; and a device the server moves (close 1001) follows the move."""
from __future__ import annotations

import asyncio

import pytest

from picows import WSCloseCode, WSListener, WSTransport, ws_create_server

from bench import device as bench_device
from bench.device import SwitchboardDevice
from bench.gen import Endpoint
from switchboard.proto.v1 import client_pb2 as pb
from tests.support.waiting import wait_for


class Payload:
    """What picows hands on_payload: the message's bytes."""

    def __init__(self, frame: pb.ServerFrame) -> None:
        self._data = frame.SerializeToString()

    def get_payload_as_bytes(self) -> bytes:
        return self._data


async def test_a_welcome_after_the_handshake_timeout_is_harmless(monkeypatch):
    monkeypatch.setattr(bench_device, "HANDSHAKE_TIMEOUT", 0.01)
    device = SwitchboardDevice("alice", "bob")
    device._welcome = asyncio.get_running_loop().create_future()
    with pytest.raises(asyncio.TimeoutError):
        await device.opened()
    device.on_payload(Payload(pb.ServerFrame(welcome=pb.Welcome(user_id="alice"))))
    assert device._welcome.cancelled()


class Closer(WSListener):
    """A server that closes each new connection at once with the next code of `codes`, and
    keeps connections once the codes run out."""

    def __init__(self, codes: list[int]) -> None:
        self.codes = codes
        self.connections = 0

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.connections += 1
        if self.codes:
            transport.send_close(WSCloseCode(self.codes.pop(0)))
            transport.disconnect()


class Sources:
    """What a device following a move asks its generator worker for."""

    def local_addr(self, endpoint: Endpoint) -> None:
        return None


async def closer_server(codes: list[int]) -> tuple[Closer, object, Endpoint]:
    closer = Closer(codes)
    server = await ws_create_server(lambda request: closer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return closer, server, Endpoint("picows-relay", f"ws://127.0.0.1:{port}/")


async def test_a_device_moved_by_the_server_reconnects_and_is_no_drop(monkeypatch):
    """close 1001 (after a Goaway: the rebalancer, a drain) -> the device reconnects, as the SDK
    does, counted as a move; any other close is a drop."""
    monkeypatch.setattr(bench_device, "MOVE_JITTER", 0.01)
    closer, server, endpoint = await closer_server([1001, 1001])
    device = endpoint.device("alice")
    device.follow_moves = (endpoint, Sources())
    try:
        await device.open(endpoint, None)
        await wait_for(lambda: closer.connections == 3 and device.connected, timeout=10,
                       message="two moves followed")
        assert (device.moves, device.drops, device.close_codes) == (2, 0, [1001, 1001])
        closer.codes.append(4008)
        await device.close()
        other = endpoint.device("bob")
        other.follow_moves = (endpoint, Sources())
        await other.open(endpoint, None)
        await wait_for(lambda: other.drops == 1, timeout=10, message="a slow-consumer close")
        assert (other.moves, other.connected, other.close_codes) == (0, False, [4008])
    finally:
        await device.close()
        server.close()
