"""The registry's Redis Cluster client (switchboard/router/redis_client.py): reply framing cut
anywhere, the slot function against redis-py's, and its behaviour against real Redis nodes and
hostile ones: redirections, many calls in flight on one connection, a node that never answers,
one that answers garbage, deadlines that leave the connection in step."""
from __future__ import annotations

import asyncio
import time

import hiredis
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.crc import key_slot as redis_py_key_slot

from switchboard.router.redis_client import (ClusterClient, ReplyProtocol, Script, Unavailable,
                                             key_slot)
from tests.support.waiting import wait_for


@given(st.text(max_size=40))
def test_key_slot_is_redis_clusters(key):
    assert key_slot(key) == redis_py_key_slot(key.encode())


def test_key_slot_hashes_the_tag_only():
    assert key_slot("sb:{u:alice}:sessions") == key_slot("sb:{u:alice}:last_seen") \
        == key_slot("u:alice")
    assert key_slot("a{}b") == redis_py_key_slot(b"a{}b")  # an empty tag hashes the whole key


REPLIES = [b"+OK\r\n", b"-MOVED 3999 127.0.0.1:6381\r\n", b":42\r\n", b"$5\r\nhello\r\n",
           b"$-1\r\n", b"*2\r\n$1\r\na\r\n:1\r\n", b"*0\r\n", b"*-1\r\n"]


@settings(max_examples=200)
@given(st.lists(st.sampled_from(REPLIES), min_size=1, max_size=12), st.data())
def test_replies_come_out_in_order_however_the_bytes_are_cut(replies, data):
    stream = b"".join(replies)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    protocol, out, start = ReplyProtocol(), [], 0
    for cut in [*cuts, len(stream)]:
        out += protocol.feed(stream[start:cut])
        start = cut
    whole = ReplyProtocol().feed(stream)
    assert len(out) == len(replies)
    assert [repr(x) for x in out] == [repr(x) for x in whole]


def test_error_replies_are_values_and_garbage_is_refused():
    assert isinstance(ReplyProtocol().feed(b"-ERR nope\r\n")[0], hiredis.ReplyError)
    with pytest.raises(hiredis.ProtocolError):
        ReplyProtocol().feed(b"HTTP/1.1 200 OK\r\n")


def _due(seconds: float) -> float:
    return asyncio.get_running_loop().time() + seconds


# ---------------------------------------------------------------------------- real Redis
async def test_thousands_of_calls_in_flight_share_one_connection_per_node(redis_cluster):
    """redis-py's pool refused the 101st concurrent command per node; here every call waits
    its turn on the node's connection and all of them answer."""
    client = ClusterClient(redis_cluster.addresses)
    try:
        keys = [f"t:{{k{i}}}" for i in range(3000)]
        await asyncio.gather(*(client.call(k, "SET", k, i, "PX", 30000, deadline=_due(10))
                               for i, k in enumerate(keys)))
        got = await asyncio.gather(*(client.call(k, "GET", k, deadline=_due(10)) for k in keys))
        assert got == [str(i) for i in range(len(keys))]
        assert len(client._links) == 3  # one per master
        assert client.retries == 0
    finally:
        await client.close()


async def test_a_wrong_slot_map_is_corrected_by_moved(redis_cluster):
    client = ClusterClient(redis_cluster.addresses[:1])
    try:
        await client.call("t:moved", "SET", "t:moved", "1", "PX", 30000, deadline=_due(5))
        right = client._slots[key_slot("t:moved")]
        wrong = next(a for a in redis_cluster.addresses if a != right)
        client._slots = [wrong] * len(client._slots)
        assert await client.call("t:moved", "GET", "t:moved", deadline=_due(5)) == "1"
        assert client._slots[key_slot("t:moved")] == right
    finally:
        await client.close()


async def test_scripts_run_by_sha_and_are_loaded_when_missing(redis_cluster):
    client = ClusterClient(redis_cluster.addresses)
    script = Script(f"return {{KEYS[1], ARGV[1], '{time.time()}'}}")  # new to the nodes
    try:
        first = await client.script(script, ["t:{s}"], ["x"], deadline=_due(5))
        again = await client.script(script, ["t:{s}"], ["x"], deadline=_due(5))
        assert first == again and first[:2] == ["t:{s}", "x"]
    finally:
        await client.close()


async def test_a_caller_that_stops_waiting_leaves_the_connection_in_step(redis_cluster):
    client = ClusterClient(redis_cluster.addresses)
    try:
        key = "t:{step}"
        await client.call(key, "SET", key, "v", "PX", 30000, deadline=_due(5))
        link_before = client._links[client._slots[key_slot(key)]]
        slow = asyncio.ensure_future(client.call(key, "DEBUG", "SLEEP", "0.3", deadline=_due(5)))
        await asyncio.sleep(0.05)
        slow.cancel()
        assert await client.call(key, "GET", key, deadline=_due(5)) == "v"
        assert client._links[client._slots[key_slot(key)]] is link_before
    finally:
        await client.close()


# ---------------------------------------------------------------------------- hostile nodes
async def _server(handler) -> tuple[asyncio.AbstractServer, str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, f"127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def test_a_node_that_never_answers_costs_the_deadline_not_more():
    async def silent(reader, writer):
        await reader.read()  # reads forever, answers nothing
        writer.close()

    server, address = await _server(silent)
    client = ClusterClient([address], command_timeout=0.2)
    started = time.monotonic()
    try:
        with pytest.raises(Unavailable, match="deadline"):
            await client.call("k", "GET", "k", deadline=_due(0.8))
        assert time.monotonic() - started < 2.0
        assert client.map_reloads == 0
    finally:
        await client.close()
        server.close()


async def test_a_node_speaking_garbage_is_dropped_and_the_call_times_out():
    opened, dropped = [], []

    async def garbage(reader, writer):
        opened.append(writer)
        await reader.read(1)
        writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        await writer.drain()
        await reader.read()  # until the client hangs up
        dropped.append(writer)
        writer.close()

    server, address = await _server(garbage)
    client = ClusterClient([address], command_timeout=5.0)
    try:
        with pytest.raises(Unavailable):
            await client.call("k", "GET", "k", deadline=_due(0.6))
        # dropped at the first bad byte, not after command_timeout
        await wait_for(lambda: opened and len(dropped) >= len(opened) - 1, timeout=5)
    finally:
        await client.close()
        server.close()
