"""The signature and claims check of a token whose header the gateway has seen before, without
PyJWT's per-call overhead (~50 us a token, most of it re-checking base64 character by
character and parsing the token twice; this path is ~8 us for HS256).

Why it matters: with W workers a device lands on a random one (SO_REUSEPORT), so 1 - 1/W of a
reconnect storm's tokens are new to the worker that gets them and miss its verified-token cache
(auth.py, `VerifiedTokens`).

Why it cannot accept what PyJWT refuses: it is only tried for a header PyJWT accepted before (a
token's header segment is the same bytes for every token an issuer signs with one key), and
only accepts a token that passes every check PyJWT would make with the same options, on claims
of the plainest types (integer times, string ids); anything else, valid or not, returns None
and goes to PyJWT, whose verdict and error then stand. So a bad token gets the same answer as
before, only a good one gets it faster. tests/unit/test_fast_tokens.py compares both paths on
generated tokens.
"""
from __future__ import annotations

import base64
import binascii
import hmac
import json
import re
import time
from collections.abc import Callable

from .ids import valid_id
from .lru import LRU

#: Distinct token headers remembered: one per (issuer key, algorithm), so a few in practice.
KNOWN_HEADERS = 64
#: The header members PyJWT's verdict on a header can rest on here; a header with any other
#: member (crit, b64, jku, x5u...) always goes to PyJWT.
PLAIN_HEADER = frozenset({"alg", "typ", "kid"})

_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")

Verify = Callable[[bytes, bytes], bool]
"""verify(signing_input, signature): the signature check for one header's algorithm and key."""


class FastTokens:
    """Header segments PyJWT accepted, and the check of a token under one of them."""
    __slots__ = ("_headers", "tried", "accepted")

    def __init__(self, capacity: int = KNOWN_HEADERS) -> None:
        self._headers: LRU[str, tuple[str, str | None]] = LRU(capacity)  # segment -> alg, kid
        self.tried = 0     # tokens under a known header
        self.accepted = 0  # ... that this path accepted (the rest went to PyJWT)

    def learn(self, token: str, header: dict) -> None:
        """PyJWT accepted `token`, whose decoded header is `header`: later tokens with the same
        header segment may take this path."""
        if header.keys() <= PLAIN_HEADER and header.get("typ", "JWT") == "JWT" and \
                isinstance(header.get("alg"), str) and isinstance(header.get("kid", ""), str):
            self._headers.put(token.partition(".")[0], (header["alg"], header.get("kid")))

    def header(self, token: str) -> tuple[str, str | None] | None:
        """(alg, kid) of the token's header if PyJWT accepted that header before."""
        found = self._headers.use(token.partition(".")[0])
        if found is not None:
            self.tried += 1
        return found

    def check(self, token: str, verify: Verify, *, leeway: float, audience: str | None,
              issuer: str | None) -> tuple[str, str, float] | None:
        """(user, device, exp) when the token is good by every check PyJWT makes (signature by
        `verify`, the key and algorithm its header names); None when this path is not sure, so
        PyJWT decides."""
        parts = token.split(".")
        if len(parts) != 3:
            return None
        header, payload_segment, signature_segment = parts
        payload = _decoded(payload_segment)
        signature = _decoded(signature_segment)
        if payload is None or signature is None or \
                not verify(f"{header}.{payload_segment}".encode(), signature):
            return None
        try:
            claims = json.loads(payload)
        except ValueError:
            return None
        if type(claims) is not dict:
            return None
        found = _principal(claims, time.time(), leeway, audience, issuer)
        if found is not None:
            self.accepted += 1
        return found


def hs256(secret: bytes) -> Verify:
    def verify(signing_input: bytes, signature: bytes) -> bool:
        return hmac.compare_digest(hmac.digest(secret, signing_input, "sha256"), signature)
    return verify


def _decoded(segment: str) -> bytes | None:
    """A base64url segment in the one spelling PyJWT accepts that this path handles: no
    padding, nothing outside the alphabet, no stray bits in the last character."""
    if not _SEGMENT.fullmatch(segment) or len(segment) % 4 == 1:
        return None
    try:
        decoded = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        return None
    if base64.urlsafe_b64encode(decoded).rstrip(b"=") != segment.encode():
        return None
    return decoded


def _principal(claims: dict, now: float, leeway: float, audience: str | None,
               issuer: str | None) -> tuple[str, str, float] | None:
    """PyJWT's claim checks (required exp, sub, dev; iat, nbf, exp against the clock; aud,
    iss, sub, jti) for the plainest claim types, then the ids."""
    exp, user, device = claims.get("exp"), claims.get("sub"), claims.get("dev")
    if type(exp) is not int or exp <= now - leeway:
        return None
    for name in ("iat", "nbf"):
        if name in claims and (type(claims[name]) is not int or claims[name] > now + leeway):
            return None
    aud = claims.get("aud")
    if audience is None:
        if aud:
            return None
    elif not (aud == audience or (type(aud) is list and audience in aud
                                  and all(type(a) is str for a in aud))):
        return None
    if issuer is not None and claims.get("iss") != issuer:
        return None
    if "jti" in claims and type(claims["jti"]) is not str:
        return None
    if type(user) is not str or type(device) is not str or not (valid_id(user)
                                                                and valid_id(device)):
        return None
    return user, device, float(exp)
