"""The APNs client against a local HTTP/2 server that speaks Apple's API (tests/support/
push_servers.py): the provider JWT, the headers, each reason Apple gives and what it makes of it."""
from __future__ import annotations

import asyncio
import ssl
import time

import jwt
import pytest

from switchboard.core.model import PushPlatform, PushToken
from switchboard.push.apns import ApnsClient, ApnsSigner
from switchboard.push.delivery import Outcome, RetryPolicy
from switchboard.push.notification import Kind, Notification
from tests.support.push_servers import APNS_KEY_ID, APNS_TEAM_ID, APNS_TOPIC

TOKEN = "ab" * 32
NOTE = Notification(Kind.MESSAGE, "chat-1", badge=3, sender_user="alice", count=2, seq=7)


def client(servers, *, attempts: int = 3, max_concurrent: int = 16, signer=None) -> ApnsClient:
    signer = signer or ApnsSigner(servers.apns_key_file.read_bytes(), APNS_KEY_ID, APNS_TEAM_ID)
    return ApnsClient(signer, url=servers.apns_url, sandbox_url=servers.apns_url,
                      default_topic=APNS_TOPIC, timeout=5.0, max_concurrent=max_concurrent,
                      policy=RetryPolicy(attempts=attempts, base=0.01, cap=2.0),
                      verify=ssl.create_default_context(cafile=str(servers.ca_file)))


def token(value: str = TOKEN, topic: str = "") -> PushToken:
    return PushToken(PushPlatform.APNS, value, topic, False, 0)


async def test_a_push_is_sent_over_http2_with_a_signed_provider_token(push_servers):
    apns = client(push_servers)
    try:
        result = await apns.send(token(), NOTE)
    finally:
        await apns.close()
    assert result.outcome is Outcome.SENT and result.status == 200 and result.push_id
    [push] = push_servers.apns.received
    assert push_servers.apns.http_versions == {"2"}
    assert push.token == TOKEN
    assert "apns-id" not in push.headers  # Apple makes one and returns it: result.push_id
    assert push.headers["apns-topic"] == APNS_TOPIC
    assert push.headers["apns-push-type"] == "alert" and push.headers["apns-priority"] == "10"
    assert push.headers["apns-collapse-id"] == "chat-1"
    claims = jwt.decode(push.headers["authorization"][len("bearer "):],
                        push_servers.apns.public_key, algorithms=["ES256"])
    assert claims["iss"] == APNS_TEAM_ID
    aps = push.payload["aps"]
    assert aps["badge"] == 3 and aps["thread-id"] == "chat-1"
    assert aps["alert"]["title-loc-args"] == ["alice"] and aps["alert"]["loc-args"] == ["2"]
    assert "body" not in aps["alert"]  # content-free: no preview was given
    assert push.payload["sb"] == {"kind": "message", "chat_id": "chat-1", "sender": "alice",
                                  "count": 2, "seq": 7}


async def test_a_preview_and_a_read_sync(push_servers):
    apns = client(push_servers)
    try:
        await apns.send(token(topic="com.example.other"), Notification(
            Kind.MESSAGE, "c", 1, "bob", 1, 2, preview="see you at 8"))
        await apns.send(token(), Notification(Kind.READ_SYNC, "c", 0, seq=2))
    finally:
        await apns.close()
    preview, sync = push_servers.apns.received
    assert preview.headers["apns-topic"] == "com.example.other"  # the token's own app
    assert preview.payload["aps"]["alert"]["body"] == "see you at 8"
    assert sync.headers["apns-priority"] == "5"
    assert sync.payload["aps"] == {"badge": 0, "content-available": 1}


@pytest.mark.parametrize("reason", ["Unregistered", "BadDeviceToken", "DeviceTokenNotForTopic"])
async def test_a_dead_token_is_reported_at_once(push_servers, reason):
    push_servers.apns.dead[TOKEN] = reason
    apns = client(push_servers)
    try:
        result = await apns.send(token(), NOTE)
    finally:
        await apns.close()
    assert (result.outcome, result.reason) == (Outcome.TOKEN_DEAD, reason)
    assert result.status == (410 if reason == "Unregistered" else 400)
    assert push_servers.apns.attempts == 1  # not retried


@pytest.mark.parametrize("status,reason", [(429, "TooManyRequests"), (500, "InternalServerError"),
                                           (503, "ServiceUnavailable")])
