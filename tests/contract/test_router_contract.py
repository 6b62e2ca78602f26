"""One Router contract (router/base.py), every router through it: LocalRouter, and MeshRouter
as a node of its own with a static member list and with leases and sessions in a registry
(MemoryRegistry). Each gets a real MessageService on the in-memory store and a LocalNode that
records what the router asks of this node; the behaviours are the ones the gateway relies on
whatever the size of the cluster. What only a cluster does (forwarding, fan-out to other nodes)
is in tests/e2e/test_cluster_inprocess.py and tests/cluster/."""
from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import pytest

from switchboard.core.blocks import Blocks
from switchboard.core.chats import ChatService
from switchboard.core.errors import Code, DomainError
from switchboard.core.futures import awaited, into
from switchboard.core.ids import ServerIds, now_ms
from switchboard.core.messaging import MessageService
from switchboard.core.model import MemberAction, MembershipEvent, SendRequest, StoredMessage
from switchboard.core.settings import Settings
from switchboard.core.store_memory import MemoryStore
from switchboard.proto.codes import Close
from switchboard.router.base import Invalidation, Router
from switchboard.router.cluster import MeshRouter
from switchboard.router.local import LocalRouter
from switchboard.router.registry_memory import MemoryRegistry
from switchboard.router.registry_static import StaticRegistry
from tests.support.waiting import wait_for


class RecordingNode:
    """This node as the router sees it (router/base.py LocalNode): records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple]] = []
        self.devices: dict[str, set[str]] = {}

    def named(self, name: str) -> list[tuple]:
        return [args for call, args in self.calls if call == name]

    def deliver(self, chat_id: str, members: Mapping[str, Any],
                messages: list[StoredMessage]) -> None:
        self.calls.append(("deliver", (chat_id, set(members), [m.seq for m in messages])))

    def push(self, users: Collection[str], data: bytes, exclude: tuple[str, str] | None) -> None:
        self.calls.append(("push", (list(users), data, exclude)))

    def note_receipt(self, chat_id: str, user: str, delivered: int, read: int,
                     public_read: int) -> None:
        self.calls.append(("note_receipt", (chat_id, user, delivered, read, public_read)))

    def note_delivered(self, chat_id: str, delivered: dict[str, int]) -> None:
        self.calls.append(("note_delivered", (chat_id, dict(delivered))))

    def invalidate(self, kind: Invalidation, key: str, removed: Sequence[str]) -> None:
        self.calls.append(("invalidate", (kind, key, list(removed))))

    def kick(self, user: str, device: str, code: int, reason: str, before_ms: int) -> None:
        self.calls.append(("kick", (user, device, code, before_ms)))

    def online_devices(self, user: str) -> set[str]:
        return set(self.devices.get(user, ()))

    def sessions(self) -> list[tuple[str, str]]:
        return [(user, device) for user, devices in self.devices.items() for device in devices]

    def presence_snapshot(self) -> list[tuple[str, bool, int]]:
        return []

    def remote_presence(self, node_id: str, states: list[tuple[str, bool, int]],
                        snapshot: bool) -> None:
        self.calls.append(("remote_presence", (node_id, states, snapshot)))

    def node_gone(self, node_id: str) -> None:
        self.calls.append(("node_gone", (node_id,)))

    async def catch_up(self) -> None:
        self.calls.append(("catch_up", ()))

    def cluster_changed(self) -> None:
        self.calls.append(("cluster_changed", ()))


def _local(store: MemoryStore, chats: ChatService, node: RecordingNode):
    messages = _messages(store, chats, node.deliver)
    return LocalRouter(messages, node), messages


def _mesh(registry_kind: str):
    def build(store: MemoryStore, chats: ChatService, node: RecordingNode):
        registry = StaticRegistry({}) if registry_kind == "static" else MemoryRegistry()
        messages = _messages(store, chats, lambda *commit: router.committed(*commit))
        router = MeshRouter(messages, node, node_id="solo", mesh_host="127.0.0.1", mesh_port=0,
                            registry=registry, lease_ttl=2.0, heartbeat_interval=0.1,
                            link_timeout=0.5, forward_timeout=2.0)
        return router, messages
    return build


def _messages(store: MemoryStore, chats: ChatService, fanout) -> MessageService:
    return MessageService(store, chats, ServerIds(1), settings=Settings(store),
                          blocks=Blocks(store), fanout=fanout, max_body_bytes=1024,
                          max_media_ids=4)


ROUTERS = {"local": _local, "mesh-static": _mesh("static"), "mesh-registry": _mesh("registry")}


class Setup:
    def __init__(self, router: Router, node: RecordingNode, messages: MessageService,
                 chats: ChatService) -> None:
        self.router, self.node, self.messages, self.chats = router, node, messages, chats


@pytest.fixture(params=sorted(ROUTERS))
async def setup(request):
    store = MemoryStore()
    await store.open()
    chats = ChatService(store)
    node = RecordingNode()
    router, messages = ROUTERS[request.param](store, chats, node)
    await router.start()
    yield Setup(router, node, messages, chats)
    await messages.close()
    await router.stop()
    await router.close()
    await store.close()


async def send(router: Router, user: str, chat_id: str, client_msg_id: str, body: bytes = b"x"):
    """A send's outcome, whether the router refuses it at once or through its completion."""
    return await awaited(router.submit_send,
                         SendRequest(user, "phone", chat_id, client_msg_id, body, []))


