"""Media in S3-compatible object storage (AWS S3, MinIO, Ceph RGW, R2, ...), through boto3.

Devices PUT and GET the bytes with presigned URLs (SigV4, `url_ttl`), so no byte passes through
the gateway. What the server itself asks S3 is small and rare (start and complete a multipart
upload, list its parts, look at an object, delete): boto3 is blocking, so those calls run on a
few threads of their own, never on the event loop; presigning is local computation.

Checks at completion: the size always (HeadObject, or the listed parts); the SHA-256 by S3
itself for a single PUT (the URL signs `x-amz-checksum-sha256`, and S3 refuses a body that
does not match; the stored checksum is compared when the service reports one). A multipart
upload's whole-file SHA-256 cannot be checked without reading the bytes back, which the server
does not do: the SDK checks it on download (the hash is in MediaUrls). Failures of S3 itself
are StoreError: UNAVAILABLE to the device, which retries.

Set a lifecycle rule on the bucket that aborts incomplete multipart uploads after a day or two:
an upload the sweep could not abort (S3 down at the time) is then cleaned by S3 itself.
"""
from __future__ import annotations

import asyncio
import base64
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, TypeVar

from switchboard.config import ConfigError, MediaConfig, read_secret_file
from switchboard.core.objects import ObjectMismatch, ObjectMissing, ObjectStore, SignedRequest
from switchboard.core.store import StoreError

T = TypeVar("T")

THREADS = 4
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class S3Settings:
    bucket: str
    prefix: str = "media/"
    region: str = "us-east-1"
    endpoint: str = ""
    addressing: str = "auto"   # auto, path or virtual
    access_key: str = ""
    secret_key: str = ""
    session_token: str = ""
    create_bucket: bool = False

    @classmethod
    def from_config(cls, media: MediaConfig) -> S3Settings:
        secret = media.s3_secret_key
        if media.s3_secret_key_file:
            secret = read_secret_file(media.s3_secret_key_file, "media.s3_secret_key_file").decode()
        return cls(media.s3_bucket, media.s3_prefix, media.s3_region, media.s3_endpoint,
                   media.s3_addressing, media.s3_access_key, secret, media.s3_session_token,
                   media.s3_create_bucket)


