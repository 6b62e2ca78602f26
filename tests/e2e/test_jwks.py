"""Tokens signed by a company's auth service (RS256, ES256, EdDSA) with keys found by `kid` in a
JWKS served over HTTP or kept in a file: rotation without a restart, `aud`/`iss` checks,
refetches on unknown kids rate-limited. Real keys generated here, a real HTTP server."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from picows import WSError

from switchboard.proto.v1 import client_pb2 as pb
from tests.support.raw import RawClient
from tests.support.waiting import wait_for

AUDIENCE = "switchboard"
ISSUER = "https://auth.example.test"


class Signer:
    """One key pair of the auth service: signs tokens, publishes its public JWK."""

    def __init__(self, kid: str, algorithm: str) -> None:
        self.kid = kid
        self.algorithm = algorithm
        self.private = {"RS256": lambda: rsa.generate_private_key(65537, 2048),
                        "ES256": lambda: ec.generate_private_key(ec.SECP256R1()),
                        "EdDSA": ed25519.Ed25519PrivateKey.generate}[algorithm]()

    def jwk(self) -> dict:
        algorithm = jwt.get_algorithm_by_name(self.algorithm)
        jwk = algorithm.to_jwk(self.private.public_key(), as_dict=True)
        return {**jwk, "kid": self.kid, "alg": self.algorithm, "use": "sig"}

    def token(self, user: str, device: str = "phone", **claims) -> str:
        now = int(time.time())
        payload = {"sub": user, "dev": device, "iat": now, "exp": now + 600, "aud": AUDIENCE,
                   "iss": ISSUER, **claims}
        payload = {k: v for k, v in payload.items() if v is not None}
        return jwt.encode(payload, self.private, algorithm=self.algorithm,
                          headers={"kid": self.kid})


class JwksServer:
    """The auth service's JWKS endpoint on 127.0.0.1; counts its fetches."""

    def __init__(self, signers: list[Signer]) -> None:
        self.signers = list(signers)
        self.fetches = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                outer.fetches += 1
                body = json.dumps({"keys": [s.jwk() for s in outer.signers]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http.server_address[1]}/.well-known/jwks.json"

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture
def jwks():
    server = JwksServer([Signer("rsa-1", "RS256"), Signer("ec-1", "ES256"),
                         Signer("ed-1", "EdDSA")])
    yield server
    server.close()


async def welcome(server, token: str, header: bool = True) -> str:
    client = await RawClient.connect(server.url, token if header else None)
    if not header:
        client.send(auth=pb.Auth(token=token))
    user = (await client.recv("welcome")).welcome.user_id
    client.close()
    return user


async def upgrade_status(server, token: str) -> tuple[int, bytes]:
    with pytest.raises(WSError) as info:
        await RawClient.connect(server.url, token)
    return info.value.response.status, info.value.raw_body


async def jwks_server(make_server, jwks: JwksServer, **overrides):
    return await make_server(auth__jwks_url=jwks.url, auth__audience=AUDIENCE,
                             auth__issuer=ISSUER, **overrides)


async def test_each_asymmetric_algorithm_is_accepted_both_ways(make_server, jwks):
    server = await jwks_server(make_server, jwks)
    for signer in jwks.signers:
        assert await welcome(server, signer.token(f"u-{signer.kid}")) == f"u-{signer.kid}"
        assert await welcome(server, signer.token("frame-user"), header=False) == "frame-user"
    # development tokens (HS256 with the server's secret) still work
    assert await welcome(server, server.token("dev-user")) == "dev-user"
    assert jwks.fetches == 1


@pytest.mark.parametrize("claims,reason", [
    ({"aud": "someone-else"}, b"invalid token"),
    ({"aud": None}, b"invalid token"),
    ({"iss": "https://evil.example.test"}, b"invalid token"),
    ({"iss": None}, b"invalid token"),
    ({"exp": 1}, b"token expired"),
])
async def test_audience_issuer_and_expiry_are_checked(make_server, jwks, claims, reason):
    server = await jwks_server(make_server, jwks)
    assert await upgrade_status(server, jwks.signers[0].token("alice", **claims)) == (401, reason)


async def test_bad_tokens_under_a_header_seen_before_get_the_same_answers(make_server, jwks):
    """Once a token of a key was accepted, the next ones under its header skip PyJWT
    (core/fast_tokens.py) when good; bad ones still get PyJWT's refusal."""
    server = await jwks_server(make_server, jwks)
    signer = jwks.signers[0]
    assert await welcome(server, signer.token("alice")) == "alice"
    assert await welcome(server, server.token("dev-user")) == "dev-user"
    for claims, reason in [({"aud": "someone-else"}, b"invalid token"),
                           ({"iss": "https://evil.example.test"}, b"invalid token"),
                           ({"exp": 1}, b"token expired"),
                           ({"nbf": int(time.time()) + 600}, b"invalid token")]:
        assert await upgrade_status(server, signer.token("bob", **claims)) == (401, reason)
    impostor = Signer("rsa-1", "RS256")  # the published kid, another private key
    assert await upgrade_status(server, impostor.token("bob")) == (401, b"invalid token")
    head, _, signature = signer.token("bob").split(".")
    forged = signer.token("mallory").split(".")[1]
    assert await upgrade_status(server, f"{head}.{forged}.{signature}") == (401, b"invalid token")
    expired_dev = server.token("dev-user", ttl=-60)
    assert await upgrade_status(server, expired_dev) == (401, b"token expired")
    fast = server.gateway.tokens.fast
    assert fast.tried == 7 and fast.accepted == 0
    assert await welcome(server, signer.token("carol")) == "carol"
    assert fast.accepted == 1


async def test_a_token_signed_by_a_key_not_in_the_set_is_refused(make_server, jwks):
    server = await jwks_server(make_server, jwks, auth__jwks_min_refetch=3600.0)
    impostor = Signer("rsa-1", "RS256")  # the published kid, another private key
    assert await upgrade_status(server, impostor.token("alice")) == (401, b"invalid token")
    # an alg the key is not for, and the "none" algorithm
    ec_as_rsa = jwt.encode({"sub": "a", "dev": "p", "exp": time.time() + 60, "aud": AUDIENCE,
                            "iss": ISSUER}, jwks.signers[0].private, algorithm="RS256",
                           headers={"kid": "ec-1"})
    assert (await upgrade_status(server, ec_as_rsa))[0] == 401
    unsigned = jwt.encode({"sub": "a", "dev": "p", "exp": time.time() + 60}, None, algorithm="none")
    assert (await upgrade_status(server, unsigned))[0] == 401


async def test_key_rotation_without_a_restart(make_server, jwks):
    server = await jwks_server(make_server, jwks, auth__jwks_min_refetch=0.0)
    rotated = Signer("rsa-2", "RS256")
    jwks.signers = [rotated]  # the auth service rotates: the old key is gone
    token = rotated.token("alice")
    status, body = await upgrade_status(server, token)  # unknown kid: a refresh starts
    assert (status, body) == (503, b"signing key unknown, retry")

    async def accepted():
        try:
            return await welcome(server, token) == "alice"
        except WSError:
            return False
    await wait_for(accepted, timeout=10)
    assert await welcome(server, rotated.token("bob"), header=False) == "bob"
    old = Signer("rsa-1", "RS256")
    assert (await upgrade_status(server, old.token("carol")))[0] in (401, 503)


async def test_unknown_kids_cannot_hammer_the_auth_service(make_server, jwks):
    server = await jwks_server(make_server, jwks, auth__jwks_min_refetch=3600.0)
    assert jwks.fetches == 1
    for i in range(30):
        status, _ = await upgrade_status(server, Signer(f"made-up-{i}", "EdDSA").token("x"))
        assert status in (401, 503)
    assert jwks.fetches <= 2  # the start, and at most one refresh per jwks_min_refetch
    assert await welcome(server, jwks.signers[2].token("alice")) == "alice"


async def test_jwks_file_is_reloaded_periodically(make_server, tmp_path):
    first, second = Signer("k1", "ES256"), Signer("k2", "EdDSA")
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [first.jwk()]}))
    server = await make_server(auth__jwks_file=str(path), auth__audience=AUDIENCE,
                               auth__issuer=ISSUER, auth__jwks_refresh=0.1,
                               auth__jwks_min_refetch=3600.0)
    assert await welcome(server, first.token("alice")) == "alice"
    path.write_text(json.dumps({"keys": [first.jwk(), second.jwk()]}))
    # Two more refreshes than now: one may have read the file before the write. Counting
    # from the start instead raced with a slow first welcome, during which refreshes went on.
    written_at = server.gateway.jwks.refreshes
    await wait_for(lambda: server.gateway.jwks.refreshes >= written_at + 2, timeout=10)
    assert await welcome(server, second.token("bob")) == "bob"


async def test_a_server_without_usable_keys_does_not_start(tmp_path):
    from switchboard.gateway.jwks import JwksError
    from tests.support.server import InProcessServer, fast_config
    path = tmp_path / "jwks.json"
    path.write_text('{"keys": []}')
    server = InProcessServer(fast_config(tmp_path, auth__jwks_file=str(path)))
    with pytest.raises(JwksError):
        await server.start()
