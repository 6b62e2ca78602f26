"""The receipt rollup kept as watermarks rise, native and its twin (tests/reference/
rollup_model.py), agrees after every change with the rollup recomputed over every member; the
minimum of rising values agrees with min(); and the receipt flush's walk over acks
(raise_delivered, readers, visible_to) leaves the same watermarks, rollup, snapshots and views
natively as in the twin."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from switchboard.core import rollup as native
from switchboard.core.model import Membership, Receipt, Role
from tests.reference import rollup_model

USERS = [f"u{i}" for i in range(8)]
IMPLS = {"native": native, "python": rollup_model}


@pytest.mark.parametrize("impl", sorted(IMPLS))
@settings(max_examples=300, deadline=None)
@given(start=st.lists(st.integers(0, 20), max_size=12),
       rises=st.lists(st.tuples(st.integers(0, 11), st.integers(0, 6)), max_size=60))
def test_rising_min_is_the_minimum(impl, start, rises):
    values = list(start)
    kept = IMPLS[impl].RisingMin(values)
    assert kept.low == min(values, default=0)
    for index, step in rises:
        if not values:
            break
        index %= len(values)
        old, new = values[index], values[index] + step
        kept.rise(old, new)
        values[index] = new
        assert kept.low == min(values)


def _chat(draw):
    members = {user: Membership(Role.MEMBER, draw(st.integers(0, 6)))
               for user in draw(st.lists(st.sampled_from(USERS), unique=True, max_size=6))}
    shown = {user: draw(st.booleans()) for user in USERS}
    receipts = {user: Receipt(d, max(r, p), p)
                for user in draw(st.lists(st.sampled_from(USERS), unique=True))
                for d, r, p in [draw(st.tuples(*[st.integers(0, 8)] * 3))]}
    return members, shown, receipts


@pytest.mark.parametrize("impl", sorted(IMPLS))
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_kept_rollup_matches_the_recomputed_one(impl, data):
    draw = data.draw
    members, shown, receipts = _chat(draw)
    kept = IMPLS[impl].Rollup(members, receipts, shown)
    assert kept.totals == rollup_model.rollup(members, receipts, shown)
    for _ in range(draw(st.integers(0, 40))):
        user = draw(st.sampled_from(USERS))  # members or not: others are ignored
        receipt = receipts.setdefault(user, Receipt(0, 0))
        receipt.delivered_seq += draw(st.integers(0, 3))
        receipt.public_read_seq += draw(st.integers(0, 3))
        receipt.read_seq = max(receipt.read_seq, receipt.public_read_seq)
        kept.raised(user, receipt)
        assert kept.totals == rollup_model.rollup(members, receipts, shown)


def _copy(receipts: dict[str, Receipt]) -> dict[str, Receipt]:
    return {user: Receipt(r.delivered_seq, r.read_seq, r.public_read_seq)
            for user, r in receipts.items()}


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_a_flush_over_acks_is_the_same_natively(data):
    """Flushes of acks into the cached watermarks and the kept rollup, then each user's view of
    them, as the twin has them; the rollup still equals the recomputed one."""
    draw = data.draw
    members, shown, receipts = _chat(draw)
    ours, theirs = _copy(receipts), _copy(receipts)
    kept = {"native": native.Rollup(members, ours, shown),
            "python": rollup_model.Rollup(members, theirs, shown)}
    for _ in range(draw(st.integers(1, 4))):
        delivered = draw(st.dictionaries(st.sampled_from(USERS), st.integers(0, 12)))
        fresh = draw(st.booleans())
        lookback = draw(st.integers(0, 5))
        results = {}
        for impl, cached in (("native", ours), ("python", theirs)):
            changed: dict[str, Receipt] = {}
            moved: set[str] = set()
            span = IMPLS[impl].raise_delivered(cached, dict(delivered), kept[impl], fresh,
                                               lookback, changed, moved)
            results[impl] = (span, changed, moved)
        assert results["native"] == results["python"]
        assert ours == theirs
        assert kept["native"].totals == kept["python"].totals == rollup_model.rollup(
            members, ours, shown)
        span, changed, moved = results["python"]
        public = set(draw(st.lists(st.sampled_from(USERS))))
        for target in USERS:
            assert (native.readers(target, changed, moved, public)
                    == rollup_model.readers(target, changed, moved, public))
            hidden = set(draw(st.lists(st.sampled_from(USERS))))
            assert (native.visible_to(target, changed, moved, public, hidden)
                    == rollup_model.visible_to(target, changed, moved, public, hidden))


def test_acks_without_a_kept_rollup_still_raise_the_cache():
    """No rollup kept (None): the watermarks and snapshots move all the same."""
    for impl in IMPLS.values():
        receipts = {"ann": Receipt(3, 1, 1)}
        changed: dict[str, Receipt] = {}
        moved: set[str] = set()
        span = impl.raise_delivered(receipts, {"ann": 5, "bob": 2, "cy": 0}, None, False, 1000,
                                    changed, moved)
        assert span == (0, 5)
        assert receipts == {"ann": Receipt(5, 1, 1), "bob": Receipt(2, 0), "cy": Receipt(0, 0)}
        assert changed == {"ann": Receipt(5, 1, 1), "bob": Receipt(2, 0)}
        assert moved == {"ann", "bob"}