async def test_throttling_and_server_errors_are_retried(push_servers, status, reason):
    push_servers.apns.fail(status, reason, times=2, retry_after="1" if status == 429 else "")
    apns = client(push_servers)
    started = asyncio.get_running_loop().time()
    try:
        result = await apns.send(token(), NOTE)
    finally:
        await apns.close()
    assert result.outcome is Outcome.SENT
    assert push_servers.apns.attempts == 3 and len(push_servers.apns.received) == 1
    if status == 429:  # Retry-After: 1 honoured before each of the two retries
        assert asyncio.get_running_loop().time() - started >= 2.0


async def test_a_provider_still_down_after_the_attempts_is_put_off(push_servers):
    push_servers.apns.fail(503, "ServiceUnavailable", times=10)
    apns = client(push_servers, attempts=3)
    try:
        result = await apns.send(token(), NOTE)
    finally:
        await apns.close()
    assert (result.outcome, result.reason, result.status) == (Outcome.RETRY, "ServiceUnavailable",
                                                              503)
    assert push_servers.apns.attempts == 3


async def test_a_long_retry_after_ends_the_send_at_once(push_servers):
    push_servers.apns.fail(429, "TooManyRequests", retry_after="120")
    apns = client(push_servers)
    try:
        result = await apns.send(token(), NOTE)
    finally:
        await apns.close()
    assert (result.outcome, result.retry_after) == (Outcome.RETRY, 120.0)
    assert push_servers.apns.attempts == 1


@pytest.mark.parametrize("status,reason", [(400, "BadTopic"), (413, "PayloadTooLarge"),
                                           (400, "BadCollapseId")])
async def test_a_refused_push_is_dropped(push_servers, status, reason):
    push_servers.apns.fail(status, reason)
    apns = client(push_servers)
    try:
        result = await apns.send(token(), NOTE)
    finally:
        await apns.close()
    assert (result.outcome, result.reason) == (Outcome.FAILED, reason)


async def test_an_expired_provider_token_is_renewed(push_servers):
    clock = [time.time() - 70 * 60]  # the signer's clock
    signer = ApnsSigner(push_servers.apns_key_file.read_bytes(), APNS_KEY_ID, APNS_TEAM_ID,
                        clock=lambda: clock[0])
    apns = client(push_servers, signer=signer)
    try:
        # a JWT 70 minutes old by Apple's clock, new by ours: renewing would not help
        result = await apns.send(token(), NOTE)
        assert (result.outcome, result.reason) == (Outcome.RETRY, "ExpiredProviderToken")
        # 25 minutes later by our clock the same JWT is reused; Apple's answer renews it
        clock[0] += 25 * 60
        assert (await apns.send(token(), NOTE)).outcome is Outcome.SENT
    finally:
        await apns.close()
    assert signer.renewals == 2 and len(push_servers.apns.received) == 1


def test_the_provider_token_is_renewed_before_its_hour_runs_out(push_servers):
    clock = [1_000.0]
    signer = ApnsSigner(push_servers.apns_key_file.read_bytes(), APNS_KEY_ID, APNS_TEAM_ID,
                        clock=lambda: clock[0])
    first = signer.token()
    clock[0] += 10 * 60
    signer.expired()  # ten minutes old cannot be expired: Apple's clock is off, and a renewal
    assert signer.token() == first  # this often would be throttled (TooManyProviderTokenUpdates)
    clock[0] += 39 * 60
    assert signer.token() == first  # 49 minutes: still reused
    clock[0] += 2 * 60  # 51 minutes old: renewed, before the hour
    second = signer.token()
    assert second != first and jwt.get_unverified_header(second)["kid"] == APNS_KEY_ID
    assert jwt.decode(second, options={"verify_signature": False})["iat"] == int(clock[0])
    clock[0] += 25 * 60
    signer.expired()  # old enough: renewed at once
    assert signer.token() != second


async def test_requests_in_flight_are_bounded(push_servers):
    push_servers.apns.delay = 0.05
    apns = client(push_servers, max_concurrent=4)
    try:
        results = await asyncio.gather(*(apns.send(token(f"{i:064x}"), NOTE) for i in range(40)))
    finally:
        await apns.close()
    assert all(r.outcome is Outcome.SENT for r in results)
    assert push_servers.apns.most_in_flight == 4
