"""`switchboard admin`: the operator's commands for a node.

Commands that change data open the store that `[store]` names directly, as one more client of
it (SQLite: one more process on the file, which WAL and BEGIN IMMEDIATE make safe next to
running workers), so they work whether or not a worker is up. Then they tell every worker found in the data dir, over its control socket
(gateway/control.py), so caches follow at once: a revoked device is cut off (close 4011) and
cannot come back through a worker's admission cache; new members may send and removed members
stop receiving immediately. `sessions` asks those same sockets who is connected.

    switchboard admin chats list --user U          chats members --chat C
    switchboard admin chats create-group --creator U --title T [--member U ...]
    switchboard admin chats add --chat C --user U [--user ...]
    switchboard admin chats remove --chat C --user U [--user ...]
    switchboard admin devices list --user U        devices revoke --user U --device D
    switchboard admin sessions [--user U] [--limit N]
    switchboard admin store migrate                create the store's schema where missing
    switchboard admin token --user U --device D [--ttl SECONDS]
    switchboard admin drain (--pid PID | --unit switchboard@0) [--timeout SECONDS]

Output is a tab-separated table with a header, or JSON lines with --json. Exit 0 on success,
1 when the thing asked for does not exist or a drain timed out, 2 for configuration errors.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import select
import signal
import subprocess
import sys
import time
from contextlib import asynccontextmanager
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson

from switchboard.config import Config, ConfigError
from switchboard.core.auth import TokenAuthority
from switchboard.core.chats import ChatService
from switchboard.core.errors import DomainError
from switchboard.core.ids import ServerIds, valid_id
from switchboard.core.model import MembershipEvent
from switchboard.core.store import Store, StoreError
from switchboard.core.stores import make_store

CONTROL_TIMEOUT = 5.0
DEFAULT_DRAIN_TIMEOUT = 60.0


class Failed(Exception):
    """The command could not do what was asked (exit 1); str() says why."""


# ---------------------------------------------------------------------- arguments
def positive_number(text: str) -> float:
    """argparse type: a number of seconds above zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is not a number of seconds above 0")
    return value