async def test_ready_once_started(setup):
    checks = setup.router.readiness()
    assert all(checks.values()), checks
    assert isinstance(setup.router.sees_every_commit, bool)


async def test_a_send_is_committed_and_offered_to_this_node(setup):
    chat = await setup.chats.create_group("alice", ["bob"], "g")
    first = await send(setup.router, "alice", chat.chat_id, "m1")
    second = await send(setup.router, "alice", chat.chat_id, "m2")
    assert (first.message.seq, second.message.seq) == (1, 2)
    again = await send(setup.router, "alice", chat.chat_id, "m1")
    assert again.duplicate and again.message.seq == 1
    delivered = setup.node.named("deliver")
    # the retry is offered again on its own: its original may never have been (a commit whose
    # outcome was unknown); devices that have it drop it
    assert [seqs for chat_id, members, seqs in delivered] == [[1], [2], [1]]
    assert all(members == {"alice", "bob"} for _, members, _ in delivered)


async def test_a_chats_pipelined_sends_are_answered_in_their_order(setup):
    """The first sends wait while what their checks need loads, later ones find it cached:
    the answers still come in the order of the sends (a device's SendAcks follow its sends)."""
    chat = (await setup.chats.create_group("alice", ["bob"], "g")).chat_id
    answered: list[int] = []
    futures = []

    def answer(i: int, future: asyncio.Future):
        def done(result, error) -> None:
            answered.append(i)
            into(future)(result, error)
        return done

    for i in range(60):
        future = asyncio.get_running_loop().create_future()
        setup.router.submit_send(SendRequest("alice", "phone", chat, f"m{i}", b"x", []),
                                 answer(i, future))
        futures.append(future)
        for _ in range(i % 5):  # let the writer and the callbacks run in between, now and then
            await asyncio.sleep(0)
    assert [r.message.seq for r in await asyncio.gather(*futures)] == list(range(1, 61))
    assert answered == list(range(60))


async def test_refusals_are_domain_errors(setup):
    chat = await setup.chats.create_group("alice", ["bob"], "g")
    with pytest.raises(DomainError) as refused:
        await send(setup.router, "mallory", chat.chat_id, "m1")
    assert refused.value.code is Code.NOT_MEMBER
    with pytest.raises(DomainError) as too_big:
        await send(setup.router, "alice", chat.chat_id, "m2", b"x" * 2000)
    assert too_big.value.code is Code.BODY_TOO_LARGE
    await setup.messages.close()  # the drain: later sends are refused, to be retried elsewhere
    with pytest.raises(DomainError) as draining:
        await send(setup.router, "alice", chat.chat_id, "m3")
    assert draining.value.code is Code.UNAVAILABLE and draining.value.retry_after_ms > 0


