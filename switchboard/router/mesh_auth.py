"""Who may join the mesh (docs/cluster.md, "Securing the links"): a shared secret proved by a
challenge-response in the Hellos, mutual TLS, or both.

The secret is never sent. Each side proves it holds it with an HMAC-SHA256 over both sides'
fresh random nonces and both node ids, under a label naming its role, so a proof is good for
one connection and one direction only: it cannot be replayed, reflected back, or moved to
another connection. TLS (cluster.mesh_tls_*) encrypts the links and, with a CA, makes each side
present a certificate the CA signed: a node without one is refused at the handshake.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import ssl
from dataclasses import dataclass

NONCE_BYTES = 32
_DIAL = b"switchboard mesh dial"
_ACCEPT = b"switchboard mesh accept"


def nonce() -> bytes:
    return secrets.token_bytes(NONCE_BYTES)


def dial_proof(secret: bytes, acceptor_nonce: bytes, dialler_nonce: bytes, dialler: str,
               acceptor: str) -> bytes:
    return _mac(secret, _DIAL, acceptor_nonce, dialler_nonce, dialler, acceptor)


def accept_proof(secret: bytes, acceptor_nonce: bytes, dialler_nonce: bytes, acceptor: str,
                 dialler: str) -> bytes:
    return _mac(secret, _ACCEPT, acceptor_nonce, dialler_nonce, acceptor, dialler)


def proof_matches(expected: bytes, given: bytes) -> bool:
    return hmac.compare_digest(expected, given)


def _mac(secret: bytes, label: bytes, first_nonce: bytes, second_nonce: bytes, first: str,
         second: str) -> bytes:
    message = b"\0".join((label, first_nonce, second_nonce, first.encode(), second.encode()))
    return hmac.new(secret, message, hashlib.sha256).digest()


@dataclass(frozen=True)
class MeshTls:
    """The two contexts of a node: `server` for links it accepts, `client` for links it dials.
    Both present the node's certificate and require the peer's, signed by the CA."""
    server: ssl.SSLContext
    client: ssl.SSLContext

    @classmethod
    def from_files(cls, cert: str, key: str, ca: str) -> "MeshTls":
        """Raises OSError or ssl.SSLError for unreadable or unusable files."""
        server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=ca)
        server.verify_mode = ssl.CERT_REQUIRED
        client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
        for context in (server, client):
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.load_cert_chain(cert, key)
        return cls(server, client)
