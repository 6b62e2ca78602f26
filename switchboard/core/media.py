"""Media: upload slots, completion, who may reference and who may download, orphan sweeps.

The bytes live in object storage (objects.py) and move over HTTP between the device and the
storage, with URLs signed here; this service only decides and keeps the metadata (the store's
MediaDirectory port). docs/protocol.md 8.20 is the flow seen from a device.

* **Upload**: CreateUpload -> a record PENDING and a plan of parts, each with a signed PUT URL;
  the same file again (same owner, SHA-256, size, type) is the same record: COMPLETE means
  nothing to upload (dedup), PENDING means a resume (only the missing parts get URLs).
  CompleteUpload checks the bytes in the object store and makes the record COMPLETE; a
  mismatch drops both, so the next CreateUpload starts afresh.
* **Reference**: a Send naming media is held, with the chat's later sends behind it, until
  the media are claimed for the chat (`claim`, called from MessageService's per-chat gate):
  only the sender's own COMPLETE uploads pass. The claim is recorded before the message goes to the writer and is idempotent (a retry
  claims again), so the sweep never deletes media that a committed message may name. The
  reference that grants access is the message itself (its media_ids, committed atomically with
  it): a claim whose message failed keeps the bytes, it opens nothing.
* **Download**: GetMedia names the message (chat_id, seq): the caller must be a member who sees
  that message, and the message must name the media. The owner may always download its own.
* **Sweep**: media never referenced within `orphan_ttl` of their creation (unfinished uploads
  too) are deleted, record first (conditional on having no refs), then the bytes.
"""
from __future__ import annotations

import asyncio
import logging
import re
import secrets
from dataclasses import dataclass, field

from .chats import ChatService
from .errors import Code, DomainError
from .ids import now_ms
from .metrics import Metric, counter
from .model import MediaRecord, MediaState, SendRequest
from .objects import ObjectMismatch, ObjectMissing, ObjectStore, SignedRequest
from .store import Store, StoreError
from .tasks import TaskGroup

log = logging.getLogger(__name__)

MAX_PARTS = 10_000          # S3's limit: the part size grows for files beyond parts x part_bytes
SWEEP_BATCH = 100           # records read per sweep step
_CONTENT_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,63}")
REFUSALS = ("too_large", "type", "not_owned", "incomplete", "mismatch", "not_member",
            "not_found")


@dataclass(frozen=True, slots=True)
class MediaLimits:
    max_bytes: int
    max_thumbnail_bytes: int
    types: tuple[str, ...]        # "image/jpeg", or "image/*" for every image type
    single_put_bytes: int         # up to this, one PUT; above, parts of part_bytes
    part_bytes: int
    url_ttl: int                  # s: signed URLs stop working after this
    orphan_ttl: float             # s: never referenced after this long: deleted

    def accepts(self, content_type: str) -> bool:
        major = content_type.partition("/")[0]
        return content_type in self.types or f"{major}/*" in self.types


@dataclass(frozen=True, slots=True)
class UploadPlan:
    record: MediaRecord
    parts: list[tuple[int, int, int, SignedRequest]]  # number, offset, size, request
    expires_at_ms: int


@dataclass(frozen=True, slots=True)
class Download:
    record: MediaRecord
    url: str
    expires_at_ms: int
    thumbnail: MediaRecord | None
    thumbnail_url: str


@dataclass(slots=True)
class MediaStats:
    slots: int = 0
    completed: int = 0
    completed_bytes: int = 0
    deduplicated: int = 0
    download_urls: int = 0
    claimed: int = 0
    swept: int = 0
    sweep_failures: int = 0
    refused: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REFUSALS, 0))


_REFUSAL_OF = {Code.MEDIA_TOO_LARGE: "too_large", Code.MEDIA_TYPE_REFUSED: "type",
               Code.MEDIA_NOT_OWNED: "not_owned", Code.MEDIA_INCOMPLETE: "incomplete",
               Code.MEDIA_MISMATCH: "mismatch", Code.NOT_MEMBER: "not_member",
               Code.NOT_FOUND: "not_found"}


