"""`switchboard admin` next to a running worker: data changes go to the store and take effect in
the worker at once (control socket); sessions come from the worker; tokens work."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import orjson
import pytest

from switchboard.proto.v1 import client_pb2 as pb
from tests.ops.node import BASE_ENV, Node
from tests.support.raw import RawClient
from tests.support.rawflow import receive_and_ack, request, send


@pytest.fixture
async def node(tmp_path):
    node = await Node(tmp_path / "data").start()
    yield node
    node.stop()


def admin_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env["SWITCHBOARD_AUTH_SECRET"] = BASE_ENV["SWITCHBOARD_AUTH_SECRET"]
    return env


async def run_admin(node: Node, *args: str) -> subprocess.CompletedProcess:
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "switchboard", "admin", "--data-dir",
                         str(node.data_dir), "--json", *args],
        capture_output=True, text=True, timeout=30, env=admin_env())


async def admin(node: Node, *args: str) -> list[dict]:
    """The command's JSON lines; it must succeed."""
    done = await run_admin(node, *args)
    assert done.returncode == 0, (done.stdout, done.stderr)
    return [orjson.loads(line) for line in done.stdout.splitlines()]


async def admin_fails(node: Node, *args: str) -> str:
    """The command's error message; it must exit 1."""
    done = await run_admin(node, *args)
    assert done.returncode == 1, (done.stdout, done.stderr)
    return done.stderr


def admin_lines(node: Node) -> list[dict]:
    """The worker's log lines about admin changes."""
    return [line for line in map(orjson.loads, node.log().splitlines()) if "admin" in line]


async def authed(node: Node, user: str, device: str = "phone") -> RawClient:
    client = await RawClient.connect(node.url, node.token(user, device))
    await client.recv("welcome")
    await client.recv("sync_complete")
    return client


async def test_sessions_lists_connected_devices(node):
    await authed(node, "alice", "phone")
    await authed(node, "alice", "laptop")
    await authed(node, "bob")
    rows = await admin(node, "sessions", "--user", "alice")
    assert sorted((r["node_id"], r["user"], r["device"], r["state"]) for r in rows) == [
        (0, "alice", "laptop", "OPEN"), (0, "alice", "phone", "OPEN")]
    assert all(r["peer"].startswith("127.0.0.1:") for r in rows)
    assert len(await admin(node, "sessions")) == 3


async def test_group_membership_changes_apply_to_the_running_worker(node):
    alice = await authed(node, "alice")
    bob = await authed(node, "bob")
    carol = await authed(node, "carol")
    [group] = await admin(node, "chats", "create-group", "--creator", "alice", "--title", "ops",
                          "--member", "bob")
    chat = group["chat_id"]
    await send(alice, chat, b"one")  # the worker now has the member map cached
    await receive_and_ack(bob, 1)

    members = await admin(node, "chats", "add", "--chat", chat, "--user", "carol")
    assert [m["user"] for m in members] == ["alice", "bob", "carol"]
    # the change is seq 2 of the chat's log, offered at once to the members' devices
    [added] = await receive_and_ack(carol, 1)
    assert (added.seq, list(added.membership.user_ids), added.sender_user_id) == (2, ["carol"], "")
    assert (await send(carol, chat, b"two")).seq == 3  # no NOT_MEMBER from a stale cache

    await admin(node, "chats", "remove", "--chat", chat, "--user", "bob")
    # "two" was sent while bob was a member; the removal is the last entry bob gets
    assert [m.seq for m in await receive_and_ack(bob, 3)] == [2, 3, 4]
    await send(alice, chat, b"three")
    reply = await request(bob, send=pb.Send(client_msg_id="x", chat_id=chat, body=b"no"))
    assert reply.error.code == pb.NOT_MEMBER
    await asyncio.sleep(0.2)  # absence can only be watched
    frames = list(bob.stash)
    while not bob.listener.frames.empty():
        frames.append(bob.listener.frames.get_nowait())
    # a retransmit of what was his may still come (his ack can lose the race with
    # retransmit_after on a busy machine); nothing sent after his removal (seq 4) does
    delivered = [m.seq for f in frames if f.WhichOneof("body") == "deliver"
                 for m in f.deliver.messages]
    assert all(seq <= 4 for seq in delivered), delivered

    # the worker's log says what changed, at which seq of the chat, and who asked
    changes = [line for line in admin_lines(node) if line.get("chat_id") == chat]
    assert [(c["change"], c["users"], c["seq"]) for c in changes] == [("added", ["carol"], 2),
                                                                    ("removed", ["bob"], 4)]
    assert all(c["level"] == "INFO" and c["admin"].startswith("pid ") for c in changes)

    listed = await admin(node, "chats", "list", "--user", "carol")
    assert [(c["chat_id"], c["kind"], c["head_seq"], c["members"]) for c in listed] == [
        (chat, "group", 5, 2)]
    assert [m["user"] for m in await admin(node, "chats", "members", "--chat", chat)] == [
        "alice", "carol"]


