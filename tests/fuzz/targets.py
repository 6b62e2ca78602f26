"""Fuzz targets: every decoder that takes bytes from outside the process, each with the errors it
is documented to raise. Anything else it raises is a bug (atheris reports it as a crash).

* client: a device's WebSocket message -> ClientFrame (gateway/wire.py): Malformed, BadField.
* mesh: a peer node's byte stream -> MeshFrames (router/mesh.py FrameReader) and the records
  the cluster router takes out of them (proto/codec.py): MeshProtocolError, and BadRecord for
  a record with a value this node does not know (the router refuses that record only).
* auth: a token from the Authorization header or an Auth frame (core/auth.py), HS256 and
  JWKS keys: TokenError.
* config: a TOML config file (config.py): ConfigError.

Used by tests/fuzz/run.py (atheris, coverage-guided) and tests/fuzz/test_atheris.py.
"""
from __future__ import annotations

import os
import tempfile
from typing import Callable

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from switchboard.config import ConfigError, load
from switchboard.core.auth import SigningKeys, TokenAuthority, TokenError
from switchboard.gateway import wire
from switchboard.proto.v1 import mesh_pb2
from switchboard.proto.codec import BadRecord, domain_error, event_from_pb, message_from_pb
from switchboard.router.mesh import FrameReader, MeshProtocolError

SECRET = b"fuzz-secret-" + b"x" * 40
MESH_MAX_FRAME = 1 << 20


def client_frame(data: bytes) -> None:
    try:
        frame = wire.decode(data)
    except (wire.Malformed, wire.BadField):
        return
    frame.WhichOneof("body")


def mesh_stream(data: bytes) -> None:
    """The first byte says where the stream is cut, as reads cut a real link."""
    reader = FrameReader(MESH_MAX_FRAME)
    step = 1 + (data[0] if data else 0)
    for start in range(1, max(len(data), 1), step):
        reader.feed(data[start:start + step])
        try:
            while (frame := reader.next()) is not None:
                try:
                    _records(frame)
                except BadRecord:
                    pass  # that record is refused; the link goes on
        except MeshProtocolError:
            return


def _records(frame: mesh_pb2.MeshFrame) -> None:
    kind = frame.WhichOneof("body")
    if kind == "deliver":
        [message_from_pb(m) for m in frame.deliver.messages]
    elif kind == "forward_send" and frame.forward_send.HasField("membership"):
        event_from_pb(frame.forward_send.membership)
    elif kind == "send_result":
        result = frame.send_result
        if result.HasField("message"):
            message_from_pb(result.message)
        if result.error:
            domain_error(result.error, result.error_message, result.retry_after_ms)


def _authority() -> TokenAuthority:
    private = ec.derive_private_key(0xC0FFEE, ec.SECP256R1())
    jwk = jwt.get_algorithm_by_name("ES256").to_jwk(private.public_key(), as_dict=True)
    keys = SigningKeys()
    keys.replace(jwt.PyJWKSet([{**jwk, "kid": "k1", "alg": "ES256"}]))
    keys.on_unknown = lambda: False
    return TokenAuthority(SECRET, keys=keys, audience="switchboard", issuer="https://auth.test")


_TOKENS = _authority()


def auth_token(data: bytes) -> None:
    try:
        _TOKENS.verify(data.decode("utf-8", "replace"))
    except TokenError:
        return


def config_file(data: bytes) -> None:
    fd, path = tempfile.mkstemp(suffix=".toml")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        load(path, environ={})
    except ConfigError:
        return
    finally:
        os.unlink(path)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "client": client_frame,
    "mesh": mesh_stream,
    "auth": auth_token,
    "config": config_file,
}
