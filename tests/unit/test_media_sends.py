"""The send path with media (MediaService.claim called from MessageService's per-chat gate), on
the in-process store: a chat's sends and membership events keep their order around the sends
whose media are being claimed, a refused claim fails that send alone, and a drain answers every
held send."""
from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from switchboard.core.blocks import Blocks
from switchboard.core.chats import ChatService
from switchboard.core.errors import Code, DomainError
from switchboard.core.futures import awaited
from switchboard.core.ids import ServerIds
from switchboard.core.media import MediaLimits, MediaService
from switchboard.core.messaging import MessageService
from switchboard.core.model import (Chat, ChatKind, MediaRecord, MemberAction, MembershipEvent,
                                    Role, SendRequest)
from switchboard.core.settings import Settings
from switchboard.core.store_memory import MemoryStore
from switchboard.media.local import LocalObjects

LIMITS = MediaLimits(max_bytes=1 << 20, max_thumbnail_bytes=1024, types=("image/*",),
                     single_put_bytes=1 << 20, part_bytes=1 << 20, url_ttl=60, orphan_ttl=60)


@pytest.fixture
async def setup(tmp_path: Path):
    store = MemoryStore()
    await store.open()
    chats = ChatService(store)
    await store.create_chat(Chat("c1", ChatKind.GROUP, "t", 1), {"alice": Role.ADMIN,
                                                                "bob": Role.MEMBER})
    media = MediaService(store, chats, LocalObjects(tmp_path, host="127.0.0.1", port=0), LIMITS,
                         sweep_interval=0)  # never opened: claims need the store alone
    messages = MessageService(store, chats, ServerIds(1), settings=Settings(store),
                              blocks=Blocks(store), fanout=lambda *commit: None,
                              max_body_bytes=1024, max_media_ids=4, claim_media=media.claim)
    yield store, messages
    await messages.close()
    await store.close()


async def uploaded(store: MemoryStore, owner: str, media_id: str) -> None:
    await store.create_media(MediaRecord(media_id, owner, 5, "image/jpeg",
                                         hashlib.sha256(media_id.encode()).digest(), 1, 5))
    await store.complete_media(media_id)


def send(messages: MessageService, client_msg_id: str, media: list[str] = (),
         user: str = "alice") -> asyncio.Future:
    return awaited(messages.submit_send,
                   SendRequest(user, "phone", "c1", client_msg_id, b"x", list(media)))


async def outcome(future: asyncio.Future):
    try:
        return (await future).message.seq
    except DomainError as exc:
        return exc.code


async def test_sends_keep_their_order_and_a_refused_claim_fails_that_send_alone(setup):
    store, messages = setup
    await uploaded(store, "alice", "hers")
    await uploaded(store, "bob", "his")
    await store.create_media(MediaRecord("pending", "alice", 5, "image/png", bytes(32), 1, 5))
    futures = [send(messages, "1"), send(messages, "2", ["his"]), send(messages, "3"),
               send(messages, "4", ["hers"]), send(messages, "5", ["pending"]),
               send(messages, "6"), send(messages, "7", ["nope"])]
    assert [await outcome(f) for f in futures] == [
        1, Code.MEDIA_NOT_OWNED, 2, 3, Code.MEDIA_INCOMPLETE, 4, Code.NOT_FOUND]
    assert (await store.get_media("hers")).refs == {"c1"}
    assert (await store.get_media("his")).refs == frozenset()


async def test_a_membership_event_stays_behind_a_send_whose_media_are_being_claimed(setup):
    store, messages = setup
    await uploaded(store, "bob", "his")
    removed = SendRequest.membership("c1", MembershipEvent(MemberAction.REMOVED, "alice",
                                                           ("bob",)))
    futures = [send(messages, "1", ["his"], user="bob"), awaited(messages.submit_send, removed),
               send(messages, "2", user="bob")]
    assert [await outcome(f) for f in futures] == [1, 2, Code.NOT_MEMBER]
    assert (await store.get_media("his")).refs == {"c1"}


async def test_a_drain_answers_every_held_send(setup):
    store, messages = setup
    await uploaded(store, "alice", "hers")
    futures = [send(messages, "1", ["hers"]), send(messages, "2")]
    await messages.close()
    assert [await outcome(f) for f in futures] == [1, 2]
    with pytest.raises(DomainError) as info:
        send(messages, "3", ["hers"])
    assert info.value.code == Code.UNAVAILABLE