class MediaService:
    def __init__(self, store: Store, chats: ChatService, objects: ObjectStore,
                 limits: MediaLimits, *, sweep_interval: float) -> None:
        self._store = store
        self._chats = chats
        self.objects = objects
        self.limits = limits
        self._sweep_interval = sweep_interval
        self.stats = MediaStats()
        self._tasks = TaskGroup()

    async def open(self) -> None:
        await self.objects.open()
        if self._sweep_interval > 0:
            self._tasks.spawn(self._sweep_forever())

    async def close(self) -> None:
        await self._tasks.cancel()
        await self.objects.close()

    def _refuse(self, code: Code, detail: str) -> DomainError:
        self.stats.refused[_REFUSAL_OF[code]] += 1
        return DomainError(code, detail)

    # ------------------------------------------------------------------ upload
    async def create_upload(self, user: str, size: int, content_type: str, sha256: bytes,
                            thumbnail_of: str = "") -> UploadPlan:
        limits = self.limits
        if len(sha256) != 32:
            raise DomainError(Code.INVALID_ARGUMENT, "sha256 must be the file's 32-byte SHA-256")
        if size <= 0:
            raise DomainError(Code.INVALID_ARGUMENT, "size must be at least 1")
        if not _CONTENT_TYPE.fullmatch(content_type):
            raise DomainError(Code.INVALID_ARGUMENT, "content_type must be a lower-case type/subtype")
        largest = limits.max_thumbnail_bytes if thumbnail_of else limits.max_bytes
        if size > largest:
            raise self._refuse(Code.MEDIA_TOO_LARGE, f"{size} bytes is over the limit of "
                               f"{largest}{' for a thumbnail' if thumbnail_of else ''}")
        if not limits.accepts(content_type) or thumbnail_of and not content_type.startswith("image/"):
            raise self._refuse(Code.MEDIA_TYPE_REFUSED, f"{content_type} is not accepted"
                               f"{' as a thumbnail' if thumbnail_of else ''}")
        if thumbnail_of:
            parent = await self._store.get_media(thumbnail_of)
            if parent is None or parent.owner != user:
                raise self._refuse(Code.NOT_FOUND, f"no media {thumbnail_of[:128]} of yours")
            if parent.thumbnail_of:
                raise DomainError(Code.INVALID_ARGUMENT, "a thumbnail has no thumbnail")
        multipart = size > limits.single_put_bytes
        part_size = max(limits.part_bytes, -(-size // MAX_PARTS)) if multipart else size
        media_id = secrets.token_urlsafe(16)
        upload_id = await self.objects.begin_upload(media_id, content_type, multipart)
        candidate = MediaRecord(media_id, user, size, content_type, bytes(sha256), now_ms(),
                                part_size, upload_id, thumbnail_of)
        try:
            record = await self._store.create_media(candidate)
        except StoreError:
            self._discard(candidate)
            raise
        if record.media_id != media_id:  # the same file again: a resume or a dedup
            self._discard(candidate)
            self.stats.deduplicated += 1
        self.stats.slots += 1
        expires = now_ms() + limits.url_ttl * 1000
        if record.state is MediaState.COMPLETE:
            return UploadPlan(record, [], expires)
        done = await self.objects.uploaded_parts(record.media_id, record.upload_id)
        parts = []
        for number in range(1, record.part_count + 1):
            offset = (number - 1) * record.part_size
            length = min(record.part_size, record.size - offset)
            if done.get(number) != length:
                parts.append((number, offset, length, self.objects.part_url(
                    record.media_id, record.upload_id, number, length, record.content_type,
                    record.sha256, limits.url_ttl)))
        return UploadPlan(record, parts, expires)

    def _discard(self, record: MediaRecord) -> None:
        """An upload begun for a record that was not kept (a multipart upload id)."""
        if record.upload_id:
            self._tasks.spawn(self._delete_bytes(record))

    async def _delete_bytes(self, record: MediaRecord) -> bool:
        try:
            await self.objects.delete(record.media_id, record.upload_id)
            return True
        except Exception:
            self.stats.sweep_failures += 1
            log.warning("could not delete the bytes of media %s", record.media_id, exc_info=True)
            return False

    async def complete_upload(self, user: str, media_id: str) -> MediaRecord:
        record = await self._store.get_media(media_id)
        if record is None or record.owner != user:
            raise self._refuse(Code.NOT_FOUND, f"no upload {media_id[:128]} of yours")
        if record.state is MediaState.COMPLETE:
            return record
        try:
            await self.objects.complete_upload(media_id, record.upload_id, record.size,
                                               record.part_size, record.sha256)
        except ObjectMissing as exc:
            raise self._refuse(Code.MEDIA_INCOMPLETE, str(exc)) from None
        except ObjectMismatch as exc:
            await self._store.delete_media(media_id)
            await self._delete_bytes(record)
            raise self._refuse(Code.MEDIA_MISMATCH, f"{exc}: upload it again") from None
        completed = await self._store.complete_media(media_id)
        if completed is None:  # swept meanwhile (an upload that took longer than orphan_ttl)
            raise self._refuse(Code.NOT_FOUND, f"upload {media_id} expired: upload it again")
        self.stats.completed += 1
        self.stats.completed_bytes += completed.size
        return completed

    # ------------------------------------------------------------------ reference
    async def claim(self, send: SendRequest) -> None:
        """Record that the send's chat references its media, or refuse the send: each media
        must be the sender's own completed upload (not a thumbnail: it travels with its media)."""
        found = await self._store.claim_media(send.user, send.chat_id, send.media_ids)
        for media_id in send.media_ids:
            record = found.get(media_id)
            if record is None:
                raise self._refuse(Code.NOT_FOUND, f"no media {media_id}")
            if record.owner != send.user:
                raise self._refuse(Code.MEDIA_NOT_OWNED, f"media {media_id} is not your upload")
            if record.thumbnail_of:
                raise DomainError(Code.INVALID_ARGUMENT, f"media {media_id} is a thumbnail: "
                                  "name its media, the thumbnail comes with it")
            if record.state is not MediaState.COMPLETE:
                raise self._refuse(Code.MEDIA_INCOMPLETE, f"media {media_id} is not completed: "
                                   "send CompleteUpload first")
        self.stats.claimed += len(send.media_ids)

    # ------------------------------------------------------------------ download
    async def download(self, user: str, media_id: str, chat_id: str, seq: int) -> Download:
        record = await self._store.get_media(media_id)
        if record is None or record.thumbnail_of:
            raise self._refuse(Code.NOT_FOUND, f"no media {media_id[:128]}")
        if record.owner != user:
            await self._check_reference(user, record, chat_id, seq)
        if record.state is not MediaState.COMPLETE:
            raise self._refuse(Code.MEDIA_INCOMPLETE, f"media {media_id} is not completed")
        ttl = self.limits.url_ttl
        thumbnail = await self._store.get_media(record.thumbnail_id) if record.thumbnail_id else None
        if thumbnail is not None and thumbnail.state is not MediaState.COMPLETE:
            thumbnail = None
        self.stats.download_urls += 1
        return Download(record, self.objects.download_url(media_id, record.content_type, ttl),
                        now_ms() + ttl * 1000, thumbnail,
                        "" if thumbnail is None else self.objects.download_url(
                            thumbnail.media_id, thumbnail.content_type, ttl))

    async def _check_reference(self, user: str, record: MediaRecord, chat_id: str,
                               seq: int) -> None:
        """The caller sees message `seq` of `chat_id` and that message names the media."""
        if not chat_id or not seq:
            raise DomainError(Code.INVALID_ARGUMENT, "chat_id and seq of a message naming the "
                              "media are required (it is not your upload)")
        try:
            periods = await self._chats.visible_periods(chat_id, user)
        except DomainError as exc:
            raise self._refuse(exc.code, exc.detail) from None
        rows = await self._store.read_messages(chat_id, seq - 1, 1) \
            if any(period.covers(seq) for period in periods) else []
        if not rows or rows[0].seq != seq or record.media_id not in rows[0].media_ids:
            raise self._refuse(Code.NOT_FOUND, f"no message {seq} in {chat_id} that you can "
                               f"see names media {record.media_id}")

    # ------------------------------------------------------------------ orphans
    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self._sweep_interval)
            try:
                await self.sweep()
            except StoreError as exc:
                log.warning("media sweep stopped early: %s", exc)

    async def sweep(self) -> int:
        """Delete media never referenced within orphan_ttl of their creation; how many."""
        cutoff = now_ms() - int(self.limits.orphan_ttl * 1000)
        swept = 0
        while True:
            batch = await self._store.unreferenced_media(cutoff, SWEEP_BATCH)
            deleted = 0
            for record in batch:
                if await self._store.delete_media(record.media_id):
                    deleted += 1
                    swept += await self._delete_bytes(record)
            if len(batch) < SWEEP_BATCH or not deleted:
                break
        self.stats.swept += swept
        return swept

    def metrics(self) -> list[Metric]:
        s = self.stats
        refusals = [counter("media_refusals", "media requests and sends refused, by reason",
                            count, reason=reason) for reason, count in s.refused.items()]
        return [counter("media_upload_slots", "CreateUpload answered (dedups and resumes too)",
                        s.slots),
                counter("media_uploads_deduplicated", "CreateUpload of a file its owner "
                        "uploaded or began before", s.deduplicated),
                counter("media_uploads_completed", "uploads checked and completed", s.completed),
                counter("media_uploaded_bytes", "bytes of completed uploads", s.completed_bytes),
                counter("media_download_urls", "download URLs signed", s.download_urls),
                counter("media_references", "media referenced by accepted sends", s.claimed),
                counter("media_orphans_swept", "media deleted for never being referenced",
                        s.swept),
                counter("media_delete_failures", "objects whose bytes could not be deleted",
                        s.sweep_failures),
                *refusals, *self.objects.metrics()]
