"""The native timer wheel against its reference twin, and the TimerService on a real loop.

Every contract test runs on both implementations (the `Wheel` fixture), so the model is known to
encode the contract and the native wheel is known to meet it; the property test then checks that
both give identical results on random schedules, including the cases the slot arithmetic can get
wrong: big jumps, past dues, dues on tick boundaries, entries many revolutions ahead.
"""
from __future__ import annotations

import asyncio
import logging
import math
import random
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from switchboard.core.timers import TimerService, TimerWheel as NativeWheel
from tests.reference.timerwheel_model import TimerWheel as ModelWheel

IMPLS = {"native": NativeWheel, "model": ModelWheel}


@pytest.fixture(params=sorted(IMPLS))
def Wheel(request):
    return IMPLS[request.param]


# ---------------------------------------------------------------------------- contract (both)
def test_fires_by_due_with_ties_in_schedule_order(Wheel):
    w = Wheel(0.1, 8)
    for item, due in [("c", 0.35), ("a", 0.12), ("t1", 0.2), ("b", 0.19), ("t2", 0.2)]:
        w.schedule(item, due)
    assert w.advance(0.5) == ["a", "b", "t1", "t2", "c"]
    assert len(w) == 0


def test_fires_exactly_at_due_not_before(Wheel):
    w = Wheel(0.25, 4)
    w.schedule("x", 1.0)
    w.schedule("y", 1.1)
    assert w.advance(0.9999999) == []
    assert w.advance(1.0) == ["x"]
    assert w.advance(1.0999999) == []
    assert w.advance(1.1) == ["y"]


def test_past_and_present_dues_fire_on_next_advance(Wheel):
    w = Wheel(1.0, 4, now=10.0)
    w.schedule("now", 10.0)
    w.schedule("past", 5.0)
    w.schedule("long-ago", -1000.0)
    assert w.advance(10.0) == ["long-ago", "past", "now"]


def test_backwards_now_returns_nothing_and_keeps_entries(Wheel):
    w = Wheel(1.0, 4)
    w.advance(10.0)
    w.schedule("late", 9.5)
    assert w.advance(9.7) == []
    assert len(w) == 1
    assert w.advance(10.0) == ["late"]


def test_item_scheduled_many_times_fires_once_per_entry(Wheel):
    w = Wheel(1.0, 4)
    for due in (3.0, 1.0, 1.0, 9.0):
        w.schedule("conn", due)
    assert len(w) == 4
    assert w.advance(3.0) == ["conn", "conn", "conn"]
    assert w.advance(100.0) == ["conn"]
    assert w.advance(200.0) == []


def test_entries_of_later_revolutions_wait_in_their_slot(Wheel):
    w = Wheel(1.0, 4)  # one revolution = 4 s: 2.5, 6.5 and 10.5 share a slot
    for item, due in [("r0", 2.5), ("r1", 6.5), ("r2", 10.5)]:
        w.schedule(item, due)
    assert w.advance(3.0) == ["r0"]
    assert w.advance(6.0) == []
    assert w.advance(7.0) == ["r1"]
    assert w.advance(10.4) == []
    assert w.advance(11.0) == ["r2"]


def test_gap_of_many_revolutions_fires_everything_due(Wheel):
    w = Wheel(0.01, 8)  # one revolution = 0.08 s; the advance below jumps 12.5 million of them
    dues = [0.5, 3.0, 1e5, 7e5, 999_999.999_999]
    for i, due in enumerate(dues):
        w.schedule(i, due)
    w.schedule("later", 2e6)
    assert w.advance(1e6) == [0, 1, 2, 3, 4]
    assert w.next_due == 2e6
    assert w.advance(1e6 + 0.01) == []
    assert w.advance(3e6) == ["later"]


