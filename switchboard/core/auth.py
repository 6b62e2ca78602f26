"""Device tokens: HS256 JWTs naming a user (`sub`) and a device (`dev`).

Verification is done once per connection at the upgrade (or on the Auth frame), so PyJWT's
cost is off the message path.
"""
from __future__ import annotations

import time

import jwt

from .ids import valid_id

ALGORITHM = "HS256"


class TokenError(Exception):
    """The token is unusable; str() is the reason sent to the client."""


class Principal:
    __slots__ = ("user_id", "device_id")

    def __init__(self, user_id: str, device_id: str) -> None:
        self.user_id = user_id
        self.device_id = device_id


class TokenAuthority:
    def __init__(self, secret: bytes, *, leeway: float = 5.0) -> None:
        if len(secret) < 32:
            raise ValueError("the signing key must be at least 32 bytes")
        self._secret = secret
        self._leeway = leeway

    def mint(self, user_id: str, device_id: str, ttl: float = 30 * 86400) -> str:
        if not (valid_id(user_id) and valid_id(device_id)):
            raise ValueError("user and device ids must match [A-Za-z0-9_.:-]{1,128}")
        now = int(time.time())
        claims = {"sub": user_id, "dev": device_id, "iat": now, "exp": now + int(ttl)}
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def verify(self, token: str) -> Principal:
        try:
            claims = jwt.decode(token, self._secret, algorithms=[ALGORITHM], leeway=self._leeway,
                                options={"require": ["exp", "sub", "dev"]})
        except jwt.ExpiredSignatureError:
            raise TokenError("token expired") from None
        except jwt.PyJWTError:
            raise TokenError("invalid token") from None
        user, device = claims["sub"], claims["dev"]
        if not (isinstance(user, str) and isinstance(device, str) and valid_id(user)
                and valid_id(device)):
            raise TokenError("invalid token")
        return Principal(user, device)
