"""The receipt rollup kept as watermarks rise agrees, after every change, with the rollup
recomputed over every member (tests/reference/rollup_model.py); its minimum of rising values
agrees with min()."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from switchboard.core.model import Membership, Receipt, Role
from switchboard.core.rollup import RisingMin, Rollup
from tests.reference import rollup_model

USERS = [f"u{i}" for i in range(8)]


@settings(max_examples=300, deadline=None)
@given(start=st.lists(st.integers(0, 20), max_size=12),
       rises=st.lists(st.tuples(st.integers(0, 11), st.integers(0, 6)), max_size=60))
def test_rising_min_is_the_minimum(start, rises):
    values = list(start)
    kept = RisingMin(values)
    assert kept.low == min(values, default=0)
    for index, step in rises:
        if not values:
            break
        index %= len(values)
        old, new = values[index], values[index] + step
        kept.rise(old, new)
        values[index] = new
        assert kept.low == min(values)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_kept_rollup_matches_the_recomputed_one(data):
    draw = data.draw
    members = {user: Membership(Role.MEMBER, draw(st.integers(0, 6)))
               for user in draw(st.lists(st.sampled_from(USERS), unique=True, max_size=6))}
    shown = {user: draw(st.booleans()) for user in USERS}
    receipts = {user: Receipt(d, max(r, p), p)
                for user in draw(st.lists(st.sampled_from(USERS), unique=True))
                for d, r, p in [draw(st.tuples(*[st.integers(0, 8)] * 3))]}
    kept = Rollup(members, receipts, shown)
    assert kept.totals == rollup_model.rollup(members, receipts, shown)
    for _ in range(draw(st.integers(0, 40))):
        user = draw(st.sampled_from(USERS))  # members or not: others are ignored
        receipt = receipts.setdefault(user, Receipt(0, 0))
        receipt.delivered_seq += draw(st.integers(0, 3))
        receipt.public_read_seq += draw(st.integers(0, 3))
        receipt.read_seq = max(receipt.read_seq, receipt.public_read_seq)
        kept.raised(user, receipt)
        assert kept.totals == rollup_model.rollup(members, receipts, shown)