def positive_integer(text: str) -> int:
    """argparse type: a whole number of 1 or more."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 1 or more")
    return int(text)


def add_token_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--user", required=True, help="the user id the token names (sub)")
    parser.add_argument("--device", required=True, help="the device id the token names (dev)")
    parser.add_argument("--ttl", type=positive_number, default=30 * 86400,
                        help="seconds until it expires, above 0 (default 30 days)")


def add_arguments(parser: argparse.ArgumentParser,
                  shared: Callable[[argparse.ArgumentParser], None]) -> None:
    """The admin subcommands. `shared(leaf)` adds the options that may also come after the
    subcommand (--config, --data-dir, --json) to each of them."""
    parser.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    groups = parser.add_subparsers(dest="group", required=True)
    leaves = _add_commands(groups)
    for leaf in leaves:
        shared(leaf)
        leaf.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                          help="JSON lines instead of a table")


def _add_commands(groups) -> list[argparse.ArgumentParser]:

    leaves = []
    chats = groups.add_parser("chats", help="a user's chats, groups and their members")
    chat_ops = chats.add_subparsers(dest="action", required=True)
    listing = chat_ops.add_parser("list", help="the chats of a user")
    listing.add_argument("--user", required=True, help="the user whose chats to list")
    members = chat_ops.add_parser("members", help="members of a chat")
    members.add_argument("--chat", required=True, help="the chat id")
    create = chat_ops.add_parser("create-group", help="create a group (creator is its admin)")
    create.add_argument("--creator", required=True, help="the user who creates and administers it")
    create.add_argument("--title", default="", help="the group's title (default none)")
    create.add_argument("--member", action="append", default=[], help="repeat for each member")
    leaves += [listing, members, create]
    for name, what in (("add", "add members to a group"), ("remove", "remove members")):
        change = chat_ops.add_parser(name, help=what)
        change.add_argument("--chat", required=True, help="the group's chat id")
        change.add_argument("--user", action="append", required=True, help="repeat for each user")
        leaves.append(change)

    devices = groups.add_parser("devices", help="a user's devices")
    device_ops = devices.add_subparsers(dest="action", required=True)
    device_list = device_ops.add_parser("list", help="devices not revoked")
    device_list.add_argument("--user", required=True, help="the user whose devices to list")
    revoke = device_ops.add_parser("revoke", help="revoke a device forever and cut it off")
    revoke.add_argument("--user", required=True, help="the device's user")
    revoke.add_argument("--device", required=True, help="the device id to revoke")
    leaves += [device_list, revoke]

    sessions = groups.add_parser("sessions", help="connected devices, from every running worker")
    sessions.add_argument("--user", help="only this user's devices")
    sessions.add_argument("--limit", type=positive_integer, default=1000,
                          help="per worker (default 1000)")

    store = groups.add_parser("store", help="the store [store] names")
    migrate = store.add_subparsers(dest="action", required=True).add_parser(
        "migrate", help="create the keyspace/file and every table where missing (idempotent; "
                        "drops nothing)")

    token = groups.add_parser("token", help="mint a device token (JWT)")
    add_token_arguments(token)

    drain = groups.add_parser("drain", help="SIGTERM a worker and wait until it has drained")
    target = drain.add_mutually_exclusive_group(required=True)
    target.add_argument("--pid", type=positive_integer,
                        help="the worker's process id (outside systemd)")
    target.add_argument("--unit", help="a systemd unit, e.g. switchboard@0 (systemctl stop)")
    drain.add_argument("--timeout", type=positive_number, default=DEFAULT_DRAIN_TIMEOUT,
                       help=f"seconds to wait for the exit (default {DEFAULT_DRAIN_TIMEOUT:g})")
    return leaves + [sessions, migrate, token, drain]


# ---------------------------------------------------------------------- dispatch
def run(config: Config, args: argparse.Namespace) -> int:
    try:
        if args.group == "token":
            return mint(config, args)
        if args.group == "drain":
            return drain(args.pid, args.unit, args.timeout)
        handler = _HANDLERS[(args.group, getattr(args, "action", None))]
        rows = asyncio.run(handler(config, args))
    except (Failed, StoreError) as exc:
        print(f"switchboard admin: {exc}", file=sys.stderr)
        return 1
    _emit(rows, args.json)
    return 0


def mint(config: Config, args: argparse.Namespace) -> int:
    """Print a token signed with the server's key; never creates a key (ConfigError when
    there is none where the config points)."""
    try:
        print(TokenAuthority(config.secret_bytes(create=False)).mint(args.user, args.device,
                                                                     args.ttl))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return 0


def _emit(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        for row in rows:
            print(orjson.dumps(row).decode())
    elif rows:
        print("\t".join(rows[0]))
        for row in rows:
            print("\t".join("" if v is None else str(v) for v in row.values()))


@asynccontextmanager
async def _store(config: Config) -> AsyncIterator[Store]:
    """The store the server's [store] section names, as one more client of it."""
    if config.store.kind == "memory":
        raise Failed("store.kind is memory: the server keeps its data to itself")
    if config.store.kind == "sqlite" and not config.database.exists():
        raise Failed(f"no database at {config.database} (check --data-dir / server.data_dir)")
    store = make_store(config)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@asynccontextmanager
async def _chats(config: Config) -> AsyncIterator[ChatService]:
    """The chat rules the gateway applies, acting as the operator; their refusals become Failed."""
    async with _store(config) as store:
        try:
            yield ChatService(store, max_group_members=config.limits.max_group_members)
        except DomainError as exc:
            raise Failed(exc.detail) from None


def _check_ids(*ids: str) -> None:
    for value in ids:
        if not valid_id(value):
            raise Failed(f"bad id {value!r}: ids match [A-Za-z0-9_.:-]{{1,128}}")


