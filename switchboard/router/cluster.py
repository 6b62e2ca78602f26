"""Cluster routing: chat ownership on a consistent-hash ring, sends forwarded to the owner,
fan-out grouped per destination node, and everything else a node must tell the others.

Members. With `cluster.redis` the members are the nodes holding a live lease in the registry
(polled every lease_ttl/3, the same period as the lease refresh); with `cluster.peers` they are
the static list. The ring is built from the members this node has an up mesh link to, plus
itself: a node whose link dropped (crash, kill -9) leaves every ring at once instead of after its
lease lapses, and its chats move to their next owner. Nodes may briefly disagree about an owner
(one saw a link drop before another); two owners can then commit to one chat at the same time.
That costs ordering of pushes, never correctness: the seq is assigned inside the store's commit
transaction, so no (chat, seq) is assigned twice and a retried client_msg_id is found as a
duplicate wherever it lands (docs/cluster.md, "Ownership and fencing").

Sends. A node that does not own the chat forwards the Send to the owner (ForwardSend) and
answers the device when the owner's SendResult arrives. A link that drops or an answer that does
not come within forward_timeout fails the send with UNAVAILABLE: outcome unknown, and the
client's retry with the same client_msg_id is exact.

Fan-out. After a commit the owner offers the messages to its own devices at once, looks up the
members' sessions in the registry (one batched read per commit and chat) and sends one Deliver
per destination node, in commit order. Without a registry (static peers) every peer gets the
Deliver and offers it to whichever members it holds. Why the lookup cannot miss a device: a
connecting device's session is written *before* its first sync reads the store, and the owner's
lookup happens *after* the commit; so either the sync sees the message or the lookup sees the
session. A registry that does not answer makes the fan-out go to every peer (correct, costlier).

Presence. Each node tells every peer which users are online through it (a snapshot when a link
comes up, then changes as they happen, batched per event-loop turn); a peer whose link drops
takes its users' presence with it. This costs O(nodes) per presence flip: right for tens of
nodes, and the piece to replace with per-subject subscriptions at the seeds' full scale.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import Collection, Mapping, Sequence
from functools import partial

from switchboard.core.errors import Code, DomainError
from switchboard.core.futures import settle
from switchboard.core.ids import now_ms
from switchboard.core.messaging import MessageService
from switchboard.core.model import CommitResult, MembershipEvent, StoredMessage
from switchboard.proto.v1 import mesh_pb2 as mesh

from .base import Invalidation, LocalNode
from .codec import (ERROR_CODES, domain_error, event_from_pb, event_to_pb, message_from_pb,
                    message_to_pb)
from .mesh import Link, Mesh
from .registry import Registry, RegistryUnavailable
from .ring import Ring

log = logging.getLogger(__name__)

RETRY_AFTER_MS = 200  # what a send refused for lack of an owner tells the device
FANOUT_LOOKUP_TIMEOUT = 2.0  # s: a slower lookup would hold up every later fan-out: broadcast
REPUT_SLICE = 256  # session writes in flight at once after a re-registration
FANOUT_GRACE = 2.0     # s a leaving node waits for its last fan-out lookups
CLOSE_REPLACED = 4010  # docs/protocol.md: the device connected again elsewhere
USAGE_TTL = 120.0  # s a user's shared rate-limit totals outlive their last change


class MeshRouter:
    def __init__(self, messages: MessageService, node: LocalNode, *, node_id: str,
                 mesh_host: str, mesh_port: int, registry: Registry | None,
                 static_peers: Mapping[str, str], lease_ttl: float, heartbeat_interval: float,
                 link_timeout: float, forward_timeout: float) -> None:
        self.node_id = node_id
        self._messages = messages
        self._node = node
        self._registry = registry
        self._static_peers = {n: a for n, a in static_peers.items() if n != node_id}
        self._mesh_host = mesh_host
        self._mesh_port = mesh_port
        self._lease_ttl = lease_ttl
        self._link_timeout = link_timeout
        self._forward_timeout = forward_timeout
        self.epoch = now_ms()
        self.mesh = Mesh(node_id, self.epoch, self, heartbeat_interval=heartbeat_interval,
                         link_timeout=link_timeout)
        self.address = ""
        self._members: dict[str, str] = {}    # node id -> mesh address, self excluded
        self.ring = Ring([node_id], 0)
        self._ring_epoch = itertools.count(1)
        self._request_ids = itertools.count(1)
        self._pending: dict[int, tuple[str, asyncio.Future, asyncio.TimerHandle]] = {}
        # chat -> (owner, future of the latest send dispatched): what an owner change waits for
        self._flights: dict[str, tuple[str, asyncio.Future]] = {}
        self._held: dict[str, list[tuple[asyncio.Future, tuple]]] = {}  # sends waiting for it
        self._fanouts: deque[tuple[asyncio.Future, str, Mapping, list[StoredMessage]]] = deque()
        self._presence_out: dict[str, tuple[bool, int]] = {}
        self._presence_flush: asyncio.Handle | None = None
        self._tasks: set[asyncio.Task] = set()
        self._linked_before: set[str] = set()
        self._maintenance: asyncio.Task | None = None
        self._stopped = False
        self.registered = registry is None
        self.counters = {"forwarded_sends": 0, "forward_failures": 0, "owned_sends": 0,
                         "deliver_frames": 0, "fanout_lookup_failures": 0, "reregistrations": 0,
                         "ring_changes": 0, "held_sends": 0}
        messages.set_fanout(self._fanout)

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        port = await self.mesh.listen(self._mesh_host, self._mesh_port)
        self.address = f"{self._mesh_host}:{port}"
        if self._registry is not None:
            await self._register()
            await self._poll_members()
            self._maintenance = asyncio.ensure_future(self._maintain())
        else:
            self._set_members(self._static_peers)
        await self._links_settled()
        log.info("mesh node %s (epoch %d) on %s, ring %s", self.node_id, self.epoch, self.address,
                 ", ".join(self.ring.nodes))

    async def _links_settled(self) -> None:
        """Give the links to the known members up to link_timeout to come up before this node
        takes devices, so that its first ring already has them: chats then do not change owner
        under the first sends. A member that does not answer joins the ring when it does."""
        deadline = asyncio.get_running_loop().time() + self._link_timeout
        while (any(self.mesh.link(n) is None for n in self._members)
               and asyncio.get_running_loop().time() < deadline):
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        """Leave after the writer's last commits went out (the gateway closes the writer first):
        their Deliver frames leave, then the links close, peers re-ring at once and fail (so
        devices retry) whatever they forwarded here since."""
        if self._stopped:
            return
        self._stopped = True
        if self._maintenance is not None:
            self._maintenance.cancel()
            await asyncio.gather(self._maintenance, return_exceptions=True)
        if self._fanouts:
            await asyncio.wait([lookup for lookup, *_ in self._fanouts], timeout=FANOUT_GRACE)
        await asyncio.sleep(0)  # the links write what this turn queued
        await self.mesh.close()
        self._fail_pending(None, "node leaving the cluster")
        for lookup, *_ in self._fanouts:
            lookup.cancel()
        self._fanouts.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._presence_flush is not None:
            self._presence_flush.cancel()

    async def close(self) -> None:
        """After the last session was dropped (the gateway's drain)."""
        if self._registry is not None:
            await self._registry.close()

    async def _register(self) -> None:
        self.epoch = await self._registry.register_node(self.node_id, self.address, self._lease_ttl)
        self.mesh.epoch = self.epoch
        self.registered = True

    async def _maintain(self) -> None:
        """Refresh the lease and re-read the members every lease_ttl/3; a refresh refused means
        the lease lapsed or Redis may have lost writes: register anew and put every session
        again (docs/cluster.md, "Leases and epochs")."""
        while True:
            await asyncio.sleep(self._lease_ttl / 3)
            try:
                if not await self._registry.refresh_node(self.node_id, self.epoch, self._lease_ttl):
                    self.counters["reregistrations"] += 1
                    log.warning("lease of %s lost: registering again and re-putting sessions",
                                self.node_id)
                    self.registered = False
                    await self._register()
                    await self._put_sessions_again()
                    # owners' lookups missed these sessions meanwhile: fill from the store
                    await self._node.catch_up()
                await self._poll_members()
            except RegistryUnavailable as exc:
                log.warning("registry unavailable: %s", exc)
            except Exception:
                log.exception("cluster maintenance failed")

    async def _put_sessions_again(self) -> None:
        """Every session this node holds, under the new epoch, REPUT_SLICE writes at a time."""
        sessions = self._node.sessions()
        for start in range(0, len(sessions), REPUT_SLICE):
            await asyncio.gather(*(
                self._registry.put_session(user, device, self.node_id, self.epoch)
                for user, device in sessions[start:start + REPUT_SLICE]))

    async def _poll_members(self) -> None:
        """Members with a live lease, plus any node whose link is up: a node re-registering
        after a Redis failover has no lease for a moment, and is alive all the same."""
        live = await self._registry.nodes()
        members = {n: info.address for n, info in live.items() if n != self.node_id}
        for node_id, address in self._members.items():
            if node_id not in members and self.mesh.link(node_id) is not None:
                members[node_id] = address
        self._set_members(members)

    def _set_members(self, members: dict[str, str]) -> None:
        if members != self._members:
            self._members = members
            self.mesh.set_peers(members)
            self._rebuild_ring()

    def _rebuild_ring(self) -> None:
        live = [self.node_id] + [n for n in self._members if self.mesh.link(n) is not None]
        if set(live) != set(self.ring.nodes):
            self.ring = Ring(live, next(self._ring_epoch))
            self.counters["ring_changes"] += 1
            self._node.cluster_changed()
            log.info("ring %d: %s", self.ring.epoch, ", ".join(self.ring.nodes))

    def owner(self, chat_id: str) -> str:
        return self.ring.owner(chat_id)

    # ------------------------------------------------------------------ mesh events
    def link_up(self, link: Link) -> None:
        self._rebuild_ring()
        if link.node_id in self._linked_before:
            # Deliver frames sent while the link was down are lost: fill from the store
            self._spawn(self._node.catch_up())
        self._linked_before.add(link.node_id)
        states = self._node.presence_snapshot()
        link.send(mesh.MeshFrame(presence=mesh.PresenceStates(snapshot=True, users=[
            mesh.UserPresence(user_id=u, online=on, last_seen_ms=seen) for u, on, seen in states])))

    def link_down(self, link: Link) -> None:
        self._rebuild_ring()
        self._fail_pending(link.node_id, f"owner {link.node_id} unreachable")
        self._node.node_gone(link.node_id)

    def frame(self, link: Link, frame: mesh.MeshFrame) -> None:
        kind = frame.WhichOneof("body")
        handler = self._handlers.get(kind)
        if handler is None:
            log.warning("unexpected mesh frame %s from %s", kind, link.node_id)
            return
        try:
            handler(self, link, getattr(frame, kind))
        except Exception:
            log.exception("mesh frame %s from %s failed", kind, link.node_id)

    # ------------------------------------------------------------------ sends
    def submit_send(self, user: str, device: str, chat_id: str, client_msg_id: str, body: bytes,
                    media_ids: list[str]) -> asyncio.Future[CommitResult]:
        """Sends of one chat from this node reach the store in the order they came, also when
        the chat changes owner: sends still with the previous owner are let finish first (the
        new ones wait, then go to the new owner in order), as two writers would otherwise race
        and a device's pipelined sends could be stored out of their order."""
        return self._route(chat_id, (user, device, chat_id, client_msg_id, body, media_ids))

    def submit_event(self, chat_id: str, event: MembershipEvent) -> asyncio.Future[CommitResult]:
        """A membership change is committed by the chat's owner, in order with its sends (whose
        membership check it changes)."""
        return self._route(chat_id, event)

    def _route(self, chat_id: str, item: tuple | MembershipEvent) -> asyncio.Future[CommitResult]:
        held = self._held.get(chat_id)
        if held is not None:
            self.counters["held_sends"] += 1
            future = asyncio.get_running_loop().create_future()
            held.append((future, item))
            return future
        owner = self.ring.owner(chat_id)
        flight = self._flights.get(chat_id)
        if flight is not None and flight[0] != owner and not flight[1].done():
            self.counters["held_sends"] += 1
            future = asyncio.get_running_loop().create_future()
            self._held[chat_id] = [(future, item)]
            flight[1].add_done_callback(lambda _: self._release(chat_id))
            return future
        return self._dispatch(owner, chat_id, item)

    def _release(self, chat_id: str) -> None:
        for future, item in self._held.pop(chat_id, ()):
            if future.done():
                continue
            try:
                inner = self._dispatch(self.ring.owner(chat_id), chat_id, item)
            except DomainError as exc:  # refused at once, as a direct send would be
                future.set_exception(exc)
                continue
            except Exception as exc:  # the writer closed meanwhile (drain)
                future.set_exception(DomainError(Code.UNAVAILABLE, str(exc), RETRY_AFTER_MS))
                continue
            inner.add_done_callback(partial(settle, future))

    def _dispatch(self, owner: str, chat_id: str,
                  item: tuple | MembershipEvent) -> asyncio.Future[CommitResult]:
        future = self._submit_to(owner, chat_id, item)
        self._flights[chat_id] = (owner, future)
        future.add_done_callback(partial(self._landed, chat_id))
        return future

    def _landed(self, chat_id: str, future: asyncio.Future) -> None:
        flight = self._flights.get(chat_id)
        if flight is not None and flight[1] is future:
            del self._flights[chat_id]

    def _submit_to(self, owner: str, chat_id: str,
                   item: tuple | MembershipEvent) -> asyncio.Future[CommitResult]:
        link = None if owner == self.node_id else self.mesh.link(owner)
        if link is None:
            self.counters["owned_sends"] += 1
            if isinstance(item, MembershipEvent):
                return self._messages.submit_event(chat_id, item)
            return self._messages.submit_send(*item)
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        request_id = next(self._request_ids)
        timer = loop.call_later(self._forward_timeout, self._forward_timed_out, request_id)
        self._pending[request_id] = (owner, future, timer)
        forward = mesh.ForwardSend(request_id=request_id, chat_id=chat_id)
        if isinstance(item, MembershipEvent):
            forward.membership.CopyFrom(event_to_pb(item))
        else:
            user, device, _, client_msg_id, body, media_ids = item
            forward.user_id, forward.device_id = user, device
            forward.client_msg_id, forward.body = client_msg_id, body
            forward.media_ids.extend(media_ids)
        link.send(mesh.MeshFrame(forward_send=forward))
        self.counters["forwarded_sends"] += 1
        return future

    def _on_forward_send(self, link: Link, req: mesh.ForwardSend) -> None:
        """A send for a chat this node owns (or owned until a moment ago: committing it anyway
        is safe, the store fences the seq)."""
        def reply(result: mesh.SendResult) -> None:
            result.request_id = req.request_id
            if self.mesh.link(link.node_id) is link:
                link.send(mesh.MeshFrame(send_result=result))

        try:
            if req.HasField("membership"):
                future = self._messages.submit_event(req.chat_id, event_from_pb(req.membership))
            else:
                future = self._messages.submit_send(req.user_id, req.device_id, req.chat_id,
                                                    req.client_msg_id, req.body,
                                                    list(req.media_ids))
        except DomainError as exc:
            reply(_error_result(exc))
            return
        except Exception as exc:  # the writer is closed (this node drains)
            reply(_unavailable(f"owner cannot take sends: {exc}"))
            return
        self.counters["owned_sends"] += 1
        future.add_done_callback(lambda f: reply(_send_result(f)))

    def _on_send_result(self, link: Link, result: mesh.SendResult) -> None:
        pending = self._pending.pop(result.request_id, None)
        if pending is None:
            return  # timed out already
        _, future, timer = pending
        timer.cancel()
        if future.done():
            return
        if result.error:
            future.set_exception(domain_error(result.error, result.error_message,
                                              result.retry_after_ms))
        else:
            future.set_result(CommitResult(message_from_pb(result.message), result.duplicate))

    def _forward_timed_out(self, request_id: int) -> None:
        pending = self._pending.pop(request_id, None)
        if pending is not None and not pending[1].done():
            self.counters["forward_failures"] += 1
            pending[1].set_exception(DomainError(
                Code.UNAVAILABLE, f"owner {pending[0]} did not answer", RETRY_AFTER_MS))

    def _fail_pending(self, node_id: str | None, why: str) -> None:
        for request_id, (owner, future, timer) in list(self._pending.items()):
            if node_id is None or owner == node_id:
                del self._pending[request_id]
                timer.cancel()
                if not future.done():
                    self.counters["forward_failures"] += 1
                    future.set_exception(DomainError(Code.UNAVAILABLE, why, RETRY_AFTER_MS))

    # ------------------------------------------------------------------ fan-out
    def _fanout(self, chat_id: str, members: Mapping, messages: list[StoredMessage]) -> None:
        """Runs on the owner right after a commit (one chat, seq order)."""
        self._node.deliver(chat_id, members, messages)
        if not self.mesh.links:
            return
        if self._registry is None:
            self._broadcast_deliver(chat_id, members, messages)
            return
        lookup = asyncio.ensure_future(
            asyncio.wait_for(self._registry.sessions_many(members), FANOUT_LOOKUP_TIMEOUT))
        self._fanouts.append((lookup, chat_id, members, messages))
        lookup.add_done_callback(self._send_fanouts)

    def _send_fanouts(self, _: asyncio.Future) -> None:
        """Deliver frames leave in commit order whatever order the lookups finish in."""
        while self._fanouts and self._fanouts[0][0].done():
            lookup, chat_id, members, messages = self._fanouts.popleft()
            if lookup.cancelled() or lookup.exception() is not None:
                self.counters["fanout_lookup_failures"] += 1
                self._broadcast_deliver(chat_id, members, messages)
                continue
            by_node: dict[str, list[str]] = {}
            for user, devices in lookup.result().items():
                for node_id in {entry.node_id for entry in devices.values()}:
                    if node_id != self.node_id:
                        by_node.setdefault(node_id, []).append(user)
            encoded = [message_to_pb(m) for m in messages]
            for node_id, users in by_node.items():
                link = self.mesh.link(node_id)
                if link is not None:
                    link.send(mesh.MeshFrame(deliver=mesh.Deliver(
                        chat_id=chat_id, user_ids=users, messages=encoded)))
                    self.counters["deliver_frames"] += 1

    def _broadcast_deliver(self, chat_id: str, members: Mapping,
                           messages: list[StoredMessage]) -> None:
        self._broadcast(mesh.MeshFrame(deliver=mesh.Deliver(
            chat_id=chat_id, user_ids=list(members),
            messages=[message_to_pb(m) for m in messages])))

    def _on_deliver(self, link: Link, deliver: mesh.Deliver) -> None:
        self._node.deliver(deliver.chat_id, dict.fromkeys(deliver.user_ids),
                           [message_from_pb(m) for m in deliver.messages])

    # ------------------------------------------------------------------ receipts, pushes
    def note_receipt(self, chat_id: str, user: str, delivered: int, read: int,
                     public_read: int) -> None:
        owner = self.ring.owner(chat_id)
        link = None if owner == self.node_id else self.mesh.link(owner)
        if link is None:
            self._node.note_receipt(chat_id, user, delivered, read, public_read)
        else:
            link.send(mesh.MeshFrame(receipt_note=mesh.ReceiptNote(
                chat_id=chat_id, user_id=user, delivered_seq=delivered, read_seq=read,
                public_read_seq=public_read)))

    def _on_receipt_note(self, link: Link, note: mesh.ReceiptNote) -> None:
        self._node.note_receipt(note.chat_id, note.user_id, note.delivered_seq, note.read_seq,
                                note.public_read_seq)

    def push(self, users: Collection[str], data: bytes,
             exclude: tuple[str, str] | None = None) -> None:
        self._node.push(users, data, exclude)
        if not self.mesh.links:
            return
        frame = mesh.Push(user_ids=list(users), frame=data)
        if exclude is not None:
            frame.exclude_user_id, frame.exclude_device_id = exclude
        if self._registry is None:
            self._broadcast(mesh.MeshFrame(push=frame))
        else:
            self._spawn(self._push_located(frame))

    async def _push_located(self, frame: mesh.Push) -> None:
        try:
            sessions = await self._registry.sessions_many(frame.user_ids)
        except Exception as exc:  # RegistryUnavailable, or the client failing mid-failover
            log.warning("push lookup failed, sending to every node: %s", exc)
            self._broadcast(mesh.MeshFrame(push=frame))
            return
        nodes = {entry.node_id for devices in sessions.values() for entry in devices.values()}
        for node_id in nodes - {self.node_id}:
            link = self.mesh.link(node_id)
            if link is not None:
                link.send(mesh.MeshFrame(push=frame))

    def _on_push(self, link: Link, push: mesh.Push) -> None:
        exclude = (push.exclude_user_id, push.exclude_device_id) if push.exclude_user_id else None
        self._node.push(push.user_ids, push.frame, exclude)

    # ------------------------------------------------------------------ cache invalidation
    def invalidate(self, kind: Invalidation, key: str, removed: Sequence[str] = ()) -> None:
        self._node.invalidate(kind, key, removed)
        self._broadcast(mesh.MeshFrame(invalidate=mesh.Invalidate(
            kind=int(kind), key=key, removed_user_ids=removed)))

    def _on_invalidate(self, link: Link, inv: mesh.Invalidate) -> None:
        self._node.invalidate(Invalidation(inv.kind), inv.key, list(inv.removed_user_ids))

    # ------------------------------------------------------------------ sessions, kicks
    async def session_opened(self, user: str, device: str, opened_ms: int) -> None:
        """Raises RegistryUnavailable when the session could not be recorded."""
        if self._registry is None:
            self._broadcast(_kick_frame(user, device, opened_ms))
            return
        epoch = self.epoch
        previous = await self._registry.put_session(user, device, self.node_id, epoch)
        while epoch != self.epoch:
            # the node registered anew meanwhile and re-put the sessions it held, which did
            # not include this one yet: put it under the new epoch too
            epoch = self.epoch
            await self._registry.put_session(user, device, self.node_id, epoch)
        if previous is not None and previous.node_id != self.node_id:
            link = self.mesh.link(previous.node_id)
            if link is not None:
                link.send(_kick_frame(user, device, opened_ms))

    def session_closed(self, user: str, device: str) -> None:
        if self._registry is not None:
            self._spawn(self._drop_session(user, device))

    async def _drop_session(self, user: str, device: str) -> None:
        try:
            await self._registry.drop_session(user, device, self.node_id)
        except Exception as exc:  # RegistryUnavailable, or the client failing mid-failover
            # the entry stays; it names this node, which no longer holds the device: a push
            # for it is offered here and finds nobody, until the device connects again
            log.warning("session of %s/%s not dropped: %s", user, device, exc)

    def kick(self, user: str, device: str, code: int, reason: str) -> None:
        before = now_ms() + 1
        self._node.kick(user, device, code, reason, before)
        self._broadcast(mesh.MeshFrame(kick=mesh.Kick(
            user_id=user, device_id=device, close_code=code, reason=reason, before_ms=before)))

    async def online_devices(self, user: str) -> set[str]:
        """Without a registry only this node's devices are known."""
        here = self._node.online_devices(user)
        if self._registry is None:
            return here
        try:
            return here | set(await self._registry.sessions(user))
        except RegistryUnavailable:
            return here

    async def last_seen(self, user: str) -> int | None:
        if self._registry is None:
            return None
        try:
            return await self._registry.last_seen(user)
        except RegistryUnavailable:
            return None

    def _on_kick(self, link: Link, kick: mesh.Kick) -> None:
        self._node.kick(kick.user_id, kick.device_id, kick.close_code, kick.reason, kick.before_ms)

    # ------------------------------------------------------------------ presence
    def presence_changed(self, user: str, online: bool, last_seen_ms: int) -> None:
        """Batched: one PresenceStates frame per event-loop turn to every peer."""
        self._presence_out[user] = (online, last_seen_ms)
        if not online and last_seen_ms and self._registry is not None:
            self._spawn(self._record_last_seen(user, last_seen_ms))
        if self._presence_flush is None:
            self._presence_flush = asyncio.get_running_loop().call_soon(self._flush_presence)

    async def _record_last_seen(self, user: str, last_seen_ms: int) -> None:
        try:
            await self._registry.set_last_seen(user, last_seen_ms)
        except Exception as exc:  # the store has it too (devices.seen): a lost write costs a read
            log.warning("last seen of %s not recorded: %s", user, exc)

    def _flush_presence(self) -> None:
        self._presence_flush = None
        states, self._presence_out = self._presence_out, {}
        self._broadcast(mesh.MeshFrame(presence=mesh.PresenceStates(users=[
            mesh.UserPresence(user_id=u, online=on, last_seen_ms=seen)
            for u, (on, seen) in states.items()])))

    def _on_presence(self, link: Link, states: mesh.PresenceStates) -> None:
        self._node.remote_presence(link.node_id, [(s.user_id, s.online, s.last_seen_ms)
                                                  for s in states.users], states.snapshot)

    # ------------------------------------------------------------------ helpers
    def _broadcast(self, frame: mesh.MeshFrame) -> None:
        links = self.mesh.links
        if links:
            payload = frame.SerializeToString()
            for link in links.values():
                link.send_encoded(payload)

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def share_usage(self, usage: Mapping[tuple[str, str], int]) -> dict[tuple[str, str], int]:
        """Through the registry, one batch per sync interval. Static peers share nothing: each
        node then enforces the limits on its own (docs/cluster.md)."""
        if self._registry is None or not usage:
            return {}
        return await self._registry.add_usage(usage, USAGE_TTL)

    def stats(self) -> dict[str, int]:
        return dict(self.counters, links_up=len(self.mesh.links), ring_nodes=len(self.ring.nodes),
                    forwards_pending=len(self._pending), fanouts_pending=len(self._fanouts))

    _handlers = {
        "forward_send": _on_forward_send,
        "send_result": _on_send_result,
        "deliver": _on_deliver,
        "push": _on_push,
        "receipt_note": _on_receipt_note,
        "invalidate": _on_invalidate,
        "presence": _on_presence,
        "kick": _on_kick,
    }


def _kick_frame(user: str, device: str, before_ms: int) -> mesh.MeshFrame:
    return mesh.MeshFrame(kick=mesh.Kick(user_id=user, device_id=device, close_code=CLOSE_REPLACED,
                                         reason="replaced by a newer connection",
                                         before_ms=before_ms))


def _error_result(exc: DomainError) -> mesh.SendResult:
    return mesh.SendResult(error=ERROR_CODES[exc.code], error_message=exc.detail,
                           retry_after_ms=exc.retry_after_ms)


def _unavailable(detail: str) -> mesh.SendResult:
    return mesh.SendResult(error=ERROR_CODES[Code.UNAVAILABLE], error_message=detail,
                           retry_after_ms=RETRY_AFTER_MS)


def _send_result(future: asyncio.Future[CommitResult]) -> mesh.SendResult:
    if future.cancelled():
        return _unavailable("cancelled")
    exc = future.exception()
    if isinstance(exc, DomainError):
        return _error_result(exc)
    if exc is not None:
        return _unavailable("store unavailable")
    result = future.result()
    return mesh.SendResult(message=message_to_pb(result.message), duplicate=result.duplicate)
