"""Signed URLs of the local media port: HMAC-SHA256 over the method, the path, the expiry and
the parameters, so the HTTP thread checks a request without asking the store anything."""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import time
from pathlib import Path
from urllib.parse import urlencode

KEY_BYTES = 32


class BadSignature(Exception):
    """The URL was not signed by this server (or was changed), or it expired."""


class UrlSigner:
    def __init__(self, key: bytes) -> None:
        self._key = key

    def query(self, method: str, path: str, params: dict[str, str], ttl: int) -> str:
        """The query string (without "?") that makes `method path` valid for ttl seconds."""
        signed = dict(params, e=str(int(time.time()) + ttl))
        return urlencode({**signed, "s": self._mac(method, path, signed)})

    def verify(self, method: str, path: str, query: dict[str, str]) -> dict[str, str]:
        """The signed parameters of a request; BadSignature when the signature does not match
        or the URL expired."""
        params = {k: v for k, v in query.items() if k != "s"}
        if not hmac.compare_digest(self._mac(method, path, params), query.get("s", "")):
            raise BadSignature("bad signature")
        expires = params.get("e", "")
        if not expires.isdigit() or int(expires) < time.time():
            raise BadSignature("URL expired")
        return params

    def _mac(self, method: str, path: str, params: dict[str, str]) -> str:
        text = "\n".join([method, path, *(f"{k}={v}" for k, v in sorted(params.items()))])
        digest = hmac.new(self._key, text.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def load_key(path: Path) -> bytes:
    """The signing key kept in the media directory, created (0600) on first use: every process
    serving the directory signs and checks with the same key. Written aside and linked into
    place, so a process starting at the same moment reads a whole key or makes none."""
    if not path.exists():
        spare = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        fd = os.open(spare, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(os.urandom(KEY_BYTES))
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(spare, path)
        except FileExistsError:
            pass
        finally:
            os.unlink(spare)
    key = path.read_bytes()
    if len(key) != KEY_BYTES:
        raise OSError(f"{path} does not hold a {KEY_BYTES}-byte key")
    return key