def test_native_advance_walks_at_most_one_revolution():
    # 1e18 ticks to walk if the walk were not capped. That loop would hold the GIL, which no
    # in-process timeout can interrupt, so it runs in a child that can be killed.
    code = ("from switchboard.core._native.timerwheel import TimerWheel\n"
            "w = TimerWheel(1e-9, 512)\n"
            "w.schedule('x', 5e8)\n"
            "assert w.advance(1e9) == ['x']\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_len_and_next_due_are_exact(Wheel):
    w = Wheel(0.5, 4, now=100.0)
    assert len(w) == 0 and w.next_due is None
    w.schedule("far", 1000.3)  # hundreds of revolutions ahead
    assert w.next_due == 1000.3
    w.schedule("near", 101.7)
    w.schedule("mid", 104.9)
    assert (len(w), w.next_due) == (3, 101.7)
    assert w.advance(102.0) == ["near"]
    assert (len(w), w.next_due) == (2, 104.9)
    assert w.advance(105.0) == ["mid"]
    assert (len(w), w.next_due) == (1, 1000.3)
    w.schedule("past", 50.0)
    assert w.next_due == 50.0
    assert w.advance(105.0) == ["past"]
    assert w.next_due == 1000.3
    assert w.advance(2000.0) == ["far"]
    assert len(w) == 0 and w.next_due is None


def test_negative_and_extreme_times(Wheel):
    w = Wheel(0.3, 3, now=-50.0)
    for item, due in [("huge", 1e300), ("neg", -49.1), ("tiny", -1e300), ("zero", 0.0)]:
        w.schedule(item, due)
    assert w.next_due == -1e300
    assert w.advance(-49.5) == ["tiny"]
    assert w.next_due == -49.1
    assert w.advance(-0.0) == ["neg", "zero"]
    assert w.next_due == 1e300
    assert w.advance(1e299) == []
    assert w.advance(1e300) == ["huge"]


def test_due_beyond_the_tick_number_range_does_not_shadow_nearer_ones(Wheel):
    w = Wheel(1.0, 4)
    w.schedule("huge", 1e300)  # 1e300 ticks away: far past what a C tick number can hold
    w.schedule("near", 2.5)
    assert w.next_due == 2.5
    assert w.advance(3.0) == ["near"]
    assert w.next_due == 1e300


@pytest.mark.parametrize("args", [(0.0,), (-1.0,), (math.inf,), (math.nan,), (0.1, 1), (0.1, 0),
                                  (0.1, 8, math.inf), (0.1, 8, math.nan)])
def test_rejects_bad_construction(Wheel, args):
    with pytest.raises(ValueError):
        Wheel(*args)


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_rejects_non_finite_times(Wheel, bad):
    w = Wheel(0.1, 8)
    with pytest.raises(ValueError):
        w.schedule("x", bad)
    with pytest.raises(ValueError):
        w.advance(bad)
    assert len(w) == 0


def test_many_entries_match_a_sorted_reference(Wheel):
    rng = random.Random(1)
    w = Wheel(0.05, 64, now=1000.0)
    entries = [(1000.0 + rng.uniform(-5.0, 400.0), i) for i in range(20_000)]
    for due, i in entries:
        w.schedule(i, due)
    expected = [i for _, i in sorted(entries)]
    fired, now = [], 1000.0
    while now < 1401.0:
        now += rng.choice([0.05, 0.013, 0.5, 3.2, 40.0])
        fired.extend(w.advance(now))
    assert fired == expected


# ---------------------------------------------------------------------------- native == model
@st.composite
def scenarios(draw):
    tick = draw(st.sampled_from([0.001, 0.05, 0.1, 0.25, 0.3, 1.0, 7.0]))
    slots = draw(st.sampled_from([2, 3, 8, 512]))
    revolution = tick * slots
    start = draw(st.one_of(st.just(0.0), st.floats(-1e6, 1e6),
                           st.integers(-1000, 10**6).map(lambda k: k * tick)))
    offset = st.one_of(
        st.just(0.0),
        st.floats(-2 * revolution, 3 * revolution),  # past, this and the next revolutions
        st.integers(-3 * slots, 5 * slots).map(lambda k: k * tick),
        st.floats(0.0, 1e4 * revolution),  # big jumps: many revolutions
    )
    ticks = st.integers(-3 * slots, 5 * slots)
    ops = draw(st.lists(st.one_of(
        st.tuples(st.just("schedule"), offset),
        st.tuples(st.just("schedule_on_tick"), ticks),
        st.tuples(st.just("advance"), offset),
        st.tuples(st.just("advance_on_tick"), ticks),
        st.tuples(st.just("next_due"), st.none()),
    ), max_size=120))
    return tick, slots, start, ops


@settings(max_examples=600, deadline=None)
@given(scenarios())
def test_native_matches_model(scenario):
    tick, slots, start, ops = scenario
    native, model = NativeWheel(tick, slots, start), ModelWheel(tick, slots, start)
    clock = start
    for item, (op, arg) in enumerate(ops):
        if op == "schedule" or op == "schedule_on_tick":
            due = clock + arg if op == "schedule" else (math.floor(clock / tick) + arg) * tick
            native.schedule(item, due)
            model.schedule(item, due)
        elif op == "next_due":
            assert native.next_due == model.next_due
        else:
            now = clock + arg if op == "advance" else (math.floor(clock / tick) + arg) * tick
            assert native.advance(now) == model.advance(now), (op, now)
            clock = max(clock, now)
        assert len(native) == len(model)
    assert native.next_due == model.next_due
    assert native.advance(clock + 1e6 * tick * slots) == model.advance(clock + 1e6 * tick * slots)
    assert len(native) == 0 and native.next_due is None


# ---------------------------------------------------------------------------- TimerService
class Target:
    def __init__(self, fail: bool = False) -> None:
        self.calls: list[float] = []
        self.fail = fail

    def on_timer(self, now: float) -> None:
        self.calls.append(now)
        if self.fail:
            raise RuntimeError("boom")


async def until(condition, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


@pytest.fixture
async def armed(monkeypatch):
    """Counts loop.call_later arms and their runs: outstanding handles = armed - ran."""
    loop = asyncio.get_running_loop()
    real = loop.call_later
    counts = {"armed": 0, "ran": 0}

    def call_later(delay, callback, *args):
        counts["armed"] += 1

        def run():
            counts["ran"] += 1
            callback(*args)
        return real(delay, run)

    monkeypatch.setattr(loop, "call_later", call_later)
    return counts


async def test_service_fires_each_entry_once_and_disarms_when_idle(armed):
    svc = TimerService(0.01, slots=16)
    svc.start(asyncio.get_running_loop())
    assert svc._handle is None and armed["armed"] == 0
    t0 = svc.now()
    targets = [Target() for _ in range(50)]
    for i, target in enumerate(targets):
        svc.schedule(target, t0 + 0.002 * i)
    assert svc._handle is not None and armed["armed"] == 1
    await until(lambda: all(t.calls for t in targets))
    await until(lambda: svc._handle is None)  # idle: the wheel disarms
    for i, target in enumerate(targets):
        assert len(target.calls) == 1 and target.calls[0] >= t0 + 0.002 * i
    assert armed["armed"] == armed["ran"]
    svc.stop()


async def test_service_keeps_one_handle_when_items_reschedule_themselves(armed):
    svc = TimerService(0.01)
    svc.start(asyncio.get_running_loop())

    class Again(Target):
        def on_timer(self, now: float) -> None:
            super().on_timer(now)
            if len(self.calls) < 5:
                svc.schedule(self, now + 0.01)
                svc.schedule(self, now + 0.5)  # stale entry, as a connection leaves behind

    items = [Again() for _ in range(10)]
    for item in items:
        svc.schedule(item, svc.now())
    while any(len(item.calls) < 5 for item in items):
        assert armed["armed"] - armed["ran"] == (svc._handle is not None) == 1
        await asyncio.sleep(0.003)
    svc.stop()
    assert svc._handle is None


async def test_service_contains_on_timer_exceptions(caplog):
    svc = TimerService(0.01)
    svc.start(asyncio.get_running_loop())
    bad, good, later = Target(fail=True), Target(), Target()
    svc.schedule(bad, svc.now())
    svc.schedule(good, svc.now())
    with caplog.at_level(logging.ERROR, logger="switchboard.core.timers"):
        await until(lambda: good.calls)
    assert bad.calls and "on_timer failed" in caplog.text and "boom" in caplog.text
    svc.schedule(later, svc.now() + 0.02)
    await until(lambda: later.calls)
    assert len(bad.calls) == len(good.calls) == len(later.calls) == 1
    svc.stop()


async def test_service_stop_disarms_and_start_resumes():
    loop = asyncio.get_running_loop()
    svc = TimerService(0.01)
    with pytest.raises(RuntimeError):
        svc.now()
    svc.start(loop)
    target = Target()
    svc.schedule(target, svc.now() + 0.01)
    svc.stop()
    assert svc._handle is None
    await asyncio.sleep(0.05)
    assert target.calls == []
    svc.start(loop)
    await until(lambda: target.calls)
    await until(lambda: svc._handle is None)
    svc.stop()


def test_timers_import_fails_loudly_without_the_extension():
    code = ("import sys; sys.modules['switchboard.core._native.timerwheel'] = None; "
            "import switchboard.core.timers")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode != 0
    assert "ImportError" in proc.stderr and "not built" in proc.stderr
