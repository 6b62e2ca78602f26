"""Local stand-ins for Apple's and Google's push services: real HTTP/2 servers over TLS
(hypercorn, a certificate the clients trust through `push.ca_file`) that speak the two APIs as
documented, so the real provider clients are tested end to end.

* APNs (`FakeApns`): `POST /3/device/<token>` over HTTP/2 only; the provider JWT is checked with
  the team key's public half (ES256, `kid`, `iss`, `iat` younger than an hour: else 403
  InvalidProviderToken / ExpiredProviderToken); `apns-topic` required; 200 with `apns-id`;
  errors as JSON `{"reason": ...}` (410 adds `timestamp`), with Retry-After where scripted.
* FCM (`FakeFcm`): the OAuth2 token endpoint (JWT bearer grant: the assertion is checked with
  the service account's public key, its `aud` and `scope`) and `POST
  /v1/projects/<project>/messages:send`, which wants a live access token (401 UNAUTHENTICATED
  otherwise) and answers errors in Google's format with an FcmError `errorCode`.

Tests script failures per server (`fail(...)`, `dead`, `down`) and read what arrived.
"""
from __future__ import annotations

import asyncio
import json
import secrets
import socket
import time
import urllib.parse
import uuid
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypercorn.asyncio import serve
from hypercorn.config import Config as HypercornConfig

from tests.ops.node import make_cert

APNS_KEY_ID = "ABC123DEFG"
APNS_TEAM_ID = "TEAM123456"
APNS_TOPIC = "com.example.chat"
FCM_PROJECT = "switchboard-test"
FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"


@dataclass(slots=True)
class Scripted:
    status: int
    reason: str
    retry_after: str = ""


@dataclass(slots=True)
class ApnsPush:
    token: str
    headers: dict[str, str]
    payload: dict
    at: float


@dataclass(slots=True)
class FcmPush:
    token: str
    message: dict
    at: float


async def _body(receive) -> bytes:
    chunks = []
    while True:
        event = await receive()
        chunks.append(event.get("body", b""))
        if not event.get("more_body"):
            return b"".join(chunks)


async def _answer(send, status: int, body: bytes = b"", headers: dict[str, str] | None = None):
    await send({"type": "http.response.start", "status": status,
                "headers": [(k.encode(), v.encode()) for k, v in (headers or {}).items()]})
    await send({"type": "http.response.body", "body": body})


class _App(ABC):
    """Shared plumbing: lifespan events, the scripted failures, a count of requests in flight."""

    def __init__(self) -> None:
        self.script: deque[Scripted] = deque()
        self.down: Scripted | None = None   # every request fails so while set
        self.attempts = 0
        self.in_flight = 0
        self.most_in_flight = 0
        self.http_versions: set[str] = set()
        self.delay = 0.0

    def fail(self, status: int, reason: str, times: int = 1, retry_after: str = "") -> None:
        self.script.extend([Scripted(status, reason, retry_after)] * times)

    def _scripted(self) -> Scripted | None:
        if self.down is not None:
            return self.down
        return self.script.popleft() if self.script else None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while True:
                event = await receive()
                await send({"type": event["type"] + ".complete"})
                if event["type"] == "lifespan.shutdown":
                    return
        self.http_versions.add(scope["http_version"])
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            await self.handle(scope, await _body(receive), send)
        finally:
            self.in_flight -= 1

    @abstractmethod
    async def handle(self, scope, body: bytes, send) -> None:
        """Answer one request, as the provider's API does."""