async def test_a_membership_event_takes_its_place_among_the_chats_sends(setup):
    """Submitted between two sends, an event is the chat's next entry; the sends after it are
    checked against the members it leaves (a removed member's is refused, an added one's is
    taken), and its fan-out reaches the members before and after it."""
    router, chat = setup.router, (await setup.chats.create_group("alice", ["bob"], "g")).chat_id
    first = awaited(router.submit_send, SendRequest("alice", "phone", chat, "m1", b"x", []))
    removal = router.submit_event(chat, MembershipEvent(MemberAction.REMOVED, "alice", ("bob",)))
    too_late = awaited(router.submit_send, SendRequest("bob", "phone", chat, "b1", b"x", []))
    addition = router.submit_event(chat, MembershipEvent(MemberAction.ADDED, "alice", ("carol",)))
    welcome = awaited(router.submit_send, SendRequest("carol", "phone", chat, "c1", b"x", []))
    results = await asyncio.gather(first, removal, too_late, addition, welcome,
                                   return_exceptions=True)
    assert isinstance(results[2], DomainError) and results[2].code is Code.NOT_MEMBER
    first, removal, _, addition, welcome = results
    assert [r.message.seq for r in (first, removal, addition, welcome)] == [1, 2, 3, 4]
    assert removal.message.event == MembershipEvent(MemberAction.REMOVED, "alice", ("bob",))
    assert set(await setup.chats.members(chat)) == {"alice", "carol"}
    assert [(members, seqs) for _, members, seqs in setup.node.named("deliver")] == [
        ({"alice", "bob"}, [1]), ({"alice", "bob"}, [2]), ({"alice", "carol"}, [3]),
        ({"alice", "carol"}, [4])]
    await setup.messages.close()
    with pytest.raises(DomainError) as draining:
        await router.submit_event(chat, MembershipEvent(MemberAction.ADDED, "alice", ("dave",)))
    assert draining.value.code is Code.UNAVAILABLE


async def test_pushes_invalidations_kicks_and_receipts_reach_this_node(setup):
    router, node = setup.router, setup.node
    router.push(["bob"], b"frame", ("alice", "phone"))
    router.invalidate(Invalidation.CHAT_MEMBERS, "c1", ["carol"])
    before = now_ms()
    router.kick("bob", "tablet", Close.DEVICE_REVOKED, "device revoked")
    router.note_receipt("c1", "bob", 3, 2, 2)
    router.note_delivered("c1", {"carol": 4, "dave": 1})
    await wait_for(lambda: node.named("push") and node.named("note_receipt")
                   and node.named("note_delivered"))
    assert node.named("push") == [(["bob"], b"frame", ("alice", "phone"))]
    assert node.named("invalidate") == [(Invalidation.CHAT_MEMBERS, "c1", ["carol"])]
    [(user, device, code, before_ms)] = node.named("kick")
    assert (user, device, code) == ("bob", "tablet", Close.DEVICE_REVOKED)
    assert before_ms > before  # closes connections opened up to now, not later ones
    assert node.named("note_receipt") == [("c1", "bob", 3, 2, 2)]
    assert node.named("note_delivered") == [("c1", {"carol": 4, "dave": 1})]


async def test_sessions_are_recorded_and_devices_found(setup):
    router, node = setup.router, setup.node
    recording = router.session_opened("bob", "phone", now_ms())
    assert recording is None or await recording is True
    node.devices["bob"] = {"phone"}
    assert await router.online_devices("bob") == {"phone"}
    router.presence_changed("bob", False, now_ms())
    router.session_closed("bob", "phone")
    seen = await router.last_seen("bob")
    assert seen is None or seen > 0


async def test_usage_sharing_never_raises(setup):
    assert await setup.router.share_usage({}) == {}
    totals = await setup.router.share_usage({("send", "bob"): 3})
    assert totals in ({}, {("send", "bob"): 3})


async def test_metrics_are_named_and_documented(setup):
    for metric in setup.router.metrics():
        assert metric.name and metric.help and metric.kind in ("counter", "gauge")


async def test_stop_is_idempotent(setup):
    await setup.router.stop()
    await setup.router.stop()
    await asyncio.sleep(0)
