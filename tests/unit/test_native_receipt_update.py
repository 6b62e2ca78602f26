"""The native ReceiptUpdate encoder writes the bytes the protobuf library writes (its twin in
tests/reference/wire_model.py), for any members, seqs and names, and they decode back."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from switchboard.core._native import wire
from switchboard.core.model import Receipt
from switchboard.proto.v1 import client_pb2 as pb
from tests.reference import wire_model

SEQ = st.integers(0, 2 ** 64 - 1)


@settings(max_examples=300, deadline=None)
@given(chat_id=st.text(max_size=40),
       members=st.dictionaries(st.text(max_size=200), st.tuples(SEQ, SEQ), max_size=40),
       delivered_all=SEQ, read_all=SEQ)
def test_native_receipt_update_is_the_librarys(chat_id, members, delivered_all, read_all):
    receipts = {user: Receipt(d, r) for user, (d, r) in members.items()}
    native = wire.receipt_update(chat_id, receipts, delivered_all, read_all)
    assert native == wire_model.receipt_update(chat_id, receipts, delivered_all, read_all)
    update = pb.ServerFrame.FromString(native).receipt_update
    assert [(m.user_id, m.delivered_seq, m.read_seq) for m in update.members] == [
        (user, r.delivered_seq, r.read_seq) for user, r in sorted(receipts.items())]
