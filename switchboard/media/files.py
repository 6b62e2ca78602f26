"""The local backend's directory: finished objects and the parts of uploads in progress.

    <dir>/objects/<id[:2]>/<id>     a completed media (what GET serves)
    <dir>/uploads/<id>/<n>          part n of an upload, renamed into place once whole
    <dir>/url.key                   the URL signing key (signing.py)

Everything here blocks (disk): the HTTP thread calls the part writer, the gateway calls the
rest through a worker thread. Bytes are moved in CHUNK pieces, never a whole file at once.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import uuid
from pathlib import Path

from switchboard.core.objects import ObjectMismatch, ObjectMissing

CHUNK = 1 << 20
_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}")


class MediaFiles:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.objects = root / "objects"
        self.uploads = root / "uploads"

    def create(self) -> None:
        self.objects.mkdir(parents=True, exist_ok=True)
        self.uploads.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def valid_key(key: str) -> bool:
        return bool(_KEY.fullmatch(key))

    def object_path(self, key: str) -> Path:
        return self.objects / key[:2] / key

    def part_path(self, key: str, number: int) -> Path:
        return self.uploads / key / str(number)

    def new_part(self, key: str, number: int) -> tuple[int, Path]:
        """A file to receive part `number` into: (fd, its temporary path); `keep_part` puts
        it in place once every byte arrived, `drop_part` throws it away."""
        folder = self.uploads / key
        folder.mkdir(exist_ok=True)
        spare = folder / f"{number}.{uuid.uuid4().hex}.tmp"
        return os.open(spare, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), spare

    def keep_part(self, spare: Path, key: str, number: int) -> None:
        os.replace(spare, self.part_path(key, number))

    @staticmethod
    def drop_part(spare: Path) -> None:
        spare.unlink(missing_ok=True)

    def parts(self, key: str) -> dict[int, int]:
        """Parts in place: number -> size."""
        try:
            entries = list(os.scandir(self.uploads / key))
        except FileNotFoundError:
            return {}
        return {int(e.name): e.stat().st_size for e in entries if e.name.isdigit()}

    def assemble(self, key: str, size: int, part_size: int, sha256: bytes) -> None:
        """Parts 1..n -> the object, checking sizes and the SHA-256 on the way (one read of
        each part); ObjectMissing or ObjectMismatch (the parts deleted) otherwise."""
        final = self.object_path(key)
        if final.exists():
            return
        count = max(1, -(-size // part_size))
        have = self.parts(key)
        missing = [n for n in range(1, count + 1)
                   if have.get(n) != min(part_size, size - (n - 1) * part_size)]
        if missing:
            raise ObjectMissing(missing)
        final.parent.mkdir(exist_ok=True)
        digest = hashlib.sha256()
        if count == 1:  # hash it where it is, then move it
            source = self.part_path(key, 1)
            with open(source, "rb", buffering=0) as part:
                _hash_file(part, digest)
            self._check(key, digest, sha256)
            _fsync(source)
            os.replace(source, final)
        else:
            spare = final.with_name(f"{key}.{uuid.uuid4().hex}.tmp")
            try:
                with open(spare, "wb", buffering=0) as out:
                    for number in range(1, count + 1):
                        with open(self.part_path(key, number), "rb", buffering=0) as part:
                            _hash_file(part, digest, out)
                    self._check(key, digest, sha256)
                    os.fsync(out.fileno())
                os.replace(spare, final)
            finally:
                spare.unlink(missing_ok=True)
        _fsync(final.parent)
        shutil.rmtree(self.uploads / key, ignore_errors=True)

    def _check(self, key: str, digest, sha256: bytes) -> None:
        if digest.digest() != sha256:
            shutil.rmtree(self.uploads / key, ignore_errors=True)
            raise ObjectMismatch("the uploaded bytes do not have the declared SHA-256")

    def delete(self, key: str) -> None:
        self.object_path(key).unlink(missing_ok=True)
        shutil.rmtree(self.uploads / key, ignore_errors=True)


def _hash_file(source, digest, copy_to=None) -> None:
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    while True:
        n = source.readinto(buffer)
        if not n:
            return
        digest.update(view[:n])
        if copy_to is not None:
            write_all(copy_to.fileno(), view[:n])


def write_all(fd: int, data) -> None:
    """os.write until every byte is written (a write may take fewer)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _fsync(path: Path) -> None:
    """fsync a file or a directory (its entries) by path."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
