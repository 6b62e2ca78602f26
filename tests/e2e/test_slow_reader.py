"""A client that asks for a lot and never reads (protocol 8.4, guarantee I6): the server's
memory stays bounded while it waits, the client is closed 4008 once its answers stall, the
memory is used again after the close (a second round adds nothing), and everyone else is served
meanwhile. Against a real server process, measuring its RSS."""
from __future__ import annotations

import asyncio
import urllib.request

from switchboard.proto.v1 import client_pb2 as pb
from switchboard.tools.devcluster import free_port
from tests.support.raw import RawClient
from tests.support.rawflow import direct, receive_and_ack, request
from tests.support.server import ServerProcess

BODY = 60_000
MESSAGES = 210
REQUESTS = 60
MB = 1024 * 1024
# What the server may hold for a reader that never reads: the bodies it read in the page cache
# of each of the store's 2 reader connections (2 x 12.6 MB), its 4 MiB outbound cap, the pages of
# its 4 answer tasks (about 2 MiB each) and the allocator's slack; answering all 60 requests
# unbounded would take 60 x 12.6 MB.
PEAK_BOUND = 64 * MB


def slow_consumers(metrics_port: int) -> int:
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read()
    for line in text.decode().splitlines():
        if line.startswith("switchboard_slow_consumers_total"):
            return int(float(line.split()[1]))
    return 0


async def connected(server: ServerProcess, user: str) -> RawClient:
    client = await RawClient.connect(server.url, server.token(user))
    await client.recv("sync_complete", timeout=30)
    return client


async def one_slow_reader(server: ServerProcess, metrics_port: int, chat: str,
                          alice: RawClient) -> int:
    """bob, with nothing to sync, stops reading and asks for 60 pages of 200 x 60 KB; returns
    the server's peak RSS until it closed bob with 4008, which bob reads once it reads again."""
    closed_before = slow_consumers(metrics_port)
    reader = await connected(server, "bob")
    reader.transport.underlying_transport.pause_reading()
    for _ in range(REQUESTS):
        reader.send(history=pb.History(chat_id=chat, limit=200))
    peak = 0
    while slow_consumers(metrics_port) == closed_before:
        peak = max(peak, await asyncio.to_thread(server.rss_bytes))
        # others are served meanwhile
        assert (await request(alice, ping=pb.Ping(client_time_ms=1))).pong.client_time_ms == 1
        await asyncio.sleep(0.05)
    peak = max(peak, await asyncio.to_thread(server.rss_bytes))
    # it reads again: every byte the server had queued, then the close
    reader.transport.underlying_transport.resume_reading()
    code, _ = await reader.closed(timeout=10)
    assert code == 4008
    return peak


async def test_a_client_that_never_reads_is_bounded_and_closed_4008(tmp_path):
    metrics_port = free_port()
    server = await ServerProcess(tmp_path, env={
        "SWITCHBOARD_LIMITS_SENDS_PER_SECOND": "100000", "SWITCHBOARD_LIMITS_SEND_BURST": "100000",
        "SWITCHBOARD_METRICS_PORT": str(metrics_port)}).start()
    try:
        alice = await connected(server, "alice")
        bob = await connected(server, "bob")
        chat = await direct(alice, "bob")
        for start in range(0, MESSAGES, 30):
            rids = [alice.send(send=pb.Send(client_msg_id=f"m{i}", chat_id=chat,
                                            body=bytes([i % 256]) * BODY))
                    for i in range(start, min(MESSAGES, start + 30))]
            for rid in rids:
                assert (await alice.reply(rid, timeout=30)).WhichOneof("body") == "send_ack"
        await receive_and_ack(bob, MESSAGES, timeout=30)
        bob.close()
        baseline = await asyncio.to_thread(server.rss_bytes)

        after_close = []
        for _round in range(2):  # a second round must find the memory of the first again
            peak = await one_slow_reader(server, metrics_port, chat, alice)
            assert peak - baseline < PEAK_BOUND, f"RSS grew {(peak - baseline) / MB:.0f} MB"
            after_close.append(await asyncio.to_thread(server.rss_bytes))
        assert after_close[1] < after_close[0] + 8 * MB, \
            f"RSS after each close: {[round(r / MB) for r in after_close]} MB"
        again = await connected(server, "bob")
        page = (await request(again, history=pb.History(chat_id=chat, limit=200))).history_page
        assert page.has_more and 0 < len(page.messages) < 200  # a page is at most ~1 MiB
        assert sum(len(m.body) for m in page.messages) <= MB
    finally:
        server.stop()
