"""The shared timer wheel (core/_native/timerwheel.pyx): every connection re-arms a deadline on
it, so schedule() is paid per connection per re-arm and advance() once per tick."""
from __future__ import annotations

from switchboard.core.timers import TimerWheel

CONNECTIONS = 20_000
TICK = 0.05


class _Item:
    __slots__ = ()


def test_schedule(benchmark):
    """One schedule() into a wheel that already holds 20,000 entries."""
    wheel = TimerWheel(TICK, 512, 0.0)
    items = [_Item() for _ in range(CONNECTIONS)]
    for i, item in enumerate(items):
        wheel.schedule(item, 30.0 + i * 1e-4)
    item = _Item()
    benchmark(wheel.schedule, item, 31.0)


def test_advance_idle_tick(benchmark):
    """A tick on which nothing is due, with 20,000 entries pending (the common case)."""
    wheel = TimerWheel(TICK, 512, 0.0)
    for i in range(CONNECTIONS):
        wheel.schedule(_Item(), 1000.0 + i * 1e-3)
    now = [0.0]

    def tick():
        now[0] += TICK
        return wheel.advance(now[0])

    assert benchmark(tick) == []


def test_fire_and_rearm_20k(benchmark):
    """20,000 deadlines fall due in one advance and each is re-armed (a heartbeat round)."""
    items = [_Item() for _ in range(CONNECTIONS)]

    def setup():
        wheel = TimerWheel(TICK, 512, 0.0)
        for item in items:
            wheel.schedule(item, 1.0)
        return (wheel,), {}

    def round_(wheel):
        fired = wheel.advance(1.0)
        for item in fired:
            wheel.schedule(item, 31.0)
        return fired

    fired = benchmark.pedantic(round_, setup=setup, rounds=20)
    assert len(fired) == CONNECTIONS
