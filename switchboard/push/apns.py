"""A client of Apple's push service (APNs) over HTTP/2, with token-based (JWT) authentication.

One httpx client (HTTP/2, one pool; APNs multiplexes many streams on each connection) for both
of Apple's hosts: production and sandbox tokens go to their own host. Requests in flight are
bounded by a semaphore; each has a timeout and a few retries (delivery.py). Reasons Apple gives
(https://developer.apple.com/documentation/usernotifications/handling-notification-responses-from-apns):

* 200: sent; `apns-id` names it.
* 410 Unregistered / ExpiredToken, 400 BadDeviceToken / DeviceTokenNotForTopic: the token is
  dead: TOKEN_DEAD, the caller removes it at once.
* 403 ExpiredProviderToken: the JWT is renewed and the push retried.
* 429, 500, 503: RETRY, honouring Retry-After.
* anything else (a bad topic, a payload too large, InvalidProviderToken: our configuration):
  FAILED, logged.

Why httpx + PyJWT and not aioapns: aioapns speaks APNs alone, with its own connection handling
and hosts fixed to Apple's; FCM needs an HTTP client anyway, and with httpx both providers share
one retry discipline, one way to set endpoints (the tests point them at local servers) and one
TLS set-up, while PyJWT (already used for device tokens) signs both providers' JWTs.
"""
from __future__ import annotations

import asyncio
import logging
import time

import httpx
import jwt
import orjson

from switchboard.core.model import PushPlatform, PushToken

from .delivery import Outcome, Result, RetryPolicy, retry_after, with_retries
from .notification import Kind, Notification

log = logging.getLogger(__name__)

TOKEN_LIFETIME = 50 * 60   # s: renew the provider JWT before Apple's hour runs out
MIN_RENEWAL = 20 * 60      # s: Apple throttles renewals more frequent than this
EXPIRATION = 24 * 3600     # s APNs keeps trying a device that is off
DEAD_TOKEN_REASONS = frozenset({"Unregistered", "ExpiredToken", "BadDeviceToken",
                                "DeviceTokenNotForTopic"})
RETRY_STATUSES = frozenset({429, 500, 503})


class ApnsSigner:
    """The provider authentication token: ES256 with the team's .p8 key; `kid` is the key id,
    `iss` the team id, `iat` when it was made. Apple refuses one older than an hour, so it is
    renewed after TOKEN_LIFETIME; after ExpiredProviderToken it is renewed at once, unless it
    is younger than MIN_RENEWAL (then Apple's clock is the problem and a new one would not
    help: it would be throttled)."""

    def __init__(self, key_pem: bytes, key_id: str, team_id: str, *,
                 lifetime: float = TOKEN_LIFETIME, clock=time.time) -> None:
        self._key = key_pem
        self._key_id = key_id
        self._team_id = team_id
        self._lifetime = lifetime
        self._clock = clock
        self._token = ""
        self._issued = 0.0
        self.renewals = 0

    def token(self) -> str:
        now = self._clock()
        if not self._token or now - self._issued >= self._lifetime:
            self._token = jwt.encode({"iss": self._team_id, "iat": int(now)}, self._key,
                                     algorithm="ES256", headers={"kid": self._key_id})
            self._issued = now
            self.renewals += 1
        return self._token

    def expired(self) -> None:
        """Apple said ExpiredProviderToken: make a new one on the next request."""
        if self._clock() - self._issued >= MIN_RENEWAL or self._lifetime < MIN_RENEWAL:
            self._token = ""


class ApnsClient:
    platforms = (PushPlatform.APNS, PushPlatform.APNS_SANDBOX)

    def __init__(self, signer: ApnsSigner, *, url: str, sandbox_url: str, default_topic: str,
                 timeout: float, max_concurrent: int, policy: RetryPolicy,
                 verify: object = True) -> None:
        self._signer = signer
        self._hosts = {PushPlatform.APNS: url.rstrip("/"),
                       PushPlatform.APNS_SANDBOX: sandbox_url.rstrip("/")}
        self._default_topic = default_topic
        self._policy = policy
        self._slots = asyncio.Semaphore(max_concurrent)
        self._http = httpx.AsyncClient(
            http2=True, verify=verify, timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=max(2, max_concurrent // 100 + 1)))
        self.retries = 0

    async def close(self) -> None:
        await self._http.aclose()

    async def send(self, token: PushToken, note: Notification) -> Result:
        topic = token.topic or self._default_topic
        if not topic:
            return Result(Outcome.FAILED, "NoTopic")
        url = f"{self._hosts[token.platform]}/3/device/{token.token}"
        body = orjson.dumps(payload(note))
        async with self._slots:
            return await with_retries(lambda: self._attempt(url, topic, note, body),
                                      self._policy, self._count_retry)

    def _count_retry(self, _: Result) -> None:
        self.retries += 1

    async def _attempt(self, url: str, topic: str, note: Notification, body: bytes) -> Result:
        alert = note.kind is Kind.MESSAGE
        response = await self._http.post(url, content=body, headers={
            "authorization": f"bearer {self._signer.token()}",
            "apns-topic": topic,
            "apns-push-type": "alert",
            "apns-priority": "10" if alert else "5",
            "apns-collapse-id": note.collapse_id,
            "apns-expiration": str(int(time.time()) + EXPIRATION),
        })  # no apns-id: Apple makes one and returns it (a header that never repeats costs
            # HPACK work on both ends of every request)
        return self._result(response)

    def _result(self, response: httpx.Response) -> Result:
        status = response.status_code
        if status == 200:
            return Result(Outcome.SENT, "ok", status, push_id=response.headers.get("apns-id", ""))
        try:
            reason = str(orjson.loads(response.content).get("reason", "")) or f"HTTP{status}"
        except (orjson.JSONDecodeError, AttributeError):
            reason = f"HTTP{status}"
        if reason in DEAD_TOKEN_REASONS or status == 410:
            return Result(Outcome.TOKEN_DEAD, reason, status)
        if status == 403 and reason == "ExpiredProviderToken":
            self._signer.expired()
            return Result(Outcome.RETRY, reason, status)
        if status in RETRY_STATUSES:
            return Result(Outcome.RETRY, reason, status, retry_after(response))
        log.warning("APNs refused a push: %d %s", status, reason)
        return Result(Outcome.FAILED, reason, status)


def payload(note: Notification) -> dict:
    """The JSON body: an alert that names the sender and the count through the app's localized
    strings (SB_NEW_MESSAGE_TITLE with the sender, SB_NEW_MESSAGES with the count), or the
    preview as its body; a read sync carries only the badge (and wakes the app to clear the
    chat's notifications: the same collapse id replaces the chat's alert). `sb` is for the
    app: what to fetch."""
    if note.kind is Kind.READ_SYNC:
        return {"aps": {"badge": note.badge, "content-available": 1},
                "sb": {"kind": note.kind.value, "chat_id": note.chat_id, "read_seq": note.seq}}
    alert: dict = {"title-loc-key": "SB_NEW_MESSAGE_TITLE", "title-loc-args": [note.sender_user]}
    if note.preview:
        alert["body"] = note.preview
    else:
        alert["loc-key"] = "SB_NEW_MESSAGES"
        alert["loc-args"] = [str(note.count)]
    return {"aps": {"alert": alert, "badge": note.badge, "sound": "default",
                    "thread-id": note.chat_id, "mutable-content": 1},
            "sb": {"kind": note.kind.value, "chat_id": note.chat_id, "sender": note.sender_user,
                   "count": note.count, "seq": note.seq}}
