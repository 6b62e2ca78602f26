"""Object storage for media bytes: the port core/media.py signs URLs through.

Devices move the bytes themselves, with HTTP requests to URLs signed here; the gateway never
carries them. Implementations, one per file in switchboard/media/: `local.LocalObjects` (a
directory, served by the server's own media HTTP port: the embedded default) and
`s3.S3Objects` (S3-compatible object storage, for production).

An upload is a plan of parts (one part up to the single-PUT size), each PUT to its own URL;
`complete_upload` then checks what arrived and makes the object readable. Keys are media ids.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field

from .metrics import Metric


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """An HTTP request a device makes as it is: the URL and the headers it must send."""
    url: str
    headers: dict[str, str] = field(default_factory=dict)


class ObjectMissing(Exception):
    """Parts of an upload are not there (yet): upload them, then complete again."""

    def __init__(self, missing: list[int]) -> None:
        super().__init__(f"parts {_ranges(missing)} are not uploaded")
        self.missing = missing


class ObjectMismatch(Exception):
    """What was uploaded differs from what was declared (size or SHA-256); the bytes are gone."""


class ObjectStore(abc.ABC):
    @abc.abstractmethod
    async def open(self) -> None:
        """Get ready (create the directory, start the HTTP port, check the bucket)."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    def where(self) -> str:
        """Where the bytes go, for the log line the gateway writes once it serves."""

    @abc.abstractmethod
    async def begin_upload(self, key: str, content_type: str, multipart: bool) -> str:
        """Start an upload; the id its parts are signed for ("" when none is needed)."""

    @abc.abstractmethod
    def part_url(self, key: str, upload_id: str, number: int, size: int, content_type: str,
                 sha256: bytes, ttl: int) -> SignedRequest:
        """A PUT of part `number` (of `size` bytes), valid for `ttl` seconds. `sha256` is the
        whole file's, for a store that checks it during a single PUT (upload_id "")."""

    @abc.abstractmethod
    async def uploaded_parts(self, key: str, upload_id: str) -> dict[int, int]:
        """The parts stored so far: number -> size (what a resumed upload skips)."""

    @abc.abstractmethod
    async def complete_upload(self, key: str, upload_id: str, size: int, part_size: int,
                              sha256: bytes) -> None:
        """Assemble the parts into the object and check it: ObjectMissing when parts are not
        there, ObjectMismatch (bytes deleted) when the size or the SHA-256 differ. The bytes
        are never read on the event loop."""

    @abc.abstractmethod
    def download_url(self, key: str, content_type: str, ttl: int) -> str:
        """A GET of the object (Range requests included), valid for `ttl` seconds."""

    @abc.abstractmethod
    async def delete(self, key: str, upload_id: str) -> None:
        """Delete the object and whatever its unfinished upload left; absent is fine."""

    def metrics(self) -> list[Metric]:
        """The backend's own numbers for /metrics (the local HTTP port's bytes served)."""
        return []


def _ranges(numbers: list[int]) -> str:
    """[1, 2, 3, 7] -> "1-3, 7"."""
    spans: list[list[int]] = []
    for n in sorted(numbers):
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)
