"""What every node must hear: cache invalidations and kicks (docs/cluster.md, "Caches and
invalidation", "Replaced and revoked devices"). Each acts on this node first, then goes to
every peer in one frame. A replaced device's kick is not here: it goes with the location
frames, to the peers that can hold the device (locations.py)."""
from __future__ import annotations

from collections.abc import Sequence

from switchboard.core.ids import now_ms
from switchboard.proto.v1 import mesh_pb2 as mesh

from .base import Invalidation, LocalNode
from .mesh import Link, Mesh


class Broadcasts:
    def __init__(self, mesh: Mesh, node: LocalNode) -> None:
        self._mesh = mesh
        self._node = node

    def invalidate(self, kind: Invalidation, key: str, removed: Sequence[str]) -> None:
        self._node.invalidate(kind, key, removed)
        self._mesh.broadcast(mesh.MeshFrame(invalidate=mesh.Invalidate(
            kind=int(kind), key=key, removed_user_ids=removed)))

    def on_invalidate(self, link: Link, inv: mesh.Invalidate) -> None:
        self._node.invalidate(Invalidation(inv.kind), inv.key, list(inv.removed_user_ids))

    def kick(self, user: str, device: str, code: int, reason: str) -> None:
        before = now_ms() + 1
        self._node.kick(user, device, code, reason, before)
        self._mesh.broadcast(kick_frame(user, device, code, reason, before))

    def on_kick(self, link: Link, kick: mesh.Kick) -> None:
        self._node.kick(kick.user_id, kick.device_id, kick.close_code, kick.reason,
                        kick.before_ms)


def kick_frame(user: str, device: str, code: int, reason: str, before_ms: int) -> mesh.MeshFrame:
    """The Kick frame of one device's connections opened before `before_ms`."""
    return mesh.MeshFrame(kick=mesh.Kick(user_id=user, device_id=device, close_code=code,
                                         reason=reason, before_ms=before_ms))