class FakeApns(_App):
    def __init__(self, public_key) -> None:
        super().__init__()
        self.public_key = public_key
        self.received: list[ApnsPush] = []
        self.dead: dict[str, str] = {}   # token -> reason (Unregistered: 410, else 400)
        self.jwts: list[str] = []

    def to(self, token: str) -> list[ApnsPush]:
        return [push for push in self.received if push.token == token]

    async def handle(self, scope, body: bytes, send) -> None:
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        path = scope["path"]
        if scope["method"] != "POST" or not path.startswith("/3/device/"):
            return await _answer(send, 404 if scope["method"] == "POST" else 405,
                                 json.dumps({"reason": "BadPath"}).encode())
        if scope["http_version"] != "2":
            return await self._error(send, 400, "BadHTTPVersion")  # APNs is HTTP/2 only
        self.attempts += 1
        auth = headers.get("authorization", "")
        if not auth.startswith("bearer "):
            return await self._error(send, 403, "MissingProviderToken")
        token_jwt = auth[len("bearer "):]
        try:
            header = jwt.get_unverified_header(token_jwt)
            claims = jwt.decode(token_jwt, self.public_key, algorithms=["ES256"],
                                options={"require": ["iat", "iss"]})
        except jwt.PyJWTError:
            return await self._error(send, 403, "InvalidProviderToken")
        if header.get("kid") != APNS_KEY_ID or claims["iss"] != APNS_TEAM_ID:
            return await self._error(send, 403, "InvalidProviderToken")
        if claims["iat"] < time.time() - 3600:
            return await self._error(send, 403, "ExpiredProviderToken")
        self.jwts.append(token_jwt)
        if not headers.get("apns-topic"):
            return await self._error(send, 400, "MissingTopic")
        if headers.get("apns-push-type") not in ("alert", "background"):
            return await self._error(send, 400, "InvalidPushType")
        if len(body) > 4096:
            return await self._error(send, 413, "PayloadTooLarge")
        try:
            payload = json.loads(body)
        except ValueError:
            return await self._error(send, 400, "PayloadEmpty")
        device_token = path[len("/3/device/"):]
        if device_token in self.dead:
            reason = self.dead[device_token]
            return await self._error(send, 410 if reason == "Unregistered" else 400, reason)
        scripted = self._scripted()
        if scripted is not None:
            return await self._error(send, scripted.status, scripted.reason, scripted.retry_after)
        apns_id = headers.get("apns-id") or str(uuid.uuid4())
        self.received.append(ApnsPush(device_token, headers, payload, time.monotonic()))
        await _answer(send, 200, headers={"apns-id": apns_id})

    async def _error(self, send, status: int, reason: str, retry_after: str = "") -> None:
        body = {"reason": reason}
        if status == 410:
            body["timestamp"] = int(time.time() * 1000)
        await _answer(send, status, json.dumps(body).encode(),
                      {"content-type": "application/json", **(
                          {"retry-after": retry_after} if retry_after else {})})


class FakeFcm(_App):
    def __init__(self, public_key, token_url: str) -> None:
        super().__init__()
        self.public_key = public_key
        self.token_url = token_url
        self.received: list[FcmPush] = []
        self.dead: dict[str, str] = {}   # token -> "UNREGISTERED" | "INVALID" | "SENDER_ID_MISMATCH"
        self.access_tokens: dict[str, float] = {}  # token -> expiry
        self.token_requests = 0
        self.token_script: deque[Scripted] = deque()
        self.expires_in = 3600

    def to(self, token: str) -> list[FcmPush]:
        return [push for push in self.received if push.token == token]

    async def handle(self, scope, body: bytes, send) -> None:
        path = scope["path"]
        if scope["method"] == "POST" and path == "/token":
            return await self._token(body, send)
        if scope["method"] == "POST" and path == f"/v1/projects/{FCM_PROJECT}/messages:send":
            headers = {k.decode(): v.decode() for k, v in scope["headers"]}
            return await self._send(headers, body, send)
        await self._error(send, 404, "NOT_FOUND", "no such method")

    async def _token(self, body: bytes, send) -> None:
        self.token_requests += 1
        if self.token_script:
            scripted = self.token_script.popleft()
            return await _answer(send, scripted.status, json.dumps(
                {"error": scripted.reason}).encode(), {"content-type": "application/json"})
        form = urllib.parse.parse_qs(body.decode())
        if form.get("grant_type") != ["urn:ietf:params:oauth:grant-type:jwt-bearer"]:
            return await _answer(send, 400, b'{"error": "unsupported_grant_type"}')
        try:
            claims = jwt.decode(form["assertion"][0], self.public_key, algorithms=["RS256"],
                                audience=self.token_url, options={"require": ["exp", "iat"]})
        except (jwt.PyJWTError, KeyError, IndexError):
            return await _answer(send, 400, b'{"error": "invalid_grant"}')
        if claims.get("scope") != FCM_SCOPE:
            return await _answer(send, 400, b'{"error": "invalid_scope"}')
        access = secrets.token_urlsafe(24)
        self.access_tokens[access] = time.time() + self.expires_in
        await _answer(send, 200, json.dumps({"access_token": access, "token_type": "Bearer",
                                             "expires_in": self.expires_in}).encode(),
                      {"content-type": "application/json"})

    async def _send(self, headers: dict[str, str], body: bytes, send) -> None:
        self.attempts += 1
        bearer = headers.get("authorization", "")[len("Bearer "):]
        if self.access_tokens.get(bearer, 0) < time.time():
            return await self._error(send, 401, "UNAUTHENTICATED", "invalid credentials",
                                     status_name="UNAUTHENTICATED")
        try:
            message = json.loads(body)["message"]
            token = message["token"]
        except (ValueError, KeyError, TypeError):
            return await self._error(send, 400, "INVALID_ARGUMENT", "bad message")
        kind = self.dead.get(token)
        if kind == "UNREGISTERED":
            return await self._error(send, 404, "UNREGISTERED", "Requested entity was not found.",
                                     status_name="NOT_FOUND")
        if kind == "SENDER_ID_MISMATCH":
            return await self._error(send, 403, "SENDER_ID_MISMATCH", "SenderId mismatch",
                                     status_name="PERMISSION_DENIED")
        if kind == "INVALID":
            return await self._error(send, 400, "INVALID_ARGUMENT",
                                     "The registration token is not a valid FCM registration "
                                     "token", violation="message.token")
        scripted = self._scripted()
        if scripted is not None:
            return await self._error(send, scripted.status, scripted.reason, "scripted",
                                     retry_after=scripted.retry_after)
        self.received.append(FcmPush(token, message, time.monotonic()))
        await _answer(send, 200, json.dumps(
            {"name": f"projects/{FCM_PROJECT}/messages/{len(self.received)}"}).encode(),
            {"content-type": "application/json"})

    async def _error(self, send, status: int, code: str, message: str, *, status_name: str = "",
                     violation: str = "", retry_after: str = "") -> None:
        details: list[dict] = [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                                "errorCode": code}]
        if violation:
            details.append({"@type": "type.googleapis.com/google.rpc.BadRequest",
                            "fieldViolations": [{"field": violation, "description": message}]})
        body = {"error": {"code": status, "message": message,
                          "status": status_name or code, "details": details}}
        await _answer(send, status, json.dumps(body).encode(),
                      {"content-type": "application/json",
                       **({"retry-after": retry_after} if retry_after else {})})


