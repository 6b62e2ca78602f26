"""SIGTERM under load on a real process (docs/guarantees.md F16): every device gets the Goaway frame
and close 1001, no acknowledged message is lost (checked by restarting and syncing), and the
process exits 0 within the stop timeout. Also `switchboard admin drain --pid`."""
from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time

from switchboard.proto.v1 import client_pb2 as pb
from tests.ops.node import Node
from tests.support.raw import RawClient
from tests.support.rawflow import direct

SENDERS = 4
WINDOW = 16
STOP_TIMEOUT = 10.0
DRAIN_ENV = {"SWITCHBOARD_SERVER_DRAIN_SPREAD": "0.5",
             "SWITCHBOARD_SERVER_STOP_TIMEOUT": str(STOP_TIMEOUT)}


class Sender:
    """Keeps WINDOW sends in flight until the server says Goaway; records what was acked. A
    refused send pauses sending for its retry_after_ms, as a client must: re-sending at once
    would flood the drain's refusals into a 4029 close before the Goaway comes."""

    def __init__(self, client: RawClient, chat: str, tag: str) -> None:
        self.client = client
        self.chat = chat
        self.tag = tag
        self.acked: dict[int, bytes] = {}
        self.refused = 0
        self.goaway: pb.Goaway | None = None
        self._outstanding: dict[int, bytes] = {}
        self._next = 0
        self._resume_at = 0.0

    async def run(self) -> None:
        while True:
            while (self.goaway is None and len(self._outstanding) < WINDOW
                   and time.monotonic() >= self._resume_at):
                body = f"{self.tag}-{self._next}".encode()
                rid = self.client.send(send=pb.Send(client_msg_id=body.decode(), chat_id=self.chat,
                                                    body=body))
                self._outstanding[rid] = body
                self._next += 1
            frame = await self._next_frame()
            if frame is None:
                return
            kind = frame.WhichOneof("body")
            if kind == "send_ack":
                self.acked[frame.send_ack.seq] = self._outstanding.pop(frame.request_id)
            elif kind == "error":
                assert frame.error.code == pb.UNAVAILABLE, frame
                self._outstanding.pop(frame.request_id)
                self.refused += 1
                self._resume_at = time.monotonic() + frame.error.retry_after_ms / 1000
            elif kind == "goaway":
                self.goaway = frame.goaway

    async def _next_frame(self) -> pb.ServerFrame | None:
        """The next frame, or None once the connection is closed and everything was read."""
        listener = self.client.listener
        if listener.frames.empty() and not listener.closed.is_set():
            get = asyncio.ensure_future(listener.frames.get())
            closed = asyncio.ensure_future(listener.closed.wait())
            await asyncio.wait({get, closed}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
            closed.cancel()
            if get.done():
                return get.result()
            get.cancel()
        if not listener.frames.empty():  # frames read before the close come first
            return listener.frames.get_nowait()
        assert listener.closed.is_set(), "no frame and no close for 10 s"
        return None


async def connect(node: Node, user: str, device: str = "phone") -> RawClient:
    client = await RawClient.connect(node.url, node.token(user, device))
    await client.recv("welcome")
    return client


async def sync_all(node: Node, user: str, device: str) -> list[pb.Message]:
    """Everything a fresh device of `user` gets, acking as it goes, until SyncComplete."""
    client = await connect(node, user, device)
    got: list[pb.Message] = []
    while True:
        frame = await client.recv(timeout=10)
        kind = frame.WhichOneof("body")
        if kind == "deliver":
            got += frame.deliver.messages
            last = {m.chat_id: m.seq for m in frame.deliver.messages}
            client.send(ack=pb.Ack(acks=[pb.ChatSeq(chat_id=c, seq=s) for c, s in last.items()]))
        elif kind == "sync_complete":
            client.close()
            return got


async def test_sigterm_under_load_says_goaway_loses_nothing_and_exits_0(tmp_path):
    node = await Node(tmp_path / "data", env=DRAIN_ENV).start()
    try:
        senders = []
        for i in range(SENDERS):
            client = await connect(node, f"alice{i}")
            senders.append(Sender(client, await direct(client, "bob"), f"alice{i}"))
        tasks = [asyncio.ensure_future(s.run()) for s in senders]
        deadline = time.monotonic() + 20
        while sum(len(s.acked) for s in senders) < 1000 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

        started = time.monotonic()
        node.signal(signal.SIGTERM)  # what `systemctl stop` sends
        assert await node.wait(STOP_TIMEOUT + 5) == 0
        assert time.monotonic() - started < STOP_TIMEOUT
        await asyncio.wait_for(asyncio.gather(*tasks), 15)
        for sender in senders:
            assert sender.goaway is not None, f"{sender.tag} got no Goaway"
            assert 0 <= sender.goaway.reconnect_after_ms <= 500
            assert sender.client.listener.close_code == 1001
            assert sender.acked, f"{sender.tag} got nothing acked"
        assert "drained: writer flushed, store closed" in node.log()

        node = await Node(tmp_path / "data", env=DRAIN_ENV).start()
        synced = await sync_all(node, "bob", "new-tablet")
        by_chat: dict[str, dict[int, bytes]] = {}
        for message in synced:
            by_chat.setdefault(message.chat_id, {})[message.seq] = message.body
        for sender in senders:
            stored = by_chat[sender.chat]
            assert sorted(stored) == list(range(1, len(stored) + 1))  # gap-free
            lost = {seq: body for seq, body in sender.acked.items() if stored.get(seq) != body}
            assert not lost, f"acknowledged but not stored: {sorted(lost)[:5]}"
    finally:
        node.stop()


async def test_admin_drain_pid_waits_for_a_clean_exit(tmp_path):
    node = await Node(tmp_path / "data", env=DRAIN_ENV).start()
    try:
        client = await connect(node, "alice")
        done = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "switchboard", "admin", "drain",
                             "--pid", str(node.proc.pid), "--timeout", "20"],
            capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        assert f"pid {node.proc.pid} drained in" in done.stdout
        assert node.proc.poll() == 0  # it had exited when the command returned
        assert (await client.recv("goaway")).goaway.reason == "server draining"
        assert (await client.closed())[0] == 1001
    finally:
        node.stop()
