"""The receipts' memory of who sent a chat's latest messages: whenever it answers, it answers
what the store would (the senders of every seq in the span); where it does not hold the whole
span (older than it keeps, a gap, seqs committed elsewhere) it says so and the store is read."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from switchboard.core.receipts import RECENT_SENDERS, _Senders


@settings(max_examples=200, deadline=None)
@given(steps=st.lists(st.tuples(st.integers(0, 3), st.sampled_from("abc")), min_size=1,
                      max_size=3 * RECENT_SENDERS),
       spans=st.lists(st.tuples(st.integers(0, 4 * RECENT_SENDERS), st.integers(0, 8)),
                      max_size=20))
def test_answers_match_the_commits_and_gaps_are_never_guessed(steps, spans):
    """steps: (seqs skipped before this commit, its sender); a skipped seq was committed
    elsewhere (or by nobody here), so the store knows a sender this memory never saw."""
    store: dict[int, str] = {}
    seq = 0
    senders = None
    for skipped, user in steps:
        for _ in range(skipped):
            seq += 1
            store[seq] = "elsewhere"
        seq += 1
        store[seq] = user
        if senders is None:
            senders = _Senders(seq)
        senders.add(seq, user)
    for after, length in spans + [(max(0, seq - RECENT_SENDERS), RECENT_SENDERS)]:
        upto = after + length
        known = senders.between(after, upto)
        if known is not None:
            assert known == {store[s] for s in range(after + 1, upto + 1)}
    assert senders.between(seq - 1, seq) == {steps[-1][1]}  # the latest is always known
    assert senders.between(seq, seq + 1) is None  # what was not committed yet is not guessed