@dataclass
class PushServers:
    """Both fakes, their TLS certificate and the provider credentials, written to `directory`."""
    directory: Path
    apns: FakeApns = field(init=False)
    fcm: FakeFcm = field(init=False)
    apns_url: str = ""
    fcm_url: str = ""
    _stops: list[asyncio.Event] = field(default_factory=list)
    _tasks: list[asyncio.Task] = field(default_factory=list)

    async def start(self) -> PushServers:
        cert, key, _ = make_cert(self.directory, "push-provider")
        self.ca_file = cert
        apns_key = ec.generate_private_key(ec.SECP256R1())
        self.apns_key_file = self.directory / f"AuthKey_{APNS_KEY_ID}.p8"
        self.apns_key_file.write_bytes(apns_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        self.apns = FakeApns(apns_key.public_key())
        self.apns_url = await self._serve(self.apns, cert, key)
        fcm_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        fcm_sock = _socket()
        self.fcm_url = f"https://127.0.0.1:{fcm_sock.getsockname()[1]}"
        self.fcm = FakeFcm(fcm_key.public_key(), f"{self.fcm_url}/token")
        self.credentials_file = self.directory / "service-account.json"
        self.credentials_file.write_text(json.dumps({
            "type": "service_account", "project_id": FCM_PROJECT,
            "private_key_id": secrets.token_hex(20),
            "private_key": fcm_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption()).decode(),
            "client_email": f"push@{FCM_PROJECT}.iam.gserviceaccount.com",
            "token_uri": f"{self.fcm_url}/token"}))
        await self._serve(self.fcm, cert, key, fcm_sock)
        return self

    async def _serve(self, app: _App, cert: Path, key: Path,
                     sock: socket.socket | None = None) -> str:
        sock = sock or _socket()
        config = HypercornConfig()
        config.bind = [f"fd://{sock.fileno()}"]
        config.certfile, config.keyfile = str(cert), str(key)
        config.accesslog = config.errorlog = None
        config.graceful_timeout = 0.5
        stop = asyncio.Event()
        self._stops.append(stop)
        self._tasks.append(asyncio.ensure_future(serve(app, config, shutdown_trigger=stop.wait)))
        url = f"https://127.0.0.1:{sock.getsockname()[1]}"
        sock.detach()  # the server owns the descriptor now and closes it when it stops
        return url

    def settings(self) -> dict[str, object]:
        """[push] keys ("push.<key>") for a gateway that uses these servers."""
        return {"push.enabled": True, "push.ca_file": str(self.ca_file),
                "push.apns_key_file": str(self.apns_key_file), "push.apns_key_id": APNS_KEY_ID,
                "push.apns_team_id": APNS_TEAM_ID, "push.apns_topic": APNS_TOPIC,
                "push.apns_url": self.apns_url, "push.apns_sandbox_url": self.apns_url,
                "push.fcm_credentials_file": str(self.credentials_file),
                "push.fcm_url": self.fcm_url}

    def environment(self, **extra: object) -> dict[str, str]:
        """The same settings as environment variables (a gateway in a child process)."""
        values = {**self.settings(), **{f"push.{k}": v for k, v in extra.items()}}
        return {"SWITCHBOARD_" + key.upper().replace(".", "_"):
                (str(value).lower() if isinstance(value, bool) else str(value))
                for key, value in values.items()}

    async def stop(self) -> None:
        for stop in self._stops:
            stop.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.setblocking(False)
    return sock