# ---------------------------------------------------------------------- chats
async def _chats_list(config: Config, args: argparse.Namespace) -> list[dict[str, Any]]:
    _check_ids(args.user)
    async with _chats(config) as chats:
        return [{"chat_id": c.chat_id, "kind": c.kind.name.lower(), "title": c.title,
                 "head_seq": c.head_seq, "read_seq": c.read_seq, "members": c.member_count}
                for c in await chats.list_chats(args.user)]


async def _chats_members(config: Config, args: argparse.Namespace) -> list[dict[str, Any]]:
    async with _store(config) as store:
        if await store.get_chat(args.chat) is None:
            raise Failed(f"no chat {args.chat}")
        return _member_rows(await store.members(args.chat))


async def _chats_create_group(config: Config, args: argparse.Namespace) -> list[dict[str, Any]]:
    _check_ids(args.creator, *args.member)
    async with _chats(config) as chats:
        chat = await chats.create_group(args.creator, args.member, args.title)
        return [{"chat_id": chat.chat_id, "title": chat.title,
                 "members": len(await chats.members(chat.chat_id))}]


async def _chats_add(config: Config, args: argparse.Namespace) -> list[dict[str, Any]]:
    _check_ids(*args.user)
    async with _chats(config) as chats:
        return await _change(config, chats, args.chat,
                             await chats.plan_add(None, args.chat, args.user))


async def _chats_remove(config: Config, args: argparse.Namespace) -> list[dict[str, Any]]:
    _check_ids(*args.user)
    async with _chats(config) as chats:
        return await _change(config, chats, args.chat,
                             await chats.plan_remove(None, args.chat, args.user))


async def _change(config: Config, chats: ChatService, chat_id: str,
                  events: list[MembershipEvent]) -> list[dict[str, Any]]:
    """Commit the membership events (entries of the chat's log), tell the workers after each
    (they offer it to the members' devices connected there) and return the members after."""
    ids = ServerIds(config.server.node_id)
    for event in events:
        seq = (await chats.commit_directly(chat_id, event, ids.next())).seq
        await _tell_workers(config, {"op": "chat_changed", "chat_id": chat_id, "seq": seq,
                                     "change": event.action.name.lower(),
                                     "users": list(event.users)})
    if not events:
        await _tell_workers(config, {"op": "chat_changed", "chat_id": chat_id})
    return _member_rows(await chats.members(chat_id))


def _member_rows(members) -> list[dict[str, Any]]:
    return [{"user": user, "role": m.role.name.lower(), "joined_seq": m.joined_seq}
            for user, m in sorted(members.items())]


# ---------------------------------------------------------------------- devices, sessions
async def _devices_list(config: Config, args: argparse.Namespace) -> list[dict[str, Any]]:
    _check_ids(args.user)
    async with _store(config) as store:
        return [{"device": d.device_id, "first_seen_ms": d.first_seen_ms,
                 "last_seen_ms": d.last_seen_ms} for d in await store.list_devices(args.user)]


async def _devices_revoke(config: Config, args: argparse.Namespace) -> list[dict[str, Any]]:
    _check_ids(args.user, args.device)
    async with _store(config) as store:
        revoked = await store.revoke_device(args.user, args.device)
    replies = await _tell_workers(config, {"op": "device_revoked", "user": args.user,
                                           "device": args.device})
    if not revoked:
        raise Failed(f"{args.user}/{args.device}: no such device, or revoked already")
    return [{"user": args.user, "device": args.device,
             "connections_closed": sum(r.get("closed", 0) for r in replies)}]


async def _sessions(config: Config, args: argparse.Namespace) -> list[dict[str, Any]]:
    replies = await _tell_workers(config, {"op": "sessions", "user": args.user,
                                           "limit": args.limit})
    if not replies:
        raise Failed(f"no running worker answers in {config.database.parent}")
    return [{"node_id": reply["node_id"], **session}
            for reply in replies for session in reply.get("sessions", ())]


