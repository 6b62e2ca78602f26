"""The token check without PyJWT (core/fast_tokens.py) against PyJWT itself: on generated
tokens it accepts nothing PyJWT refuses, and the bad tokens that reach it (expired, another
key, tampered, a rotated key) get PyJWT's answer."""
from __future__ import annotations

import base64
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from switchboard.core.auth import KeyPending, SigningKeys, TokenAuthority, TokenError

SECRET = b"s" * 40
AUDIENCE = "switchboard"
ISSUER = "https://auth.test"


def es256_key(seed: int, kid: str):
    private = ec.derive_private_key(seed, ec.SECP256R1())
    jwk = jwt.get_algorithm_by_name("ES256").to_jwk(private.public_key(), as_dict=True)
    return private, {**jwk, "kid": kid, "alg": "ES256"}


PRIVATE_1, JWK_1 = es256_key(0xC0FFEE, "k1")
PRIVATE_2, JWK_2 = es256_key(0xBEEF, "k2")


def authority(*jwks: dict) -> TokenAuthority:
    keys = SigningKeys()
    keys.replace(jwt.PyJWKSet(list(jwks or [JWK_1])))
    return TokenAuthority(SECRET, keys=keys, audience=AUDIENCE, issuer=ISSUER)


def signed(claims: dict, algorithm: str, key, kid: str | None = None) -> str:
    """A JWS as an issuer makes it, whatever the claims hold (PyJWT's encode refuses some)."""
    header = {"alg": algorithm, "typ": "JWT", **({"kid": kid} if kid else {})}
    signing_input = ".".join(segment(json.dumps(part, separators=(",", ":")).encode())
                             for part in (header, claims))
    signer = jwt.get_algorithm_by_name(algorithm)
    signature = signer.sign(signing_input.encode(), signer.prepare_key(key))
    return f"{signing_input}.{segment(signature)}"


def segment(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256(claims: dict, secret: bytes = SECRET) -> str:
    return signed(claims, "HS256", secret)


def es256(claims: dict, private=PRIVATE_1, kid: str = "k1") -> str:
    return signed(claims, "ES256", private, kid)


def good(**claims) -> dict:
    now = int(time.time())
    return {"sub": "alice", "dev": "phone", "iat": now, "exp": now + 600, **claims}


def pyjwt_verdict(tokens: TokenAuthority, token: str):
    """What PyJWT alone makes of the token: (user, device, exp) or the refusal's reason."""
    try:
        principal, expires = tokens._check(token)
    except TokenError as exc:
        return type(exc), str(exc)
    return principal.user_id, principal.device_id, expires


def fast_verdict(tokens: TokenAuthority, token: str):
    found = tokens._fast_check(token)
    return None if found is None else (found[0].user_id, found[0].device_id, found[1])


def primed(tokens: TokenAuthority, *tokens_seen: str) -> TokenAuthority:
    """PyJWT has accepted these, so their headers take the fast path from now on."""
    for token in tokens_seen:
        tokens.verify(token)
    return tokens


# ---------------------------------------------------------------------- generated tokens
NOW = int(time.time())
GONE = object()  # an override that removes the claim
times = st.one_of(st.integers(NOW - 100, NOW + 100), st.none(), st.booleans(),
                  st.floats(NOW - 100, NOW + 100), st.just(str(NOW + 100)), st.just([NOW]))
ids = st.one_of(st.sampled_from(["bob", "tablet", "", "bad id", "a" * 129, "ü", "x:y"]),
                st.none(), st.integers())
texts = st.one_of(st.sampled_from([AUDIENCE, ISSUER, "", "other", [AUDIENCE], [AUDIENCE, "x"],
                                   ["x"], [], [AUDIENCE, 1]]), st.none(), st.integers())
overrides = st.dictionaries(
    st.sampled_from(["sub", "dev", "exp", "iat", "nbf", "aud", "iss", "jti", "extra"]),
    st.one_of(st.just(GONE), times, ids, texts), max_size=2)


def claims_with(base: dict, changes: dict) -> dict:
    claims = {**base, **changes}
    return {name: value for name, value in claims.items() if value is not GONE}


def tamper(token: str, how: int, where: int) -> str:
    """One of a few manglings of the token's text (0: none)."""
    if how == 0:
        return token
    if how == 1:  # one character changed
        i = where % len(token)
        return token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1:]
    if how == 2:  # padding on a segment
        parts = token.split(".")
        parts[where % 3] += "=="
        return ".".join(parts)
    if how == 3:  # a character outside the alphabet
        i = where % len(token)
        return token[:i] + "!" + token[i:]
    head, payload, signature = token.split(".")
    return ".".join((head, payload, base64.urlsafe_b64encode(b"x" * 32).decode()))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(changes=overrides, asymmetric=st.booleans(), other_key=st.booleans(),
       how=st.sampled_from([0, 0, 0, 1, 2, 3, 4]), where=st.integers(0, 10_000))
