"""What goes to a chat's owner: sends and membership changes (ForwardSend, answered by
SendResult) and receipt notes.

A node that does not own the chat forwards the send and answers the device when the owner's
SendResult arrives. A link that drops or an answer that does not come within forward_timeout
fails the send with UNAVAILABLE: outcome unknown, and the client's retry with the same
client_msg_id is exact (the store deduplicates it wherever it lands).
"""
from __future__ import annotations

import asyncio
import itertools

from switchboard.core.errors import RETRY_AFTER_MS, Code, DomainError
from switchboard.core.futures import Done, Submit
from switchboard.core.metrics import Metric, counter, gauge
from switchboard.core.model import CommitResult, SendRequest
from switchboard.proto.codec import (BadRecord, domain_error, event_from_pb, event_to_pb,
                                     message_from_pb, message_to_pb, wire_error)
from switchboard.proto.v1 import mesh_pb2 as mesh

from .base import LocalNode
from .mesh import Link, Mesh

class Forwarding:
    def __init__(self, mesh: Mesh, node: LocalNode, commit: Submit, *,
                 forward_timeout: float) -> None:
        """commit: this node's own send path (MessageService.submit_send), for the chats it
        owns and the sends other nodes forward to it."""
        self._mesh = mesh
        self._node = node
        self._commit = commit
        self._forward_timeout = forward_timeout
        self._request_ids = itertools.count(1)
        self._pending: dict[int, tuple[str, Done, asyncio.TimerHandle]] = {}
        self.forwarded_sends = self.forward_failures = self.owned_sends = 0

    # ------------------------------------------------------------------ this node asks
    def submit(self, owner: str, send: SendRequest, done: Done) -> None:
        """To `owner`, which may be this node (as may an owner whose link just went: the ring
        drops it at once). Raises DomainError for what is refused at once; else `done` gets the
        outcome (core/futures.py)."""
        link = None if owner == self._mesh.node_id else self._mesh.link(owner)
        if link is None:
            self._commit(send, done)
            self.owned_sends += 1
            return
        request_id = next(self._request_ids)
        timer = asyncio.get_running_loop().call_later(self._forward_timeout, self._timed_out,
                                                      request_id)
        self._pending[request_id] = (owner, done, timer)
        link.send(mesh.MeshFrame(forward_send=_forward_send(request_id, send)))
        self.forwarded_sends += 1

    def on_send_result(self, link: Link, result: mesh.SendResult) -> None:
        pending = self._pending.pop(result.request_id, None)
        if pending is None:
            return  # timed out already
        _, done, timer = pending
        timer.cancel()
        if result.error:
            done(None, domain_error(result.error, result.error_message, result.retry_after_ms))
        else:
            done(CommitResult(message_from_pb(result.message), result.duplicate), None)

    def _timed_out(self, request_id: int) -> None:
        pending = self._pending.pop(request_id, None)
        if pending is not None:
            self.forward_failures += 1
            pending[1](None, DomainError(Code.UNAVAILABLE, f"owner {pending[0]} did not answer",
                                         RETRY_AFTER_MS))

    def fail_pending(self, node_id: str | None, why: str) -> None:
        """Fail what waits for `node_id` (None: for every node) with UNAVAILABLE."""
        for request_id, (owner, done, timer) in list(self._pending.items()):
            if node_id is None or owner == node_id:
                del self._pending[request_id]
                timer.cancel()
                self.forward_failures += 1
                done(None, DomainError(Code.UNAVAILABLE, why, RETRY_AFTER_MS))

    # ------------------------------------------------------------------ this node owns
    def on_forward_send(self, link: Link, req: mesh.ForwardSend) -> None:
        """A send for a chat this node owns (or owned until a moment ago: committing it anyway
        is safe, the store fences the seq)."""
        def reply(result: mesh.SendResult) -> None:
            result.request_id = req.request_id
            if self._mesh.link(link.node_id) is link:
                link.send(mesh.MeshFrame(send_result=result))

        try:
            self._commit(_send_request(req),
                         lambda result, error: reply(_send_result(result, error)))
        except DomainError as exc:
            reply(_error_result(exc))
            return
        except BadRecord as exc:  # retrying cannot help
            reply(_error_result(DomainError(Code.INVALID_ARGUMENT, str(exc))))
            return
        except Exception as exc:  # the writer is closed (this node drains)
            reply(_error_result(DomainError(Code.UNAVAILABLE, f"owner cannot take sends: {exc}",
                                            RETRY_AFTER_MS)))
            return
        self.owned_sends += 1

    # ------------------------------------------------------------------ receipt notes
    def note_receipt(self, owner: str, chat_id: str, user: str, delivered: int, read: int,
                     public_read: int) -> None:
        link = None if owner == self._mesh.node_id else self._mesh.link(owner)
        if link is None:
            self._node.note_receipt(chat_id, user, delivered, read, public_read)
        else:
            link.send(mesh.MeshFrame(receipt_note=mesh.ReceiptNote(
                chat_id=chat_id, user_id=user, delivered_seq=delivered, read_seq=read,
                public_read_seq=public_read)))

    def note_delivered(self, owner: str, chat_id: str, delivered: dict[str, int]) -> None:
        """A loop turn's delivered watermarks of one chat: to this node's receipts in one call,
        or one ReceiptNote per user to the owner."""
        link = None if owner == self._mesh.node_id else self._mesh.link(owner)
        if link is None:
            self._node.note_delivered(chat_id, delivered)
            return
        for user, seq in delivered.items():
            link.send(mesh.MeshFrame(receipt_note=mesh.ReceiptNote(
                chat_id=chat_id, user_id=user, delivered_seq=seq)))

    def on_receipt_note(self, link: Link, note: mesh.ReceiptNote) -> None:
        self._node.note_receipt(note.chat_id, note.user_id, note.delivered_seq, note.read_seq,
                                note.public_read_seq)

    def metrics(self) -> list[Metric]:
        return [
            counter("cluster_forwarded_sends", "sends forwarded to the chat's owner node",
                    self.forwarded_sends),
            counter("cluster_forward_failures",
                    "forwarded sends failed UNAVAILABLE (link down, timeout)",
                    self.forward_failures),
            counter("cluster_owned_sends", "sends committed by this node as the chat's owner",
                    self.owned_sends),
            gauge("cluster_forwards_pending", "forwarded sends awaiting their owner's answer",
                  len(self._pending)),
        ]


def _forward_send(request_id: int, send: SendRequest) -> mesh.ForwardSend:
    if send.event is not None:
        return mesh.ForwardSend(request_id=request_id, chat_id=send.chat_id,
                                membership=event_to_pb(send.event))
    return mesh.ForwardSend(request_id=request_id, user_id=send.user, device_id=send.device,
                            chat_id=send.chat_id, client_msg_id=send.client_msg_id,
                            body=send.body, media_ids=send.media_ids, e2e=send.e2e)


def _send_request(req: mesh.ForwardSend) -> SendRequest:
    if req.HasField("membership"):
        return SendRequest.membership(req.chat_id, event_from_pb(req.membership))
    return SendRequest(req.user_id, req.device_id, req.chat_id, req.client_msg_id, req.body,
                       list(req.media_ids), e2e=req.e2e)


def _error_result(exc: BaseException) -> mesh.SendResult:
    code, detail, retry_after_ms = wire_error(exc)
    return mesh.SendResult(error=code, error_message=detail, retry_after_ms=retry_after_ms)


def _send_result(result: CommitResult | None, error: BaseException | None) -> mesh.SendResult:
    if error is not None:
        return _error_result(error)
    return mesh.SendResult(message=message_to_pb(result.message), duplicate=result.duplicate)
