"""Device tokens: JWTs naming a user (`sub`) and a device (`dev`).

Two kinds of signature. HS256 with the server's own secret is for development (`switchboard
token` mints them). In production a company's auth service signs with its private key (RS256,
ES256 or EdDSA) and the gateway holds only the public keys, by `kid`, from a JWKS
(`SigningKeys`, filled by gateway/jwks.py from a file or URL and refreshed without a restart).
`aud` and `iss` of those tokens are checked when configured.

Verification is done once per connection at the upgrade (or on the Auth frame), so PyJWT's
cost is off the message path. It never waits for the network: a token whose `kid` is not
known yet asks for a refresh and fails with KeyPending (the device retries shortly).

A device reconnects with the same token many times (every network change, every storm), so
verified tokens are remembered (`VerifiedTokens`): a reconnect with a token seen before skips
the signature check but not its expiry, which is checked on every use. Replacing the key set
forgets them all (a key withdrawn from the JWKS must not live on in the cache). Revoking a
device is not a token matter: admission (core/devices.py) refuses it, cached token or not.
A token not in that cache but with a header PyJWT accepted before is checked without PyJWT's
overhead when it is plain (fast_tokens.py); PyJWT decides every other one, bad ones included.
"""
from __future__ import annotations

import hashlib
import time
from typing import Callable

import jwt

from .fast_tokens import FastTokens, hs256
from .ids import valid_id
from .lru import LRU

ALGORITHM = "HS256"
ASYMMETRIC = ("RS256", "ES256", "EdDSA")
#: Verified tokens remembered per process: each entry is ~200 bytes, so the default costs at
#: most ~13 MiB and covers the reconnects of a worker's devices within a storm.
VERIFIED_CACHE = 65_536


class TokenError(Exception):
    """The token is unusable; str() is the reason sent to the client."""


class KeyPending(TokenError):
    """Signed with a key id not known yet; a refresh of the key set was asked for: retry."""


class Principal:
    __slots__ = ("user_id", "device_id")

    def __init__(self, user_id: str, device_id: str) -> None:
        self.user_id = user_id
        self.device_id = device_id


class SigningKeys:
    """Public keys by kid, replaced whole when the key set is reloaded. `on_unknown` is asked
    for a refresh when a token names an unknown kid; it answers whether one is on its way
    (False: refreshed recently, so the kid is simply not valid)."""

    def __init__(self) -> None:
        self._keys: dict[str, jwt.PyJWK] = {}
        self.on_unknown: Callable[[], bool] = lambda: False
        self.generation = 0  # bumped by every replace: what was verified before is stale

    def replace(self, key_set: jwt.PyJWKSet) -> None:
        self._keys = {key.key_id: key for key in key_set.keys if key.key_id}
        self.generation += 1

    def __len__(self) -> int:
        return len(self._keys)

    def known(self, kid: str | None) -> jwt.PyJWK | None:
        """The key named `kid`, asking for no refresh when there is none."""
        return self._keys.get(kid) if isinstance(kid, str) else None

    def get(self, kid: object) -> jwt.PyJWK:
        key = self.known(kid)
        if key is not None:
            return key
        if isinstance(kid, str) and self.on_unknown():
            raise KeyPending("signing key unknown, retry")
        raise TokenError("invalid token")


class VerifiedTokens:
    """Tokens whose signature and claims were checked, by a 128-bit digest of the token (a
    digest, not the token: a third of the memory, and nothing reusable is kept), with the
    principal, the expiry and the key-set generation they were checked under. Bounded LRU."""
    __slots__ = ("_entries", "hits", "misses")

    def __init__(self, capacity: int) -> None:
        self._entries: LRU[bytes, tuple[Principal, float, int]] = LRU(capacity)
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(token: str) -> bytes:
        return hashlib.blake2b(token.encode(), digest_size=16).digest()

    def get(self, key: bytes, generation: int) -> tuple[Principal, float] | None:
        entry = self._entries.use(key)
        if entry is None or entry[2] != generation:
            self.misses += 1
            return None
        self.hits += 1
        return entry[0], entry[1]

    def put(self, key: bytes, principal: Principal, expires: float, generation: int) -> None:
        self._entries.put(key, (principal, expires, generation))

    def drop(self, key: bytes) -> None:
        self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)