async def test_revoked_device_is_cut_off_and_cannot_return(node):
    await authed(node, "alice", "phone")
    stolen = await authed(node, "alice", "stolen")
    assert [d["device"] for d in await admin(node, "devices", "list", "--user", "alice")] == [
        "phone", "stolen"]
    [row] = await admin(node, "devices", "revoke", "--user", "alice", "--device", "stolen")
    assert row["connections_closed"] == 1
    assert (await stolen.closed())[0] == 4011
    # the worker had admitted it before: its cache must not let it back in
    again = await RawClient.connect(node.url, node.token("alice", "stolen"))
    assert (await again.closed())[0] == 4011
    assert [d["device"] for d in await admin(node, "devices", "list", "--user", "alice")] == [
        "phone"]
    [revoked] = [line for line in admin_lines(node) if line.get("device") == "stolen"]
    assert revoked["level"] == "INFO" and "revoked, 1 connections here closed" in revoked["msg"]
    assert revoked["admin"] == f"pid {revoked['admin'].split()[1]} uid {os.getuid()}"
    assert "no such device" in await admin_fails(node, "devices", "revoke", "--user", "alice",
                                                 "--device", "nope")


async def test_minted_token_opens_a_session(node):
    done = subprocess.run([sys.executable, "-m", "switchboard", "admin", "token", "--user", "dave",
                           "--device", "d1", "--ttl", "60"],
                          capture_output=True, text=True, timeout=30, env=admin_env())
    assert done.returncode == 0, done.stderr
    dave = await RawClient.connect(node.url, done.stdout.strip())
    welcome = (await dave.recv("welcome")).welcome
    assert (welcome.user_id, welcome.device_id) == ("dave", "d1")


async def test_errors_exit_1_with_a_reason(tmp_path, node):
    missing = Node(tmp_path / "nowhere")
    assert "no database at" in await admin_fails(missing, "chats", "list", "--user", "alice")
    assert "no running worker" in await admin_fails(missing, "sessions")
    assert "no chat g:nope" in await admin_fails(node, "chats", "members", "--chat", "g:nope")
    alice = await authed(node, "alice")
    chat = (await request(alice, create_chat=pb.CreateChat(
        kind=pb.DIRECT, member_user_ids=["bob"]))).chat.chat_id
    assert "direct chat" in await admin_fails(node, "chats", "add", "--chat", chat,
                                              "--user", "carol")
    assert "bad id" in await admin_fails(node, "devices", "list", "--user", "no spaces")
    assert node.proc.poll() is None  # the worker is unaffected by all this


def test_drain_of_a_unit_reports_systemctls_own_failure(tmp_path):
    """`drain --unit` when systemctl itself fails (no such unit, no permission, no systemd):
    its message and exit code, at once, not "did not stop within 60s"."""
    fake = tmp_path / "bin" / "systemctl"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'Failed to stop switchboard@7.service: Unit not loaded.' >&2"
                    "\nexit 5\n")
    fake.chmod(0o755)
    env = dict(admin_env(), PATH=f"{fake.parent}:{os.environ.get('PATH', '')}")
    done = subprocess.run([sys.executable, "-m", "switchboard", "admin", "drain", "--unit",
                           "switchboard@7"], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 1
    assert done.stderr.strip() == ("switchboard admin: systemctl stop switchboard@7 failed "
                                   "(exit 5): Failed to stop switchboard@7.service: Unit not "
                                   "loaded.")
