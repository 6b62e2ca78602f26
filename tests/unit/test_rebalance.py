"""The rebalancing policy (switchboard/router/rebalance.py `to_move`) against its promises:
nothing moves while the loads are even, at most half the excess and at most the cap per round,
and repeated rounds even out a returning node's share."""
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from switchboard.router.rebalance import to_move

loads = st.integers(0, 100_000)


@given(loads, st.dictionaries(st.sampled_from("abcdefg"), loads, max_size=6),
       st.floats(0.01, 0.5), st.integers(1, 10_000))
def test_a_round_moves_at_most_half_the_excess_and_the_cap(mine, peers, tolerance, cap):
    count = to_move(mine, peers, tolerance=tolerance, cap=cap)
    all_loads = [mine, *peers.values()]
    mean = sum(all_loads) / len(all_loads)
    assert 0 <= count <= cap
    if count:
        assert mine - mean >= 1
        assert count <= (mine - mean) / 2 + 1
        assert min(all_loads) < mean * (1 - tolerance)


@given(st.integers(0, 100_000), st.integers(2, 8), st.floats(0.05, 0.3))
def test_even_loads_never_move(each, nodes, tolerance):
    peers = {str(n): each for n in range(nodes - 1)}
    assert to_move(each, peers, tolerance=tolerance, cap=10**9) == 0


def test_rounds_fill_a_returning_node_without_overshooting():
    """Two nodes with 3,000 devices each and a restarted one with none; each round every node
    moves what to_move says, and a moved device lands on one of the other nodes, alternately
    (as the SDK's rotation spreads them)."""
    loads = {"a": 3000, "b": 3000, "c": 0}
    moved_total = 0
    for round_ in range(30):
        moves = {n: to_move(load, {m: l for m, l in loads.items() if m != n}, tolerance=0.1,
                            cap=1000) for n, load in loads.items()}
        if not any(moves.values()):
            break
        for node, count in moves.items():
            others = [n for n in loads if n != node]
            loads[node] -= count
            for i in range(count):
                loads[others[i % len(others)]] += 1
            moved_total += count
    assert not any(moves.values()), f"still moving after 30 rounds: {loads}"
    assert all(abs(load - 2000) <= 200 for load in loads.values()), loads
    # 2,000 is the least that can fill c; a moved device lands on c only half the time; "every
    # device reconnect" would move 6,000 at once
    assert round_ <= 10 and moved_total <= 4000, (round_, moved_total)
