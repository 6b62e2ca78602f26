"""A chat's receipt rollup built while its member map changes (core/receipts.py): the build
reads the members' settings from the store, and a member added meanwhile neither breaks it
(the map is the cached one, changed in place) nor is left out of the next flush's rollup.
Over a real SQLite file, whose reads suspend the build as the server's do."""
from __future__ import annotations

import asyncio

from switchboard.core.blocks import Blocks
from switchboard.core.chats import ChatService
from switchboard.core.model import MemberAction, MembershipEvent, Receipt
from switchboard.core.receipts import ReceiptService
from switchboard.core.settings import MANY_AT_ONCE, Settings
from switchboard.core.store_sqlite import SQLiteStore
from switchboard.core.writer import CoalescingWriter


async def test_a_member_added_while_the_rollup_is_built_counts_from_the_next_flush(tmp_path):
    store = SQLiteStore(tmp_path / "receipts.db")
    await store.open()
    try:
        blocks, settings = Blocks(store), Settings(store)
        chats = ChatService(store, blocks=blocks)
        receipts = ReceiptService(store, chats, settings, blocks, CoalescingWriter(store),
                                  push=lambda *update: None)
        users = [f"u{i}" for i in range(MANY_AT_ONCE + 50)]  # settings read in two rounds
        chat = (await chats.create_group("owner", users, "big")).chat_id
        members = await chats.members(chat)
        cached = {user: Receipt(5, 0) for user in members}
        building = asyncio.ensure_future(receipts.rollup(chat, cached))
        await asyncio.sleep(0)  # the build now waits for the members' settings
        assert not building.done()
        chats.applied(chat, MembershipEvent(MemberAction.ADDED, "owner", ("late",)), 3)
        assert "late" in members  # the cached map itself changed
        assert await building == (5, 0)  # the members it was built from
        # the next flush's rollup counts the new member (joined at 2, nothing delivered)
        assert await receipts.rollup(chat, cached) == (2, 0)
    finally:
        await store.close()