def test_accepts_nothing_pyjwt_refuses(changes, asymmetric, other_key, how, where):
    tokens = primed(authority(), hs256(good()),
                    es256(good(aud=AUDIENCE, iss=ISSUER)))
    base = good(aud=AUDIENCE, iss=ISSUER) if asymmetric else good()
    claims = claims_with(base, changes)
    if asymmetric:
        token = es256(claims, PRIVATE_2 if other_key else PRIVATE_1)
    else:
        token = hs256(claims, b"o" * 40 if other_key else SECRET)
    token = tamper(token, how, where)
    fast = fast_verdict(tokens, token)
    if fast is not None:
        assert fast == pyjwt_verdict(tokens, token)


@pytest.mark.parametrize("asymmetric", [False, True])
def test_plain_good_tokens_take_the_fast_path(asymmetric):
    tokens = primed(authority(), hs256(good()), es256(good(aud=AUDIENCE, iss=ISSUER)))
    extra = {"aud": AUDIENCE, "iss": ISSUER} if asymmetric else {}
    for i in range(20):
        claims = good(sub=f"u{i}", **extra)
        token = es256(claims) if asymmetric else hs256(claims)
        assert tokens.verify(token).user_id == f"u{i}"
    assert tokens.fast.accepted == tokens.fast.tried == 20


# ---------------------------------------------------------------------- bad tokens on it
def refused(tokens: TokenAuthority, token: str) -> str:
    tried = tokens.fast.tried
    with pytest.raises(TokenError) as info:
        tokens.verify(token)
    assert tokens.fast.tried == tried + 1  # it reached the fast path, which passed it on
    return str(info.value)


def test_an_expired_token_is_refused_as_expired():
    tokens = primed(authority(), hs256(good()))
    assert refused(tokens, hs256(good(exp=int(time.time()) - 60))) == "token expired"
    assert refused(tokens, hs256(good(nbf=int(time.time()) + 600))) == "invalid token"


def test_a_token_signed_with_another_key_is_refused():
    tokens = primed(authority(), hs256(good()), es256(good(aud=AUDIENCE, iss=ISSUER)))
    assert refused(tokens, hs256(good(), b"w" * 40)) == "invalid token"
    assert refused(tokens, es256(good(aud=AUDIENCE, iss=ISSUER), PRIVATE_2)) == "invalid token"


def test_a_tampered_token_is_refused():
    tokens = primed(authority(), hs256(good()))
    head, payload, signature = hs256(good()).split(".")
    other = hs256(good(sub="mallory")).split(".")[1]
    assert refused(tokens, f"{head}.{other}.{signature}") == "invalid token"
    assert refused(tokens, f"{head}.{payload}.{signature[:-2]}") == "invalid token"
    assert refused(tokens, f"{head}.{payload}x.{signature}") == "invalid token"


def test_a_rotated_out_key_is_refused_and_its_tokens_forgotten():
    tokens = primed(authority(JWK_1))
    before = es256(good(aud=AUDIENCE, iss=ISSUER))
    assert tokens.verify(before).user_id == "alice"
    tokens._keys.replace(jwt.PyJWKSet([JWK_2]))  # what the JWKS reload does
    tokens._keys.on_unknown = lambda: False  # refreshed just now: k1 is simply gone
    assert refused(tokens, before) == "invalid token"  # verified before, not after
    assert refused(tokens, es256(good(aud=AUDIENCE, iss=ISSUER, sub="bob"))) == "invalid token"
    tokens._keys.on_unknown = lambda: True  # a refresh is on its way
    with pytest.raises(KeyPending):
        tokens.verify(es256(good(aud=AUDIENCE, iss=ISSUER, sub="carol")))
    rotated = es256(good(aud=AUDIENCE, iss=ISSUER), PRIVATE_2, "k2")
    assert tokens.verify(rotated).user_id == "alice"  # PyJWT, then its header is known
    assert tokens.verify(es256(good(aud=AUDIENCE, iss=ISSUER, sub="dave"), PRIVATE_2,
                               "k2")).user_id == "dave"
    assert tokens.fast.accepted >= 1
