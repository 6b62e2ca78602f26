"""The FCM client against a local HTTP/2 server that speaks FCM's HTTP v1 API and Google's
OAuth2 token endpoint (tests/support/push_servers.py)."""
from __future__ import annotations

import asyncio
import ssl

import pytest

from switchboard.core.model import PushPlatform, PushToken
from switchboard.push.delivery import Outcome, RetryPolicy
from switchboard.push.fcm import FcmClient, ServiceAccount
from switchboard.push.notification import Kind, Notification
from tests.support.push_servers import Scripted

TOKEN = "fcm-token:APA91b" + "x" * 140
NOTE = Notification(Kind.MESSAGE, "chat-1", badge=4, sender_user="alice", count=3, seq=9)


def client(servers, *, attempts: int = 3) -> FcmClient:
    account = ServiceAccount.from_json(servers.credentials_file.read_bytes())
    return FcmClient(account, url=servers.fcm_url, token_url="", project_id="", timeout=5.0,
                     max_concurrent=16, policy=RetryPolicy(attempts=attempts, base=0.01, cap=2.0),
                     verify=ssl.create_default_context(cafile=str(servers.ca_file)))


def token(value: str = TOKEN) -> PushToken:
    return PushToken(PushPlatform.FCM, value, "", False, 0)


async def test_a_push_is_sent_with_an_oauth_token_reused_until_it_expires(push_servers):
    fcm = client(push_servers)
    try:
        results = [await fcm.send(token(), NOTE) for _ in range(3)]
        await fcm.send(token(), Notification(Kind.READ_SYNC, "chat-1", 0, seq=9))
    finally:
        await fcm.close()
    assert [r.outcome for r in results] == [Outcome.SENT] * 3
    assert results[0].push_id.startswith("projects/switchboard-test/messages/")
    assert push_servers.fcm.token_requests == 1  # one OAuth token for every send
    assert push_servers.fcm.http_versions == {"2"}
    first, *_, sync = push_servers.fcm.received
    assert first.message == {
        "token": TOKEN,
        "data": {"kind": "message", "chat_id": "chat-1", "badge": "4", "sender": "alice",
                 "count": "3", "seq": "9"},
        "android": {"collapse_key": "chat-1", "ttl": "86400s", "priority": "HIGH"}}
    assert sync.message["data"] == {"kind": "read", "chat_id": "chat-1", "badge": "0",
                                    "read_seq": "9"}
    assert sync.message["android"]["priority"] == "NORMAL"


async def test_the_access_token_is_renewed_before_it_expires(push_servers):
    push_servers.fcm.expires_in = 200  # under the five minutes kept in reserve: every send renews
    fcm = client(push_servers)
    try:
        for _ in range(2):
            assert (await fcm.send(token(), NOTE)).outcome is Outcome.SENT
    finally:
        await fcm.close()
    assert push_servers.fcm.token_requests == 2


async def test_an_access_token_refused_is_renewed_and_the_push_retried(push_servers):
    fcm = client(push_servers)
    try:
        assert (await fcm.send(token(), NOTE)).outcome is Outcome.SENT
        push_servers.fcm.access_tokens.clear()  # the server forgot every token it issued
        assert (await fcm.send(token(), NOTE)).outcome is Outcome.SENT
    finally:
        await fcm.close()
    assert push_servers.fcm.token_requests == 2 and len(push_servers.fcm.received) == 2


@pytest.mark.parametrize("kind,reason", [("UNREGISTERED", "UNREGISTERED"),
                                         ("INVALID", "INVALID_ARGUMENT(token)"),
                                         ("SENDER_ID_MISMATCH", "SENDER_ID_MISMATCH")])
async def test_a_dead_token_is_reported_at_once(push_servers, kind, reason):
    push_servers.fcm.dead[TOKEN] = kind
    fcm = client(push_servers)
    try:
        result = await fcm.send(token(), NOTE)
    finally:
        await fcm.close()
    assert (result.outcome, result.reason) == (Outcome.TOKEN_DEAD, reason)
    assert push_servers.fcm.attempts == 1


async def test_an_invalid_argument_about_the_payload_is_not_a_dead_token(push_servers):
    push_servers.fcm.fail(400, "INVALID_ARGUMENT")
    fcm = client(push_servers)
    try:
        result = await fcm.send(token(), NOTE)
    finally:
        await fcm.close()
    assert (result.outcome, result.reason) == (Outcome.FAILED, "INVALID_ARGUMENT")


@pytest.mark.parametrize("status,code", [(429, "QUOTA_EXCEEDED"), (503, "UNAVAILABLE"),
                                         (500, "INTERNAL")])
async def test_throttling_and_server_errors_are_retried(push_servers, status, code):
    push_servers.fcm.fail(status, code, times=2, retry_after="1" if status == 429 else "")
    fcm = client(push_servers)
    started = asyncio.get_running_loop().time()
    try:
        result = await fcm.send(token(), NOTE)
    finally:
        await fcm.close()
    assert result.outcome is Outcome.SENT and push_servers.fcm.attempts == 3
    if status == 429:
        assert asyncio.get_running_loop().time() - started >= 2.0


async def test_a_provider_down_past_the_attempts_is_put_off(push_servers):
    push_servers.fcm.fail(503, "UNAVAILABLE", times=10, retry_after="30")
    fcm = client(push_servers)
    try:
        result = await fcm.send(token(), NOTE)
    finally:
        await fcm.close()
    assert (result.outcome, result.retry_after) == (Outcome.RETRY, 30.0)


async def test_a_token_endpoint_that_fails_puts_the_push_off(push_servers):
    push_servers.fcm.token_script.extend([Scripted(503, "backend_error")] * 3)
    fcm = client(push_servers)
    try:
        result = await fcm.send(token(), NOTE)
        assert result.outcome is Outcome.RETRY and result.reason.startswith("oauth:")
        assert (await fcm.send(token(), NOTE)).outcome is Outcome.SENT  # the endpoint is back
    finally:
        await fcm.close()


async def test_a_service_account_refused_by_the_token_endpoint_fails(push_servers):
    push_servers.fcm.token_script.append(Scripted(400, "invalid_grant"))
    fcm = client(push_servers)
    try:
        result = await fcm.send(token(), NOTE)
    finally:
        await fcm.close()
    assert (result.outcome, result.reason) == (Outcome.FAILED, "oauth:invalid_grant")


def test_a_service_account_file_lacking_fields_is_refused():
    with pytest.raises(ValueError, match="lacks private_key, token_uri"):
        ServiceAccount.from_json(b'{"client_email": "a@b", "project_id": "p"}')
    with pytest.raises(ValueError, match="not JSON"):
        ServiceAccount.from_json(b"-----BEGIN")
