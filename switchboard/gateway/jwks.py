"""Loads the auth service's public keys (a JWKS file or URL) into core.auth.SigningKeys and
keeps them fresh: every `auth.jwks_refresh` seconds, and soon after a token names an unknown
`kid` (a key rotation), but never more often than once per `auth.jwks_min_refetch` seconds, so
tokens with made-up kids cannot make the gateway hammer the auth service. A failed refresh
keeps the keys it had. The URL is fetched by PyJWT's PyJWKClient in a thread: the event loop
never waits for it.
"""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import jwt

from switchboard.core.auth import SigningKeys
from switchboard.core.tasks import watch

log = logging.getLogger(__name__)


class JwksError(Exception):
    """The key set could not be loaded; str() says from where and why."""


class JwksRefresher:
    def __init__(self, keys: SigningKeys, *, url: str = "", path: str = "",
                 interval: float, min_interval: float) -> None:
        self.keys = keys
        self.source = url or path
        self._client = jwt.PyJWKClient(url, cache_jwk_set=False, timeout=10) if url else None
        self._path = path
        self._interval = interval
        self._min_interval = min_interval
        self._last_attempt = -float("inf")
        self._soon: asyncio.Task | None = None
        self._periodic: asyncio.Task | None = None
        self.refreshes = 0
        keys.on_unknown = self.request

    async def start(self) -> None:
        """Load once (raising JwksError: the server must not start without keys), then keep
        refreshing in the background."""
        await self._load()
        self._periodic = watch(asyncio.ensure_future(self._every_interval()))

    async def stop(self) -> None:
        for task in (self._periodic, self._soon):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    def request(self) -> bool:
        """A token named an unknown kid: refresh now unless one ran within min_interval.
        True when a refresh is on its way (the token may be good after it)."""
        if self._soon is not None:
            return True
        loop = asyncio.get_running_loop()
        if loop.time() - self._last_attempt < self._min_interval:
            return False
        self._soon = watch(asyncio.ensure_future(self._refresh()))
        self._soon.add_done_callback(self._refreshed)
        return True

    def _refreshed(self, task: asyncio.Task) -> None:
        self._soon = None

    async def _every_interval(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self._refresh()

    async def _refresh(self) -> None:
        try:
            await self._load()
        except JwksError as exc:
            log.warning("%s; keeping the %d keys loaded before", exc, len(self.keys))

    async def _load(self) -> None:
        self._last_attempt = asyncio.get_running_loop().time()
        try:
            if self._client is not None:
                key_set = await asyncio.to_thread(self._client.get_jwk_set, True)
            else:
                key_set = jwt.PyJWKSet.from_json(
                    await asyncio.to_thread(Path(self._path).read_text))
        except (OSError, ValueError, jwt.PyJWTError) as exc:
            raise JwksError(f"JWKS from {self.source} unusable: {exc}") from None
        self.keys.replace(key_set)
        self.refreshes += 1
        log.info("loaded %d signing keys from %s", len(self.keys), self.source)