class S3Objects(ObjectStore):
    def __init__(self, settings: S3Settings) -> None:
        self.settings = settings
        self._client: Any = None
        self._threads: ThreadPoolExecutor | None = None

    # ------------------------------------------------------------------ lifecycle
    def where(self) -> str:
        s = self.settings
        return f"s3://{s.bucket}/{s.prefix} ({s.endpoint or 'AWS ' + s.region})"

    async def open(self) -> None:
        """A client, then the bucket must answer (created when allowed): a wrong bucket,
        endpoint or credentials stop the start with a ConfigError naming the setting."""
        try:
            import boto3
            from botocore.config import Config as BotoConfig
        except ImportError:
            raise ConfigError("media.backend: s3 needs boto3 (pip install 'switchboard[s3]')") \
                from None
        s = self.settings
        credentials = {} if not s.access_key else {
            "aws_access_key_id": s.access_key, "aws_secret_access_key": s.secret_key,
            "aws_session_token": s.session_token or None}
        self._client = boto3.session.Session().client(
            "s3", region_name=s.region, endpoint_url=s.endpoint or None, config=BotoConfig(
                signature_version="s3v4", s3={"addressing_style": s.addressing},
                connect_timeout=CONNECT_TIMEOUT, read_timeout=READ_TIMEOUT,
                retries={"max_attempts": 3, "mode": "standard"}), **credentials)
        self._threads = ThreadPoolExecutor(THREADS, thread_name_prefix="s3")
        try:
            await self._call(self._client.head_bucket, Bucket=s.bucket)
        except StoreError as exc:
            if not (s.create_bucket and _status(exc.__cause__) == 404):
                await self.close()
                raise ConfigError(f"media.s3_bucket: bucket {s.bucket!r} at "
                                  f"{s.endpoint or 'AWS'} does not answer: {exc}") from None
            await self._call(self._client.create_bucket, Bucket=s.bucket)

    async def close(self) -> None:
        threads, self._threads = self._threads, None
        if threads is not None:
            await asyncio.to_thread(threads.shutdown)

    async def _call(self, method: Callable[..., T], **params: Any) -> T:
        """A boto3 call on the S3 threads; its failures become StoreError (cause kept)."""
        if self._threads is None:
            raise StoreError("object storage is not open")
        from botocore.exceptions import BotoCoreError, ClientError
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._threads, partial(method, **params))
        except (BotoCoreError, ClientError) as exc:
            raise StoreError(f"object storage: {exc}") from exc

    def _key(self, key: str) -> str:
        return f"{self.settings.prefix}{key}"

    def _presign(self, operation: str, ttl: int, **params: Any) -> str:
        return self._client.generate_presigned_url(
            operation, Params={"Bucket": self.settings.bucket, **params}, ExpiresIn=ttl)

    # ------------------------------------------------------------------ upload
    async def begin_upload(self, key: str, content_type: str, multipart: bool) -> str:
        if not multipart:
            return ""
        answer = await self._call(self._client.create_multipart_upload,
                                  Bucket=self.settings.bucket, Key=self._key(key),
                                  ContentType=content_type)
        return answer["UploadId"]

    def part_url(self, key: str, upload_id: str, number: int, size: int, content_type: str,
                 sha256: bytes, ttl: int) -> SignedRequest:
        if upload_id:
            return SignedRequest(self._presign("upload_part", ttl, Key=self._key(key),
                                               UploadId=upload_id, PartNumber=number),
                                 {"Content-Type": "application/octet-stream"})
        checksum = base64.b64encode(sha256).decode()
        return SignedRequest(self._presign("put_object", ttl, Key=self._key(key),
                                           ContentType=content_type, ChecksumSHA256=checksum),
                             {"Content-Type": content_type, "x-amz-checksum-sha256": checksum})

    async def uploaded_parts(self, key: str, upload_id: str) -> dict[int, int]:
        if upload_id:
            return {part["PartNumber"]: part["Size"]
                    for part in await self._parts(key, upload_id)}
        head = await self._head(key)
        return {} if head is None else {1: head["ContentLength"]}

    async def _parts(self, key: str, upload_id: str) -> list[dict]:
        """Every part of a multipart upload ([] when S3 no longer knows the upload)."""
        parts: list[dict] = []
        marker = 0
        while True:
            try:
                page = await self._call(self._client.list_parts, Bucket=self.settings.bucket,
                                        Key=self._key(key), UploadId=upload_id,
                                        PartNumberMarker=marker)
            except StoreError as exc:
                if _status(exc.__cause__) == 404:
                    return parts
                raise
            parts += page.get("Parts", [])
            if not page.get("IsTruncated"):
                return parts
            marker = page["NextPartNumberMarker"]

    async def _head(self, key: str) -> dict | None:
        try:
            return await self._call(self._client.head_object, Bucket=self.settings.bucket,
                                    Key=self._key(key), ChecksumMode="ENABLED")
        except StoreError as exc:
            if _status(exc.__cause__) == 404:
                return None
            raise

    async def complete_upload(self, key: str, upload_id: str, size: int, part_size: int,
                              sha256: bytes) -> None:
        if upload_id:
            parts = {part["PartNumber"]: part for part in await self._parts(key, upload_id)}
            if not parts and (head := await self._head(key)) is not None \
                    and head["ContentLength"] == size:
                return  # completed before (the answer was lost)
            count = max(1, -(-size // part_size))
            missing = [n for n in range(1, count + 1) if n not in parts]
            if missing:
                raise ObjectMissing(missing)
            wrong = [n for n in range(1, count + 1)
                     if parts[n]["Size"] != min(part_size, size - (n - 1) * part_size)]
            if wrong:
                await self.delete(key, upload_id)
                raise ObjectMismatch(f"parts {wrong} do not have the planned sizes")
            await self._call(self._client.complete_multipart_upload,
                             Bucket=self.settings.bucket, Key=self._key(key), UploadId=upload_id,
                             MultipartUpload={"Parts": [
                                 {"PartNumber": n, "ETag": parts[n]["ETag"]}
                                 for n in range(1, count + 1)]})
            return
        head = await self._head(key)
        if head is None:
            raise ObjectMissing([1])
        checksum = head.get("ChecksumSHA256")
        if head["ContentLength"] != size or \
                checksum is not None and checksum != base64.b64encode(sha256).decode():
            await self.delete(key, upload_id)
            raise ObjectMismatch("the uploaded bytes do not have the declared size and SHA-256")

    # ------------------------------------------------------------------ download, delete
    def download_url(self, key: str, content_type: str, ttl: int) -> str:
        return self._presign("get_object", ttl, Key=self._key(key),
                             ResponseContentType=content_type)

    async def delete(self, key: str, upload_id: str) -> None:
        if upload_id:
            try:
                await self._call(self._client.abort_multipart_upload,
                                 Bucket=self.settings.bucket, Key=self._key(key),
                                 UploadId=upload_id)
            except StoreError as exc:
                if _status(exc.__cause__) != 404:
                    raise
        await self._call(self._client.delete_object, Bucket=self.settings.bucket,
                         Key=self._key(key))


def _status(exc: BaseException | None) -> int:
    """The HTTP status of a botocore ClientError (0 for anything else)."""
    response = getattr(exc, "response", None) or {}
    return int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
