"""A client of Firebase Cloud Messaging's HTTP v1 API, authenticated by a service account.

OAuth2: a JWT signed (RS256) with the service account's private key is exchanged at its
token endpoint for an access token (the JWT bearer grant, RFC 7523); the access token is reused
until five minutes before it expires, and renewed at once after a 401. One httpx client (HTTP/2,
one pool) carries both the token requests and the sends. Errors
(https://firebase.google.com/docs/reference/fcm/rest/v1/ErrorCode):

* UNREGISTERED (404), SENDER_ID_MISMATCH (403), INVALID_ARGUMENT naming the token (400):
  TOKEN_DEAD, the caller removes it at once;
* QUOTA_EXCEEDED (429), UNAVAILABLE (503), INTERNAL (500): RETRY, honouring Retry-After;
* UNAUTHENTICATED / THIRD_PARTY_AUTH_ERROR (401): the access token is renewed, then RETRY;
* anything else (another INVALID_ARGUMENT: our payload): FAILED, logged.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import httpx
import jwt
import orjson

from switchboard.core.model import PushPlatform, PushToken

from .delivery import Outcome, Result, RetryPolicy, retry_after, with_retries
from .notification import Kind, Notification

log = logging.getLogger(__name__)

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ASSERTION_LIFETIME = 3600  # s, the most Google accepts
RENEW_BEFORE = 300         # s before the access token expires
TTL = "86400s"             # FCM keeps trying a device that is off this long
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass(slots=True, frozen=True)
class ServiceAccount:
    client_email: str
    private_key: str
    private_key_id: str
    token_uri: str
    project_id: str

    @classmethod
    def from_json(cls, data: bytes) -> ServiceAccount:
        """The JSON key file Google's console gives; ValueError naming what is missing."""
        try:
            fields = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"not JSON: {exc}") from None
        if not isinstance(fields, dict):
            raise ValueError("not a JSON object")
        missing = [key for key in ("client_email", "private_key", "token_uri", "project_id")
                   if not isinstance(fields.get(key), str) or not fields[key]]
        if missing:
            raise ValueError(f"lacks {', '.join(missing)}")
        return cls(fields["client_email"], fields["private_key"],
                   str(fields.get("private_key_id", "")), fields["token_uri"], fields["project_id"])


class TokenUnavailable(Exception):
    def __init__(self, result: Result) -> None:
        super().__init__(result.reason)
        self.result = result


class AccessTokens:
    """The OAuth2 access token for FCM: one request to the token endpoint at a time, reused
    until RENEW_BEFORE its expiry."""

    def __init__(self, account: ServiceAccount, http: httpx.AsyncClient, *,
                 token_url: str = "", clock=time.time) -> None:
        self._account = account
        self._http = http
        self._url = token_url or account.token_uri
        self._clock = clock
        self._token = ""
        self._expires = 0.0
        self._lock = asyncio.Lock()
        self.renewals = 0

    def expired(self) -> None:
        self._token = ""

    async def token(self) -> str:
        if self._token and self._clock() < self._expires - RENEW_BEFORE:
            return self._token
        async with self._lock:
            if not self._token or self._clock() >= self._expires - RENEW_BEFORE:
                await self._renew()
        return self._token

    async def _renew(self) -> None:
        now = int(self._clock())
        account = self._account
        headers = {"kid": account.private_key_id} if account.private_key_id else None
        assertion = jwt.encode({"iss": account.client_email, "scope": SCOPE,
                                "aud": account.token_uri, "iat": now,
                                "exp": now + ASSERTION_LIFETIME},
                               account.private_key, algorithm="RS256", headers=headers)
        response = await self._http.post(self._url, data={"grant_type": GRANT_TYPE,
                                                          "assertion": assertion})
        try:
            body = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            body = {}
        if response.status_code != 200 or not isinstance(body, dict) or not body.get("access_token"):
            reason = f"oauth:{body.get('error', response.status_code) if isinstance(body, dict) else response.status_code}"
            outcome = Outcome.RETRY if response.status_code in RETRY_STATUSES else Outcome.FAILED
            if outcome is Outcome.FAILED:
                log.error("FCM token endpoint refused the service account: %d %s",
                          response.status_code, reason)
            raise TokenUnavailable(Result(outcome, reason, response.status_code,
                                          retry_after(response)))
        self._token = body["access_token"]
        self._expires = now + float(body.get("expires_in", 3600))
        self.renewals += 1


