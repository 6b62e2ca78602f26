"""Fan-out to other nodes: committed messages (Deliver) and pushes (Push) go to the nodes where
the users have a connection, one frame per node (docs/cluster.md, "Fan-out").

After a commit the owner offers the messages to its own devices, then sends one Deliver per
node that holds a member, right away and in commit order: where members are comes from the
location map the nodes keep of each other over the mesh (locations.py), so no registry round
trip stands between a commit and its delivery. Why that cannot miss a device that just
connected is in locations.py.
"""
from __future__ import annotations

from collections.abc import Collection, Mapping

from switchboard.core.metrics import Metric, counter
from switchboard.core.model import StoredMessage
from switchboard.proto.codec import message_from_pb, message_to_pb
from switchboard.proto.v1 import mesh_pb2 as mesh

from .base import LocalNode
from .locations import Locations
from .mesh import Link, Mesh


class Fanout:
    def __init__(self, mesh_: Mesh, node: LocalNode, locations: Locations) -> None:
        self._mesh = mesh_
        self._node = node
        self._locations = locations
        self.deliver_frames = 0
        self.push_frames = 0

    # ------------------------------------------------------------------ commits
    def committed(self, chat_id: str, members: Mapping, messages: list[StoredMessage]) -> None:
        """MessageService's fan-out on the owner, right after a commit (one chat, seq order)."""
        self._node.deliver(chat_id, members, messages)
        by_node = self._locations.nodes_for(members)
        if not by_node:
            return
        encoded = [message_to_pb(m) for m in messages]
        for node_id, users in by_node.items():
            link = self._mesh.link(node_id)
            if link is not None:
                link.send(mesh.MeshFrame(deliver=mesh.Deliver(
                    chat_id=chat_id, user_ids=users, messages=encoded)))
                self.deliver_frames += 1

    def on_deliver(self, link: Link, deliver: mesh.Deliver) -> None:
        self._node.deliver(deliver.chat_id, dict.fromkeys(deliver.user_ids),
                           [message_from_pb(m) for m in deliver.messages])

    # ------------------------------------------------------------------ pushes
    def push(self, users: Collection[str], data: bytes, exclude: tuple[str, str] | None) -> None:
        self._node.push(users, data, exclude)
        by_node = self._locations.nodes_for(users)
        if not by_node:
            return
        for node_id, located in by_node.items():
            link = self._mesh.link(node_id)
            if link is None:
                continue
            frame = mesh.Push(user_ids=located, frame=data)
            if exclude is not None:
                frame.exclude_user_id, frame.exclude_device_id = exclude
            link.send(mesh.MeshFrame(push=frame))
            self.push_frames += 1

    def on_push(self, link: Link, push: mesh.Push) -> None:
        exclude = (push.exclude_user_id, push.exclude_device_id) if push.exclude_user_id else None
        self._node.push(push.user_ids, push.frame, exclude)

    def metrics(self) -> list[Metric]:
        return [
            counter("cluster_deliver_frames", "Deliver frames sent to other nodes",
                    self.deliver_frames),
            counter("cluster_push_frames", "Push frames sent to other nodes", self.push_frames),
        ]