async def _tell_workers(config: Config, request: dict[str, Any]) -> list[dict[str, Any]]:
    """Send `request` to every worker whose control socket is in the data dir; sockets left
    by a dead worker (nothing answers) are skipped."""
    replies = []
    for path in sorted(config.database.parent.glob("admin-*.sock")):
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(str(path)), CONTROL_TIMEOUT)
        except (OSError, asyncio.TimeoutError):
            continue
        try:
            writer.write(orjson.dumps(request) + b"\n")
            reply = orjson.loads(await asyncio.wait_for(reader.readline(), CONTROL_TIMEOUT))
        except (OSError, asyncio.TimeoutError, orjson.JSONDecodeError) as exc:
            print(f"switchboard admin: {path.name} did not answer: {exc}", file=sys.stderr)
            continue
        finally:
            writer.close()
        if "error" in reply:
            raise Failed(f"{path.name}: {reply['error']}")
        replies.append(reply)
    return replies


# ---------------------------------------------------------------------- drain
def drain(pid: int | None, unit: str | None, timeout: float) -> int:
    """SIGTERM starts the drain (stop accepting, flush, Goaway, exit); wait for the exit. A unit
    is stopped through systemd, which sends SIGTERM and waits up to its TimeoutStopSec."""
    started = time.monotonic()
    if unit is not None:
        try:
            stopped = subprocess.run(["systemctl", "stop", unit], timeout=timeout,
                                     capture_output=True, text=True)
        except subprocess.TimeoutExpired:
            raise Failed(f"{unit} did not stop within {timeout:g}s") from None
        except OSError as exc:
            raise Failed(f"cannot run systemctl: {exc}") from None
        if stopped.returncode != 0:  # systemctl's own failure, not a slow drain
            said = (stopped.stderr or stopped.stdout).strip() or "no message"
            raise Failed(f"systemctl stop {unit} failed (exit {stopped.returncode}): {said}")
        done = True
        what = unit
    else:
        done = _terminate_and_wait(pid, timeout)
        what = f"pid {pid}"
    if not done:
        raise Failed(f"{what} did not stop within {timeout:g}s")
    print(f"{what} drained in {time.monotonic() - started:.1f}s")
    return 0


def _terminate_and_wait(pid: int, timeout: float) -> bool:
    """Through a pidfd: no race with pid reuse, and it reports the exit of a process that is
    not our child (and one left a zombie by its parent)."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        raise Failed(f"no process {pid}") from None
    try:
        signal.pidfd_send_signal(pidfd, signal.SIGTERM)
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        return bool(poller.poll(timeout * 1000))
    except ProcessLookupError:
        return True
    except PermissionError:
        raise Failed(f"not allowed to signal pid {pid} (run as its user or root)") from None
    finally:
        os.close(pidfd)


# ---------------------------------------------------------------------- store
async def _store_migrate(config: Config, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Opening a store with schema creation allowed is the migration: every statement is
    CREATE ... IF NOT EXISTS, so running it again, or next to running workers, is harmless."""
    if config.store.kind == "memory":
        raise Failed("store.kind is memory: there is no schema to create")
    store = make_store(config)
    if config.store.kind == "scylla":
        store.create_schema = True
        where = f"keyspace {config.store.keyspace} on {config.store.hosts}"
    else:
        where = str(config.database)
    await store.open()
    await store.close()
    return [{"store": config.store.kind, "schema": "up to date", "where": where}]


_HANDLERS = {
    ("chats", "list"): _chats_list,
    ("chats", "members"): _chats_members,
    ("chats", "create-group"): _chats_create_group,
    ("chats", "add"): _chats_add,
    ("chats", "remove"): _chats_remove,
    ("devices", "list"): _devices_list,
    ("devices", "revoke"): _devices_revoke,
    ("sessions", None): _sessions,
    ("store", "migrate"): _store_migrate,
}
