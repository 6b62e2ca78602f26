"""The phi-accrual failure detector (router/failure_detector.py): phi grows with silence, never
suspects a peer whose heartbeats keep coming, suspects a silent punctual peer soon and gives a
historically jittery one more slack, and never suspects within the acceptable pause."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from switchboard.router.failure_detector import PhiAccrualDetector

INTERVAL = 1.0


def detector(**overrides) -> PhiAccrualDetector:
    options = dict(expected_interval=INTERVAL, threshold=8.0, acceptable_pause=0.5,
                   min_std_deviation=0.1, started_at=0.0)
    options.update(overrides)
    return PhiAccrualDetector(**options)


def beat(d: PhiAccrualDetector, intervals: list[float], start: float = 0.0) -> float:
    """Heartbeats after each interval in turn; returns the time of the last."""
    now = start
    for interval in intervals:
        now += interval
        d.heartbeat(now)
    return now


def first_suspected(d: PhiAccrualDetector, since: float, step: float = 0.01) -> float:
    """The silence after `since` at which the detector first suspects the peer."""
    silence = 0.0
    while not d.suspects(since + silence):
        silence += step
        assert silence < 1000, "never suspected"
    return silence


def test_punctual_heartbeats_are_never_suspected_and_silence_is():
    d = detector()
    last = beat(d, [INTERVAL] * 50)
    assert d.phi(last) == 0.0
    assert not d.suspects(last + INTERVAL)
    silence = first_suspected(d, last)
    # the mean, the acceptable pause, then a few minimum deviations: not before, not long after
    assert INTERVAL + 0.5 < silence < INTERVAL + 0.5 + 10 * 0.1


def test_a_jittery_history_gets_more_slack_than_a_punctual_one():
    punctual, jittery = detector(), detector()
    last_p = beat(punctual, [INTERVAL] * 60)
    last_j = beat(jittery, [0.4, 1.6, 0.7, 2.3, 0.5, 1.5] * 10)  # the same mean, a busy host
    assert first_suspected(jittery, last_j) > first_suspected(punctual, last_p) + 1.0


def test_the_acceptable_pause_is_a_floor_whatever_the_history():
    d = detector(acceptable_pause=2.0)
    last = beat(d, [0.001] * 100)  # a flood of heartbeats: the mean is nearly 0
    assert not d.suspects(last + 2.0)
    assert d.suspects(last + 5.0)


def test_other_traffic_proves_life_without_changing_the_history():
    d = detector()
    last = beat(d, [INTERVAL] * 20)
    d.alive(last + 1.4)
    assert not d.suspects(last + 2.5)   # 1.1 s after the last frame of any kind
    same = detector()
    assert first_suspected(d, last + 1.4) == pytest.approx(
        first_suspected(same, beat(same, [INTERVAL] * 20)))


def test_a_new_link_is_judged_by_the_expected_interval():
    d = detector(started_at=10.0)
    assert not d.suspects(10.0 + INTERVAL + 0.5)
    assert d.suspects(10.0 + 10 * INTERVAL)


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError):
        detector(expected_interval=0)
    with pytest.raises(ValueError):
        detector(min_std_deviation=0)
    with pytest.raises(ValueError):
        detector(acceptable_pause=-1)


intervals = st.lists(st.floats(min_value=0.01, max_value=5.0), min_size=1, max_size=150)


@settings(max_examples=200, deadline=None)
@given(intervals, st.lists(st.floats(min_value=0.0, max_value=100.0), min_size=2, max_size=20))
def test_phi_never_falls_as_the_silence_grows(history, silences):
    d = detector()
    last = beat(d, history)
    phis = [d.phi(last + s) for s in sorted(silences)]
    assert phis == sorted(phis)
    assert all(phi >= 0 for phi in phis)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=0.5, max_value=1.5), min_size=1, max_size=300))
def test_heartbeats_that_keep_their_period_are_never_suspected(history):
    """Heartbeats within half a period of it, checked at every arrival and just before the
    next: a peer that keeps beating is never suspected, whatever its jitter."""
    d = detector()
    now = 0.0
    for interval in history:
        assert not d.suspects(now + interval - 1e-9)
        now += interval
        d.heartbeat(now)
        assert not d.suspects(now)
