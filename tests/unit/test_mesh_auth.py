"""Who may join the mesh (switchboard/router/mesh_auth.py, mesh.py) over real sockets: a shared
secret proved in the Hellos, mutual TLS, and the peers that fail them, each refused with a
warning and counted: a wrong secret, no secret, a plain TCP client speaking garbage or a bare
Hello, a TLS peer whose certificate another CA signed, a plain TCP client at a TLS port."""
from __future__ import annotations

import asyncio
import struct

import pytest

from switchboard.proto.v1 import mesh_pb2
from switchboard.router.mesh_auth import MeshTls
from tests.support.pki import CertAuthority
from tests.support.waiting import wait_for
from tests.unit.test_mesh import connect, encode, hello, mesh_warnings, nodes

SECRET = b"s" * 32


def up(*members) -> bool:
    return all(len(n.mesh.links) == len(members) - 1 for n in members)


async def test_nodes_with_the_same_secret_link_and_carry_frames():
    async with nodes() as start:
        a, b = await start("a", secret=SECRET), await start("b", secret=SECRET)
        connect(a, b)
        await wait_for(lambda: up(a, b), message="a and b linked")
        a.mesh.link("b").send(mesh_pb2.MeshFrame(kick=mesh_pb2.Kick(user_id="u")))
        await wait_for(lambda: b.rec.frames["a"], message="the frame through")
        assert a.mesh.refused == b.mesh.refused == 0


@pytest.mark.parametrize("secrets", [(SECRET, b"t" * 32), (SECRET, b""), (b"", SECRET)],
                         ids=["wrong secret", "acceptor without", "dialler without"])
async def test_a_peer_without_the_secret_is_refused_and_logged(secrets):
    async with nodes() as start:
        with mesh_warnings() as warnings:
            a, b = await start("a", secret=secrets[0]), await start("b", secret=secrets[1])
            connect(a, b)  # a dials b
            await wait_for(lambda: a.mesh.refused + b.mesh.refused >= 2, timeout=10,
                           message="repeated refusals")
        assert not a.mesh.links and not b.mesh.links
        assert not a.rec.events and not b.rec.events  # no link ever came up
        assert any("refused" in w and ("proof" in w or "secret" in w) for w in warnings), warnings


async def _raw(node, data: bytes) -> bytes:
    """Connect to `node`'s mesh port, send `data`, return what came back until it hung up."""
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
    writer.write(data)
    try:
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


async def test_garbage_and_a_hello_without_proof_are_refused():
    async with nodes() as start:
        b = await start("b", secret=SECRET)
        with mesh_warnings() as warnings:
            await _raw(b, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # a length of 1.2 GB: refused
            answer = await _raw(b, hello("z"))
        (size,) = struct.unpack(">I", answer[:4])
        challenge = mesh_pb2.MeshFrame.FromString(answer[4:4 + size]).hello
        assert len(challenge.nonce) == 32 and not challenge.proof  # it asked, we did not prove
        assert not b.rec.events and b.mesh.refused == 2
        assert any("no challenge or proof" in w for w in warnings), warnings
        assert any("frame of" in w for w in warnings), warnings


async def test_a_proof_for_another_connection_is_refused():
    """A dialler's proof answers one acceptor nonce: replaying a recorded one fails."""
    async with nodes() as start:
        b = await start("b", secret=SECRET)
        reader, writer = await asyncio.open_connection("127.0.0.1", b.port)
        await reader.readexactly(4)
        writer.write(encode(mesh_pb2.MeshFrame(hello=mesh_pb2.Hello(
            node_id="z", epoch=1, protocol=1, nonce=b"n" * 32, proof=b"p" * 32))))
        assert await asyncio.wait_for(reader.read(), 10) is not None
        writer.close()
        await wait_for(lambda: b.mesh.refused == 1)
        assert not b.rec.events


@pytest.fixture
def pki(tmp_path):
    trusted, other = CertAuthority(tmp_path, "cluster-ca"), CertAuthority(tmp_path, "other-ca")

    def tls(name: str, authority: CertAuthority = trusted) -> MeshTls:
        cert, key = authority.issue(name)
        return MeshTls.from_files(str(cert), str(key), str(trusted.ca))
    return tls, other


async def test_mutual_tls_links_nodes_of_one_ca(pki):
    tls, _ = pki
    async with nodes() as start:
        a = await start("a", tls=tls("a"), secret=SECRET)
        b = await start("b", tls=tls("b"), secret=SECRET)
        connect(a, b)
        await wait_for(lambda: up(a, b), message="a and b linked over TLS")
        link = a.mesh.link("b")
        assert link._transport.get_extra_info("ssl_object") is not None
        link.send(mesh_pb2.MeshFrame(kick=mesh_pb2.Kick(user_id="u")))
        await wait_for(lambda: b.rec.frames["a"], message="the frame through")


@pytest.mark.parametrize("untrusted", ["dialler", "acceptor"])
async def test_a_tls_peer_with_a_certificate_of_another_ca_is_refused(pki, untrusted):
    tls, other = pki
    async with nodes() as start:
        with mesh_warnings() as warnings:
            a = await start("a", tls=tls("a", other) if untrusted == "dialler" else tls("a"))
            b = await start("b", tls=tls("b", other) if untrusted == "acceptor" else tls("b"))
            connect(a, b)  # a dials b
            await wait_for(lambda: a.mesh.refused + b.mesh.refused >= 1, timeout=10,
                           message="the handshake refused")
        assert not a.rec.events and not b.rec.events
        assert any("refused" in w and "TLS" in w for w in warnings), warnings


async def test_a_plain_tcp_client_at_a_tls_port_is_refused(pki):
    tls, _ = pki
    async with nodes() as start:
        b = await start("b", tls=tls("b"))
        with mesh_warnings() as warnings:
            await _raw(b, hello("z"))
            await wait_for(lambda: b.mesh.refused == 1)
        assert not b.rec.events
        assert any("TLS handshake failed" in w for w in warnings), warnings
