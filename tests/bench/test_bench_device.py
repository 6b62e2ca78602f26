"""The bench's device survives a server that answers late: a Welcome arriving after the device
gave up waiting for it is taken (its ordering state reset), not an InvalidStateError raised in
the transport's callback."""
from __future__ import annotations

import asyncio

import pytest

from bench import device as bench_device
from bench.device import SwitchboardDevice
from switchboard.proto.v1 import client_pb2 as pb


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
