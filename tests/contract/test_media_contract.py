"""The MediaDirectory port (switchboard/core/store.py), run against every store with the
backings of the Store contract suite (a file, a MemoryData, a keyspace on the test node)."""
from __future__ import annotations

import asyncio
import hashlib
import itertools

from switchboard.core.model import MediaRecord, MediaState

from .test_store_contract import store, stores  # noqa: F401  (fixtures: every store)

_ids = itertools.count(1)
T0 = 1_700_000_000_000


def media(owner: str = "alice", content: bytes = b"photo", *, content_type: str = "image/jpeg",
          created: int = T0, thumbnail_of: str = "", part_size: int = 1 << 20,
          upload_id: str = "") -> MediaRecord:
    return MediaRecord(f"m{next(_ids)}", owner, len(content), content_type,
                       hashlib.sha256(content).digest(), created, part_size, upload_id,
                       thumbnail_of)


async def completed(store, record: MediaRecord) -> MediaRecord:
    await store.create_media(record)
    return await store.complete_media(record.media_id)


async def test_a_new_media_is_pending_and_round_trips(store):
    record = media(content=b"x" * 3000, upload_id="up-1", part_size=1024)
    created = await store.create_media(record)
    assert created == record and created.state is MediaState.PENDING
    assert created.part_count == 3 and created.refs == frozenset()
    assert await store.get_media(record.media_id) == record
    assert await store.get_media("nope") is None


async def test_the_same_content_of_the_same_owner_is_one_media(store):
    first = await store.create_media(media("alice", b"same"))
    again = await store.create_media(media("alice", b"same"))
    assert again.media_id == first.media_id
    assert (await store.create_media(media("bob", b"same"))).media_id != first.media_id
    other_type = await store.create_media(media("alice", b"same", content_type="image/png"))
    assert other_type.media_id != first.media_id
    thumb = await store.create_media(media("alice", b"same", thumbnail_of=first.media_id))
    assert thumb.media_id != first.media_id
    await store.complete_media(first.media_id)
    done = await store.create_media(media("alice", b"same"))
    assert done.media_id == first.media_id and done.state is MediaState.COMPLETE


async def test_complete_is_idempotent_and_unknown_is_none(store):
    record = await store.create_media(media())
    assert (await store.complete_media(record.media_id)).state is MediaState.COMPLETE
    assert (await store.complete_media(record.media_id)).state is MediaState.COMPLETE
    assert await store.complete_media("nope") is None


async def test_claim_takes_only_the_owners_completed_main_media(store):
    mine = await completed(store, media("alice", b"mine"))
    pending = await store.create_media(media("alice", b"pending"))
    theirs = await completed(store, media("bob", b"theirs"))
    thumb = await completed(store, media("alice", b"thumb", thumbnail_of=mine.media_id))
    found = await store.claim_media("alice", "c1", [mine.media_id, pending.media_id,
                                                    theirs.media_id, thumb.media_id, "nope"])
    assert set(found) == {mine.media_id, pending.media_id, theirs.media_id, thumb.media_id}
    assert found[mine.media_id].refs == {"c1"}
    assert found[mine.media_id].thumbnail_id == thumb.media_id
    assert found[pending.media_id].refs == frozenset()
    assert found[theirs.media_id].refs == frozenset()
    # the thumbnail came along with its media, not by being named
    assert found[thumb.media_id].refs == {"c1"}
    await store.claim_media("alice", "c2", [mine.media_id])
    assert (await store.get_media(mine.media_id)).refs == {"c1", "c2"}


async def test_a_thumbnail_completed_after_its_media_was_claimed_takes_the_references(store):
    mine = await completed(store, media("alice", b"mine"))
    await store.claim_media("alice", "c1", [mine.media_id])
    thumb = await completed(store, media("alice", b"thumb", thumbnail_of=mine.media_id))
    assert thumb.refs == {"c1"}
    assert (await store.get_media(mine.media_id)).thumbnail_id == thumb.media_id


async def test_unreferenced_media_oldest_first_before_the_cutoff(store):
    old = await store.create_media(media(content=b"old", created=T0))
    older_done = await completed(store, media(content=b"older", created=T0 - 10))
    referenced = await completed(store, media(content=b"ref", created=T0 - 20))
    await store.claim_media("alice", "c1", [referenced.media_id])
    await store.create_media(media(content=b"new", created=T0 + 1000))
    found = await store.unreferenced_media(T0 + 1, 10)
    assert [r.media_id for r in found] == [older_done.media_id, old.media_id]
    assert [r.media_id for r in await store.unreferenced_media(T0 + 1, 1)] == [older_done.media_id]
    assert await store.unreferenced_media(T0 - 10, 10) == []


async def test_delete_spares_referenced_media_and_frees_the_dedup_entry(store):
    loose = await store.create_media(media(content=b"loose"))
    kept = await completed(store, media(content=b"kept"))
    await store.claim_media("alice", "c1", [kept.media_id])
    assert await store.delete_media(loose.media_id) is True
    assert await store.get_media(loose.media_id) is None
    assert await store.delete_media(loose.media_id) is False
    assert await store.delete_media(kept.media_id) is False
    assert (await store.get_media(kept.media_id)).refs == {"c1"}
    fresh = await store.create_media(media(content=b"loose"))
    assert fresh.media_id != loose.media_id


async def test_claim_and_delete_of_one_media_exclude_each_other(store):
    for _ in range(5):
        record = await completed(store, media(content=f"race{next(_ids)}".encode()))
        found, deleted = await asyncio.gather(
            store.claim_media("alice", "c1", [record.media_id]),
            store.delete_media(record.media_id))
        after = await store.get_media(record.media_id)
        if deleted:
            assert after is None and not found.get(record.media_id, record).refs
        else:
            assert after is not None and after.refs == {"c1"}


async def test_media_survive_reopen(stores):
    store = await stores.open()
    record = await completed(store, media(content=b"durable"))
    await store.claim_media("alice", "c9", [record.media_id])
    store = await stores.reopen(store)
    again = await store.get_media(record.media_id)
    assert again.state is MediaState.COMPLETE and again.refs == {"c9"}
    assert (await store.create_media(media(content=b"durable"))).media_id == record.media_id
