"""The ops port: Prometheus metrics move with traffic; /healthz and /readyz (503 while draining)."""
from __future__ import annotations

import asyncio
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
from prometheus_client.parser import text_string_to_metric_families

import switchboard
from switchboard.core.store_sqlite import SQLiteStore
from switchboard.app import build_gateway
from switchboard.proto.v1 import client_pb2 as pb
from tests.ops.node import http_get
from tests.support.faulty_store import FaultyStore
from tests.support.rawflow import authed, direct, receive_and_ack, send
from tests.support.raw import RawClient
from tests.support.server import fast_config
from tests.support.waiting import wait_for


async def scrape(port: int) -> dict[tuple[str, tuple], float]:
    status, body = await http_get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name: str, **labels) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


async def test_counters_and_histograms_move_with_traffic(server):
    port = server.gateway.status.port
    before = await scrape(port)
    assert value(before, "switchboard_sends_total") == 0
    assert value(before, "switchboard_connections", state="open") == 0

    alice = await authed(server, "alice")
    chat = await direct(alice, "bob")
    for i in range(5):
        await send(alice, chat, b"m%d" % i)
    bob = await authed(server, "bob")  # offline until now: its backlog comes from the store
    await receive_and_ack(bob, 5)

    async def moved():
        now = await scrape(port)
        return now if value(now, "switchboard_acks_total") >= 1 else None
    after = await wait_for(moved)
    assert value(after, "switchboard_sends_total") == 5
    assert value(after, "switchboard_deliveries_total") >= 5
    assert value(after, "switchboard_sync_pages_total") >= 1
    assert value(after, "switchboard_connections", state="open") == 2
    assert value(after, "switchboard_connections_accepted_total") == 2
    for direction in ("in", "out"):
        assert value(after, "switchboard_frames_total", direction=direction) >= 6
        assert value(after, "switchboard_frame_bytes_total", direction=direction) > 50
    assert value(after, "switchboard_writer_rows_total") == 5
    assert value(after, "switchboard_writer_batches_total") >= 1
    assert value(after, "switchboard_writer_batch_rows_count") >= 1
    assert value(after, "switchboard_writer_flush_seconds_count") >= 1
    assert value(after, "switchboard_send_durable_seconds_count") == 5
    assert value(after, "switchboard_send_durable_seconds_bucket", le="+Inf") == 5
    assert 0 < value(after, "switchboard_send_durable_seconds_sum") < 5
    assert value(after, "switchboard_store_errors_total") == 0
    assert value(after, "process_open_fds") > 0
    lag = await wait_for(lambda: _lag_count(port))
    assert lag >= 1

    bob.close()
    await wait_for(lambda: server.gateway.hub.connections == 1)
    gone = await scrape(port)
    assert value(gone, "switchboard_connections", state="open") == 1


async def _lag_count(port: int) -> float:
    return value(await scrape(port), "switchboard_event_loop_lag_seconds_count")


async def test_connection_states(server):
    port = server.gateway.status.port
    waiting = await RawClient.connect(server.url)  # no token: waits for its Auth frame
    await wait_for(lambda: server.gateway.pending_auth == 1)
    samples = await scrape(port)
    assert value(samples, "switchboard_connections", state="await_auth") == 1
    assert value(samples, "switchboard_connections", state="open") == 0
    waiting.close()


async def test_health_and_routes(server):
    base = f"http://127.0.0.1:{server.gateway.status.port}"
    status, body = await http_get(base + "/healthz")
    assert status == 200 and orjson.loads(body)["loop_lag_seconds"] < 1
    status, body = await http_get(base + "/readyz")
    assert status == 200
    assert orjson.loads(body) == {"store_open": True, "listening": True, "not_draining": True}
    assert (await http_get(base + "/nope"))[0] == 404
    assert (await http_get(base + "/metrics", method="POST"))[0] == 405


async def test_readyz_fails_while_draining_and_healthz_holds(tmp_path):
    store = FaultyStore(SQLiteStore(tmp_path / "switchboard.db"))
    gateway = build_gateway(fast_config(tmp_path), store=store)
    await gateway.start()
    base = f"http://127.0.0.1:{gateway.status.port}"
    client = await RawClient.connect(f"ws://127.0.0.1:{gateway.port}/v1/ws",
                                     gateway.tokens.mint("alice", "phone"))
    await client.recv("welcome")
    chat = (await client.reply(client.send(create_chat=pb.CreateChat(
        kind=pb.DIRECT, member_user_ids=["bob"])))).chat.chat_id

    store.hold()  # the next commit waits: the drain cannot finish flushing the writer
    rid = client.send(send=pb.Send(client_msg_id="m1", chat_id=chat, body=b"x"))
    await wait_for(lambda: store.held == 1)
    stopping = asyncio.ensure_future(gateway.stop())
    await wait_for(lambda: gateway.draining)
    status, body = await http_get(base + "/readyz")
    assert status == 503 and orjson.loads(body)["not_draining"] is False
    assert (await http_get(base + "/healthz"))[0] == 200
    assert value(await scrape(gateway.status.port), "switchboard_draining") == 1

    store.release()
    await asyncio.wait_for(stopping, 10)
    assert (await client.reply(rid)).WhichOneof("body") == "send_ack"  # acked before the close
    assert (await client.recv("goaway")).goaway.reason == "server draining"


async def test_build_info_names_version_commit_and_python(server):
    samples = await scrape(server.gateway.status.port)
    [(labels, one)] = [(dict(key[1]), v) for key, v in samples.items()
                       if key[0] == "switchboard_build_info"]
    assert one == 1
    assert labels["python"] == platform.python_version()
    assert labels["version"] not in ("", "unknown")  # the package metadata
    checkout = Path(__file__).resolve().parents[2]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=checkout, capture_output=True,
                          text=True)
    if head.returncode == 0:  # run from a checkout: its commit
        assert labels["commit"] == head.stdout.strip()


def test_build_info_outside_a_checkout_is_unknown_not_a_crash(tmp_path):
    """A copy of the package with no git around it and no recorded commit."""
    copy = tmp_path / "switchboard"
    shutil.copytree(Path(switchboard.__file__).parent, copy,
                    ignore=shutil.ignore_patterns("_commit.txt", "__pycache__"))
    done = subprocess.run([sys.executable, "-c", "from switchboard.buildinfo import build_info;"
                           "print(build_info()['commit'])"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, env={"PATH": "/usr/bin:/bin",
                                                      "PYTHONPATH": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "unknown"
