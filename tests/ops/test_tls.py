"""TLS termination on the client listener: TLS 1.3 clients chat, plaintext and TLS 1.2-only
clients are refused (min 1.3), and SIGHUP swaps the certificate for new connections while an
established connection keeps working."""
from __future__ import annotations

import asyncio
import os
import signal
import ssl

import orjson
import pytest

from tests.ops.node import Node, make_cert
from tests.support.raw import RawClient
from tests.support.rawflow import direct, receive_and_ack, send
from tests.support.waiting import wait_for


def client_context(cafile=None, max_version=None) -> ssl.SSLContext:
    if cafile is None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context = ssl.create_default_context(cafile=str(cafile))
    if max_version is not None:
        context.maximum_version = max_version
    return context


@pytest.fixture
def cert(tmp_path):
    return make_cert(tmp_path, "first")


@pytest.fixture
async def tls_server(make_server, cert):
    cert_path, key_path, _ = cert
    server = await make_server(tls__cert=str(cert_path), tls__key=str(key_path))
    server.wss = f"wss://127.0.0.1:{server.gateway.port}/v1/ws"
    return server


async def authed_tls(server, user, context, device="phone") -> RawClient:
    client = await RawClient.connect(server.wss, server.token(user, device), ssl_context=context)
    await client.recv("welcome")
    await client.recv("sync_complete")
    return client


def peer_der(client: RawClient) -> bytes:
    ssl_object = client.transport.underlying_transport.get_extra_info("ssl_object")
    return ssl_object.getpeercert(binary_form=True)


def tls_version(client: RawClient) -> str:
    return client.transport.underlying_transport.get_extra_info("ssl_object").version()


async def test_tls13_client_verifies_the_server_and_chats(tls_server, cert):
    context = client_context(cafile=cert[0])
    alice = await authed_tls(tls_server, "alice", context)
    bob = await authed_tls(tls_server, "bob", context)
    assert tls_version(alice) == "TLSv1.3"
    chat = await direct(alice, "bob")
    ack = await send(alice, chat, b"over tls")
    [got] = await receive_and_ack(bob, 1)
    assert (got.seq, got.body) == (ack.seq, b"over tls")


async def test_plaintext_client_is_refused(tls_server):
    """A plaintext WebSocket upgrade gets no HTTP answer: at most a TLS alert, then the close."""
    reader, writer = await asyncio.open_connection("127.0.0.1", tls_server.gateway.port)
    writer.write(b"GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                 b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                 b"Sec-WebSocket-Version: 13\r\n"
                 b"Authorization: Bearer " + tls_server.token("alice").encode() + b"\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(), 5)  # returns at EOF: the server closed
    writer.close()
    assert not answer.startswith(b"HTTP/")
    assert answer == b"" or answer[0] == 0x15  # nothing, or a TLS alert record
    assert tls_server.gateway.stats.connects == 0


async def test_tls12_only_client_is_refused_when_the_minimum_is_13(tls_server):
    # the server aborts the handshake: the client sees an alert or a reset, never a Welcome
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        await RawClient.connect(tls_server.wss, tls_server.token("alice"),
                                ssl_context=client_context(max_version=ssl.TLSVersion.TLSv1_2))


async def test_reload_counts_and_rejects_a_mismatched_pair(tls_server, cert, tmp_path):
    gateway = tls_server.gateway
    gateway.reload_tls()
    assert gateway.tls.reloads == 1
    _, other_key, _ = make_cert(tmp_path, "other")
    cert[1].write_bytes(other_key.read_bytes())  # a renewal that left the old certificate
    with pytest.raises(ssl.SSLError):
        gateway.reload_tls()
    assert gateway.tls.reloads == 1
    client = await authed_tls(tls_server, "alice", client_context())  # still serving
    assert tls_version(client) == "TLSv1.3"


async def test_tls12_client_is_accepted_when_the_minimum_is_12(make_server, cert):
    server = await make_server(tls__cert=str(cert[0]), tls__key=str(cert[1]),
                               tls__min_version="1.2")
    server.wss = f"wss://127.0.0.1:{server.gateway.port}/v1/ws"
    client = await authed_tls(server, "alice",
                              client_context(max_version=ssl.TLSVersion.TLSv1_2))
    assert tls_version(client) == "TLSv1.2"


async def test_sighup_swaps_the_certificate_without_dropping_connections(tmp_path):
    live_cert, live_key = tmp_path / "live.crt", tmp_path / "live.key"
    first_cert, first_key, first_der = make_cert(tmp_path, "first")
    second_cert, second_key, second_der = make_cert(tmp_path, "second")
    os.link(first_cert, live_cert)
    os.link(first_key, live_key)
    node = await Node(tmp_path / "data", env={"SWITCHBOARD_TLS_CERT": str(live_cert),
                                              "SWITCHBOARD_TLS_KEY": str(live_key)}).start()
    try:
        assert node.scheme == "wss"
        context = client_context()
        alice = await RawClient.connect(node.url, node.token("alice"), ssl_context=context)
        await alice.recv("welcome")
        chat = await direct(alice, "bob")
        assert peer_der(alice) == first_der

        # renewal: the new pair is renamed over the old one, then the reload signal
        os.replace(second_key, live_key)
        os.replace(second_cert, live_cert)
        node.signal(signal.SIGHUP)

        async def newcomer_sees_second():
            client = await RawClient.connect(node.url, node.token("carol"), ssl_context=context)
            der = peer_der(client)
            client.close()
            return der == second_der
        await wait_for(newcomer_sees_second, timeout=10)

        assert peer_der(alice) == first_der  # the established session is untouched
        assert (await send(alice, chat, b"still here")).seq == 1

        # a broken renewal is refused and logged; the current certificate stays
        live_key.write_text("not a key")
        node.signal(signal.SIGHUP)
        await wait_for(lambda: "tls reload failed" in node.log(), timeout=10)
        client = await RawClient.connect(node.url, node.token("dave"), ssl_context=context)
        assert peer_der(client) == second_der
        assert (await send(alice, chat, b"and still")).seq == 2
    finally:
        node.stop()


async def test_sighup_without_tls_is_a_normal_info_line(tmp_path):
    """`systemctl reload` on a plaintext server: nothing to reload, said at INFO, still serving."""
    node = await Node(tmp_path / "data").start()
    try:
        node.signal(signal.SIGHUP)
        await wait_for(lambda: "nothing to reload" in node.log(), timeout=10)
        [line] = [orjson.loads(line) for line in node.log().splitlines()
                  if "nothing to reload" in line]
        assert line["level"] == "INFO" and line["msg"] == "SIGHUP: no TLS configured, nothing to reload"
        assert not [line for line in node.log().splitlines() if '"level":"ERROR"' in line]
        alice = await RawClient.connect(node.url, node.token("alice"))
        assert (await alice.recv("welcome")).welcome.user_id == "alice"
        alice.close()
    finally:
        node.stop()