class TokenAuthority:
    def __init__(self, secret: bytes | None, *, leeway: float = 5.0,
                 keys: SigningKeys | None = None, algorithms: tuple[str, ...] = ASYMMETRIC,
                 audience: str = "", issuer: str = "", cache: int = VERIFIED_CACHE) -> None:
        if secret is not None and len(secret) < 32:
            raise ValueError("the signing key must be at least 32 bytes")
        self._secret = secret
        self.leeway = leeway
        self._keys = keys
        self._algorithms = algorithms
        self._audience = audience or None
        self._issuer = issuer or None
        self.verified = VerifiedTokens(cache)
        self.fast = FastTokens()
        self._hs256 = hs256(secret) if secret is not None else None

    def mint(self, user_id: str, device_id: str, ttl: float = 30 * 86400) -> str:
        """An HS256 token (development, tests)."""
        if self._secret is None:
            raise ValueError("no HS256 secret configured: tokens come from the auth service")
        if not (valid_id(user_id) and valid_id(device_id)):
            raise ValueError("user and device ids must match [A-Za-z0-9_.:-]{1,128}")
        now = int(time.time())
        claims = {"sub": user_id, "dev": device_id, "iat": now, "exp": now + int(ttl)}
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def verify(self, token: str) -> Principal:
        """The token's principal; a token verified before is only checked for expiry."""
        key = VerifiedTokens.key(token)
        generation = self._keys.generation if self._keys is not None else 0
        cached = self.verified.get(key, generation)
        if cached is not None:
            principal, expires = cached
            if time.time() <= expires + self.leeway:
                return principal
            self.verified.drop(key)
            raise TokenError("token expired")
        principal, expires = self._fast_check(token) or self._check(token)
        self.verified.put(key, principal, expires, generation)
        return principal

    def _fast_check(self, token: str) -> tuple[Principal, float] | None:
        """Under a header PyJWT accepted before, with the key and algorithm `_check` would pick
        for it: the principal and `exp`, or None for PyJWT to decide."""
        header = self.fast.header(token)
        if header is None:
            return None
        algorithm, kid = header
        audience = issuer = None
        if algorithm == ALGORITHM and self._hs256 is not None:
            verify = self._hs256
        elif algorithm in self._algorithms and self._keys is not None:
            signing_key = self._keys.known(kid)
            if signing_key is None or signing_key.algorithm_name != algorithm:
                return None
            verify = _verifier(signing_key)
            audience, issuer = self._audience, self._issuer
        else:
            return None
        found = self.fast.check(token, verify, leeway=self.leeway, audience=audience,
                                issuer=issuer)
        if found is None:
            return None
        user, device, expires = found
        return Principal(user, device), expires

    def _check(self, token: str) -> tuple[Principal, float]:
        """Signature and claims, the expensive part: the principal and its `exp`."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenError("invalid token") from None
        algorithm = header.get("alg")
        audience = issuer = None
        if algorithm == ALGORITHM and self._secret is not None:
            key = self._secret
        elif algorithm in self._algorithms and self._keys is not None:
            signing_key = self._keys.get(header.get("kid"))
            if signing_key.algorithm_name != algorithm:
                raise TokenError("invalid token")
            key = signing_key.key
            audience, issuer = self._audience, self._issuer
        else:
            raise TokenError("invalid token")
        try:
            claims = jwt.decode(token, key, algorithms=[algorithm], leeway=self.leeway,
                                audience=audience, issuer=issuer,
                                options={"require": ["exp", "sub", "dev"]})
        except jwt.ExpiredSignatureError:
            raise TokenError("token expired") from None
        except jwt.PyJWTError:
            raise TokenError("invalid token") from None
        user, device = claims["sub"], claims["dev"]
        if not (isinstance(user, str) and isinstance(device, str) and valid_id(user)
                and valid_id(device)):
            raise TokenError("invalid token")
        self.fast.learn(token, header)
        return Principal(user, device), float(claims["exp"])


def _verifier(signing_key: jwt.PyJWK):
    """The signature check PyJWT makes with this key: its algorithm's, on the key as PyJWT
    prepares it."""
    algorithm = signing_key.Algorithm
    prepared = algorithm.prepare_key(signing_key.key)
    return lambda signing_input, signature: algorithm.verify(signing_input, prepared, signature)