class FcmClient:
    platforms = (PushPlatform.FCM,)

    def __init__(self, account: ServiceAccount, *, url: str, token_url: str, project_id: str,
                 timeout: float, max_concurrent: int, policy: RetryPolicy,
                 verify: object = True) -> None:
        self._http = httpx.AsyncClient(
            http2=True, verify=verify, timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=max(2, max_concurrent // 100 + 1)))
        self.tokens = AccessTokens(account, self._http, token_url=token_url)
        self._send_url = (f"{url.rstrip('/')}/v1/projects/{project_id or account.project_id}"
                          "/messages:send")
        self._policy = policy
        self._slots = asyncio.Semaphore(max_concurrent)
        self.retries = 0

    async def close(self) -> None:
        await self._http.aclose()

    async def send(self, token: PushToken, note: Notification) -> Result:
        body = orjson.dumps({"message": message(token.token, note)})
        async with self._slots:
            return await with_retries(lambda: self._attempt(body), self._policy,
                                      self._count_retry)

    def _count_retry(self, _: Result) -> None:
        self.retries += 1

    async def _attempt(self, body: bytes) -> Result:
        try:
            access = await self.tokens.token()
        except TokenUnavailable as exc:
            return exc.result
        response = await self._http.post(self._send_url, content=body, headers={
            "authorization": f"Bearer {access}", "content-type": "application/json"})
        return self._result(response)

    def _result(self, response: httpx.Response) -> Result:
        status = response.status_code
        try:
            body = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        if status == 200:
            return Result(Outcome.SENT, "ok", status, push_id=str(body.get("name", "")))
        error = body.get("error") if isinstance(body.get("error"), dict) else {}
        code = _error_code(error) or f"HTTP{status}"
        if code in ("UNREGISTERED", "SENDER_ID_MISMATCH") or status == 404:
            return Result(Outcome.TOKEN_DEAD, code, status)
        if code == "INVALID_ARGUMENT" and _names_the_token(error):
            return Result(Outcome.TOKEN_DEAD, "INVALID_ARGUMENT(token)", status)
        if status == 401 or code in ("UNAUTHENTICATED", "THIRD_PARTY_AUTH_ERROR"):
            self.tokens.expired()
            return Result(Outcome.RETRY, code, status)
        if status in RETRY_STATUSES:
            return Result(Outcome.RETRY, code, status, retry_after(response))
        log.warning("FCM refused a push: %d %s %s", status, code, str(error.get("message", ""))[:200])
        return Result(Outcome.FAILED, code, status)


def _error_code(error: dict) -> str:
    """FCM's own code (details[].errorCode of an FcmError), else the canonical status."""
    for detail in error.get("details") or ():
        if isinstance(detail, dict) and detail.get("@type", "").endswith("FcmError"):
            return str(detail.get("errorCode", ""))
    return str(error.get("status", ""))


def _names_the_token(error: dict) -> bool:
    """INVALID_ARGUMENT is about the registration token (not our payload): a BadRequest detail
    with a violation of `message.token`, or a message that says so."""
    for detail in error.get("details") or ():
        if isinstance(detail, dict):
            for violation in detail.get("fieldViolations") or ():
                if isinstance(violation, dict) and violation.get("field") == "message.token":
                    return True
    return "registration token" in str(error.get("message", "")).lower()


def message(token: str, note: Notification) -> dict:
    """A data message (the app builds the notification from it, so the content-free default
    and the preview are its choice of strings); collapse_key keeps one per chat on the device;
    read syncs go at normal priority."""
    data = {"kind": note.kind.value, "chat_id": note.chat_id, "badge": str(note.badge)}
    if note.kind is Kind.READ_SYNC:
        data["read_seq"] = str(note.seq)
    else:
        data.update(sender=note.sender_user, count=str(note.count), seq=str(note.seq))
        if note.preview:
            data["preview"] = note.preview
    return {"token": token, "data": data,
            "android": {"collapse_key": note.collapse_id, "ttl": TTL,
                        "priority": "HIGH" if note.kind is Kind.MESSAGE else "NORMAL"}}
